//! The sweep of stranded queued jobs: a job whose message is gone (dead-lettered, or lost with
//! a subscriber) is dispatched again once its last dispatch is older than
//! `AIPROD_REDISPATCH_AFTER_S`.

use std::time::Duration;

use aiprod_platform::metrics::Metrics;
use aiprod_store::{Wake, redispatch_stranded};
use async_trait::async_trait;
use sqlx::PgPool;

use crate::duty::Duty;

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

/// The sweep as a duty: a stranded job waits at least `after`, so looking ten times as often
/// is enough.
pub(crate) struct RedispatchStranded {
    pub pool: PgPool,
    pub after: Duration,
    pub dispatched: Wake,
}

#[async_trait]
impl Duty for RedispatchStranded {
    fn name(&self) -> &'static str {
        "redispatch_stranded"
    }

    fn every(&self) -> Duration {
        self.after / 10
    }

    async fn run(&self) -> anyhow::Result<()> {
        if redispatch_once(&self.pool, self.after).await? > 0 {
            self.dispatched.poke();
        }
        Ok(())
    }
}
