//! Leases: a worker claims a job before it runs a stage, renews the claim by heartbeat, and
//! gives it back when it stops early. The lease epoch grows with every claim and fences every
//! write, so a worker that lost its lease cannot write anything.

use std::time::Duration;

use serde_json::Value;
use sqlx::{PgExecutor, PgPool};

use super::job::JobRecord;
use super::millis;
use crate::domain::{JobId, Stage};

/// A job that this worker now holds, or found to be canceled.
#[derive(Debug, sqlx::FromRow)]
pub struct Claim {
    /// The job as it was claimed.
    #[sqlx(flatten)]
    pub job: JobRecord,
    /// The fencing token for every write under this lease.
    pub lease_epoch: i64,
}

/// Takes the lease on `id` if the job is unfinished and no one holds a live lease, and records
/// the start of its current stage in the same statement. Returns `None` when another worker
/// holds it or the job has ended (a duplicate delivery). A job whose cancel was requested is
/// canceled here instead (its claim comes back with status `canceled`), and the stage a dead
/// worker left under way (a job has at most one `running` stage row) is closed as `canceled`
/// in the same statement.
pub async fn claim_job(
    db: impl PgExecutor<'_>,
    id: JobId,
    worker: &str,
    ttl: Duration,
) -> sqlx::Result<Option<Claim>> {
    sqlx::query_as(
        "with c as (
             update job set
                 status = case when cancel_requested then 'canceled'::job_status else 'running'::job_status end,
                 stage = case when cancel_requested then null else stage end,
                 finished_at = case when cancel_requested then now() else null end,
                 locked_by = case when cancel_requested then null else $2 end,
                 locked_until = case when cancel_requested then null else now() + $3 * interval '1 millisecond' end,
                 lease_epoch = lease_epoch + 1,
                 started_at = coalesce(started_at, now()),
                 updated_at = now()
              where id = $1 and status in ('queued', 'running') and stage is not null
                and (locked_until is null or locked_until < now())
             returning *
         ), closed as (
             update job_stage s set status = 'canceled', finished_at = now(), updated_at = now(),
                    duration_ms = (extract(epoch from (now() - s.started_at)) * 1000)::bigint
               from c
              where s.job_id = c.id and c.status = 'canceled' and s.status = 'running'
         ), s as (
             insert into job_stage (job_id, stage, worker)
             select id, stage, $2 from c where status = 'running'
             on conflict (job_id, stage) do update
                set attempts = job_stage.attempts + 1, status = 'running', worker = excluded.worker, updated_at = now()
         )
         select id, status, stage, prompt, duration_s, quality_min, priority, backend_choice, speed_priority,
                image_url, metadata, backend, estimated_cost_micros, cost_micros, quality_score, result_uri, error,
                cancel_requested, reap_count, budget_day, budget_held_micros, fail_over_budget, waiting_reason,
                waiting_need_micros, waiting_since, waited_ms, created_at, started_at, finished_at, lease_epoch
           from c",
    )
    .bind(id)
    .bind(worker)
    .bind(millis(ttl))
    .fetch_optional(db)
    .await
}

/// The outputs of the stages a job has finished, for a worker that resumes it.
pub async fn load_outputs(db: impl PgExecutor<'_>, id: JobId) -> sqlx::Result<Vec<(Stage, Value)>> {
    sqlx::query_as(
        "select stage, output from job_stage where job_id = $1 and status = 'succeeded' and output is not null
          order by stage",
    )
    .bind(id)
    .fetch_all(db)
    .await
}

/// Extends the leases this worker holds. Returns, for each lease still held, whether a cancel
/// was requested; a job missing from the answer has been lost (reaped or taken over).
pub async fn renew_leases(
    db: impl PgExecutor<'_>,
    worker: &str,
    leases: &[(JobId, i64)],
    ttl: Duration,
) -> sqlx::Result<Vec<(JobId, bool)>> {
    let ids: Vec<JobId> = leases.iter().map(|l| l.0).collect();
    let epochs: Vec<i64> = leases.iter().map(|l| l.1).collect();
    sqlx::query_as(
        "update job j set locked_until = now() + $3 * interval '1 millisecond', updated_at = now()
           from unnest($1::uuid[], $2::bigint[]) as l(id, epoch)
          where j.id = l.id and j.lease_epoch = l.epoch and j.locked_by = $4 and j.status = 'running'
         returning j.id, j.cancel_requested",
    )
    .bind(&ids)
    .bind(&epochs)
    .bind(millis(ttl))
    .bind(worker)
    .fetch_all(db)
    .await
}

/// Gives a lease back early (shutdown past its grace) and dispatches the job again at once, so
/// no one waits for the lease to expire.
pub async fn release_lease(
    pool: &PgPool,
    id: JobId,
    epoch: i64,
    worker: &str,
) -> sqlx::Result<bool> {
    let released: Option<(JobId,)> = sqlx::query_as(
        "with r as (
             update job set locked_by = null, locked_until = null, updated_at = now()
              where id = $1 and lease_epoch = $2 and locked_by = $3 and status = 'running'
             returning id, priority, reap_count
         ), o as (
             insert into outbox (job_id, attempt, priority) select id, reap_count + 1, priority from r
         )
         select r.id from r cross join lateral (select pg_notify('aiprod_outbox', '')) n",
    )
    .bind(id)
    .bind(epoch)
    .bind(worker)
    .fetch_optional(pool)
    .await?;
    Ok(released.is_some())
}
