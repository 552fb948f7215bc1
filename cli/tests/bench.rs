//! `aiprod bench --processes` as a user runs it, against a real PostgreSQL: the worker
//! processes drain every job, the JSON line carries each figure, and the run leaves nothing
//! behind.

#![allow(missing_docs)]

use aiprod_testkit::TestDb;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_drain_every_job_and_the_line_reports_both() -> anyhow::Result<()> {
    // The bench makes and drops a database of its own on this database's server.
    let db = TestDb::new().await?;
    let artifacts = tempfile::tempdir()?;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_aiprod"));
    for (k, _) in std::env::vars() {
        if k.starts_with("AIPROD_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(["bench", "--jobs", "3", "--workers", "2", "--processes", "2"])
        .arg("--artifact-dir")
        .arg(artifacts.path())
        .env("DATABASE_URL", &db.url)
        .kill_on_drop(true)
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "aiprod bench failed: {stderr}");
    let stdout = String::from_utf8(out.stdout)?;
    let line: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())?;

    assert_eq!(line["jobs"], 3, "{line}");
    assert_eq!(line["processes"], 2, "{line}");
    assert_eq!(line["slots"], 4, "{line}");
    // The warm-up job ran first, outside every figure but its own.
    assert_eq!(line["assembled_by_copy"], 3, "{line}");
    let figure = |k: &str| line[k].as_f64().unwrap_or(-1.0);
    assert!(figure("warm_up_s") > 0.0, "{line}");
    assert!(figure("jobs_per_s") > 0.0, "{line}");
    // Nine stages, each checkpoint committed on its own.
    assert!(figure("commits_per_job") >= 9.0, "{line}");
    assert!(figure("p99_ms") >= figure("p50_ms"), "{line}");
    // Two processes: the sum of their peaks is above the larger one.
    assert!(figure("worker_rss_mib") > 1.0, "{line}");
    assert!(
        figure("worker_rss_mib_sum") > figure("worker_rss_mib"),
        "{line}"
    );
    assert!(figure("media_cpu_s_per_output_min") > 0.0, "{line}");
    // The run's artifact directory is gone, and so is its database.
    assert_eq!(std::fs::read_dir(artifacts.path())?.count(), 0);
    let pool = db.pool().await?;
    let left: i64 = sqlx::query_scalar(
        "select count(*) from pg_database where datname like 'aiprod\\_bench\\_%'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(left, 0, "a bench database was left behind");
    Ok(())
}
