//! The outbox relay: publishes each dispatch the database wrote (`dispatch_job()`) to the
//! queue, then deletes it. The store reads and deletes; the publish, network I/O, is here.

use std::sync::Arc;
use std::time::Duration;

use aiprod_platform::metrics::Metrics;
use aiprod_platform::queue::{Dispatch, Queue};
use aiprod_store::{delete_relayed, outbox_batch};
use async_trait::async_trait;
use sqlx::PgPool;

use crate::duty::Duty;

/// Outbox rows relayed per batch.
const RELAY_BATCH: i64 = 1000;

/// Relays the whole outbox to the queue, batch by batch, and returns how many rows moved.
/// At-least-once: a relay that dies after a publish and before the delete publishes those rows
/// again, and the lease makes the duplicate harmless. Only one relay may run at a time (the
/// scheduler's leader).
pub async fn relay_once(pool: &PgPool, queue: &dyn Queue) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let rows = outbox_batch(pool, RELAY_BATCH).await?;
        if rows.is_empty() {
            break;
        }
        let dispatches: Vec<Dispatch> = rows
            .iter()
            .map(|r| Dispatch {
                job_id: r.job_id,
                attempt: r.attempt,
                priority: r.priority,
            })
            .collect();
        queue.publish(&dispatches).await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        delete_relayed(pool, &ids).await?;
        total += rows.len();
        if rows.len() < RELAY_BATCH as usize {
            break;
        }
    }
    if total > 0 {
        Metrics::global().outbox_relayed.inc_by(total as u64);
    }
    Ok(total)
}

/// The relay as a duty: at every dispatch, and at least every `AIPROD_RELAY_INTERVAL_MS`.
pub(crate) struct RelayOutbox {
    pub pool: PgPool,
    pub queue: Arc<dyn Queue>,
    pub every: Duration,
}

#[async_trait]
impl Duty for RelayOutbox {
    fn name(&self) -> &'static str {
        "relay_outbox"
    }

    fn every(&self) -> Duration {
        self.every
    }

    fn wakes_on_dispatch(&self) -> bool {
        true
    }

    async fn run(&self) -> anyhow::Result<()> {
        relay_once(&self.pool, self.queue.as_ref()).await.map(drop)
    }
}
