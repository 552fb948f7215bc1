//! A duty of the scheduler's leader: one periodic task, one file each under `duties/`, all run
//! the same way by `leader`. One error policy for all: a failed run is logged and counted
//! (`aiprod_leader_duty_failures_total{duty}`) and the duty runs again at its next tick; only
//! losing the leader's lock connection ends the leadership.

use std::time::Duration;

use async_trait::async_trait;

/// One periodic task of the leader.
#[async_trait]
pub trait Duty: Send + Sync {
    /// Its name, in logs and metrics.
    fn name(&self) -> &'static str;

    /// How long between two runs (the first runs at once).
    fn every(&self) -> Duration;

    /// Whether it also runs at once when a job is dispatched (the outbox notification), rather
    /// than only at its next tick.
    fn wakes_on_dispatch(&self) -> bool {
        false
    }

    /// One run. An error is logged and counted, and the duty runs again at its next tick.
    async fn run(&self) -> anyhow::Result<()>;
}
