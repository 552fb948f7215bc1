//! Jobs as the API sees them: insert (with the outbox row and idempotency), read, list, cancel.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};

use crate::domain::{
    BackendChoice, BackendName, JobId, JobSpec, JobStatus, Priority, Stage, StageStatus,
};

/// A job row.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct JobRecord {
    /// The job's id.
    pub id: JobId,
    /// Where it is in its life.
    pub status: JobStatus,
    /// The next stage to run; null once it succeeded.
    pub stage: Option<Stage>,
    /// The brief.
    pub prompt: String,
    /// Requested length.
    pub duration_s: i32,
    /// Lowest acceptable quality.
    pub quality_min: f64,
    /// Urgency.
    pub priority: Priority,
    /// What the client asked for.
    pub backend_choice: BackendChoice,
    /// Prefer speed over price.
    pub speed_priority: bool,
    /// Input image.
    pub image_url: Option<String>,
    /// Client metadata.
    pub metadata: Value,
    /// The chosen backend, once `financial` ran.
    pub backend: Option<BackendName>,
    /// The estimate, once `financial` ran.
    pub estimated_cost_micros: Option<i64>,
    /// The actual cost, once `finalize` ran.
    pub cost_micros: Option<i64>,
    /// The QA score, once `qa_semantic` ran.
    pub quality_score: Option<f64>,
    /// Where the result is, once `finalize` ran.
    pub result_uri: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// A cancel is pending.
    pub cancel_requested: bool,
    /// Times the reaper re-dispatched it.
    pub reap_count: i32,
    /// The budget day that carries its money, once `financial` reserved.
    pub budget_day: Option<chrono::NaiveDate>,
    /// Reserved for it and not yet taken by a render try (micro-dollars).
    pub budget_held_micros: i64,
    /// Fail instead of waiting when the budget does not cover it.
    pub fail_over_budget: bool,
    /// Why it waits for money (status `waiting_budget`).
    pub waiting_reason: Option<String>,
    /// The least it needs to go on (micro-dollars).
    pub waiting_need_micros: Option<i64>,
    /// Waiting for money since.
    pub waiting_since: Option<DateTime<Utc>>,
    /// Time spent waiting for money, before now.
    pub waited_ms: i64,
    /// Accepted at.
    pub created_at: DateTime<Utc>,
    /// First started at.
    pub started_at: Option<DateTime<Utc>>,
    /// Ended at.
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobRecord {
    /// The request this job was created from.
    pub fn spec(&self) -> JobSpec {
        JobSpec {
            prompt: self.prompt.clone(),
            duration_s: self.duration_s,
            quality_min: self.quality_min,
            priority: self.priority,
            backend: self.backend_choice,
            speed_priority: self.speed_priority,
            image_url: self.image_url.clone(),
            metadata: self.metadata.clone(),
            fail_over_budget: self.fail_over_budget,
        }
    }
}

const JOB_COLUMNS: &str = "id, status, stage, prompt, duration_s, quality_min, priority, backend_choice, \
    speed_priority, image_url, metadata, backend, estimated_cost_micros, cost_micros, quality_score, result_uri, \
    error, cancel_requested, reap_count, budget_day, budget_held_micros, fail_over_budget, waiting_reason, \
    waiting_need_micros, waiting_since, waited_ms, created_at, started_at, finished_at";

/// One stage's checkpoint row.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StageRecord {
    /// Which stage.
    pub stage: Stage,
    /// Its state.
    pub status: StageStatus,
    /// Starts of its work, retries and resumes included.
    pub attempts: i32,
    /// When it first started.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// How long it took, from first start to finish.
    pub duration_ms: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// What inserting a job did.
#[derive(Debug)]
pub enum InsertOutcome {
    /// A new job was accepted.
    Created(JobId),
    /// The idempotency key was seen before with the same request: that job.
    Replayed(JobId),
    /// The idempotency key was seen before with a different request.
    KeyConflict(JobId),
}

/// Inserts a job and its first outbox row in one statement, so an accepted job always has a
/// dispatch waiting. With an idempotency key, a replay returns the first job and writes nothing.
pub async fn insert_job(
    pool: &PgPool,
    id: JobId,
    spec: &JobSpec,
    idempotency_key: Option<&str>,
) -> sqlx::Result<InsertOutcome> {
    let fingerprint = spec.fingerprint();
    let inserted: Option<(JobId,)> = sqlx::query_as(
        "with j as (
             insert into job (id, prompt, duration_s, quality_min, priority, backend_choice, speed_priority,
                              image_url, metadata, idempotency_key, request_hash, fail_over_budget)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             on conflict (idempotency_key) do nothing
             returning id, priority
         ), o as (
             insert into outbox (job_id, priority) select id, priority from j
         )
         select j.id from j cross join lateral (select pg_notify('aiprod_outbox', '')) n",
    )
    .bind(id)
    .bind(&spec.prompt)
    .bind(spec.duration_s)
    .bind(spec.quality_min)
    .bind(spec.priority)
    .bind(spec.backend)
    .bind(spec.speed_priority)
    .bind(&spec.image_url)
    .bind(&spec.metadata)
    .bind(idempotency_key)
    .bind(&fingerprint)
    .bind(spec.fail_over_budget)
    .fetch_optional(pool)
    .await?;
    if let Some((id,)) = inserted {
        return Ok(InsertOutcome::Created(id));
    }
    let (existing, hash): (JobId, String) =
        sqlx::query_as("select id, request_hash from job where idempotency_key = $1")
            .bind(idempotency_key)
            .fetch_one(pool)
            .await?;
    Ok(if hash == fingerprint {
        InsertOutcome::Replayed(existing)
    } else {
        InsertOutcome::KeyConflict(existing)
    })
}

/// One job, or `None`.
pub async fn get_job(db: impl PgExecutor<'_>, id: JobId) -> sqlx::Result<Option<JobRecord>> {
    sqlx::query_as(&format!("select {JOB_COLUMNS} from job where id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// The checkpoint rows of a job, in pipeline order.
pub async fn get_stages(db: impl PgExecutor<'_>, id: JobId) -> sqlx::Result<Vec<StageRecord>> {
    sqlx::query_as(
        "select stage, status, attempts, started_at, finished_at, duration_ms, error
           from job_stage where job_id = $1 order by stage",
    )
    .bind(id)
    .fetch_all(db)
    .await
}

/// The checkpointed output of one stage of a job, if it finished.
pub async fn get_stage_output(
    db: impl PgExecutor<'_>,
    id: JobId,
    stage: crate::domain::Stage,
) -> sqlx::Result<Option<serde_json::Value>> {
    Ok(sqlx::query_scalar(
        "select output from job_stage where job_id = $1 and stage = $2 and output is not null",
    )
    .bind(id)
    .bind(stage)
    .fetch_optional(db)
    .await?
    .flatten())
}

/// A page of jobs, newest first, after `cursor` (the last id of the previous page).
pub async fn list_jobs(
    db: impl PgExecutor<'_>,
    status: Option<JobStatus>,
    limit: i64,
    cursor: Option<JobId>,
) -> sqlx::Result<Vec<JobRecord>> {
    sqlx::query_as(&format!(
        "select {JOB_COLUMNS} from job
          where ($1::job_status is null or status = $1) and ($2::uuid is null or id < $2)
          order by id desc limit $3"
    ))
    .bind(status)
    .bind(cursor)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// What a cancel request did.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job had not started, or was waiting for money: it is canceled now.
    Canceled,
    /// The job is running: it stops before its next stage.
    Requested,
    /// The job had already ended with this status.
    AlreadyEnded(JobStatus),
    /// No such job.
    NotFound,
}

/// Cancels a job that has not started or waits for money, or asks a running one to stop
/// before its next stage.
pub async fn request_cancel(db: impl PgExecutor<'_>, id: JobId) -> sqlx::Result<CancelOutcome> {
    let row: Option<(JobStatus, bool)> = sqlx::query_as(
        "with prev as (select id, status from job where id = $1 for update),
         upd as (
             update job j set
                 cancel_requested = true,
                 status = case when now_ then 'canceled'::job_status else j.status end,
                 finished_at = case when now_ then now() else j.finished_at end,
                 stage = case when now_ then null else j.stage end,
                 waiting_since = case when now_ then null else j.waiting_since end,
                 updated_at = now()
               from (select p.id, p.status,
                            (p.status = 'waiting_budget' or (p.status = 'queued' and q.locked_by is null)) as now_
                       from prev p join job q on q.id = p.id) p
              where j.id = p.id and p.status in ('queued', 'running', 'waiting_budget')
             returning j.status
         ), st as (
             update job_stage s set status = 'canceled', updated_at = now()
               from prev p
              where s.job_id = p.id and p.status = 'waiting_budget' and s.status = 'waiting'
         )
         select p.status, exists(select 1 from upd) from prev p",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(match row {
        None => CancelOutcome::NotFound,
        Some((status, false)) => CancelOutcome::AlreadyEnded(status),
        Some((JobStatus::Queued | JobStatus::WaitingBudget, true)) => CancelOutcome::Canceled,
        Some((_, true)) => CancelOutcome::Requested,
    })
}
