//! Helpers for the end-to-end tests: build and start real `aiprod` processes against a
//! fresh database, and talk to them over HTTP.

pub mod stubs;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The `aiprod` binary, built once per test process with the same cargo that runs the tests.
pub fn aiprod_bin() -> anyhow::Result<PathBuf> {
    // Tests run in parallel threads: the first builds while the others wait for its answer.
    static BIN: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut bin = BIN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(b) = bin.as_ref() {
        return Ok(b.clone());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The same build as `cargo test --workspace`, so under the suite it finds the binary that
    // command already built (the `aiprod` package's integration test makes it build one). A
    // plain `cargo build -p aiprod` resolves features without the dev-dependencies and would
    // compile a third of the dependency tree a second time.
    let out = Command::new(cargo)
        .args(["test", "--workspace", "--no-run", "--message-format=json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .context("while building the aiprod binary")?;
    if !out.status.success() {
        bail!("cargo test --no-run (to build aiprod) failed");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let exe = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["reason"] == "compiler-artifact"
                && v["target"]["name"] == "aiprod"
                && v["target"]["kind"][0] == "bin"
                && v["profile"]["test"] == false
        })
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .context("cargo did not report the aiprod executable")?;
    *bin = Some(exe.clone());
    Ok(exe)
}

/// A free TCP port on 127.0.0.1 (bound and released; the small race is acceptable in tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running `aiprod` process, killed on drop. Its output goes to a log file.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// Where its stderr and stdout go.
    pub log: PathBuf,
    /// What it runs, for messages.
    pub name: String,
}

impl Proc {
    /// Starts `aiprod ARGS` with `env`, logging into `dir`.
    pub fn start(
        name: &str,
        args: &[&str],
        env: &[(&str, String)],
        dir: &Path,
    ) -> anyhow::Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(aiprod_bin()?);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        cmd.env_remove("DATABASE_URL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("while starting {name}"))?;
        Ok(Proc {
            child,
            log,
            name: name.to_owned(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`KILL`, `TERM`).
    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill -{sig} {} failed", self.pid());
        Ok(())
    }

    /// Waits for the process to exit, up to `timeout`; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not exit within {timeout:?}; log: {}",
                    self.name,
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the log, for failure messages.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `url` until it answers 200, up to `timeout`.
pub async fn wait_ready(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} was not ready within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A scratch directory of one test, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A new empty directory under the system temp directory.
    pub fn new(tag: &str) -> anyhow::Result<Scratch> {
        let p = std::env::temp_dir().join(format!(
            "aiprod-e2e-{tag}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&p)?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("AIPROD_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The key `aiprod dev` saved for `aiprod jobs` when it started in `dir`.
pub fn dev_key(dir: &Path) -> anyhow::Result<String> {
    let file = dir.join(".aiprod/api-key");
    let key = std::fs::read_to_string(&file)
        .with_context(|| format!("aiprod dev saved no key in {}", file.display()))?;
    Ok(key.trim().to_owned())
}

/// An HTTP client that sends `key` as its bearer.
pub fn keyed(key: &str) -> anyhow::Result<reqwest::Client> {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse()?,
    );
    Ok(reqwest::Client::builder().default_headers(h).build()?)
}

/// A new `jobs:write` + `jobs:read` key of tenant `name` (made if missing), for tests that run
/// `aiprod api` on their own database.
pub async fn tenant_key(pool: &sqlx::PgPool, name: &str) -> anyhow::Result<String> {
    use aiprod_domain::Scope;
    use secrecy::ExposeSecret;
    let tenant = match aiprod_store::tenant_by_name(pool, name).await? {
        Some(t) => t,
        None => aiprod_store::create_tenant(pool, name, &aiprod_store::TenantLimits::default())
            .await?
            .context("a new tenant")?,
    };
    let k = aiprod_store::keys::NewKey::generate();
    let scopes = [Scope::JobsWrite, Scope::JobsRead];
    aiprod_store::insert_api_key(pool, tenant.id, &k.prefix, &k.hash, "e2e", &scopes).await?;
    Ok(k.secret.expose_secret().to_owned())
}
