//! Checkpoints: a stage's output and the job's advance to the next stage, written in one
//! statement (one short transaction), fenced on the lease. The same statement records the start
//! of the next stage, so every start and finish is durable at the cost of one commit per stage.

use serde_json::Value;
use sqlx::PgExecutor;

use crate::domain::{BackendName, JobId, JobStatus, Stage};

/// Job columns a stage may set as it finishes. `None` leaves a column as it is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobPatch {
    /// The chosen backend (`financial`).
    pub backend: Option<BackendName>,
    /// The estimate (`financial`).
    pub estimated_cost_micros: Option<i64>,
    /// The actual cost (`finalize`).
    pub cost_micros: Option<i64>,
    /// The QA score (`qa_semantic`).
    pub quality_score: Option<f64>,
    /// The published result (`finalize`).
    pub result_uri: Option<String>,
}

/// A finished stage, ready to be written.
#[derive(Debug)]
pub struct Checkpoint<'a> {
    /// The job.
    pub job_id: JobId,
    /// The lease it was run under.
    pub lease_epoch: i64,
    /// The worker that holds the lease.
    pub worker: &'a str,
    /// The stage that finished.
    pub stage: Stage,
    /// Its output, read by later stages and by a worker that resumes the job.
    pub output: &'a Value,
    /// Tries beyond the first one, in this run of the stage.
    pub retries: i32,
    /// Job columns to set.
    pub patch: JobPatch,
}

/// What a checkpoint did to the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointOutcome {
    /// The next stage is recorded as begun; run it.
    Advanced(Stage),
    /// That was `finalize`: the job succeeded.
    Succeeded,
    /// A cancel was pending: the job is canceled and stops here.
    Canceled,
    /// The lease was lost; nothing was written and the job is someone else's now.
    LeaseLost,
}

/// Writes a checkpoint and advances the job.
pub async fn save_checkpoint(
    db: impl PgExecutor<'_>,
    cp: &Checkpoint<'_>,
) -> sqlx::Result<CheckpointOutcome> {
    let next = cp.stage.next();
    let row: Option<(JobStatus, Option<Stage>)> = sqlx::query_as(
        "with adv as (
             update job j set
                 status = case when $4::stage_name is null then 'succeeded'::job_status
                               when j.cancel_requested then 'canceled'::job_status
                               else j.status end,
                 stage = case when $4::stage_name is null or j.cancel_requested then null else $4 end,
                 finished_at = case when $4::stage_name is null or j.cancel_requested then now() end,
                 locked_by = case when $4::stage_name is null or j.cancel_requested then null else j.locked_by end,
                 locked_until = case when $4::stage_name is null or j.cancel_requested then null else j.locked_until end,
                 backend = coalesce($8, j.backend),
                 estimated_cost_micros = coalesce($9, j.estimated_cost_micros),
                 cost_micros = coalesce($10, j.cost_micros),
                 quality_score = coalesce($11, j.quality_score),
                 result_uri = coalesce($12, j.result_uri),
                 updated_at = now()
              where j.id = $1 and j.lease_epoch = $2 and j.locked_by = $7 and j.stage = $3 and j.status = 'running'
             returning j.status, j.stage
         ), fin as (
             update job_stage s set
                 status = 'succeeded', output = $5, attempts = s.attempts + $6, error = null, finished_at = now(),
                 duration_ms = (extract(epoch from (now() - s.started_at)) * 1000)::bigint, updated_at = now()
              where s.job_id = $1 and s.stage = $3 and exists (select 1 from adv)
         ), nxt as (
             insert into job_stage (job_id, stage, worker)
             select $1, a.stage, $7 from adv a where a.status = 'running'
             on conflict (job_id, stage) do update
                set attempts = job_stage.attempts + 1, status = 'running', worker = excluded.worker, updated_at = now()
         )
         select status, stage from adv",
    )
    .bind(cp.job_id)
    .bind(cp.lease_epoch)
    .bind(cp.stage)
    .bind(next)
    .bind(cp.output)
    .bind(cp.retries)
    .bind(cp.worker)
    .bind(cp.patch.backend)
    .bind(cp.patch.estimated_cost_micros)
    .bind(cp.patch.cost_micros)
    .bind(cp.patch.quality_score)
    .bind(cp.patch.result_uri.as_deref())
    .fetch_optional(db)
    .await?;
    Ok(match row {
        None => CheckpointOutcome::LeaseLost,
        Some((JobStatus::Succeeded, _)) => CheckpointOutcome::Succeeded,
        Some((JobStatus::Canceled, _)) => CheckpointOutcome::Canceled,
        Some((_, Some(stage))) => CheckpointOutcome::Advanced(stage),
        Some((status, None)) => {
            tracing::error!(job_id = %cp.job_id, ?status, "checkpoint left a running job without a stage");
            CheckpointOutcome::LeaseLost
        }
    })
}

/// Fails the job at `stage` for good, naming the stage and the reason. Returns false when the
/// lease was lost (nothing written).
pub async fn fail_job(
    db: impl PgExecutor<'_>,
    job_id: JobId,
    lease_epoch: i64,
    worker: &str,
    stage: Stage,
    reason: &str,
    retries: i32,
) -> sqlx::Result<bool> {
    let row: Option<(JobId,)> = sqlx::query_as(
        "with f as (
             update job set status = 'failed', error = $4, finished_at = now(), locked_by = null,
                            locked_until = null, updated_at = now()
              where id = $1 and lease_epoch = $2 and locked_by = $5 and stage = $3 and status = 'running'
             returning id
         ), s as (
             update job_stage set status = 'failed', error = $4, attempts = attempts + $6, finished_at = now(),
                    duration_ms = (extract(epoch from (now() - started_at)) * 1000)::bigint, updated_at = now()
              where job_id = $1 and stage = $3 and exists (select 1 from f)
         )
         select id from f",
    )
    .bind(job_id)
    .bind(lease_epoch)
    .bind(stage)
    .bind(reason)
    .bind(worker)
    .bind(retries)
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
}
