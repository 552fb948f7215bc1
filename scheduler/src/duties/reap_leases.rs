//! The lease reaper: a dead worker's jobs are dispatched again once their leases expire, and
//! the next worker resumes them at their first unfinished stage. A job whose lease keeps
//! expiring (more than `AIPROD_MAX_REAPS` times) is poison, and fails instead: dispatched again
//! it would only kill or stall the next worker too.

use std::time::Duration;

use aiprod_platform::metrics::Metrics;
use aiprod_store::{Wake, fail_poison_jobs, requeue_expired_leases};
use async_trait::async_trait;
use sqlx::PgPool;

use crate::duty::Duty;

/// Handles every running job whose lease expired: one reaped `max_reaps` times already fails as
/// poison, the others are dispatched again. Returns how many jobs it handled, both kinds.
pub async fn reap_once(pool: &PgPool, max_reaps: u32) -> anyhow::Result<usize> {
    let metrics = Metrics::global();
    // Poison first: the re-dispatch below would otherwise take these jobs too.
    let poisoned = fail_poison_jobs(pool, i32::try_from(max_reaps).unwrap_or(i32::MAX)).await?;
    for p in &poisoned {
        let stage = p.stage.map_or("none", |s| s.as_str());
        tracing::error!(job_id = %p.id, reaps = p.reaps, stage, "failed a poison job: its lease expired again after it was reaped {} times (AIPROD_MAX_REAPS)", p.reaps);
    }
    let n = poisoned.len() as u64;
    metrics.jobs_poisoned.inc_by(n);
    metrics.jobs_failed.inc_by(n);
    let reaped = requeue_expired_leases(pool).await?;
    if !reaped.is_empty() {
        tracing::warn!(count = reaped.len(), jobs = ?reaped, "re-dispatched jobs whose lease expired");
        metrics.leases_reaped.inc_by(reaped.len() as u64);
    }
    Ok(poisoned.len() + reaped.len())
}

/// The reaper as a duty, every `AIPROD_REAPER_INTERVAL_MS`.
pub(crate) struct ReapLeases {
    pub pool: PgPool,
    pub every: Duration,
    pub max_reaps: u32,
    pub dispatched: Wake,
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
        // Poisoned jobs are counted too; a spare wake-up costs one empty relay run.
        if reap_once(&self.pool, self.max_reaps).await? > 0 {
            self.dispatched.poke();
        }
        Ok(())
    }
}
