//! The leader's periodic work, each a single step that tests can call directly.

use std::time::Duration;

use aiprod_shared::metrics::Metrics;
use aiprod_shared::queue::Queue;
use aiprod_shared::store::{redispatch_stranded, relay_outbox, requeue_expired_leases};
use sqlx::PgPool;

/// Outbox rows relayed per batch.
const RELAY_BATCH: i64 = 1000;

/// Relays the whole outbox to the queue, batch by batch. Returns how many rows moved.
pub async fn relay_once(pool: &PgPool, queue: &dyn Queue) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let n = relay_outbox(pool, queue, RELAY_BATCH).await?;
        total += n;
        if n < RELAY_BATCH as usize {
            break;
        }
    }
    if total > 0 {
        Metrics::global().outbox_relayed.inc_by(total as u64);
    }
    Ok(total)
}

/// Re-dispatches running jobs whose lease expired. Returns how many.
pub async fn reap_once(pool: &PgPool) -> anyhow::Result<usize> {
    let reaped = requeue_expired_leases(pool).await?;
    if !reaped.is_empty() {
        tracing::warn!(count = reaped.len(), jobs = ?reaped, "re-dispatched jobs whose lease expired");
        Metrics::global().leases_reaped.inc_by(reaped.len() as u64);
    }
    Ok(reaped.len())
}

/// Dispatches again the queued jobs whose message is gone (no dispatch for `after`). Returns
/// how many.
pub async fn redispatch_once(pool: &PgPool, after: Duration) -> anyhow::Result<usize> {
    let jobs = redispatch_stranded(pool, after).await?;
    if !jobs.is_empty() {
        tracing::warn!(
            count = jobs.len(),
            jobs = ?jobs,
            after_s = after.as_secs(),
            "re-dispatched queued jobs that had no dispatch for too long"
        );
        Metrics::global()
            .jobs_redispatched
            .inc_by(jobs.len() as u64);
    }
    Ok(jobs.len())
}
