//! The PostgreSQL store: the pool, the schema (`migrations/`, embedded) and every query of the
//! fleet, one file per table or concern. Every query is a `query!` macro, checked against the
//! schema at compile time (`.sqlx/` offline). Single-query functions take `impl PgExecutor`;
//! every write that must be atomic is one statement or one short transaction, and none is held
//! across a stage's work.
//!
//! The rules of the data live in SQL, once each (see ARCHITECTURE.md): a job is dispatched only
//! by `dispatch_job()`, its status moves only along `job_transition`, and a backend's
//! availability is `backend_availability()`. No statement here sends NOTIFY: whoever commits
//! work for a listener pokes a [`Wake`] after the commit (`wake`).

use std::time::Duration;

mod alert;
mod audit;
mod backend_health;
mod books;
mod budget_wait;
mod cache;
mod checkpoint;
pub mod db;
mod dispatch;
mod group;
mod job;
mod job_view;
mod key_finder;
pub mod keys;
mod lease;
mod ledger;
mod model_call;
mod model_health;
mod orphan;
mod queue_message;
mod rate_limit;
mod render_task;
mod report;
mod submit;
mod tenant;
mod wake;

/// A duration as whole milliseconds for SQL (`$n::bigint * interval '1 millisecond'`), saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub use alert::{
    Alert, AlertChanges, Firing, list_alerts, mark_alert_delivered, open_alert_counts,
    record_alert_delivery_failure, sync_alerts, undelivered_alerts,
};
pub use audit::{AuditEntry, AuditRecord, list_audit, record_audit};
pub use backend_health::{
    BackendHealth, Gate, backend_health, gate, record_failure, record_success, release_probe,
};
pub use books::{
    BudgetAudit, JobPurse, TenantBudgetDay, audit_budget_day, audit_tenant_budget_day,
    get_tenant_budget_day, job_purse, set_tenant_budget_limit,
};
pub use budget_wait::{count_budget_waiters, park_for_budget, wake_budget_waiters};
pub use cache::{CacheClaim, CacheFill, claim_cache, fill_cache, release_cache};
pub use checkpoint::{
    Checkpoint, CheckpointOutcome, JobPatch, fail_job, save_checkpoint, save_checkpoints,
};
pub use dispatch::{
    OutboxRow, PoisonedJob, delete_relayed, fail_poison_jobs, outbox_batch, outbox_channel,
    redispatch_stranded, requeue_expired_leases,
};
pub use group::{Group, GroupOutcome, RenderStep, commit_group, commit_rounds};
pub use job::{
    CancelOutcome, IdempotencyKey, InsertOutcome, JobRecord, get_job, insert_job, list_jobs,
    request_cancel,
};
pub use job_view::{StageOutputs, StageRecord, get_media_outputs, get_routing, get_stages};
pub use key_finder::KeyFinder;
pub use lease::{
    Claim, ClaimOutcome, claim_job, load_outputs, release_lease, renew_leases, try_claim_job,
    try_claim_jobs,
};
pub use ledger::{
    BudgetDay, Reservation, ReserveOutcome, Shortfall, get_budget_day, open_budget_day,
    reserve_budget, set_budget_limit,
};
pub use model_call::{
    ModelCall, ModelHit, ModelIntent, ModelIntentOutcome, ModelUpdate, insert_model_call,
    insert_model_hit, model_calls, settle_abandoned_model_calls, update_model_call,
};
pub use model_health::{
    model_gate, record_model_failure, record_model_success, release_model_probe,
};
pub use orphan::{adopt_orphan, orphans};
pub use queue_message::{
    ReceivedMessage, ack_messages, defer_messages, enqueue_messages, nack_messages,
    receive_messages,
};
pub use rate_limit::{RateDecision, check_rate};
pub use render_task::{
    Intent, IntentOutcome, RenderTask, RenderUpdate, insert_intent, insert_render_hit,
    render_tasks, update_render,
};
pub use report::{
    SloStanding, SloTargets, StuckJob, WindowQuality, backend_errors_over, slo_report, stuck_jobs,
    window_latency_p95, window_quality,
};
pub use submit::{Submission, Submitted, Submitter, submit_jobs};
pub use tenant::{
    ApiKeyInfo, Entitlements, KeyLookup, Tenant, TenantLimits, create_tenant, find_api_key,
    find_api_keys, insert_api_key, list_api_keys, list_tenants, revoke_api_key, tenant_by_name,
    valid_tenant_name,
};
pub use wake::{WAKE_WINDOW, Wake};
