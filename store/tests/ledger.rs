//! The budget ledger over a real PostgreSQL: reservations hold under concurrency, render tries
//! settle into spent, a job that ends gives back what it did not use, and the books balance.

#![allow(missing_docs)]

use std::time::Duration;

use aiprod_domain::{BackendName, JobId, JobSpec, Money, RenderState, Stage, TenantId};
use aiprod_store::{
    Intent, IntentOutcome, RenderUpdate, Reservation, ReserveOutcome, Shortfall, audit_budget_day,
    claim_job, fail_job, get_budget_day, insert_intent, insert_job, open_budget_day,
    reserve_budget, update_render,
};
use aiprod_testkit::{TestDb, skip_to_render};
use chrono::NaiveDate;
use serde_json::json;
use sqlx::PgPool;

const WORKER: &str = "budget-test";

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 23).expect("a date")
}

fn usd(s: &str) -> Money {
    s.parse().expect("money")
}

/// A job accepted and leased by `WORKER`; its lease epoch.
async fn leased_job(pool: &PgPool) -> anyhow::Result<(JobId, i64)> {
    let spec = JobSpec::parse(&json!({"prompt": "a fox", "quality_min": 0}))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let id = JobId::new();
    insert_job(pool, TenantId::DEFAULT, id, &spec, None).await?;
    let claim = claim_job(pool, id, WORKER, Duration::from_secs(600))
        .await?
        .expect("a fresh job is free");
    Ok((id, claim.lease_epoch))
}

async fn reserve(
    pool: &PgPool,
    id: JobId,
    epoch: i64,
    amount: Money,
) -> sqlx::Result<ReserveOutcome> {
    reserve_budget(
        pool,
        &Reservation {
            job_id: id,
            lease_epoch: epoch,
            worker: WORKER,
            day: day(),
            amount,
            note: "test",
        },
    )
    .await
}

#[tokio::test]
async fn two_hundred_concurrent_reservations_never_pass_the_limit_and_the_ledger_balances()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    assert!(open_budget_day(&pool, day(), "UTC", usd("10")).await?);
    let mut jobs = Vec::new();
    for _ in 0..200 {
        jobs.push(leased_job(&pool).await?);
    }
    let shot = usd("0.26");
    let outcomes = futures::future::join_all(jobs.iter().map(|(id, epoch)| {
        let pool = pool.clone();
        async move { reserve(&pool, *id, *epoch, shot).await }
    }))
    .await;
    let mut granted = Vec::new();
    for (o, job) in outcomes.into_iter().zip(&jobs) {
        match o? {
            ReserveOutcome::Reserved { day: d } => {
                assert_eq!(d, day());
                granted.push(*job);
            }
            ReserveOutcome::Short { remaining, of } => {
                assert_eq!(of, Shortfall::Fleet);
                assert!(remaining < shot, "{remaining}")
            }
            ReserveOutcome::LeaseLost => panic!("every lease is held"),
        }
    }
    // $10 / $0.26 = 38.46…: exactly 38 fit, whatever the interleaving.
    assert_eq!(granted.len(), 38);
    let d = get_budget_day(&pool, day()).await?.expect("open");
    assert_eq!(d.reserved, usd("9.88"));
    assert_eq!(d.spent, Money::ZERO);
    assert!(d.committed() <= d.limit);
    let audit = audit_budget_day(&pool, day()).await?.expect("audited");
    assert!(audit.balanced, "{audit:?}");
    assert_eq!(audit.ledger_reserved_micros, 9_880_000);

    // A third of the jobs render one try charged at its estimate, a third one try that fails
    // uncharged, and a third end before rendering: they give their reservation back.
    for (i, (id, epoch)) in granted.iter().enumerate() {
        if i % 3 == 2 {
            assert!(fail_job(&pool, *id, *epoch, WORKER, Stage::Sanitize, "gave up", 0).await?);
            continue;
        }
        skip_to_render(&pool, id.as_uuid()).await?;
        let written = insert_intent(
            &pool,
            &Intent {
                job_id: *id,
                lease_epoch: *epoch,
                worker_id: WORKER,
                shot: 0,
                attempt: 1,
                backend: BackendName::Replicate,
                duration_s: 5,
                estimate: shot,
                baseline: Some(usd("30")),
                seed: None,
                spec_key: None,
            },
        )
        .await?;
        let IntentOutcome::Written(task) = written else {
            panic!("the job's reservation covers its try: {written:?}");
        };
        let cost = if i % 3 == 0 { shot } else { Money::ZERO };
        assert!(
            update_render(
                &pool,
                task.id,
                RenderState::Intent,
                &RenderUpdate {
                    state: Some(RenderState::Failed),
                    cost: Some(cost),
                    ..RenderUpdate::default()
                },
            )
            .await?
        );
        assert!(fail_job(&pool, *id, *epoch, WORKER, Stage::Render, "done", 0).await?);
    }
    let d = get_budget_day(&pool, day()).await?.expect("open");
    assert_eq!(d.spent, usd("3.38"), "13 tries at $0.26");
    assert_eq!(
        d.reserved,
        Money::ZERO,
        "every job ended and gave its money back"
    );
    let audit = audit_budget_day(&pool, day()).await?.expect("audited");
    assert!(audit.balanced, "{audit:?}");
    assert_eq!(audit.render_cost_micros, 3_380_000);
    let released: i64 = sqlx::query_scalar(
        "select -sum(reserved_delta_micros)::bigint from budget_entry where kind = 'release'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(
        released,
        12 * 260_000,
        "the 12 jobs that never rendered gave $0.26 back each"
    );
    Ok(())
}

#[tokio::test]
async fn a_reservation_is_idempotent_and_a_try_beyond_it_reserves_only_within_the_limit()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    open_budget_day(&pool, day(), "UTC", usd("3")).await?;
    let (id, epoch) = leased_job(&pool).await?;
    // A financial stage that runs again after a crash reserves nothing twice.
    for _ in 0..3 {
        assert_eq!(
            reserve(&pool, id, epoch, usd("2.60")).await?,
            ReserveOutcome::Reserved { day: day() }
        );
    }
    let entries: i64 = sqlx::query_scalar(
        "select count(*) from budget_entry where job_id = $1 and kind = 'reserve'",
    )
    .bind(id)
    .fetch_one(&pool)
    .await?;
    assert_eq!(entries, 1);
    // A stale lease reserves nothing.
    assert_eq!(
        reserve(&pool, id, epoch - 1, usd("2.90")).await?,
        ReserveOutcome::LeaseLost
    );
    skip_to_render(&pool, id.as_uuid()).await?;
    let intent = |attempt: i32, estimate: &str| Intent {
        job_id: id,
        lease_epoch: epoch,
        worker_id: WORKER,
        shot: 0,
        attempt,
        backend: BackendName::Veo3,
        duration_s: 6,
        estimate: usd(estimate),
        baseline: None,
        seed: None,
        spec_key: None,
    };
    // The first try takes the job's $2.60; a second one needs $2.60 more, and only $0.40 is
    // left: no intent is written.
    assert!(matches!(
        insert_intent(&pool, &intent(1, "2.60")).await?,
        IntentOutcome::Written(_)
    ));
    assert!(matches!(
        insert_intent(&pool, &intent(2, "2.60")).await?,
        IntentOutcome::OverBudget
    ));
    assert!(matches!(
        insert_intent(&pool, &intent(2, "0.40")).await?,
        IntentOutcome::Written(_)
    ));
    let d = get_budget_day(&pool, day()).await?.expect("open");
    assert_eq!((d.reserved, d.spent), (usd("3"), Money::ZERO));
    let tries: i64 = sqlx::query_scalar("select count(*) from render_task where job_id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await?;
    assert_eq!(tries, 2);
    assert!(
        audit_budget_day(&pool, day())
            .await?
            .expect("audited")
            .balanced
    );
    Ok(())
}
