//! SQL over the pipeline's tables, one file per concern. Single-query functions take
//! `impl PgExecutor`; every write that must be atomic is one statement or one short
//! transaction, and none is held across a stage's work.

mod checkpoint;
mod dispatch;
mod health;
mod job;
mod lease;
mod render;

pub use checkpoint::{
    Checkpoint, CheckpointOutcome, JobPatch, fail_job, save_checkpoint, save_checkpoints,
};
pub use dispatch::{relay_outbox, requeue_expired_leases};
pub use health::{
    Availability, BackendHealth, CircuitPolicy, CircuitState, Gate, backend_health, db_now, gate,
    record_failure, record_success, release_probe,
};
pub use job::{
    CancelOutcome, InsertOutcome, JobRecord, StageRecord, get_job, get_stage_output, get_stages,
    insert_job, list_jobs, request_cancel,
};
pub use lease::{Claim, claim_job, load_outputs, release_lease, renew_leases};
pub use render::{
    Intent, RenderState, RenderTask, RenderUpdate, adopt_orphan, insert_intent, orphans,
    render_tasks, update_render,
};
