//! End-to-end: real PostgreSQL, real `aiprod` processes, real HTTP.

#![allow(missing_docs)]

mod cli;
mod dev;
mod fleet;
mod fuzz;
mod secrets;
mod signals;

use std::time::{Duration, Instant};

use aiprod_testkit::TestDb;
use aiprod_tests::Scratch;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

fn base_env(db: &TestDb, dir: &Scratch) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", db.url.clone()),
        (
            "AIPROD_ARTIFACT_DIR",
            dir.0.join("artifacts").display().to_string(),
        ),
        // Where `aiprod dev` saves its key, and `aiprod jobs` looks for it.
        (
            "AIPROD_API_KEY_FILE",
            dir.0.join(".aiprod/api-key").display().to_string(),
        ),
        ("AIPROD_SIMULATE_BACKENDS", "true".into()),
        ("AIPROD_LOG_FORMAT", "json".into()),
        ("RUST_LOG", "info".into()),
    ]
}

/// A job still open when a wait times out: id, status, stage, holder, reaps, last dispatch,
/// outbox rows.
type OpenJob = (
    Uuid,
    String,
    Option<String>,
    Option<String>,
    i32,
    Option<String>,
    i64,
);

async fn wait_all_terminal(pool: &PgPool, n: i64, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let done: i64 = sqlx::query_scalar(
            "select count(*) from job where status in ('succeeded', 'failed', 'canceled')",
        )
        .fetch_one(pool)
        .await?;
        if done >= n {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let open: Vec<OpenJob> = sqlx::query_as(
                "select id, status::text, stage::text, locked_by, reap_count,
                            dispatched_at::text,
                            (select count(*) from outbox o where o.job_id = j.id)
                       from job j
                      where status not in ('succeeded', 'failed', 'canceled')",
            )
            .fetch_all(pool)
            .await?;
            anyhow::bail!(
                "only {done} of {n} jobs ended within {timeout:?}; still open \
                 (id, status, stage, locked_by, reap_count, dispatched_at, outbox rows): {open:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Submits a slow job over HTTP and waits until it is rendering; returns its id.
async fn submit_and_wait_for_render(
    http: &reqwest::Client,
    base: &str,
    pool: &PgPool,
) -> anyhow::Result<Uuid> {
    let job: Value = http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"prompt": "A slow river."}))
        .send()
        .await?
        .json()
        .await?;
    let id: Uuid = job["id"].as_str().expect("an id").parse()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stage: Option<String> = sqlx::query_scalar("select stage::text from job where id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
        if stage.as_deref() == Some("render") {
            return Ok(id);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "job {id} never reached render (stage {stage:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
