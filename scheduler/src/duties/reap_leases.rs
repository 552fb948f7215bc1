//! The lease reaper: a dead worker's jobs are dispatched again once their leases expire, and
//! the next worker resumes them at their first unfinished stage.

use std::time::Duration;

use aiprod_platform::metrics::Metrics;
use aiprod_store::requeue_expired_leases;
use async_trait::async_trait;
use sqlx::PgPool;

use crate::duty::Duty;

/// Re-dispatches running jobs whose lease expired. Returns how many.
pub async fn reap_once(pool: &PgPool) -> anyhow::Result<usize> {
    let reaped = requeue_expired_leases(pool).await?;
    if !reaped.is_empty() {
        tracing::warn!(count = reaped.len(), jobs = ?reaped, "re-dispatched jobs whose lease expired");
        Metrics::global().leases_reaped.inc_by(reaped.len() as u64);
    }
    Ok(reaped.len())
}

/// The reaper as a duty, every `AIPROD_REAPER_INTERVAL_MS`.
pub(crate) struct ReapLeases {
    pub pool: PgPool,
    pub every: Duration,
}

#[async_trait]
impl Duty for ReapLeases {
    fn name(&self) -> &'static str {
        "reap_leases"
    }

    fn every(&self) -> Duration {
        self.every
    }

    async fn run(&self) -> anyhow::Result<()> {
        reap_once(&self.pool).await.map(drop)
    }
}
