//! Dispatch: the outbox relay, the lease reaper and the sweep of stranded queued jobs, all run
//! by the scheduler's leader.

use std::time::Duration;

use sqlx::{PgExecutor, PgPool};

use crate::domain::{JobId, Priority};
use crate::queue::{Dispatch, Queue};

/// Relays up to `batch` outbox rows to the queue and deletes them. At-least-once: a crash after
/// the publish and before the delete publishes them again, which the lease makes harmless.
/// Returns how many were relayed. Only one relay may run at a time (the scheduler's leader).
pub async fn relay_outbox(pool: &PgPool, queue: &dyn Queue, batch: i64) -> anyhow::Result<usize> {
    let rows: Vec<(i64, JobId, i32, Priority)> =
        sqlx::query_as("select id, job_id, attempt, priority from outbox order by id limit $1")
            .bind(batch)
            .fetch_all(pool)
            .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let dispatches: Vec<Dispatch> = rows
        .iter()
        .map(|r| Dispatch {
            job_id: r.1,
            attempt: r.2,
            priority: r.3,
        })
        .collect();
    queue.publish(&dispatches).await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    sqlx::query(
        "with d as (delete from outbox where id = any($1) returning job_id)
         update job set dispatched_at = now() where id in (select job_id from d)",
    )
    .bind(&ids)
    .execute(pool)
    .await?;
    Ok(rows.len())
}

/// Clears the expired leases of running jobs and writes an outbox row for each, in one
/// statement, so the next worker resumes them at their first unfinished stage.
pub async fn requeue_expired_leases(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<JobId>> {
    let rows: Vec<(JobId,)> = sqlx::query_as(
        "with r as (
             update job set locked_by = null, locked_until = null, reap_count = reap_count + 1, updated_at = now()
              where status = 'running' and locked_until < now()
             returning id, priority, reap_count
         ), o as (
             insert into outbox (job_id, attempt, priority) select id, reap_count + 1, priority from r
         )
         select id from r",
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Dispatches again each queued job that no one holds, that has no dispatch waiting (no outbox
/// row, and no message in the Postgres queue), and whose last dispatch is older than
/// `older_than`; returns them.
///
/// A queued job's message can be gone while the job waits: Pub/Sub dead-letters a message whose
/// claims kept failing, and a subscriber that goes away can leave what it held unredelivered.
/// Pub/Sub's backlog cannot be read, so on Pub/Sub a job that simply waits longer than
/// `older_than` in a long backlog gets one more message per `older_than`; the claim drops the
/// spare as a duplicate. The bump of `dispatched_at` here keeps the sweep from repeating
/// itself before the relay has run.
pub async fn redispatch_stranded(
    db: impl PgExecutor<'_>,
    older_than: Duration,
) -> sqlx::Result<Vec<JobId>> {
    let rows: Vec<(JobId,)> = sqlx::query_as(
        "with s as (
             update job j set dispatched_at = now(), updated_at = now()
              where j.status = 'queued' and j.stage is not null
                and (j.locked_until is null or j.locked_until < now())
                and coalesce(j.dispatched_at, j.created_at) < now() - $1 * interval '1 millisecond'
                and not exists (select 1 from outbox o where o.job_id = j.id)
                and not exists (select 1 from queue_message m where m.job_id = j.id)
             returning id, priority, reap_count
         ), o as (
             insert into outbox (job_id, attempt, priority) select id, reap_count + 1, priority from s
         )
         select id from s",
    )
    .bind(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX))
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}
