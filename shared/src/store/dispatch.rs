//! Dispatch: the outbox relay and the lease reaper, both run by the scheduler's leader.

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
    sqlx::query("delete from outbox where id = any($1)")
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
