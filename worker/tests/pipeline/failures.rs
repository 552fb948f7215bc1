//! A stage that keeps failing: every backend tried in order, then the job fails naming the stage.

use aiprod_worker::{JobOutcome, Outcome};
use serde_json::json;

use super::{Rig, test_settings};

#[tokio::test]
async fn a_stage_that_keeps_failing_fails_the_job_naming_the_stage() -> anyhow::Result<()> {
    let mut settings = test_settings();
    settings.backends.sim_failure_rate = 1.0;
    settings.worker.retry.max_attempts = 2;
    let rig = Rig::new(settings).await?;
    let id = rig.submit(json!({"prompt": "A fox."})).await?;
    assert_eq!(
        rig.drain().await?,
        vec![Outcome::Worked(Some(JobOutcome::Failed))]
    );
    let (status, stage, error): (String, String, String) =
        sqlx::query_as("select status::text, stage::text, error from job where id = $1")
            .bind(id)
            .fetch_one(&rig.pool)
            .await?;
    assert_eq!((status.as_str(), stage.as_str()), ("failed", "render"));
    assert!(
        error.starts_with("stage render failed: shot 0: no backend rendered it (replicate: simulated replicate render failed (internal); runway: "),
        "{error}"
    );
    // Each stage try began with the cheapest, then walked the configured fallback order
    // (runway, veo3): every try is a row.
    let tries: Vec<(i32, String, String, String)> = sqlx::query_as(
        "select attempt, backend::text, state::text, failure_class from render_task
          where job_id = $1 order by attempt",
    )
    .bind(id)
    .fetch_all(&rig.pool)
    .await?;
    let order: Vec<&str> = tries.iter().map(|t| t.1.as_str()).collect();
    assert_eq!(
        order,
        ["replicate", "runway", "veo3", "replicate", "runway", "veo3"]
    );
    assert!(
        tries.iter().all(|t| t.2 == "failed" && t.3 == "internal"),
        "{tries:?}"
    );
    assert!(
        error.ends_with("(gave up after the last attempt)"),
        "{error}"
    );
    let render: (String, i32) = sqlx::query_as(
        "select status::text, attempts from job_stage where job_id = $1 and stage = 'render'",
    )
    .bind(id)
    .fetch_one(&rig.pool)
    .await?;
    assert_eq!(render, ("failed".into(), 2));
    Ok(())
}
