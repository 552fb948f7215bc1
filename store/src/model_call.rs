//! The write-ahead record of paid model calls (`model_call`), as `render_task` is for renders:
//! an intent before the call, holding the call's estimate out of the job's reservation; the
//! provider's id where it gives one; then the answer and its cost, whose update settles the
//! money in the ledger (the `model_call_settle_budget` trigger). A worker that restarts reads
//! these rows: a done call is reused, a submitted one polled, and an intent is a call that may
//! have been made.

use aiprod_domain::{JobId, ModelCallKind, ModelCallState, Money};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// One row of `model_call`.
#[derive(Clone, Debug)]
pub struct ModelCall {
    /// Its id (UUIDv7).
    pub id: Uuid,
    /// The job.
    pub job_id: JobId,
    /// What it was for.
    pub kind: ModelCallKind,
    /// Which call of the job (`analysis`, `creative-repair`, `keyframe-03`, `judge-02-1`…).
    pub step: String,
    /// The try of this step, from 1.
    pub attempt: i32,
    /// `gemini`, `imagen`, `replicate`, `simulated`.
    pub provider: String,
    /// The model id.
    pub model: String,
    /// sha256 of the request.
    pub request_hash: String,
    /// The seed sent, where the model takes one.
    pub seed: Option<i64>,
    /// Where it stands.
    pub state: ModelCallState,
    /// The provider's id.
    pub remote_id: Option<String>,
    /// The estimate, held until the cost is known.
    pub estimated_cost_micros: i64,
    /// What it cost.
    pub cost_micros: Option<i64>,
    /// Whether the cache answered it.
    pub cache_hit: bool,
    /// The answer (JSON models).
    pub answer: Option<Value>,
    /// Our copy of an image answer.
    pub artifact_uri: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The intent's time.
    pub created_at: DateTime<Utc>,
}

/// What an intent records.
#[derive(Clone, Debug)]
pub struct ModelIntent<'a> {
    /// The job.
    pub job_id: JobId,
    /// The lease the caller holds.
    pub lease_epoch: i64,
    /// The caller.
    pub worker_id: &'a str,
    /// What for.
    pub kind: ModelCallKind,
    /// Which call of the job.
    pub step: &'a str,
    /// The try.
    pub attempt: i32,
    /// The provider.
    pub provider: &'a str,
    /// The model.
    pub model: &'a str,
    /// sha256 of the request.
    pub request_hash: &'a str,
    /// The seed, where the model takes one.
    pub seed: Option<i64>,
    /// The estimate; the job must hold it (see `insert_model_call`).
    pub estimate: Money,
}

/// What writing a model call's intent did.
#[derive(Debug)]
pub enum ModelIntentOutcome {
    /// Written, its estimate moved from the job's hold onto the call: call now.
    Written(Box<ModelCall>),
    /// The job does not hold the estimate (reserve it first, then write again).
    Short,
    /// The lease is gone.
    LeaseLost,
}

/// Writes a call's intent, fenced on the job's lease, moving its estimate from what the job
/// holds onto the row in the same statement. The caller reserves the estimate first
/// (`reserve_budget`, which also books the job to its day); a job that holds less, because a
/// sibling call took it meanwhile, gets `Short` and reserves again. A job with no budget day
/// yet holds nothing and is booked nowhere: the call is recorded with nothing reserved.
pub async fn insert_model_call(
    pool: &PgPool,
    i: &ModelIntent<'_>,
) -> sqlx::Result<ModelIntentOutcome> {
    let id = Uuid::now_v7();
    let row = sqlx::query!(
        r#"with j as (
               select id, budget_day, budget_held_micros as held from job
                where id = $2 and lease_epoch = $3 and locked_by = $4 and status = 'running'
                  for update
           ), ok as (
               select * from j where budget_day is null or held >= $11
           ), ins as (
               insert into model_call (id, job_id, kind, step, attempt, provider, model,
                                       request_hash, seed, estimated_cost_micros, reserved_micros)
               select $1, ok.id, $5, $6, $7, $8, $9, $10, $12, $11,
                      case when ok.budget_day is null then 0 else $11 end
                 from ok
               returning id, job_id, kind, step, attempt, provider, model, request_hash, seed,
                         state, remote_id, estimated_cost_micros, cost_micros, cache_hit, answer,
                         artifact_uri, error, created_at
           ), ju as (
               update job set budget_held_micros = budget_held_micros - $11
                 from ok
                where job.id = ok.id and ok.budget_day is not null and $11 > 0
                  and exists (select 1 from ins)
           )
           select (select count(*) from j) as "leased!",
                  i.id as "id?", i.job_id as "job_id?: JobId", i.kind as "kind?: ModelCallKind",
                  i.step as "step?", i.attempt as "attempt?", i.provider as "provider?",
                  i.model as "model?", i.request_hash as "request_hash?", i.seed,
                  i.state as "state?: ModelCallState", i.remote_id,
                  i.estimated_cost_micros as "estimated_cost_micros?", i.cost_micros,
                  i.cache_hit as "cache_hit?", i.answer, i.artifact_uri, i.error,
                  i.created_at as "created_at?"
             from (select 1) as one left join ins i on true"#,
        id,
        i.job_id as JobId,
        i.lease_epoch,
        i.worker_id,
        i.kind as ModelCallKind,
        i.step,
        i.attempt,
        i.provider,
        i.model,
        i.request_hash,
        i.estimate.micros(),
        i.seed,
    )
    .fetch_one(pool)
    .await?;
    if row.leased == 0 {
        return Ok(ModelIntentOutcome::LeaseLost);
    }
    // The row as written, from the insert itself: no second round trip to read it back.
    let written = (|| {
        Some(ModelCall {
            id: row.id?,
            job_id: row.job_id?,
            kind: row.kind?,
            step: row.step?,
            attempt: row.attempt?,
            provider: row.provider?,
            model: row.model?,
            request_hash: row.request_hash?,
            seed: row.seed,
            state: row.state?,
            remote_id: row.remote_id,
            estimated_cost_micros: row.estimated_cost_micros?,
            cost_micros: row.cost_micros,
            cache_hit: row.cache_hit?,
            answer: row.answer,
            artifact_uri: row.artifact_uri,
            error: row.error,
            created_at: row.created_at?,
        })
    })();
    Ok(written.map_or(ModelIntentOutcome::Short, |c| {
        ModelIntentOutcome::Written(Box::new(c))
    }))
}

/// A job's calls of one step, by try.
pub async fn model_calls(
    db: impl PgExecutor<'_>,
    job: JobId,
    step: &str,
) -> sqlx::Result<Vec<ModelCall>> {
    sqlx::query_as!(
        ModelCall,
        r#"select id, job_id as "job_id: JobId", kind as "kind: ModelCallKind", step, attempt,
                  provider, model, request_hash, seed, state as "state: ModelCallState",
                  remote_id, estimated_cost_micros, cost_micros, cache_hit, answer, artifact_uri,
                  error, created_at
             from model_call where job_id = $1 and step = $2 order by attempt"#,
        job as JobId,
        step,
    )
    .fetch_all(db)
    .await
}

/// What a call's step changes; `None` leaves a column as it is.
#[derive(Clone, Debug, Default)]
pub struct ModelUpdate {
    /// The new state.
    pub state: Option<ModelCallState>,
    /// The provider's id.
    pub remote_id: Option<String>,
    /// The cost: settles the call's money (once).
    pub cost: Option<Money>,
    /// Tokens in.
    pub prompt_tokens: Option<i64>,
    /// Tokens out.
    pub output_tokens: Option<i64>,
    /// The answer.
    pub answer: Option<Value>,
    /// Our copy of an image.
    pub artifact_uri: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The model service whose circuit the update closes in the same statement (the call
    /// succeeded), so that a success costs no statement of its own.
    pub closes_circuit: Option<String>,
}

/// Moves a call on from state `from`; false when it had left `from` already.
pub async fn update_model_call(
    db: impl PgExecutor<'_>,
    id: Uuid,
    from: ModelCallState,
    u: &ModelUpdate,
) -> sqlx::Result<bool> {
    // `closed` is joined in, so it runs once whether or not the call moved: the provider
    // answered either way.
    let moved = sqlx::query_scalar!(
        r#"with moved as (
               update model_call
                  set state = coalesce($3, state),
                      remote_id = coalesce($4, remote_id),
                      cost_micros = coalesce($5, cost_micros),
                      prompt_tokens = coalesce($6, prompt_tokens),
                      output_tokens = coalesce($7, output_tokens),
                      answer = coalesce($8, answer),
                      artifact_uri = coalesce($9, artifact_uri),
                      error = coalesce($10, error),
                      submitted_at = case when $4::text is not null then now()
                                          else submitted_at end,
                      finished_at = case when $3 in ('done', 'failed', 'lost') then now()
                                         else finished_at end
                where id = $1 and state = $2
               returning 1 as one
           ),
           closed as materialized (
               select case when $11::text is null then 0 else close_model_circuit($11) end as n
           )
           select count(moved.one) as "moved!" from closed left join moved on true"#,
        id,
        from as ModelCallState,
        u.state as Option<ModelCallState>,
        u.remote_id.as_deref(),
        u.cost.map(Money::micros),
        u.prompt_tokens,
        u.output_tokens,
        u.answer.as_ref(),
        u.artifact_uri.as_deref(),
        u.error.as_deref(),
        u.closes_circuit.as_deref(),
    )
    .fetch_one(db)
    .await?;
    Ok(moved == 1)
}

/// A call the cache answered: recorded done, at $0, with what it saved.
#[derive(Clone, Debug)]
pub struct ModelHit<'a> {
    /// The intent it stands for (its estimate is not reserved).
    pub intent: ModelIntent<'a>,
    /// The cached answer.
    pub answer: Option<Value>,
    /// The cached image.
    pub artifact_uri: Option<&'a str>,
    /// What the cached call cost.
    pub saved: Money,
}

/// Records a cache hit as a done call costing nothing; false when the lease is gone.
pub async fn insert_model_hit(db: impl PgExecutor<'_>, h: &ModelHit<'_>) -> sqlx::Result<bool> {
    let i = &h.intent;
    let done = sqlx::query!(
        r#"insert into model_call (id, job_id, kind, step, attempt, provider, model, request_hash,
                                   seed, state, estimated_cost_micros, cost_micros, cache_hit,
                                   saved_micros, answer, artifact_uri, finished_at)
           select $1, j.id, $5, $6, $7, $8, $9, $10, $11, 'done', 0, 0, true, $12, $13, $14, now()
             from job j
            where j.id = $2 and j.lease_epoch = $3 and j.locked_by = $4 and j.status = 'running'"#,
        Uuid::now_v7(),
        i.job_id as JobId,
        i.lease_epoch,
        i.worker_id,
        i.kind as ModelCallKind,
        i.step,
        i.attempt,
        i.provider,
        i.model,
        i.request_hash,
        i.seed,
        h.saved.micros(),
        h.answer.as_ref(),
        h.artifact_uri,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Settles the calls a job left unanswered when it ended (a worker died mid-call and the job
/// was then canceled or failed, so no worker resumed the call): each is `lost` and charged its
/// estimate, since the provider may have billed it, which moves its reservation to spent. One
/// statement per call, oldest first, so the days are locked in the usual order. Returns the
/// calls settled.
pub async fn settle_abandoned_model_calls(pool: &PgPool, limit: i64) -> sqlx::Result<u64> {
    let rows = sqlx::query!(
        r#"select m.id, m.state as "state: ModelCallState" from model_call m
             join job j on j.id = m.job_id
            where m.state in ('intent', 'submitted') and job_status_is_terminal(j.status)
            order by m.id
            limit $1"#,
        limit,
    )
    .fetch_all(pool)
    .await?;
    let mut settled = 0;
    for r in rows {
        let done = sqlx::query!(
            "update model_call
                set state = 'lost', cost_micros = estimated_cost_micros, finished_at = now(),
                    error = 'its job ended before the answer was saved; charged its estimate'
              where id = $1 and state = $2 and cost_micros is null",
            r.id,
            r.state as ModelCallState,
        )
        .execute(pool)
        .await?;
        settled += done.rows_affected();
    }
    Ok(settled)
}
