//! Who drains the bench's jobs: a worker inside the bench process, as `aiprod dev` runs one, or
//! worker processes beside it, as a fleet runs them.

use std::path::PathBuf;

use aiprod_worker::WorkerContext;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::figures::{DrainUsage, ProcessUsage};
use super::processes::WorkerProcesses;

/// How the drain is to be run.
pub(super) enum Drainer {
    /// A worker task in this process, beside the API and the scheduler.
    InProcess,
    /// `count` worker processes, started with `env` over this process's environment and the
    /// settings file `config`.
    Processes {
        count: u32,
        env: Vec<(&'static str, String)>,
        config: Option<PathBuf>,
    },
}

/// A drain under way.
pub(super) enum Drain {
    /// The worker task; `before` is this process's usage when it started.
    InProcess {
        worker: JoinHandle<anyhow::Result<()>>,
        stop: CancellationToken,
        before: ProcessUsage,
    },
    /// The worker processes.
    Processes(WorkerProcesses),
}

impl Drainer {
    /// Starts draining; `ctx` is the in-process worker's context, unused by worker processes
    /// (each builds its own).
    pub(super) fn start(&self, ctx: WorkerContext) -> anyhow::Result<Drain> {
        match self {
            Drainer::InProcess => {
                let stop = CancellationToken::new();
                let before = ProcessUsage::read("self");
                let worker = tokio::spawn(aiprod_worker::run(ctx, stop.clone()));
                Ok(Drain::InProcess {
                    worker,
                    stop,
                    before,
                })
            }
            Drainer::Processes { count, env, config } => Ok(Drain::Processes(
                WorkerProcesses::spawn(*count, env, config.as_deref())?,
            )),
        }
    }
}

impl Drain {
    /// Fails if the workers have stopped before the jobs were done: the drain would never end.
    pub(super) async fn check_running(&mut self) -> anyhow::Result<()> {
        match self {
            Drain::InProcess { worker, .. } => {
                if worker.is_finished() {
                    worker.await??;
                    anyhow::bail!("the worker stopped during the drain");
                }
                Ok(())
            }
            Drain::Processes(p) => p.check_running(),
        }
    }

    /// Stops the workers and says what they used. In process, the CPU time is that of the
    /// whole bench process over the drain (the API idles, the scheduler and the poll are
    /// light), and the peak memory that of the whole run.
    pub(super) async fn stop(self) -> anyhow::Result<DrainUsage> {
        match self {
            Drain::InProcess {
                worker,
                stop,
                before,
            } => {
                stop.cancel();
                worker.await??;
                let after = ProcessUsage::read("self");
                Ok(DrainUsage {
                    rss_peak_mib: after.peak_rss_mib,
                    rss_sum_mib: after.peak_rss_mib,
                    worker_cpu_s: after.cpu_s - before.cpu_s,
                    media_cpu_s: after.children_cpu_s - before.children_cpu_s,
                })
            }
            Drain::Processes(p) => Ok(DrainUsage::of(&p.stop().await?)),
        }
    }
}
