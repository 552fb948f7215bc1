//! Jobs as the API sees them: insert (with its dispatch and idempotency), read, list, cancel.

use std::time::Duration;

use aiprod_domain::{
    BackendName, JobId, JobSpec, JobStatus, OverBudget, Priority, Stage, TenantId,
};
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};

use super::millis;

/// A job row.
#[derive(Clone, Debug)]
pub struct JobRecord {
    /// The job's id.
    pub id: JobId,
    /// The tenant it belongs to.
    pub tenant_id: TenantId,
    /// Where it is in its life.
    pub status: JobStatus,
    /// The next stage to run; null once it succeeded or was canceled (a failed job keeps the
    /// stage that failed).
    pub stage: Option<Stage>,
    /// The request it was created from.
    pub spec: JobSpec,
    /// The chosen backend, once `financial` ran (then the one that rendered every shot).
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
    pub budget_day: Option<NaiveDate>,
    /// Reserved for it and not yet taken by a render try (micro-dollars).
    pub budget_held_micros: i64,
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

/// The job columns as they come out of SQL; the request columns become a `JobSpec` through
/// its parser, so a row that breaks a rule is an error here rather than a value downstream.
pub(crate) struct JobRow {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub status: JobStatus,
    pub stage: Option<Stage>,
    pub prompt: String,
    pub duration_s: i32,
    pub quality_min: f64,
    pub priority: Priority,
    pub backend_choice: aiprod_domain::BackendChoice,
    pub speed_priority: bool,
    pub image_url: Option<String>,
    pub metadata: Value,
    pub backend: Option<BackendName>,
    pub estimated_cost_micros: Option<i64>,
    pub cost_micros: Option<i64>,
    pub quality_score: Option<f64>,
    pub result_uri: Option<String>,
    pub error: Option<String>,
    pub cancel_requested: bool,
    pub reap_count: i32,
    pub budget_day: Option<NaiveDate>,
    pub budget_held_micros: i64,
    pub fail_over_budget: bool,
    pub use_cache: bool,
    pub waiting_reason: Option<String>,
    pub waiting_need_micros: Option<i64>,
    pub waiting_since: Option<DateTime<Utc>>,
    pub waited_ms: i64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The current lease's fencing token (what a claim takes).
    pub lease_epoch: i64,
}

impl TryFrom<JobRow> for JobRecord {
    type Error = sqlx::Error;

    fn try_from(r: JobRow) -> Result<JobRecord, sqlx::Error> {
        let body = serde_json::json!({
            "prompt": r.prompt,
            "duration_s": r.duration_s,
            "quality_min": r.quality_min,
            "priority": r.priority,
            "backend": r.backend_choice,
            "speed_priority": r.speed_priority,
            "image_url": r.image_url,
            "metadata": r.metadata,
            "over_budget": if r.fail_over_budget { OverBudget::Fail } else { OverBudget::Wait },
            "cache": r.use_cache,
        });
        let spec = JobSpec::parse(&body).map_err(|errors| {
            sqlx::Error::Decode(format!("job {} breaks a request rule: {errors:?}", r.id).into())
        })?;
        Ok(JobRecord {
            id: r.id,
            tenant_id: r.tenant_id,
            status: r.status,
            stage: r.stage,
            spec,
            backend: r.backend,
            estimated_cost_micros: r.estimated_cost_micros,
            cost_micros: r.cost_micros,
            quality_score: r.quality_score,
            result_uri: r.result_uri,
            error: r.error,
            cancel_requested: r.cancel_requested,
            reap_count: r.reap_count,
            budget_day: r.budget_day,
            budget_held_micros: r.budget_held_micros,
            waiting_reason: r.waiting_reason,
            waiting_need_micros: r.waiting_need_micros,
            waiting_since: r.waiting_since,
            waited_ms: r.waited_ms,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
        })
    }
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

/// A client's idempotency key, unique within its tenant for `ttl` after the job it made.
#[derive(Clone, Copy, Debug)]
pub struct IdempotencyKey<'a> {
    /// The key as the client sent it.
    pub key: &'a str,
    /// How long it stays bound to its job; after that the same key makes a new job.
    pub ttl: Duration,
}

/// Inserts a job of `tenant` and dispatches it in one statement, so an accepted job always has
/// a dispatch waiting. With an idempotency key, a replay (same tenant, key and request, within
/// the key's TTL) returns the first job and writes nothing. Keys of other tenants never meet.
#[tracing::instrument(skip_all, fields(job_id = %id, tenant_id = %tenant))]
pub async fn insert_job(
    pool: &PgPool,
    tenant: TenantId,
    id: JobId,
    spec: &JobSpec,
    idempotency: Option<IdempotencyKey<'_>>,
) -> sqlx::Result<InsertOutcome> {
    let fingerprint = spec.fingerprint();
    let key = idempotency.map(|k| k.key);
    if let Some(k) = idempotency {
        // An expired key is let go first, so the insert below can take it again. Two
        // statements: a unique index does not see a change made earlier in the same statement.
        sqlx::query!(
            "update job set idempotency_key = null
              where tenant_id = $1 and idempotency_key = $2 and idempotency_expires_at <= now()",
            tenant as TenantId,
            k.key,
        )
        .execute(pool)
        .await?;
    }
    let ttl_ms = idempotency.map(|k| millis(k.ttl));
    let inserted = sqlx::query_scalar!(
        r#"with j as (
               insert into job (id, prompt, duration_s, quality_min, priority, backend_choice,
                                speed_priority, image_url, metadata, idempotency_key, request_hash,
                                fail_over_budget, tenant_id, idempotency_expires_at, use_cache)
               values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                       now() + $14::bigint * interval '1 millisecond', $15)
               on conflict (tenant_id, idempotency_key) do nothing
               returning id, priority, reap_count
           )
           select dispatch_job(j.id, j.priority, j.reap_count) as "id!: JobId" from j"#,
        id as JobId,
        spec.prompt(),
        spec.duration_s(),
        spec.quality_min(),
        spec.priority() as Priority,
        spec.backend() as aiprod_domain::BackendChoice,
        spec.speed_priority(),
        spec.image_url(),
        spec.metadata(),
        key,
        fingerprint,
        spec.over_budget() == OverBudget::Fail,
        tenant as TenantId,
        ttl_ms,
        spec.cache(),
    )
    .fetch_optional(pool)
    .await?;
    if let Some(id) = inserted {
        return Ok(InsertOutcome::Created(id));
    }
    let existing = sqlx::query!(
        r#"select id as "id: JobId", request_hash from job
            where tenant_id = $1 and idempotency_key = $2"#,
        tenant as TenantId,
        key
    )
    .fetch_one(pool)
    .await?;
    Ok(if existing.request_hash == fingerprint {
        InsertOutcome::Replayed(existing.id)
    } else {
        InsertOutcome::KeyConflict(existing.id)
    })
}

/// One job, or `None`.
#[tracing::instrument(skip_all, fields(job_id = %id))]
pub async fn get_job(db: impl PgExecutor<'_>, id: JobId) -> sqlx::Result<Option<JobRecord>> {
    sqlx::query_as!(
        JobRow,
        r#"select id as "id: JobId", tenant_id as "tenant_id: TenantId",
                  status as "status: JobStatus", stage as "stage: Stage",
                  prompt, duration_s, quality_min, priority as "priority: Priority",
                  backend_choice as "backend_choice: aiprod_domain::BackendChoice",
                  speed_priority, image_url, metadata, backend as "backend: BackendName",
                  estimated_cost_micros, cost_micros, quality_score, result_uri, error,
                  cancel_requested, reap_count, budget_day, budget_held_micros, fail_over_budget, use_cache,
                  waiting_reason, waiting_need_micros, waiting_since, waited_ms, created_at,
                  started_at, finished_at, lease_epoch
             from job where id = $1"#,
        id as JobId
    )
    .fetch_optional(db)
    .await?
    .map(JobRecord::try_from)
    .transpose()
}

/// A page of `tenant`'s jobs, newest first, after `cursor` (the last id of the previous page).
pub async fn list_jobs(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    status: Option<JobStatus>,
    limit: i64,
    cursor: Option<JobId>,
) -> sqlx::Result<Vec<JobRecord>> {
    sqlx::query_as!(
        JobRow,
        r#"select id as "id: JobId", tenant_id as "tenant_id: TenantId",
                  status as "status: JobStatus", stage as "stage: Stage",
                  prompt, duration_s, quality_min, priority as "priority: Priority",
                  backend_choice as "backend_choice: aiprod_domain::BackendChoice",
                  speed_priority, image_url, metadata, backend as "backend: BackendName",
                  estimated_cost_micros, cost_micros, quality_score, result_uri, error,
                  cancel_requested, reap_count, budget_day, budget_held_micros, fail_over_budget, use_cache,
                  waiting_reason, waiting_need_micros, waiting_since, waited_ms, created_at,
                  started_at, finished_at, lease_epoch
             from job
            where tenant_id = $4 and ($1::job_status is null or status = $1)
              and ($2::uuid is null or id < $2)
            order by id desc limit $3"#,
        status as Option<JobStatus>,
        cursor as Option<JobId>,
        limit,
        tenant as TenantId,
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(JobRecord::try_from)
    .collect()
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

/// Cancels a job of `tenant` that has not started or waits for money, or asks a running one
/// to stop before its next stage (the `cancel` event of the state machine). Another tenant's
/// job is `NotFound`.
#[tracing::instrument(skip_all, fields(job_id = %id))]
pub async fn request_cancel(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    id: JobId,
) -> sqlx::Result<CancelOutcome> {
    let row = sqlx::query!(
        r#"with prev as (select id, status from job where id = $1 and tenant_id = $2 for update),
           upd as (
               update job j set cancel_requested = true,
                      status = next_job_status(j.status, 'cancel', j.cancel_requested),
                      updated_at = now()
                 from prev
                where j.id = prev.id and next_job_status(j.status, 'cancel', j.cancel_requested) is not null
               returning j.status
           ), st as (
               update job_stage s set status = 'canceled', updated_at = now()
                 from prev p
                where s.job_id = p.id and p.status = 'waiting_budget' and s.status = 'waiting'
           )
           select p.status as "status!: JobStatus",
                  (select u.status from upd u) as "now: JobStatus"
             from prev p"#,
        id as JobId,
        tenant as TenantId,
    )
    .fetch_optional(db)
    .await?;
    Ok(match row {
        None => CancelOutcome::NotFound,
        Some(r) => match r.now {
            None => CancelOutcome::AlreadyEnded(r.status),
            Some(JobStatus::Canceled) => CancelOutcome::Canceled,
            Some(_) => CancelOutcome::Requested,
        },
    })
}
