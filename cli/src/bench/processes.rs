//! `aiprod bench --processes P`: the jobs are drained by P worker processes, each this same
//! executable running `aiprod worker` against the bench database, as a fleet scaled out on one
//! machine would be. Their settings travel in the environment (which `Settings::load` reads over
//! any file), so each child starts exactly as an operator's worker would.
//!
//! A child is killed when its handle is dropped, so no worker outlives a run that fails.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use aiprod_platform::Settings;
use anyhow::Context;
use tokio::process::{Child, Command};

use super::figures::ProcessUsage;

/// How long a worker has to stop after SIGTERM before it is killed: it has no job left by then,
/// so only its pool and its probe server have to close.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// The running worker processes of one bench run.
pub(super) struct WorkerProcesses {
    /// Each is killed on drop (`kill_on_drop`), whatever ends the run.
    children: Vec<Child>,
}

/// The variables that give a worker process the bench's settings: the database, its slots, no
/// simulated latency, the budget, and the artifact and scratch directories of the in-process
/// run.
pub(super) fn worker_env(settings: &Settings, database_url: &str) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("DATABASE_URL", database_url.to_owned()),
        (
            "AIPROD_WORKER_CONCURRENCY",
            settings.worker.worker_concurrency.to_string(),
        ),
        (
            "AIPROD_DB_MAX_CONNECTIONS",
            settings.db_max_connections.to_string(),
        ),
        // `aiprod worker` simulates no backend by default; the bench's jobs ask for simulated
        // Runway.
        ("AIPROD_SIMULATE_BACKENDS", "true".to_owned()),
        (
            "AIPROD_SIM_LATENCY_MS",
            settings.backends.sim_latency.as_millis().to_string(),
        ),
        (
            "AIPROD_DAILY_BUDGET_USD",
            settings.budget.daily_budget_usd.to_string(),
        ),
        (
            "AIPROD_ARTIFACT_DIR",
            settings.artifact_dir.display().to_string(),
        ),
    ];
    if let Some(scratch) = &settings.media.media_scratch_dir {
        env.push(("AIPROD_MEDIA_SCRATCH_DIR", scratch.display().to_string()));
    }
    env
}

impl WorkerProcesses {
    /// Starts `count` workers with `env` over this process's environment, each serving its
    /// probes on a port of its own choosing. `config` is the settings file this process read,
    /// if any.
    pub(super) fn spawn(
        count: u32,
        env: &[(&'static str, String)],
        config: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let mut children = Vec::new();
        for _ in 0..count {
            let mut cmd = Command::new(&exe);
            if let Some(file) = config {
                cmd.arg("--config").arg(file);
            }
            cmd.args(["worker", "--listen", "127.0.0.1:0"])
                .envs(env.iter().map(|(k, v)| (k, v)))
                // The JSON line is the bench's only output on stdout.
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .kill_on_drop(true);
            // Start-up and shutdown lines would bury the result; warnings still show.
            if std::env::var_os("RUST_LOG").is_none() {
                cmd.env("RUST_LOG", "warn");
            }
            let child = cmd
                .spawn()
                .with_context(|| format!("cannot start {} worker", exe.display()))?;
            children.push(child);
        }
        Ok(WorkerProcesses { children })
    }

    /// Fails if a worker has exited: the jobs it held would wait for their leases to expire,
    /// and with every worker gone the drain would never end.
    pub(super) fn check_running(&mut self) -> anyhow::Result<()> {
        for child in &mut self.children {
            let pid = child.id();
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("worker process {pid:?} exited during the drain ({status})");
            }
        }
        Ok(())
    }

    /// Reads each worker's CPU time and peak memory, then stops them all with SIGTERM (the
    /// graceful stop an orchestrator sends), killing any still running after `STOP_GRACE`.
    pub(super) async fn stop(mut self) -> anyhow::Result<Vec<ProcessUsage>> {
        let mut usage = Vec::new();
        for child in &self.children {
            let pid = child
                .id()
                .context("a worker process was reaped before its stop")?;
            usage.push(ProcessUsage::read(&pid.to_string()));
            let pid = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
                .context("a process id out of range")?;
            rustix::process::kill_process(pid, rustix::process::Signal::TERM)
                .context("cannot send SIGTERM to a worker process")?;
        }
        for child in &mut self.children {
            let status = match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                Ok(status) => status?,
                Err(_) => {
                    child.kill().await?;
                    anyhow::bail!("a worker process did not stop within {STOP_GRACE:?}");
                }
            };
            anyhow::ensure!(status.success(), "a worker process stopped with {status}");
        }
        Ok(usage)
    }
}
