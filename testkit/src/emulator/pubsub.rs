//! Google's Pub/Sub emulator for tests: reused when one answers on the port, else started from
//! the Google Cloud SDK (`AIPROD_TEST_PUBSUB_EMULATOR` names another binary). It keeps running
//! after the test process, for the next test binary; it holds nothing on disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::OnceCell;

use aiprod_platform::config::{QueueKind, QueueSettings};

/// Where the Google Cloud SDK puts the emulator on Debian.
const SDK_BINARY: &str =
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator";
/// The emulator's usual port; `AIPROD_TEST_PUBSUB_PORT` overrides it.
const DEFAULT_PORT: u16 = 8085;
/// The project every test uses; tests keep apart by topic and subscription names.
pub const TEST_PROJECT: &str = "aiprod-test";

/// A running emulator.
#[derive(Clone, Debug)]
pub struct PubSubEmulator {
    endpoint: String,
}

impl PubSubEmulator {
    /// Its `http://host:port`, for `AIPROD_PUBSUB_ENDPOINT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Queue settings of a test's own: a topic, subscription and dead-letter topic named after
    /// `tag` plus a random suffix, on this emulator. Create them with `ensure_pubsub`.
    pub fn settings(&self, tag: &str) -> QueueSettings {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let base = format!("{tag}-{}", &suffix[..12]);
        QueueSettings {
            queue: QueueKind::Pubsub,
            pubsub_project: Some(TEST_PROJECT.into()),
            pubsub_topic: format!("{base}-jobs"),
            pubsub_subscription: format!("{base}-workers"),
            pubsub_endpoint: Some(self.endpoint.clone()),
            pubsub_dead_letter_topic: format!("{base}-dead"),
            ..QueueSettings::default()
        }
    }
}

/// The emulator, started on first use.
pub async fn pubsub_emulator() -> anyhow::Result<PubSubEmulator> {
    static EMULATOR: OnceCell<PubSubEmulator> = OnceCell::const_new();
    EMULATOR.get_or_try_init(start).await.cloned()
}

async fn start() -> anyhow::Result<PubSubEmulator> {
    let port = match std::env::var("AIPROD_TEST_PUBSUB_PORT") {
        Ok(p) => p
            .parse::<u16>()
            .context("AIPROD_TEST_PUBSUB_PORT must be a port number")?,
        Err(_) => DEFAULT_PORT,
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let http = probe::Probe::new(port);
    if http.answers().await {
        return Ok(PubSubEmulator { endpoint });
    }
    // Several test binaries may get here at once: one starts the emulator, the rest wait.
    let lock = super::machine_lock(&format!("aiprod-pubsub-emulator-{port}")).await?;
    if !http.answers().await {
        let binary = binary()?;
        let log = std::env::temp_dir().join(format!("aiprod-pubsub-emulator-{port}.log"));
        spawn_detached(&binary, port, &log)?;
        let deadline = Instant::now() + Duration::from_secs(90);
        while !http.answers().await {
            if Instant::now() > deadline {
                bail!(
                    "the Pub/Sub emulator did not answer on port {port} within 90 s; see {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    drop(lock);
    Ok(PubSubEmulator { endpoint })
}

fn binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("AIPROD_TEST_PUBSUB_EMULATOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SDK_BINARY));
    if !path.exists() {
        bail!(
            "the Pub/Sub emulator is missing at {}: install the Google Cloud SDK's emulator \
             (`gcloud components install pubsub-emulator`, or the Debian package \
             google-cloud-cli-pubsub-emulator) and Java 11+, or set AIPROD_TEST_PUBSUB_EMULATOR",
            path.display()
        );
    }
    if Command::new("java")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        bail!(
            "the Pub/Sub emulator needs Java 11 or later on PATH (apt-get install default-jre-headless)"
        );
    }
    Ok(path)
}

/// The emulator on `port`.
fn spawn_detached(binary: &Path, port: u16, log: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new(binary);
    cmd.arg("--host=127.0.0.1").arg(format!("--port={port}"));
    super::spawn_detached(cmd, log)
}

/// A dependency-free liveness check: the emulator answers `GET /` with `Ok`.
mod probe {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub struct Probe {
        port: u16,
    }

    impl Probe {
        pub fn new(port: u16) -> Probe {
            Probe { port }
        }

        pub async fn answers(&self) -> bool {
            let probe = async {
                let mut s = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
                s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    .await
                    .ok()?;
                // The emulator keeps the connection open despite `Connection: close`, so
                // read only as far as the body, `Ok\n`.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 512];
                loop {
                    let n = s.read(&mut chunk).await.ok()?;
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if String::from_utf8_lossy(&buf)
                        .trim_end()
                        .ends_with("\r\n\r\nOk")
                    {
                        break;
                    }
                }
                let text = String::from_utf8_lossy(&buf);
                Some(text.starts_with("HTTP/1.1 200") && text.trim_end().ends_with("Ok"))
            };
            tokio::time::timeout(Duration::from_secs(2), probe)
                .await
                .ok()
                .flatten()
                .unwrap_or(false)
        }
    }
}
