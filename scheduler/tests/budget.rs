//! The budget day roll-over over a real PostgreSQL, at times set by hand (the scheduler's steps
//! take the time as an argument): concurrent
//! schedulers open one day, an admin's change survives a restart, and jobs waiting for money
//! resume when the next day opens or the limit is raised.

#![allow(missing_docs)]

use std::time::Duration;

use aiprod_domain::BudgetCalendar;
use aiprod_domain::Money;
use aiprod_domain::{JobId, JobSpec, TenantId};
use aiprod_scheduler::roll_budget;
use aiprod_store::{
    claim_job, get_budget_day, insert_job, park_for_budget, set_budget_limit, wake_budget_waiters,
};
use aiprod_testkit::TestDb;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;

fn paris(limit: &str) -> BudgetCalendar {
    BudgetCalendar {
        zone: "Europe/Paris".parse().expect("zone"),
        daily_limit: limit.parse().expect("money"),
    }
}

async fn waiting_job(pool: &PgPool, need: &str) -> anyhow::Result<JobId> {
    let spec = JobSpec::parse(&json!({"prompt": "a fox"})).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let id = JobId::new();
    insert_job(pool, TenantId::DEFAULT, id, &spec, None).await?;
    sqlx::query("delete from outbox").execute(pool).await?;
    let claim = claim_job(pool, id, "w", Duration::from_secs(60))
        .await?
        .expect("free");
    // Park it as `financial` does.
    sqlx::query("update job set stage = 'financial' where id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    assert!(park_for_budget(pool, id, claim.lease_epoch, "w", "no money", need.parse()?).await?);
    Ok(id)
}

async fn status(pool: &PgPool, id: JobId) -> anyhow::Result<String> {
    Ok(
        sqlx::query_scalar("select status::text from job where id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?,
    )
}

#[tokio::test]
async fn two_schedulers_at_midnight_open_one_day_and_keep_an_admins_limit() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let (a, b) = (db.pool().await?, db.pool().await?);
    let cal = paris("100");
    // 23:00 UTC on 23 November is midnight in Paris: the 24th opens.
    let mut now: DateTime<Utc> = "2026-11-23T22:59:59Z".parse()?;
    roll_budget(&a, &cal, now).await?;
    now += chrono::Duration::seconds(2);
    let ticks = futures::future::join_all((0..20).map(|i| {
        let pool = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { roll_budget(&pool, &cal, now).await }
    }))
    .await;
    let mut opened = 0;
    for t in ticks {
        let t = t?;
        assert_eq!(t.day.map(|d| d.to_string()).as_deref(), Some("2026-11-24"));
        opened += usize::from(t.opened);
    }
    assert_eq!(opened, 1, "exactly one tick opened the day");
    let days: Vec<(String, String, i64)> =
        sqlx::query_as("select day::text, time_zone, limit_micros from budget_day order by day")
            .fetch_all(&a)
            .await?;
    assert_eq!(
        days,
        [
            ("2026-11-23".into(), "Europe/Paris".into(), 100_000_000),
            ("2026-11-24".into(), "Europe/Paris".into(), 100_000_000)
        ]
    );
    // An admin raises the new day's limit; a restarted scheduler and a missed tick later, it
    // still holds.
    let day = cal.day_at(now);
    set_budget_limit(&a, day, "250".parse()?, "admin").await?;
    now += chrono::Duration::hours(3);
    let t = roll_budget(&b, &cal, now).await?;
    assert!(!t.opened);
    let d = get_budget_day(&a, day).await?.expect("open");
    assert_eq!(d.limit, Money::from_usd(250));
    let opens: i64 = sqlx::query_scalar(
        "select count(*) from budget_entry where day = $1 and kind = 'limit' and note = 'day opened'",
    )
    .bind(day)
    .fetch_one(&a)
    .await?;
    assert_eq!(opens, 1);
    Ok(())
}

#[tokio::test]
async fn a_job_waiting_for_budget_resumes_when_the_next_day_opens() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let cal = paris("0.30");
    let mut now: DateTime<Utc> = "2026-11-24T10:00:00Z".parse()?;
    roll_budget(&pool, &cal, now).await?;
    // Today is spent: nothing is left for a job that needs $0.26.
    sqlx::query("update budget_day set spent_micros = 300000")
        .execute(&pool)
        .await?;
    let cheap = waiting_job(&pool, "0.26").await?;
    let dear = waiting_job(&pool, "2.60").await?;
    // A waiting job holds no lease: a cancel ends it at once, and it is never woken.
    let dropped = waiting_job(&pool, "0.01").await?;
    assert_eq!(
        aiprod_store::request_cancel(&pool, TenantId::DEFAULT, dropped).await?,
        aiprod_store::CancelOutcome::Canceled
    );
    assert_eq!(status(&pool, dropped).await?, "canceled");
    for _ in 0..3 {
        now += chrono::Duration::hours(1);
        let t = roll_budget(&pool, &cal, now).await?;
        assert!(t.woken.is_empty() && !t.opened);
    }
    assert_eq!(status(&pool, cheap).await?, "waiting_budget");
    // Midnight in Paris: the new day covers the cheap job, not the one that needs $2.60.
    now = "2026-11-24T23:00:00Z".parse()?;
    let t = roll_budget(&pool, &cal, now).await?;
    assert!(t.opened);
    assert_eq!(t.woken, [cheap]);
    assert_eq!(status(&pool, cheap).await?, "running");
    assert_eq!(status(&pool, dear).await?, "waiting_budget");
    let dispatched: Vec<JobId> = sqlx::query_scalar("select job_id from outbox")
        .fetch_all(&pool)
        .await?;
    assert_eq!(dispatched, [cheap]);
    let waited: i64 = sqlx::query_scalar("select waited_ms from job where id = $1")
        .bind(cheap)
        .fetch_one(&pool)
        .await?;
    assert!(waited >= 0);
    // Raising today's limit wakes the other one at once.
    let day = cal.day_at(now);
    set_budget_limit(&pool, day, "5".parse()?, "admin").await?;
    assert_eq!(wake_budget_waiters(&pool, day, 100).await?, [dear]);
    Ok(())
}
