//! `aiprod dev`, the all-in-one process, driven through the CLI: a job canceled while it renders
//! stops before its next stage, and `jobs watch` / `jobs submit --watch` exit by the job's
//! outcome.

use std::time::Duration;

use aiprod_testkit::TestDb;
use aiprod_tests::{Proc, Scratch, aiprod_bin, free_port, wait_ready};
use serde_json::Value;
use uuid::Uuid;

use crate::{base_env, submit_and_wait_for_render};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cancels_a_running_job_and_watch_exits_by_outcome() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let dir = Scratch::new("dev")?;
    let port = free_port();
    let mut env = base_env(&db, &dir);
    env.push(("AIPROD_SIM_LATENCY_MS", "1500".to_owned()));
    let mut dev = Proc::start(
        "dev",
        &["dev", "--listen", &format!("127.0.0.1:{port}")],
        &env,
        &dir.0,
    )?;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &format!("{base}/readyz"), Duration::from_secs(60)).await?;

    // A job canceled while it renders stops before its next stage and ends canceled.
    let id = submit_and_wait_for_render(&http, &base, &pool)
        .await?
        .to_string();
    let r = http
        .post(format!("{base}/v1/jobs/{id}/cancel"))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 202);
    let watch = std::process::Command::new(aiprod_bin()?)
        .args(["jobs", "watch", &id, "--api-url", &base])
        .env_remove("DATABASE_URL")
        .output()?;
    assert_eq!(
        watch.status.code(),
        Some(1),
        "watch of a canceled job must fail"
    );
    let (status, stage_rows): (String, i64) = sqlx::query_as(
        "select status::text, (select count(*) from job_stage where job_id = $1) from job where id = $1",
    )
    .bind(id.parse::<Uuid>()?)
    .fetch_one(&pool)
    .await?;
    assert_eq!(status, "canceled");
    assert_eq!(stage_rows, 6, "render finished, nothing after it started");

    // `jobs submit --watch` of a good job exits 0; of a forbidden prompt, 1.
    let ok = std::process::Command::new(aiprod_bin()?)
        .args([
            "jobs",
            "submit",
            "--prompt",
            "A quick fox.",
            "--duration",
            "2",
            "--watch",
            "--api-url",
            &base,
        ])
        .output()?;
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let done: Value = serde_json::from_slice(&ok.stdout)?;
    assert_eq!(done["status"], "succeeded");
    let bad = std::process::Command::new(aiprod_bin()?)
        .args([
            "jobs",
            "submit",
            "--prompt",
            "nsfw scene",
            "--watch",
            "--api-url",
            &base,
        ])
        .output()?;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("forbidden word"));

    dev.signal("TERM")?;
    assert_eq!(
        dev.wait_exit(Duration::from_secs(30))?,
        Some(0),
        "{}",
        dev.tail()
    );
    Ok(())
}
