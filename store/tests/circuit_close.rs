//! A success closes its circuit in the statement that records the success, not in one of its
//! own (`close_circuits()`, `close_model_circuit()`): a render's step to `downloaded`, through
//! the writer's group or on its own, and a model call's answer. Steps that are not a success
//! leave the breaker's count as it was.

#![allow(missing_docs)]

use std::time::Duration;

use aiprod_domain::{
    BackendName, CircuitPolicy, CircuitState, JobId, JobSpec, ModelCallKind, ModelCallState, Money,
    RenderState, TenantId,
};
use aiprod_store::{
    Group, Intent, IntentOutcome, ModelIntent, ModelIntentOutcome, ModelUpdate, RenderStep,
    RenderUpdate, Reservation, ReserveOutcome, backend_health, claim_job, commit_group,
    insert_intent, insert_job, insert_model_call, open_budget_day, record_failure,
    record_model_failure, reserve_budget, update_model_call, update_render,
};
use aiprod_testkit::{TestDb, skip_to_render};
use chrono::NaiveDate;
use serde_json::json;
use sqlx::PgPool;

const WORKER: &str = "circuit-close";
const B: BackendName = BackendName::Runway;

fn usd(s: &str) -> Money {
    s.parse().expect("money")
}

fn policy() -> CircuitPolicy {
    CircuitPolicy {
        threshold: 3,
        cooldown: Duration::from_secs(60),
        cooldown_max: Duration::from_secs(600),
    }
}

/// A leased job moved on to `render`, and its lease epoch.
async fn a_job(pool: &PgPool) -> anyhow::Result<(JobId, i64)> {
    let spec = JobSpec::parse(&json!({"prompt": "a fox"})).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let job = JobId::new();
    insert_job(pool, TenantId::DEFAULT, job, &spec, None).await?;
    let claim = claim_job(pool, job, WORKER, Duration::from_secs(600))
        .await?
        .expect("a fresh job is free");
    skip_to_render(pool, job.as_uuid()).await?;
    Ok((job, claim.lease_epoch))
}

/// A render on `B` of a new job, in `intent`.
async fn a_render(pool: &PgPool) -> anyhow::Result<uuid::Uuid> {
    let (job, lease_epoch) = a_job(pool).await?;
    let intent = Intent {
        job_id: job,
        lease_epoch,
        worker_id: WORKER,
        shot: 0,
        attempt: 1,
        backend: B,
        duration_s: 5,
        estimate: Money::ZERO,
        baseline: None,
        seed: None,
        spec_key: None,
    };
    match insert_intent(pool, &intent).await? {
        IntentOutcome::Written(task) => Ok(task.id),
        other => anyhow::bail!("the intent was not written: {other:?}"),
    }
}

/// `B`'s circuit and its failures since the last success.
async fn runway(pool: &PgPool) -> anyhow::Result<(CircuitState, i32)> {
    let h = &backend_health(pool, WORKER).await?[&B];
    Ok((h.state, h.consecutive_failures))
}

fn to(state: RenderState) -> RenderUpdate {
    RenderUpdate {
        state: Some(state),
        ..RenderUpdate::default()
    }
}

/// How a step is written: through the writer's group commit, or on its own.
#[derive(Clone, Copy, Debug)]
enum Path {
    Group,
    Alone,
}

/// Takes one step of render `id` by `path`; whether it was taken.
async fn step(
    pool: &PgPool,
    path: Path,
    id: uuid::Uuid,
    from: RenderState,
    u: &RenderUpdate,
) -> anyhow::Result<bool> {
    Ok(match path {
        Path::Alone => update_render(pool, id, from, u).await?,
        Path::Group => {
            let steps = [RenderStep {
                id,
                from,
                update: u,
            }];
            let group = Group {
                steps: &steps,
                ..Group::default()
            };
            commit_group(pool, WORKER, group).await?.steps == [true]
        }
    })
}

#[tokio::test]
async fn a_render_marked_downloaded_closes_its_backends_circuit() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let submitted = RenderUpdate {
        remote_id: Some("remote-1".into()),
        ..to(RenderState::Submitted)
    };
    // Through the writer's group with two failures counted, then on its own with the circuit
    // open: the steps that are not a success keep the count, the download closes the circuit.
    for (path, failures, before) in [
        (Path::Group, 2, CircuitState::Closed),
        (Path::Alone, 3, CircuitState::Open),
    ] {
        let render = a_render(&pool).await?;
        for _ in 0..failures {
            record_failure(&pool, B, WORKER, "503", policy()).await?;
        }
        let rendered = to(RenderState::Rendered);
        let downloaded = to(RenderState::Downloaded);
        assert!(step(&pool, path, render, RenderState::Intent, &submitted).await?);
        assert!(step(&pool, path, render, RenderState::Submitted, &rendered).await?);
        assert_eq!(runway(&pool).await?, (before, failures), "{path:?}");
        assert!(step(&pool, path, render, RenderState::Rendered, &downloaded).await?);
        assert_eq!(runway(&pool).await?, (CircuitState::Closed, 0), "{path:?}");
        // A step not taken (the render already left `rendered`) still says so.
        assert!(!step(&pool, path, render, RenderState::Rendered, &downloaded).await?);
    }

    // A failed try is no success.
    let render = a_render(&pool).await?;
    record_failure(&pool, B, WORKER, "503", policy()).await?;
    let failed = to(RenderState::Failed);
    assert!(step(&pool, Path::Group, render, RenderState::Intent, &failed).await?);
    assert_eq!(runway(&pool).await?, (CircuitState::Closed, 1));
    Ok(())
}

/// `svc`'s circuit and its failures since the last success.
async fn model_circuit(pool: &PgPool, svc: &str) -> anyhow::Result<(String, i32)> {
    Ok(sqlx::query_as(
        "select state::text, consecutive_failures from model_health where service = $1",
    )
    .bind(svc)
    .fetch_one(pool)
    .await?)
}

#[tokio::test]
async fn a_model_calls_answer_closes_its_services_circuit() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let day = NaiveDate::from_ymd_opt(2026, 12, 8).expect("a date");
    open_budget_day(&pool, day, "UTC", usd("10")).await?;
    let (job, lease_epoch) = a_job(&pool).await?;
    let reserved = reserve_budget(
        &pool,
        &Reservation {
            job_id: job,
            lease_epoch,
            worker: WORKER,
            day,
            amount: usd("1"),
            note: "test",
        },
    )
    .await?;
    assert!(matches!(reserved, ReserveOutcome::Reserved { .. }));
    let call = |step: &'static str| ModelIntent {
        job_id: job,
        lease_epoch,
        worker_id: WORKER,
        kind: ModelCallKind::Keyframe,
        step,
        attempt: 1,
        provider: "imagen",
        model: "imagen-4.0-fast-generate-001",
        request_hash: "h",
        seed: None,
        estimate: usd("0.02"),
    };
    let written = |o: ModelIntentOutcome| match o {
        ModelIntentOutcome::Written(c) => Ok(c),
        other => Err(anyhow::anyhow!("the intent was not written: {other:?}")),
    };
    for _ in 0..3 {
        record_model_failure(&pool, "imagen", WORKER, "503", policy()).await?;
    }
    assert_eq!(model_circuit(&pool, "imagen").await?, ("open".into(), 3));

    // An update that closes nothing (a failure recorded) leaves the circuit as it is.
    let first = written(insert_model_call(&pool, &call("keyframe-00")).await?)?;
    let failed = ModelUpdate {
        state: Some(ModelCallState::Failed),
        cost: Some(Money::ZERO),
        ..ModelUpdate::default()
    };
    assert!(update_model_call(&pool, first.id, ModelCallState::Intent, &failed).await?);
    assert_eq!(model_circuit(&pool, "imagen").await?, ("open".into(), 3));

    // The answer closes the service's circuit, and only that service's.
    record_model_failure(&pool, "gemini", WORKER, "503", policy()).await?;
    let second = written(insert_model_call(&pool, &call("keyframe-01")).await?)?;
    let done = ModelUpdate {
        state: Some(ModelCallState::Done),
        cost: Some(usd("0.01")),
        closes_circuit: Some("imagen".into()),
        ..ModelUpdate::default()
    };
    assert!(update_model_call(&pool, second.id, ModelCallState::Intent, &done).await?);
    assert_eq!(model_circuit(&pool, "imagen").await?, ("closed".into(), 0));
    assert_eq!(model_circuit(&pool, "gemini").await?, ("closed".into(), 1));
    // A call that had moved on already is reported so.
    assert!(!update_model_call(&pool, second.id, ModelCallState::Intent, &done).await?);
    Ok(())
}
