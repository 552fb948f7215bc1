//! Waiting for money: a job today's budget cannot cover waits (or fails, if asked to), then runs
//! once the limit is raised, and the day's books balance.

use aiprod_worker::{JobOutcome, Outcome};
use serde_json::json;

use super::{Rig, test_settings};

#[tokio::test]
async fn a_job_the_budget_cannot_cover_waits_then_runs_when_the_limit_is_raised()
-> anyhow::Result<()> {
    use aiprod_store::{audit_budget_day, set_budget_limit, wake_budget_waiters};
    let mut settings = test_settings();
    settings.budget.daily_budget_usd = "0.30".parse()?;
    let today = settings.budget.calendar().day_at(chrono::Utc::now());
    let rig = Rig::new(settings).await?;
    // A first job takes $0.26 of today's $0.30.
    rig.submit(json!({"prompt": "A fox runs.", "duration_s": 5, "quality_min": 0, "cache": false}))
        .await?;
    assert_eq!(
        rig.drain().await?,
        vec![Outcome::Worked(Some(JobOutcome::Succeeded))]
    );
    let waits = rig
        .submit(json!({"prompt": "A fox runs.", "duration_s": 5, "quality_min": 0, "cache": false}))
        .await?;
    let fails = rig
        .submit(json!({"prompt": "A fox runs.", "duration_s": 5, "quality_min": 0, "over_budget": "fail", "cache": false}))
        .await?;
    let outcomes = rig.drain().await?;
    assert!(
        outcomes.contains(&Outcome::Worked(Some(JobOutcome::WaitingBudget))),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&Outcome::Worked(Some(JobOutcome::Failed))),
        "{outcomes:?}"
    );
    assert_eq!(
        rig.job_status(waits).await?,
        ("waiting_budget".into(), Some("financial".into()))
    );
    let (reason, need): (String, i64) =
        sqlx::query_as("select waiting_reason, waiting_need_micros from job where id = $1")
            .bind(waits)
            .fetch_one(&rig.pool)
            .await?;
    assert!(
        reason.contains("today's budget does not cover this job"),
        "{reason}"
    );
    assert_eq!(
        need, 260_000,
        "the cheapest backend that qualifies: replicate, $0.26"
    );
    let error: String = sqlx::query_scalar("select error from job where id = $1")
        .bind(fails)
        .fetch_one(&rig.pool)
        .await?;
    assert!(error.contains("asked to fail, not wait"), "{error}");
    assert!(
        rig.drain().await?.is_empty(),
        "a waiting job is not redelivered"
    );

    // An admin raises today's limit to $1: the job wakes and renders on replicate.
    set_budget_limit(&rig.pool, today, "1".parse()?, "test").await?;
    assert_eq!(wake_budget_waiters(&rig.pool, today, 10).await?, [waits]);
    assert_eq!(rig.relay().await?, 1);
    assert_eq!(
        rig.drain().await?,
        vec![Outcome::Worked(Some(JobOutcome::Succeeded))]
    );
    let (backend, cost): (String, i64) =
        sqlx::query_as("select backend::text, cost_micros from job where id = $1")
            .bind(waits)
            .fetch_one(&rig.pool)
            .await?;
    assert_eq!((backend.as_str(), cost), ("replicate", 260_000));
    let audit = audit_budget_day(&rig.pool, today)
        .await?
        .expect("the day is open");
    assert!(audit.balanced, "{audit:?}");
    assert_eq!((audit.spent_micros, audit.reserved_micros), (520_000, 0));
    Ok(())
}
