//! Checkpoints: a stage's output and the job's advance to the next stage, written in one
//! statement (one short transaction), fenced on the lease. The same statement records the start
//! of the next stage. Stages a job ran while an earlier checkpoint was still committing are
//! written together, with one advance of the job (`save_checkpoints`).

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
/// returns each one's outcome in order. Every job is fenced on its own lease exactly as a
/// single checkpoint is. The rows are locked in id order, as every statement that updates
/// several jobs does (ARCHITECTURE.md, "Invariants").
///
/// A job may have several checkpoints here: the stages it ran, one after the other, while the
/// first one's write waited, given in the order it ran them. They advance the job once, from the
/// first one's stage to the last one's next, fenced on the first one's stage, and every one of
/// them gets that one outcome; the job's row is written once instead of once a stage. A stage
/// whose start was never written (it ran before the previous checkpoint committed) gets its
/// row now, with no duration.
pub async fn save_checkpoints(
    db: impl PgExecutor<'_>,
    worker: &str,
    cps: &[Checkpoint<'_>],
) -> sqlx::Result<Vec<CheckpointOutcome>> {
    if cps.is_empty() {
        return Ok(Vec::new());
    }
    debug_assert!(
        cps.iter().enumerate().all(|(k, c)| {
            cps[..k]
                .iter()
                .rev()
                .find(|p| p.job_id == c.job_id)
                .is_none_or(|p| p.stage.next() == Some(c.stage))
        }),
        "a job's checkpoints are its stages in the order it ran them"
    );
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
               select *
                 from unnest($1::uuid[], $2::bigint[], $3::stage_name[], $4::stage_name[], $5::jsonb[],
                             $6::int[], $7::backend_name[], $8::bigint[], $9::bigint[], $10::float8[],
                             $11::text[])
                      with ordinality
                   as t(id, epoch, stage, next, output, retries, backend, est, cost, score, uri, n)
           ), x as (
               -- One row a job: fenced on its first checkpoint, advanced past its last; of the
               -- columns its stages set, the latest value wins.
               select id, min(n) as first_n,
                      (array_agg(epoch order by n))[1] as epoch,
                      (array_agg(stage order by n))[1] as first,
                      (array_agg(next order by n))[1] as first_next,
                      (array_agg(next order by n desc))[1] as next,
                      (array_agg(backend order by n desc) filter (where backend is not null))[1] as backend,
                      (array_agg(est order by n desc) filter (where est is not null))[1] as est,
                      (array_agg(cost order by n desc) filter (where cost is not null))[1] as cost,
                      (array_agg(score order by n desc) filter (where score is not null))[1] as score,
                      (array_agg(uri order by n desc) filter (where uri is not null))[1] as uri,
                      (array_agg(backend order by n))[1] as first_backend,
                      (array_agg(est order by n))[1] as first_est,
                      (array_agg(cost order by n))[1] as first_cost,
                      (array_agg(score order by n))[1] as first_score,
                      (array_agg(uri order by n))[1] as first_uri
                 from i group by id
           ), l as (
               select j.id from job j where j.id = any($1) and j.locked_by = $12
                order by j.id for no key update
           ), adv as (
               -- A pending cancel stops the job at its first checkpoint (an `advance` finds it),
               -- as when each stage was its own statement: then only that stage's columns are
               -- set. `j` is the locked row, so the cancel is read as it is now.
               update job j set
                   status = case when j.cancel_requested and x.first_next is not null
                                 then next_job_status(j.status, 'advance', true)
                                 else next_job_status(j.status,
                                                      case when x.next is null then 'finish'
                                                           else 'advance' end::job_event,
                                                      j.cancel_requested) end,
                   stage = x.next,
                   backend = coalesce(case when j.cancel_requested then x.first_backend
                                           else x.backend end, j.backend),
                   estimated_cost_micros = coalesce(case when j.cancel_requested then x.first_est
                                                         else x.est end, j.estimated_cost_micros),
                   cost_micros = coalesce(case when j.cancel_requested then x.first_cost
                                               else x.cost end, j.cost_micros),
                   quality_score = coalesce(case when j.cancel_requested then x.first_score
                                                 else x.score end, j.quality_score),
                   result_uri = coalesce(case when j.cancel_requested then x.first_uri
                                              else x.uri end, j.result_uri),
                   updated_at = now()
                 from x join l on l.id = x.id
                where j.id = x.id and j.lease_epoch = x.epoch and j.locked_by = $12
                  and j.stage = x.first
                  and (case when j.cancel_requested and x.first_next is not null
                            then next_job_status(j.status, 'advance', true)
                            else next_job_status(j.status,
                                                 case when x.next is null then 'finish'
                                                      else 'advance' end::job_event,
                                                 j.cancel_requested) end) is not null
               returning j.id, j.status, j.stage
           ), fin as (
               -- A cancel found by the first checkpoint stops the job there, so only that
               -- stage is recorded, as when each stage was its own statement.
               insert into job_stage as s (job_id, stage, status, output, attempts, worker,
                                           finished_at)
               select i.id, i.stage, 'succeeded', i.output, 1 + i.retries, $12, now()
                 from i join adv a on a.id = i.id join x on x.id = i.id
                where a.status <> 'canceled' or i.n = x.first_n
               on conflict (job_id, stage) do update
                  set status = 'succeeded', output = excluded.output,
                      attempts = s.attempts + excluded.attempts - 1,
                      error = null, finished_at = now(),
                      duration_ms = (extract(epoch from (now() - s.started_at)) * 1000)::bigint,
                      updated_at = now()
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
