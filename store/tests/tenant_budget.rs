//! Each tenant's daily budget inside the fleet's, over a real PostgreSQL: concurrent
//! reservations never take either day past its limit, whether they come from several tenants
//! or from one; tries, settlements and releases move the tenant's day with the fleet's; the
//! books of both balance; and money moves lock tenant days before the fleet's day.

#![allow(missing_docs)]

use std::time::Duration;

use aiprod_domain::{BackendName, JobId, JobSpec, Money, RenderState, Stage, TenantId};
use aiprod_store::{
    Intent, IntentOutcome, RenderUpdate, Reservation, ReserveOutcome, Shortfall, audit_budget_day,
    audit_tenant_budget_day, claim_job, fail_job, get_budget_day, get_tenant_budget_day,
    insert_intent, insert_job, job_purse, open_budget_day, reserve_budget, set_tenant_budget_limit,
    update_render,
};
use aiprod_testkit::{TestDb, skip_to_render};
use chrono::NaiveDate;
use serde_json::json;
use sqlx::PgPool;

const WORKER: &str = "tenant-budget-test";

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 4).expect("a date")
}

fn usd(s: &str) -> Money {
    s.parse().expect("money")
}

/// A tenant with this daily budget (`None`: no cap of its own).
async fn tenant(pool: &PgPool, name: &str, budget: Option<&str>) -> anyhow::Result<TenantId> {
    let id = TenantId::new();
    // Room for every job of a test in flight.
    sqlx::query(
        "insert into tenant (id, name, daily_budget_micros, max_in_flight) values ($1, $2, $3, 1000)",
    )
        .bind(id)
        .bind(name)
        .bind(budget.map(|b| usd(b).micros()))
        .execute(pool)
        .await?;
    Ok(id)
}

/// A job of `tenant`, accepted and leased by `WORKER`; its lease epoch.
async fn leased_job(pool: &PgPool, tenant: TenantId) -> anyhow::Result<(JobId, i64)> {
    let spec = JobSpec::parse(&json!({"prompt": "a fox", "quality_min": 0}))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let id = JobId::new();
    insert_job(pool, tenant, id, &spec, None).await?;
    let claim = claim_job(pool, id, WORKER, Duration::from_secs(600))
        .await?
        .expect("a fresh job is free");
    Ok((id, claim.lease_epoch))
}

async fn reserve(pool: &PgPool, (id, epoch): (JobId, i64), amount: Money) -> ReserveOutcome {
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
    .expect("the reservation runs")
}

/// Reserves `amount` for every job at once; the jobs granted, and every refusal's day.
async fn reserve_all(
    pool: &PgPool,
    jobs: &[(TenantId, (JobId, i64))],
    amount: Money,
) -> (Vec<(TenantId, JobId)>, Vec<Shortfall>) {
    let outcomes = futures::future::join_all(jobs.iter().map(|(_, job)| {
        let pool = pool.clone();
        async move { reserve(&pool, *job, amount).await }
    }))
    .await;
    let (mut granted, mut refused) = (Vec::new(), Vec::new());
    for (o, (t, (id, _))) in outcomes.into_iter().zip(jobs) {
        match o {
            ReserveOutcome::Reserved { day: d } => {
                assert_eq!(d, day());
                granted.push((*t, *id));
            }
            ReserveOutcome::Short { remaining, of } => {
                assert!(remaining < amount, "refused with {remaining} left");
                refused.push(of);
            }
            ReserveOutcome::LeaseLost => panic!("every lease is held"),
        }
    }
    (granted, refused)
}

async fn assert_books_balance(pool: &PgPool, tenants: &[TenantId]) -> anyhow::Result<()> {
    let fleet = audit_budget_day(pool, day()).await?.expect("audited");
    assert!(fleet.balanced, "{fleet:?}");
    for t in tenants {
        let a = audit_tenant_budget_day(pool, *t, day())
            .await?
            .expect("the tenant's day is open");
        assert!(a.balanced, "{a:?}");
    }
    Ok(())
}

#[tokio::test]
async fn two_hundred_concurrent_reservations_across_two_tenants_never_pass_either_day()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    // $0.26 a job: the fleet's $8 covers 30, tenant a's $4 covers 15, tenant b's $6 covers 23.
    assert!(open_budget_day(&pool, day(), "UTC", usd("8")).await?);
    let a = tenant(&pool, "a", Some("4")).await?;
    let b = tenant(&pool, "b", Some("6")).await?;
    let mut jobs = Vec::new();
    for i in 0..200 {
        let t = if i % 2 == 0 { a } else { b };
        jobs.push((t, leased_job(&pool, t).await?));
    }
    let shot = usd("0.26");
    let (granted, refused) = reserve_all(&pool, &jobs, shot).await;
    let of_a = granted.iter().filter(|(t, _)| *t == a).count() as i64;
    let of_b = granted.len() as i64 - of_a;
    // The tenants could take 38 between them, the fleet only 30: the fleet's day is full
    // whatever the interleaving, and neither tenant passed its own.
    assert_eq!(of_a + of_b, 30);
    assert!(of_a <= 15 && of_b <= 23, "a {of_a}, b {of_b}");
    assert!(refused.contains(&Shortfall::Fleet));
    let fleet = get_budget_day(&pool, day()).await?.expect("open");
    assert_eq!(fleet.reserved, shot * 30);
    assert!(fleet.committed() <= fleet.limit);
    for (t, n) in [(a, of_a), (b, of_b)] {
        let d = get_tenant_budget_day(&pool, t, day())
            .await?
            .expect("opened by the first reservation");
        assert_eq!(d.reserved, shot * n);
        assert!(d.reserved + d.spent <= d.limit, "{d:?}");
    }
    assert_books_balance(&pool, &[a, b]).await?;
    Ok(())
}

#[tokio::test]
async fn two_hundred_concurrent_reservations_of_one_tenant_stop_at_its_day_and_the_books_balance()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    open_budget_day(&pool, day(), "UTC", usd("100")).await?;
    let a = tenant(&pool, "a", Some("10")).await?;
    let mut jobs = Vec::new();
    for _ in 0..200 {
        jobs.push((a, leased_job(&pool, a).await?));
    }
    // A job of a tenant without a budget of its own is booked on the fleet's day only.
    let free = leased_job(&pool, TenantId::DEFAULT).await?;
    assert!(matches!(
        reserve(&pool, free, usd("1")).await,
        ReserveOutcome::Reserved { .. }
    ));
    let shot = usd("0.26");
    let (granted, refused) = reserve_all(&pool, &jobs, shot).await;
    // $10 / $0.26 = 38.46…: exactly 38 fit the tenant's day, with the fleet's far from full.
    assert_eq!(granted.len(), 38);
    assert!(refused.iter().all(|of| *of == Shortfall::Tenant));
    let d = get_tenant_budget_day(&pool, a, day()).await?.expect("open");
    assert_eq!((d.reserved, d.spent), (usd("9.88"), Money::ZERO));
    let fleet = get_budget_day(&pool, day()).await?.expect("open");
    assert_eq!(fleet.reserved, usd("10.88"));
    assert_books_balance(&pool, &[a]).await?;

    // A third of the jobs render one try charged at its estimate, a third one try that fails
    // uncharged, and a third end before rendering: both days see the same movements.
    let epochs: std::collections::HashMap<JobId, i64> =
        jobs.iter().map(|(_, (id, e))| (*id, *e)).collect();
    for (i, (_, id)) in granted.iter().enumerate() {
        let epoch = epochs[id];
        skip_to_render(&pool, id.as_uuid()).await?;
        if i % 3 != 2 {
            let IntentOutcome::Written(task) = insert_intent(
                &pool,
                &Intent {
                    job_id: *id,
                    lease_epoch: epoch,
                    worker_id: WORKER,
                    shot: 0,
                    attempt: 1,
                    backend: BackendName::Replicate,
                    duration_s: 5,
                    estimate: shot,
                    baseline: None,
                    seed: None,
                    spec_key: None,
                },
            )
            .await?
            else {
                panic!("the job's reservation covers its try");
            };
            let cost = if i % 3 == 0 { shot } else { Money::ZERO };
            let update = RenderUpdate {
                state: Some(RenderState::Failed),
                cost: Some(cost),
                ..RenderUpdate::default()
            };
            assert!(update_render(&pool, task.id, RenderState::Intent, &update).await?);
        }
        assert!(fail_job(&pool, *id, epoch, WORKER, Stage::Render, "done", 0).await?);
    }
    let d = get_tenant_budget_day(&pool, a, day()).await?.expect("open");
    assert_eq!(d.spent, usd("3.38"), "13 tries at $0.26");
    assert_eq!(d.reserved, Money::ZERO, "every job ended and gave back");
    let fleet = get_budget_day(&pool, day()).await?.expect("open");
    assert_eq!((fleet.spent, fleet.reserved), (usd("3.38"), usd("1")));
    assert_books_balance(&pool, &[a]).await?;
    let entries: i64 = sqlx::query_scalar(
        "select count(*) from budget_entry where tenant_id is not null and job_id = $1",
    )
    .bind(free.0)
    .fetch_one(&pool)
    .await?;
    assert_eq!(
        entries, 0,
        "the uncapped tenant's job never touched a tenant's day"
    );
    Ok(())
}

#[tokio::test]
async fn a_try_beyond_the_reservation_must_fit_the_tenants_day_and_an_admin_can_move_it()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    open_budget_day(&pool, day(), "UTC", usd("100")).await?;
    let a = tenant(&pool, "a", Some("3")).await?;
    let job = leased_job(&pool, a).await?;
    assert_eq!(
        reserve(&pool, job, usd("2.60")).await,
        ReserveOutcome::Reserved { day: day() }
    );
    skip_to_render(&pool, job.0.as_uuid()).await?;
    let intent = |attempt: i32, estimate: &str| Intent {
        job_id: job.0,
        lease_epoch: job.1,
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
    assert!(matches!(
        insert_intent(&pool, &intent(1, "2.60")).await?,
        IntentOutcome::Written(_)
    ));
    // The fleet has $97.40 left, the tenant $0.40: the tenant's day refuses.
    assert!(matches!(
        insert_intent(&pool, &intent(2, "2.60")).await?,
        IntentOutcome::OverBudget
    ));
    assert!(matches!(
        insert_intent(&pool, &intent(2, "0.40")).await?,
        IntentOutcome::Written(_)
    ));
    // Raised for today by an admin, the tenant's day covers the third try.
    let d = set_tenant_budget_limit(&pool, a, day(), usd("6"), "admin")
        .await?
        .expect("the fleet's day is open");
    assert_eq!((d.limit, d.reserved), (usd("6"), usd("3")));
    assert!(matches!(
        insert_intent(&pool, &intent(3, "2.60")).await?,
        IntentOutcome::Written(_)
    ));
    let other = leased_job(&pool, a).await?;
    assert_eq!(
        reserve(&pool, other, usd("1")).await,
        ReserveOutcome::Short {
            remaining: usd("0.40"),
            of: Shortfall::Tenant
        }
    );
    assert_books_balance(&pool, &[a]).await?;
    Ok(())
}

/// Two reserved jobs of each of two tenants.
#[tokio::test]
async fn a_jobs_purse_is_the_fleets_day_its_tenants_side_and_its_rights_in_one_read()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let capped = tenant(&pool, "capped", Some("4")).await?;
    let free = tenant(&pool, "free", None).await?;
    sqlx::query(
        "update tenant set allowed_backends = '{runway}', max_job_cost_micros = 900000 where id = $1",
    )
    .bind(capped)
    .execute(&pool)
    .await?;
    let job = leased_job(&pool, capped).await?;
    let other = leased_job(&pool, free).await?;
    // A day not opened has no purse: routing must not guess the fleet's money.
    assert_eq!(job_purse(&pool, job.0, day(), None).await?, None);
    assert!(open_budget_day(&pool, day(), "UTC", usd("10")).await?);

    // Before any reservation the tenant's day is not open: its whole budget is left.
    let p = job_purse(&pool, job.0, day(), None).await?.expect("open");
    assert_eq!((p.fleet_limit, p.fleet_left), (usd("10"), usd("10")));
    assert_eq!(p.tenant, Some((usd("4"), usd("4"))));
    assert_eq!(
        p.entitlements.allowed_backends,
        Some(vec![BackendName::Runway])
    );
    assert_eq!(p.entitlements.max_job_cost, Some(usd("0.9")));

    assert!(matches!(
        reserve(&pool, job, usd("1.5")).await,
        ReserveOutcome::Reserved { .. }
    ));
    let p = job_purse(&pool, job.0, day(), None).await?.expect("open");
    assert_eq!(p.fleet_left, usd("8.5"));
    assert_eq!(p.tenant, Some((usd("4"), usd("2.5"))));

    // A tenant without a daily budget: only the fleet's day bounds it, and it may use anything.
    let p = job_purse(&pool, other.0, day(), None).await?.expect("open");
    assert_eq!(p.fleet_left, usd("8.5"));
    assert_eq!(p.tenant, None);
    assert_eq!(p.entitlements.allowed_backends, None);
    assert_eq!(p.entitlements.max_job_cost, None);
    Ok(())
}

async fn jobs_of_two_tenants(pool: &PgPool) -> anyhow::Result<(TenantId, TenantId, Vec<JobId>)> {
    open_budget_day(pool, day(), "UTC", usd("100")).await?;
    let a = tenant(pool, "a", Some("10")).await?;
    let b = tenant(pool, "b", Some("10")).await?;
    let mut ids = Vec::new();
    for t in [a, b, a, b] {
        let job = leased_job(pool, t).await?;
        assert!(matches!(
            reserve(pool, job, usd("1")).await,
            ReserveOutcome::Reserved { .. }
        ));
        ids.push(job.0);
    }
    Ok((a, b, ids))
}

#[tokio::test]
async fn one_statement_that_ends_jobs_of_two_tenants_gives_back_to_both_days() -> anyhow::Result<()>
{
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let (a, b, ids) = jobs_of_two_tenants(&pool).await?;
    let ended = sqlx::query("update job set status = 'failed', error = 'test' where id = any($1)")
        .bind(&ids)
        .execute(&pool)
        .await?;
    assert_eq!(ended.rows_affected(), 4);
    for t in [a, b] {
        let d = get_tenant_budget_day(&pool, t, day()).await?.expect("open");
        assert_eq!(d.reserved, Money::ZERO);
    }
    let fleet = get_budget_day(&pool, day()).await?.expect("open");
    assert_eq!(fleet.reserved, Money::ZERO);
    let releases: i64 =
        sqlx::query_scalar("select count(*) from budget_entry where kind = 'release'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(releases, 4);
    assert_books_balance(&pool, &[a, b]).await?;
    Ok(())
}

/// Whether `sql` (one row) is already locked by another transaction.
async fn locked(pool: &PgPool, sql: &str) -> anyhow::Result<bool> {
    let probe = sqlx::query(sql).execute(pool).await;
    match probe {
        Ok(_) => Ok(false),
        Err(e) => {
            let code = e
                .as_database_error()
                .and_then(|d| d.code().map(|c| c.into_owned()));
            anyhow::ensure!(code.as_deref() == Some("55P03"), "probe failed: {e}");
            Ok(true)
        }
    }
}

/// Until a statement of this database waits for a lock; a generous bound, never a timing claim.
async fn wait_for_a_waiter(pool: &PgPool) -> anyhow::Result<()> {
    for _ in 0..500 {
        let waiting: bool = sqlx::query_scalar(
            "select exists (select 1 from pg_stat_activity
                             where datname = current_database() and wait_event_type = 'Lock')",
        )
        .fetch_one(pool)
        .await?;
        if waiting {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("the statement never waited for the fleet's day")
}

#[tokio::test]
async fn money_movements_lock_the_tenants_days_before_the_fleets() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let (a, b, ids) = jobs_of_two_tenants(&pool).await?;
    let tenant_day = |t: TenantId| {
        format!(
            "select 1 from budget_stripe where tenant_id = '{t}' and day = '{}' for no key update nowait",
            day()
        )
    };
    // A statement ending jobs of both tenants, while the fleet's day (every stripe of it) is
    // held elsewhere: it waits there with both tenants' stripes already locked.
    let mut holder = pool.begin().await?;
    sqlx::query("select 1 from budget_stripe where day = $1 and tenant_id is null for update")
        .bind(day())
        .execute(&mut *holder)
        .await?;
    let ending = {
        let pool = pool.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            sqlx::query("update job set status = 'failed', error = 'test' where id = any($1)")
                .bind(&ids)
                .execute(&pool)
                .await
        })
    };
    wait_for_a_waiter(&pool).await?;
    assert!(locked(&pool, &tenant_day(a)).await?, "tenant a's day");
    assert!(locked(&pool, &tenant_day(b)).await?, "tenant b's day");
    holder.commit().await?;
    assert_eq!(ending.await??.rows_affected(), 4);

    // A reservation: the job, then its tenant's stripe, then the fleet's.
    let job = leased_job(&pool, a).await?;
    let mut holder = pool.begin().await?;
    sqlx::query("select 1 from budget_stripe where day = $1 and tenant_id is null for update")
        .bind(day())
        .execute(&mut *holder)
        .await?;
    let reserving = {
        let pool = pool.clone();
        tokio::spawn(async move { reserve(&pool, job, usd("1")).await })
    };
    wait_for_a_waiter(&pool).await?;
    assert!(locked(&pool, &tenant_day(a)).await?, "the tenant's day");
    holder.commit().await?;
    assert_eq!(reserving.await?, ReserveOutcome::Reserved { day: day() });
    assert_books_balance(&pool, &[a, b]).await?;
    Ok(())
}
