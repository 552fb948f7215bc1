//! SQL over the pipeline's tables, one file per concern. Single-query functions take
//! `impl PgExecutor`; every write that must be atomic is one statement or one short
//! transaction, and none is held across a stage's work.

use std::time::Duration;

mod alert;
mod budget;
mod checkpoint;
mod dispatch;
mod health;
mod job;
mod lease;
mod render;

/// A duration as whole milliseconds for SQL (`make_interval(secs => $n / 1000)`), saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub use alert::{
    Alert, AlertChanges, AlertRule, Firing, Severity, list_alerts, mark_alert_delivered,
    open_alert_counts, record_alert_delivery_failure, sync_alerts, undelivered_alerts,
};
pub use budget::{
    BudgetAudit, BudgetDay, Reservation, ReserveOutcome, audit_budget_day, count_budget_waiters,
    get_budget_day, open_budget_day, park_for_budget, reserve_budget, set_budget_limit,
    wake_budget_waiters,
};
pub use checkpoint::{
    Checkpoint, CheckpointOutcome, JobPatch, fail_job, save_checkpoint, save_checkpoints,
};
pub use dispatch::{redispatch_stranded, relay_outbox, requeue_expired_leases};
pub use health::{
    Availability, BackendHealth, CircuitPolicy, CircuitState, Gate, HealthSnapshot, backend_health,
    gate, record_failure, record_success, release_probe,
};
pub use job::{
    CancelOutcome, InsertOutcome, JobRecord, StageRecord, get_job, get_stage_output, get_stages,
    insert_job, list_jobs, request_cancel,
};
pub use lease::{Claim, claim_job, load_outputs, release_lease, renew_leases};
pub use render::{
    Intent, IntentOutcome, NOT_FOUND_AT_PROVIDER, RenderState, RenderTask, RenderUpdate,
    adopt_orphan, insert_intent, orphans, render_tasks, update_render,
};
