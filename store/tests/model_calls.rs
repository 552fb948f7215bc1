//! Model calls in the ledger over a real PostgreSQL: an intent takes its estimate from what the
//! job holds (and is refused what it does not hold), its cost settles into spent with an entry
//! naming it, a call a job left unanswered when it ended is charged its estimate, and the books
//! balance with renders and model calls both; and a model service's fleet-wide circuit breaker.

#![allow(missing_docs)]

use std::time::Duration;

use aiprod_domain::{JobId, JobSpec, ModelCallKind, ModelCallState, Money, Stage, TenantId};
use aiprod_store::{
    ModelIntent, ModelIntentOutcome, ModelUpdate, Reservation, ReserveOutcome, audit_budget_day,
    claim_job, fail_job, get_budget_day, insert_job, insert_model_call, model_calls,
    open_budget_day, reserve_budget, settle_abandoned_model_calls, update_model_call,
};
use aiprod_testkit::TestDb;
use chrono::NaiveDate;
use serde_json::json;

const WORKER: &str = "model-call-test";

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 5).expect("a date")
}

fn usd(s: &str) -> Money {
    s.parse().expect("money")
}

fn intent(id: JobId, epoch: i64, step: &'static str, estimate: &str) -> ModelIntent<'static> {
    ModelIntent {
        job_id: id,
        lease_epoch: epoch,
        worker_id: WORKER,
        kind: ModelCallKind::Keyframe,
        step,
        attempt: 1,
        provider: "imagen",
        model: "imagen-4.0-fast-generate-001",
        request_hash: "h",
        seed: Some(7),
        estimate: usd(estimate),
    }
}

#[tokio::test]
async fn a_model_call_is_reserved_settled_and_audited_like_a_render() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    open_budget_day(&pool, day(), "UTC", usd("10")).await?;
    let spec = JobSpec::parse(&json!({"prompt": "a fox", "quality_min": 0}))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let id = JobId::new();
    insert_job(&pool, TenantId::DEFAULT, id, &spec, None).await?;
    let epoch = claim_job(&pool, id, WORKER, Duration::from_secs(600))
        .await?
        .expect("free")
        .lease_epoch;
    let reserve = |amount: &str| {
        let pool = pool.clone();
        let amount = usd(amount);
        async move {
            let r = Reservation {
                job_id: id,
                lease_epoch: epoch,
                worker: WORKER,
                day: day(),
                amount,
                note: "test",
            };
            reserve_budget(&pool, &r).await
        }
    };

    // Nothing held yet: the intent is refused until the estimate is reserved.
    assert!(matches!(
        reserve("0.05").await?,
        ReserveOutcome::Reserved { .. }
    ));
    let written = insert_model_call(&pool, &intent(id, epoch, "keyframe-00", "0.02")).await?;
    let ModelIntentOutcome::Written(call) = written else {
        panic!("the job holds $0.05: {written:?}");
    };
    // The row the insert hands back is the row as stored.
    let stored = model_calls(&pool, id, "keyframe-00").await?;
    assert_eq!(stored.len(), 1);
    assert_eq!(format!("{:?}", stored[0]), format!("{call:?}"));
    assert_eq!(
        (call.state, call.attempt, call.estimated_cost_micros),
        (ModelCallState::Intent, 1, 20_000)
    );
    let short = insert_model_call(&pool, &intent(id, epoch, "keyframe-01", "0.04")).await?;
    assert!(matches!(short, ModelIntentOutcome::Short), "{short:?}");

    // Its answer's cost settles what it held: spent moves by the cost, reserved by the hold.
    let done = ModelUpdate {
        state: Some(ModelCallState::Done),
        cost: Some(usd("0.013")),
        ..ModelUpdate::default()
    };
    assert!(update_model_call(&pool, call.id, ModelCallState::Intent, &done).await?);
    let d = get_budget_day(&pool, day()).await?.expect("open");
    assert_eq!((d.reserved, d.spent), (usd("0.03"), usd("0.013")));
    let entry: (i64, i64) = sqlx::query_as(
        "select reserved_delta_micros, spent_delta_micros from budget_entry
          where model_call_id = $1",
    )
    .bind(call.id)
    .fetch_one(&pool)
    .await?;
    assert_eq!(entry, (-20_000, 13_000));

    // A call in flight when its job ended is charged its estimate by the settling pass.
    let ModelIntentOutcome::Written(orphan) =
        insert_model_call(&pool, &intent(id, epoch, "keyframe-01", "0.02")).await?
    else {
        panic!("the job still holds $0.03");
    };
    assert!(fail_job(&pool, id, epoch, WORKER, Stage::Sanitize, "gone", 0).await?);
    let d = get_budget_day(&pool, day()).await?.expect("open");
    assert_eq!(
        d.reserved,
        usd("0.02"),
        "only the unanswered call still holds"
    );
    assert_eq!(settle_abandoned_model_calls(&pool, 100).await?, 1);
    assert_eq!(settle_abandoned_model_calls(&pool, 100).await?, 0);
    let state: String = sqlx::query_scalar("select state::text from model_call where id = $1")
        .bind(orphan.id)
        .fetch_one(&pool)
        .await?;
    assert_eq!(state, "lost");
    let d = get_budget_day(&pool, day()).await?.expect("open");
    assert_eq!((d.reserved, d.spent), (Money::ZERO, usd("0.033")));
    let audit = audit_budget_day(&pool, day()).await?.expect("audited");
    assert!(audit.balanced, "{audit:?}");
    assert_eq!(audit.model_cost_micros, 33_000);
    Ok(())
}

#[tokio::test]
async fn a_model_services_circuit_opens_at_the_threshold_and_one_probe_closes_it()
-> anyhow::Result<()> {
    use aiprod_domain::{CircuitPolicy, CircuitState};
    use aiprod_store::{Gate, model_gate, record_model_failure, record_model_success};

    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let policy = CircuitPolicy {
        threshold: 3,
        cooldown: Duration::from_millis(200),
        cooldown_max: Duration::from_secs(5),
    };
    let ttl = Duration::from_secs(30);
    for i in 0..3 {
        assert_eq!(model_gate(&pool, "gemini", "job-a", ttl).await?, Gate::Pass);
        let state = record_model_failure(&pool, "gemini", "job-a", "503", policy).await?;
        let want = if i < 2 {
            CircuitState::Closed
        } else {
            CircuitState::Open
        };
        assert_eq!(state, Some(want));
    }
    // Open for every worker of the fleet; Imagen's circuit is its own.
    assert!(matches!(
        model_gate(&pool, "gemini", "job-b", ttl).await?,
        Gate::Blocked(_)
    ));
    assert_eq!(model_gate(&pool, "imagen", "job-b", ttl).await?, Gate::Pass);
    tokio::time::sleep(Duration::from_millis(250)).await;
    // After the cooldown exactly one caller holds the half-open probe.
    assert_eq!(
        model_gate(&pool, "gemini", "job-b", ttl).await?,
        Gate::Probe
    );
    assert!(matches!(
        model_gate(&pool, "gemini", "job-c", ttl).await?,
        Gate::Blocked(_)
    ));
    record_model_success(&pool, "gemini").await?;
    assert_eq!(model_gate(&pool, "gemini", "job-c", ttl).await?, Gate::Pass);
    Ok(())
}
