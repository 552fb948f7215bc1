//! Checkpoints: a stage's output and the job's advance to the next stage, written in one
//! statement (one short transaction), fenced on the lease. The same statement records the start
//! of the next stage, so every start and finish is durable at the cost of one commit per stage.

use serde_json::Value;
use sqlx::PgExecutor;

use aiprod_domain::{BackendName, JobId, JobStatus, Stage};

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
#[derive(Debug, Clone)]
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

/// Writes a checkpoint and advances the job (the `advance` or `finish` event).
#[tracing::instrument(skip_all, fields(job_id = %cp.job_id, stage = %cp.stage))]
pub async fn save_checkpoint(
    db: impl PgExecutor<'_>,
    cp: &Checkpoint<'_>,
) -> sqlx::Result<CheckpointOutcome> {
    let outcomes = save_checkpoints(db, cp.worker, std::slice::from_ref(cp)).await?;
    Ok(outcomes
        .into_iter()
        .next()
        .unwrap_or(CheckpointOutcome::LeaseLost))
}

/// Writes the checkpoints of many jobs held by `worker` in one statement (one commit), and
/// returns each one's outcome in order. Every row is fenced on its own lease exactly as a
/// single checkpoint is; a job may appear at most once. The rows are locked in id order, as
/// every statement that updates several jobs does (ARCHITECTURE.md, "Invariants").
pub async fn save_checkpoints(
    db: impl PgExecutor<'_>,
    worker: &str,
    cps: &[Checkpoint<'_>],
) -> sqlx::Result<Vec<CheckpointOutcome>> {
    if cps.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<JobId> = cps.iter().map(|c| c.job_id).collect();
    let epochs: Vec<i64> = cps.iter().map(|c| c.lease_epoch).collect();
    let stages: Vec<Stage> = cps.iter().map(|c| c.stage).collect();
    let nexts: Vec<Option<Stage>> = cps.iter().map(|c| c.stage.next()).collect();
    let outputs: Vec<&Value> = cps.iter().map(|c| c.output).collect();
    let retries: Vec<i32> = cps.iter().map(|c| c.retries).collect();
    let backends: Vec<Option<BackendName>> = cps.iter().map(|c| c.patch.backend).collect();
    let estimates: Vec<Option<i64>> = cps.iter().map(|c| c.patch.estimated_cost_micros).collect();
    let costs: Vec<Option<i64>> = cps.iter().map(|c| c.patch.cost_micros).collect();
    let scores: Vec<Option<f64>> = cps.iter().map(|c| c.patch.quality_score).collect();
    let uris: Vec<Option<&str>> = cps.iter().map(|c| c.patch.result_uri.as_deref()).collect();
    let rows = sqlx::query!(
        r#"with i as (
               select t.*, case when t.next is null then 'finish' else 'advance' end::job_event as event
                 from unnest($1::uuid[], $2::bigint[], $3::stage_name[], $4::stage_name[], $5::jsonb[],
                             $6::int[], $7::backend_name[], $8::bigint[], $9::bigint[], $10::float8[],
                             $11::text[])
                   as t(id, epoch, stage, next, output, retries, backend, est, cost, score, uri)
           ), l as (
               select j.id from job j where j.id = any($1) and j.locked_by = $12
                order by j.id for no key update
           ), adv as (
               update job j set
                   status = next_job_status(j.status, i.event, j.cancel_requested),
                   stage = i.next,
                   backend = coalesce(i.backend, j.backend),
                   estimated_cost_micros = coalesce(i.est, j.estimated_cost_micros),
                   cost_micros = coalesce(i.cost, j.cost_micros),
                   quality_score = coalesce(i.score, j.quality_score),
                   result_uri = coalesce(i.uri, j.result_uri),
                   updated_at = now()
                 from i join l on l.id = i.id
                where j.id = i.id and j.lease_epoch = i.epoch and j.locked_by = $12
                  and j.stage = i.stage
                  and next_job_status(j.status, i.event, j.cancel_requested) is not null
               returning j.id, j.status, j.stage
           ), fin as (
               update job_stage s set
                   status = 'succeeded', output = i.output, attempts = s.attempts + i.retries,
                   error = null, finished_at = now(),
                   duration_ms = (extract(epoch from (now() - s.started_at)) * 1000)::bigint,
                   updated_at = now()
                 from i join adv a on a.id = i.id
                where s.job_id = i.id and s.stage = i.stage
           ), nxt as (
               insert into job_stage (job_id, stage, worker)
               select a.id, a.stage, $12 from adv a where a.status = 'running'
               on conflict (job_id, stage) do update
                  set attempts = job_stage.attempts + 1, status = 'running',
                      worker = excluded.worker, updated_at = now()
           )
           select id as "id!: JobId", status as "status!: JobStatus", stage as "stage: Stage"
             from adv"#,
        &ids as &[JobId],
        &epochs,
        &stages as &[Stage],
        &nexts as &[Option<Stage>],
        &outputs as &[&Value],
        &retries,
        &backends as &[Option<BackendName>],
        &estimates as &[Option<i64>],
        &costs as &[Option<i64>],
        &scores as &[Option<f64>],
        &uris as &[Option<&str>],
        worker,
    )
    .fetch_all(db)
    .await?;
    Ok(cps
        .iter()
        .map(|cp| match rows.iter().find(|r| r.id == cp.job_id) {
            None => CheckpointOutcome::LeaseLost,
            Some(r) => match (r.status, r.stage) {
                (JobStatus::Succeeded, _) => CheckpointOutcome::Succeeded,
                (JobStatus::Canceled, _) => CheckpointOutcome::Canceled,
                (_, Some(stage)) => CheckpointOutcome::Advanced(stage),
                (status, None) => {
                    tracing::error!(job_id = %r.id, %status, "checkpoint left a running job without a stage");
                    CheckpointOutcome::LeaseLost
                }
            },
        })
        .collect())
}

/// Fails the job at `stage` for good, naming the stage and the reason (the `fail` event).
/// Returns false when the lease was lost (nothing written).
#[tracing::instrument(skip_all, fields(job_id = %job_id, stage = %stage))]
pub async fn fail_job(
    db: impl PgExecutor<'_>,
    job_id: JobId,
    lease_epoch: i64,
    worker: &str,
    stage: Stage,
    reason: &str,
    retries: i32,
) -> sqlx::Result<bool> {
    let row = sqlx::query_scalar!(
        r#"with f as (
               update job set status = next_job_status(status, 'fail', cancel_requested),
                      error = $4, updated_at = now()
                where id = $1 and lease_epoch = $2 and locked_by = $5 and stage = $3
                  and next_job_status(status, 'fail', cancel_requested) is not null
               returning id
           ), s as (
               update job_stage set status = 'failed', error = $4, attempts = attempts + $6,
                      finished_at = now(),
                      duration_ms = (extract(epoch from (now() - started_at)) * 1000)::bigint,
                      updated_at = now()
                where job_id = $1 and stage = $3 and exists (select 1 from f)
           )
           select id as "id!: JobId" from f"#,
        job_id as JobId,
        lease_epoch,
        stage as Stage,
        reason,
        worker,
        retries,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
}
