//! Jobs waiting for money: `financial` parks a job the budget does not cover (its own day or
//! its tenant's), and the scheduler wakes the ones the days can cover again.

use chrono::NaiveDate;
use sqlx::PgExecutor;

use aiprod_domain::{JobId, Money};

/// Parks a job at `financial` until money is available: status `waiting_budget`, no lease,
/// the reason and the least it needs recorded. A job whose cancel is pending is canceled
/// instead. Returns false when the lease was lost.
#[tracing::instrument(skip_all, fields(job_id = %job_id, stage = "financial"))]
pub async fn park_for_budget(
    db: impl PgExecutor<'_>,
    job_id: JobId,
    lease_epoch: i64,
    worker: &str,
    reason: &str,
    need: Money,
) -> sqlx::Result<bool> {
    let row = sqlx::query_scalar!(
        r#"with p as (
               update job set
                   status = next_job_status(status, 'park', cancel_requested),
                   waiting_reason = $4, waiting_need_micros = $5, updated_at = now()
                where id = $1 and lease_epoch = $2 and locked_by = $3 and stage = 'financial'
                  and next_job_status(status, 'park', cancel_requested) is not null
               returning id, status
           ), s as (
               update job_stage set
                   status = case when p.status = 'canceled' then 'canceled'::stage_status
                                 else 'waiting'::stage_status end,
                   error = $4, updated_at = now()
                 from p
                where job_stage.job_id = p.id and job_stage.stage = 'financial'
           )
           select id as "id!: JobId" from p"#,
        job_id as JobId,
        lease_epoch,
        worker,
        reason,
        need.micros(),
    )
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
}

/// Re-dispatches jobs waiting for money that `day` can now cover, oldest first: each job's
/// least need must fit what the fleet's day has left and what its tenant's day has left (a
/// tenant with a daily budget whose day is not open yet has all of it), and the needs, summed
/// in order, must fit both: per tenant within the tenant's day, then all of them within the
/// fleet's. A job that needs more than is left does not hold back cheaper ones behind it. At
/// most `limit` jobs per call. The reservation stays the exact check: a job woken on a figure
/// that moved meanwhile parks again.
pub async fn wake_budget_waiters(
    db: impl PgExecutor<'_>,
    day: NaiveDate,
    limit: i64,
) -> sqlx::Result<Vec<JobId>> {
    sqlx::query_scalar!(
        r#"with b as (
               select greatest(limit_micros - reserved_micros - spent_micros, 0) as left_micros
                 from budget_day where day = $1
           ), c as (
               select j.id, j.tenant_id, coalesce(j.waiting_need_micros, 0) as need,
                      case when tb.tenant_id is not null
                           then greatest(tb.limit_micros - tb.reserved_micros - tb.spent_micros, 0)
                           else t.daily_budget_micros end as tenant_left
                 from job j
                 join tenant t on t.id = j.tenant_id
                 left join tenant_budget_day tb on tb.tenant_id = j.tenant_id and tb.day = $1
                where j.status = 'waiting_budget'
           ), fits as (
               select c.*, sum(c.need) over (partition by c.tenant_id order by c.id) as tenant_cum
                 from c, b
                where c.need <= b.left_micros and (c.tenant_left is null or c.need <= c.tenant_left)
           ), w as (
               select id, sum(need) over (order by id) as cum
                 from fits where tenant_left is null or tenant_cum <= tenant_left
           ), pick as (
               select w.id from w, b where w.cum <= b.left_micros order by w.id limit $2
           ), r as (
               update job j set status = next_job_status(j.status, 'wake', j.cancel_requested),
                      updated_at = now()
                 from pick
                where j.id = pick.id and next_job_status(j.status, 'wake', j.cancel_requested) is not null
               returning j.id, j.priority, j.reap_count
           )
           select dispatch_job(r.id, r.priority, r.reap_count) as "id!: JobId" from r"#,
        day,
        limit,
    )
    .fetch_all(db)
    .await
}

/// How many jobs wait for money.
pub async fn count_budget_waiters(db: impl PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar!(r#"select count(*) as "count!" from job where status = 'waiting_budget'"#)
        .fetch_one(db)
        .await
}
