//! The write-ahead record of remote renders (`render_task`): an intent before the POST, the
//! provider's id right after it, then the outputs, our copy and the cost, each its own durable
//! step. A worker that restarts reads these rows and resumes where the last step ended.

use aiprod_domain::{BackendName, FailureClass, HardwareSeconds, JobId, Money, RenderState};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// One row of `render_task`: one try of one shot on one backend.
#[derive(Clone, Debug)]
pub struct RenderTask {
    /// Its id (UUIDv7).
    pub id: Uuid,
    /// The job.
    pub job_id: JobId,
    /// The shot's index.
    pub shot: i32,
    /// The try of this shot, from 1.
    pub attempt: i32,
    /// Where it runs.
    pub backend: BackendName,
    /// Where it stands.
    pub state: RenderState,
    /// The provider's id.
    pub remote_id: Option<String>,
    /// The seed sent to the provider.
    pub seed: i64,
    /// The length asked of the provider.
    pub duration_s: i32,
    /// The estimate.
    pub estimated_cost_micros: i64,
    /// What the try was charged: the provider's figure where it gave one, else the estimate
    /// (0 for a failure nobody bills). Null until the try ends.
    pub cost_micros: Option<i64>,
    /// What the provider's own measure of the try costs, where it reports one
    /// (`provider_seconds`); kept from the moment the render finished, so a resumed download
    /// charges it too.
    pub provider_cost_micros: Option<i64>,
    /// Where the provider put the video.
    pub outputs: Option<Value>,
    /// Our copy.
    pub artifact_uri: Option<String>,
    /// How it failed.
    pub failure: Option<FailureClass>,
    /// Why it failed, for people.
    pub error: Option<String>,
    /// Technical QA of the clip it delivered (`{verdict, checks}`), once checked.
    pub qa: Option<Value>,
    /// The intent's time.
    pub created_at: DateTime<Utc>,
    /// When the id was saved.
    pub submitted_at: Option<DateTime<Utc>>,
    /// When it reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Every render of a job, by shot and try.
#[tracing::instrument(skip_all, fields(job_id = %job))]
pub async fn render_tasks(db: impl PgExecutor<'_>, job: JobId) -> sqlx::Result<Vec<RenderTask>> {
    sqlx::query_as!(
        RenderTask,
        r#"select id, job_id as "job_id: JobId", shot, attempt, backend as "backend: BackendName",
                  state as "state: RenderState", remote_id, seed, duration_s, estimated_cost_micros,
                  cost_micros, provider_cost_micros, outputs, artifact_uri,
                  failure as "failure: FailureClass", error, qa, created_at, submitted_at,
                  finished_at
             from render_task where job_id = $1 order by shot, attempt"#,
        job as JobId
    )
    .fetch_all(db)
    .await
}

/// What an intent row records.
#[derive(Clone, Debug)]
pub struct Intent<'a> {
    /// The job.
    pub job_id: JobId,
    /// The lease the caller holds.
    pub lease_epoch: i64,
    /// The caller.
    pub worker_id: &'a str,
    /// The shot.
    pub shot: i32,
    /// The try.
    pub attempt: i32,
    /// Where.
    pub backend: BackendName,
    /// How long.
    pub duration_s: i32,
    /// The estimate, reserved until the try's cost is known.
    pub estimate: Money,
    /// What runway would charge for the same shot (the dashboards' savings baseline).
    pub baseline: Option<Money>,
    /// The seed to send; `None`: one drawn from the row's id.
    pub seed: Option<i64>,
    /// The render cache's key of the shot's full specification, when the job uses the cache
    /// (its end fills or frees the cache's claim, by trigger).
    pub spec_key: Option<&'a str>,
}

/// What writing an intent did.
#[derive(Debug)]
pub enum IntentOutcome {
    /// The intent is written and its money reserved: POST now.
    Written(Box<RenderTask>),
    /// The job's budget day, or its tenant's, cannot cover this try on top of what the job
    /// holds.
    OverBudget,
    /// The lease is gone (another worker owns the job, and must not be raced to the provider),
    /// or the job is no longer running at `render` (a cancel, or a checkpoint that did not
    /// advance it there).
    LeaseLost,
}

/// Writes the intent before the POST, fenced on the job's lease and on its row being at
/// `render`, and reserves the try's estimate in the same statement: from what the job holds
/// first (its `financial` reservation), and from its budget day for the rest, conditionally on
/// the day's limit and on its tenant's day's when the job is booked there (both or neither,
/// locked tenant's first, as `reserve_budget` does). A job with no budget day (no limit applies
/// to it) reserves nothing.
///
/// The stage fence is what lets `render` start before the job's earlier checkpoints have
/// committed (ARCHITECTURE.md, "Invariants"): its row reaches `render` only by the `financial`
/// checkpoint, so an intent written proves that checkpoint advanced the job, and one that found
/// a cancel, or was never written, leaves no intent and so no POST.
#[tracing::instrument(skip_all, fields(job_id = %intent.job_id, shot = intent.shot, backend = %intent.backend))]
pub async fn insert_intent(pool: &PgPool, intent: &Intent<'_>) -> sqlx::Result<IntentOutcome> {
    // First on the job's stripe of its days; when that is short, on the whole of each day.
    for whole in [false, true] {
        let written =
            insert_intents(pool, intent.worker_id, std::slice::from_ref(intent), whole).await?;
        if let Some(task) = written.into_iter().flatten().next() {
            return Ok(IntentOutcome::Written(Box::new(task)));
        }
        // Nothing written: a lost lease refuses both passes alike, so it is told apart once,
        // after the whole-day pass.
    }
    let leased = sqlx::query_scalar!(
        r#"select exists (select 1 from job
                           where id = $1 and lease_epoch = $2 and locked_by = $3
                             and status = 'running' and stage = 'render') as "leased!""#,
        intent.job_id as JobId,
        intent.lease_epoch,
        intent.worker_id,
    )
    .fetch_one(pool)
    .await?;
    Ok(if leased {
        IntentOutcome::OverBudget
    } else {
        IntentOutcome::LeaseLost
    })
}

/// Writes `intents` of `worker`'s jobs in one statement, each only if its job's lease holds, its
/// row is at `render` and its money can be reserved: on the job's stripe of its days, or with `whole` on what each day
/// has left as a whole (`budget_take`). Each job's row is locked first; a job may appear at most
/// once (its money is read once). One answer per intent, `None` where nothing was written.
pub(crate) async fn insert_intents(
    db: impl PgExecutor<'_>,
    worker: &str,
    intents: &[Intent<'_>],
    whole: bool,
) -> sqlx::Result<Vec<Option<RenderTask>>> {
    let ids: Vec<Uuid> = intents.iter().map(|_| Uuid::now_v7()).collect();
    let jobs: Vec<JobId> = intents.iter().map(|i| i.job_id).collect();
    let epochs: Vec<i64> = intents.iter().map(|i| i.lease_epoch).collect();
    let shots: Vec<i32> = intents.iter().map(|i| i.shot).collect();
    let attempts: Vec<i32> = intents.iter().map(|i| i.attempt).collect();
    let backends: Vec<BackendName> = intents.iter().map(|i| i.backend).collect();
    let seeds: Vec<i64> = intents
        .iter()
        .zip(&ids)
        .map(|(i, id)| i.seed.unwrap_or_else(|| intent_seed(*id)))
        .collect();
    let durations: Vec<i32> = intents.iter().map(|i| i.duration_s).collect();
    let estimates: Vec<i64> = intents.iter().map(|i| i.estimate.micros()).collect();
    let baselines: Vec<Option<i64>> = intents
        .iter()
        .map(|i| i.baseline.map(Money::micros))
        .collect();
    let keys: Vec<Option<&str>> = intents.iter().map(|i| i.spec_key).collect();
    let written = sqlx::query_as!(
        RenderTask,
        r#"with i as (
               select * from unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::int[], $5::int[],
                                    $6::backend_name[], $7::bigint[], $8::int[], $9::bigint[],
                                    $10::bigint[], $11::text[])
                 as i(id, job_id, epoch, shot, attempt, backend, seed, duration_s, estimate,
                      baseline, spec_key)
           ), a as (
               select i.*, j.tenant_id, j.budget_day, j.tenant_budget, j.budget_stripe,
                      least(i.estimate, j.budget_held_micros) as take,
                      i.estimate - least(i.estimate, j.budget_held_micros) as extra
                 from i join job j on j.id = i.job_id
                where j.lease_epoch = i.epoch and j.locked_by = $12 and j.status = 'running'
                  and j.stage = 'render'
                  for update of j
           ), ok as (
               -- Materialized (a volatile call): the stripes move once per intent, or not at all.
               select a.* from a
                where a.budget_day is null
                   or budget_take(a.budget_day, a.tenant_id, a.tenant_budget, a.budget_stripe,
                                  a.extra, $13)
           ), ins as (
               insert into render_task (id, job_id, shot, attempt, backend, seed, duration_s,
                                        estimated_cost_micros, reserved_micros,
                                        baseline_micros, spec_key)
               select id, job_id, shot, attempt, backend, seed, duration_s, estimate,
                      case when budget_day is null then 0 else estimate end, baseline, spec_key
                 from ok
               returning *
           ), ju as (
               update job set budget_held_micros = budget_held_micros - ok.take
                 from ok
                where job.id = ok.job_id and ok.budget_day is not null and ok.take > 0
                  and ok.id in (select id from ins)
           ), e as (
               insert into budget_entry (day, kind, job_id, render_task_id, tenant_id,
                                         reserved_delta_micros, note)
               select ok.budget_day, 'reserve', ok.job_id, ok.id,
                      case when ok.tenant_budget then ok.tenant_id end, ok.extra,
                      format('%s shot %s try %s beyond the job''s reservation',
                             ok.backend::text, ok.shot, ok.attempt)
                 from ok
                where ok.budget_day is not null and ok.extra > 0
                  and ok.id in (select id from ins)
           )
           select id as "id!", job_id as "job_id!: JobId", shot as "shot!",
                  attempt as "attempt!", backend as "backend!: BackendName",
                  state as "state!: RenderState", remote_id, seed as "seed!",
                  duration_s as "duration_s!",
                  estimated_cost_micros as "estimated_cost_micros!", cost_micros,
                  provider_cost_micros, outputs, artifact_uri,
                  failure as "failure: FailureClass", error, qa,
                  created_at as "created_at!", submitted_at, finished_at
             from ins"#,
        &ids,
        &jobs as &[JobId],
        &epochs,
        &shots,
        &attempts,
        &backends as &[BackendName],
        &seeds,
        &durations,
        &estimates,
        &baselines as &[Option<i64>],
        &keys as &[Option<&str>],
        worker,
        whole,
    )
    .fetch_all(db)
    .await?;
    let mut written: std::collections::HashMap<Uuid, RenderTask> =
        written.into_iter().map(|t| (t.id, t)).collect();
    Ok(ids.iter().map(|id| written.remove(id)).collect())
}

/// The seed of a try that was given none: 31 bits of its row's id (every provider takes a seed
/// of that size).
pub(crate) fn intent_seed(id: Uuid) -> i64 {
    i64::from(u32::from_be_bytes(id.as_bytes()[12..16].try_into().expect("four bytes")) >> 1)
}

/// A step forward of one render. `None` fields keep their value.
#[derive(Clone, Debug, Default)]
pub struct RenderUpdate {
    /// The new state.
    pub state: Option<RenderState>,
    /// The provider's id.
    pub remote_id: Option<String>,
    /// Where the provider put the video.
    pub outputs: Option<Value>,
    /// Our copy.
    pub artifact_uri: Option<String>,
    /// What was charged.
    pub cost: Option<Money>,
    /// How it failed.
    pub failure: Option<FailureClass>,
    /// Why, for people.
    pub error: Option<String>,
    /// Technical QA of the delivered clip.
    pub qa: Option<Value>,
    /// The provider's own measure of the render (its hardware seconds).
    pub provider_seconds: Option<HardwareSeconds>,
    /// What that measure costs; the try's `cost` should then be the same figure.
    pub provider_cost: Option<Money>,
}

/// Records a step of render `id` taken from state `from`. Deliberately not fenced on the job's
/// lease: what the provider did (an id, a charge) is a fact whoever learns it. Returns false if
/// the row had left `from` (another worker got there first).
#[tracing::instrument(skip_all, fields(render_task = %id, from = %from))]
pub async fn update_render(
    db: impl PgExecutor<'_>,
    id: Uuid,
    from: RenderState,
    u: &RenderUpdate,
) -> sqlx::Result<bool> {
    // A step to `downloaded` closes its backend's circuit in the same statement, as the
    // writer's group step does (`close_circuits()`, migrations/20261208000001).
    let moved = sqlx::query_scalar!(
        r#"with moved as (
               update render_task
                  set state = coalesce($3, state),
                      remote_id = coalesce($4, remote_id),
                      outputs = coalesce($5, outputs),
                      artifact_uri = coalesce($6, artifact_uri),
                      cost_micros = coalesce($7, cost_micros),
                      failure = coalesce($8, failure),
                      error = coalesce($9, error),
                      qa = coalesce($10, qa),
                      provider_seconds = coalesce($11::text::numeric, provider_seconds),
                      provider_cost_micros = coalesce($12, provider_cost_micros),
                      submitted_at = case when $4::text is not null then now() else submitted_at end,
                      finished_at = case when $3 in ('downloaded', 'failed', 'canceled', 'orphaned')
                                         then now() else finished_at end,
                      updated_at = now()
                where id = $1 and state = $2
               returning backend, state, 1 as one
           ),
           closed as materialized (
               select case when exists (select 1 from moved where state = 'downloaded')
                           then close_circuits(array(select backend from moved
                                                      where state = 'downloaded'))
                           else 0 end as n
           )
           select count(moved.one) as "moved!" from closed left join moved on true"#,
        id,
        from as RenderState,
        u.state as Option<RenderState>,
        u.remote_id.as_deref(),
        u.outputs.as_ref(),
        u.artifact_uri.as_deref(),
        u.cost.map(Money::micros),
        u.failure as Option<FailureClass>,
        u.error.as_deref(),
        u.qa.as_ref(),
        u.provider_seconds.as_ref().map(ToString::to_string),
        u.provider_cost.map(Money::micros),
    )
    .fetch_one(db)
    .await?;
    Ok(moved == 1)
}

/// A shot the render cache answered: recorded as a downloaded try costing nothing, pointing at
/// the earlier render's artifact and carrying its QA, with what that render cost as the
/// saving. `None` when the
/// lease is gone.
pub async fn insert_render_hit(
    db: impl PgExecutor<'_>,
    intent: &Intent<'_>,
    artifact_uri: &str,
    qa: Option<&Value>,
    saved: Money,
) -> sqlx::Result<Option<RenderTask>> {
    sqlx::query_as!(
        RenderTask,
        r#"insert into render_task (id, job_id, shot, attempt, backend, state, remote_id, seed,
                                    duration_s, estimated_cost_micros, cost_micros, artifact_uri,
                                    spec_key, cache_hit, saved_micros, baseline_micros, qa,
                                    submitted_at, finished_at)
           select $1, j.id, $5, $6, $7, 'downloaded', 'cache', $8, $9, 0, 0, $10, $11, true, $12,
                  $13, $14, now(), now()
             from job j
            where j.id = $2 and j.lease_epoch = $3 and j.locked_by = $4 and j.status = 'running'
           returning id, job_id as "job_id: JobId", shot, attempt, backend as "backend: BackendName",
                     state as "state: RenderState", remote_id, seed, duration_s,
                     estimated_cost_micros, cost_micros, provider_cost_micros, outputs,
                     artifact_uri, failure as "failure: FailureClass", error, qa, created_at, submitted_at,
                     finished_at"#,
        Uuid::now_v7(),
        intent.job_id as JobId,
        intent.lease_epoch,
        intent.worker_id,
        intent.shot,
        intent.attempt,
        intent.backend as BackendName,
        intent.seed.unwrap_or(0),
        intent.duration_s,
        artifact_uri,
        intent.spec_key,
        saved.micros(),
        intent.baseline.map(Money::micros),
        qa,
    )
    .fetch_optional(db)
    .await
}
