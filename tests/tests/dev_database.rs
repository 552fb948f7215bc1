//! `aiprod dev` with no `DATABASE_URL`, as a newcomer runs it: it starts a private PostgreSQL
//! that TCP clients enter only with its password, serves a job, and on Ctrl-C stops that server
//! while its data stays for the next start.

#![allow(missing_docs)]

use std::path::Path;
use std::time::{Duration, Instant};

use aiprod_tests::{Proc, Scratch, dev_key, free_port, keyed, wait_ready};
use serde_json::{Value, json};

/// The private cluster's data directory, where `aiprod dev` put it: the one asked for, or the
/// stand-in under /var/tmp that it uses when the `postgres` user cannot reach the one asked for.
fn data_dir(log: &str, asked: &Path) -> std::path::PathBuf {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| {
            v["fields"]["data_dir"]
                .as_str()
                .map(std::path::PathBuf::from)
        })
        .unwrap_or_else(|| asked.to_path_buf())
}

/// The port of the server running in `dir`, from its `postmaster.pid`; `None` once it stopped.
fn server_port(dir: &Path) -> Option<u16> {
    let pid_file = std::fs::read_to_string(dir.join("postmaster.pid")).ok()?;
    pid_file.lines().nth(3)?.trim().parse().ok()
}

async fn submit_and_finish(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let job: Value = http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"prompt": "A lighthouse at dawn.", "duration_s": 4}))
        .send()
        .await?
        .json()
        .await?;
    let id = job["id"].as_str().expect("a job id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job: Value = http
            .get(format!("{base}/v1/jobs/{id}"))
            .send()
            .await?
            .json()
            .await?;
        if job["status"] == "succeeded" {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline && job["status"] != "failed",
            "the job did not succeed: {job}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_stops_the_postgres_it_started_when_it_exits_and_keeps_its_data() -> anyhow::Result<()>
{
    let dir = Scratch::new("dev-pg")?;
    let pg_dir = dir.0.join("pg");
    let env = [
        ("AIPROD_PG_DIR", pg_dir.display().to_string()),
        (
            "AIPROD_ARTIFACT_DIR",
            dir.0.join("artifacts").display().to_string(),
        ),
        // Where `aiprod dev` saves its tenant's key (and finds it again on the second run).
        (
            "AIPROD_API_KEY_FILE",
            dir.0.join(".aiprod/api-key").display().to_string(),
        ),
        ("AIPROD_SIM_LATENCY_MS", "0".to_owned()),
        ("AIPROD_LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ];
    let http = reqwest::Client::new();
    for run in 0..2 {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut dev = Proc::start(
            &format!("dev-{run}"),
            &["dev", "--listen", &format!("127.0.0.1:{port}")],
            &env,
            &dir.0,
        )?;
        wait_ready(&http, &format!("{base}/readyz"), Duration::from_secs(120)).await?;
        submit_and_finish(&keyed(&dev_key(&dir.0)?)?, &base).await?;
        let data = data_dir(&std::fs::read_to_string(&dev.log)?, &pg_dir);
        let pg_port = server_port(&data).expect("the private PostgreSQL runs");
        assert!(std::net::TcpStream::connect(("127.0.0.1", pg_port)).is_ok());
        // Not open to the machine: over TCP only with the password on file.
        use sqlx::Connection;
        let anyone = format!("postgres://postgres@127.0.0.1:{pg_port}/postgres");
        assert!(
            sqlx::PgConnection::connect(&anyone).await.is_err(),
            "the private PostgreSQL let a client in without a password"
        );
        let password = std::fs::read_to_string(data.join("aiprod-password"))?;
        let owner = format!(
            "postgres://postgres:{}@127.0.0.1:{pg_port}/postgres",
            password.trim()
        );
        sqlx::PgConnection::connect(&owner).await?.close().await?;

        dev.signal("INT")?;
        assert_eq!(
            dev.wait_exit(Duration::from_secs(60))?,
            Some(0),
            "{}",
            dev.tail()
        );
        assert!(
            server_port(&data).is_none(),
            "postmaster.pid is still there after run {run}: {}",
            dev.tail()
        );
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", pg_port)).is_err(),
            "PostgreSQL still answers on {pg_port} after run {run}"
        );
        assert!(
            data.join("PG_VERSION").exists(),
            "the data directory must outlive the server"
        );
    }
    Ok(())
}
