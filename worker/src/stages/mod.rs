//! The nine stages, one file each. A stage reads the job's request and the outputs of earlier
//! stages, and returns its own output (JSON, checkpointed) plus any job columns it sets. Each
//! takes only what it uses; `run` is the one place that picks those out of the worker's
//! context.

mod analysis;
mod creative;
mod finalize;
mod financial;
mod qa_semantic;
mod qa_technical;
mod render;
mod sanitize;
mod visual;

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use aiprod_domain::{JobId, JobSpec, Stage, StepError};
use aiprod_store::JobPatch;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::context::WorkerContext;
use crate::models::ModelCaller;
use crate::planner::budget::Purse;
use crate::planner::gemini;
use crate::shot::{Judge, ShotRenderer};
use aiprod_domain::{BackendName, Money};
use aiprod_platform::config::{KeyframeKind, PlannerKind, SemanticQaKind};

/// What a stage sees of its job.
#[derive(Debug)]
pub(crate) struct JobState {
    pub id: JobId,
    /// Its tenant: seeds are the tenant's own, so that no provider listing searched by seed
    /// finds another tenant's work.
    pub tenant: aiprod_domain::TenantId,
    pub lease_epoch: i64,
    /// Where the job's deadline counts from: acceptance, moved on by any time it waited
    /// for budget.
    pub deadline_from: chrono::DateTime<chrono::Utc>,
    pub spec: JobSpec,
    /// The earlier stages' outputs as JSON text: a parsed `Value` takes several times the
    /// memory, held by every job in flight, while a stage parses only the outputs it reads.
    pub outputs: BTreeMap<Stage, Box<str>>,
    /// Whether every render and model call row of the job is this run's own: the run holds the
    /// job's first lease (no earlier run can have left a row), and none of its stages has
    /// been tried twice. While it holds, a read of the job's history finds only what this run
    /// asked for, which `asked` tells without a round trip.
    pub fresh: bool,
    /// The model call steps this run has begun: while the run is `fresh`, a step not among
    /// them has no rows.
    pub asked: Mutex<HashSet<String>>,
}

impl JobState {
    /// The typed output of an earlier stage. Missing or unreadable output is a bug or a schema
    /// change, which retrying cannot mend.
    pub fn output<T: DeserializeOwned>(&self, stage: Stage) -> Result<T, StepError> {
        let v = self.outputs.get(&stage).ok_or_else(|| {
            StepError::Permanent(format!("the output of stage {stage} is missing"))
        })?;
        serde_json::from_str(v).map_err(|e| {
            StepError::Permanent(format!("the output of stage {stage} is unreadable: {e}"))
        })
    }
}

/// A finished stage's result.
#[derive(Debug, Clone, Default)]
pub(crate) struct StageOutput {
    pub output: Value,
    pub patch: JobPatch,
}

impl StageOutput {
    fn of<T: Serialize>(output: &T) -> StageOutput {
        StageOutput {
            output: serde_json::to_value(output).expect("stage outputs serialise"),
            patch: JobPatch::default(),
        }
    }

    fn with(mut self, patch: JobPatch) -> StageOutput {
        self.patch = patch;
        self
    }
}

/// Runs one try of `stage`, handing it what it uses. Each stage's future is boxed on its own,
/// so that a job holds the memory of the stage it runs, not of the largest stage (a job waits
/// in `render` for minutes, thousands at once).
#[tracing::instrument(skip_all, fields(job_id = %job.id, stage = %stage))]
pub(crate) async fn run(
    stage: Stage,
    ctx: &WorkerContext,
    job: &JobState,
) -> Result<StageOutput, StepError> {
    let settings = &ctx.settings;
    let caller = caller(ctx, job);
    let throttle_max = settings.backends.throttle_wait_max;
    let planner = ctx
        .models
        .gemini
        .as_deref()
        .filter(|_| settings.models.planner == PlannerKind::Gemini)
        .map(|gemini| gemini::Ask {
            caller: &caller,
            gemini,
            settings: &settings.models,
            throttle_max,
        });
    match stage {
        Stage::Sanitize => sanitize::run(job, &settings.worker.forbidden_words),
        Stage::Analysis => Box::pin(analysis::run(job, planner)).await,
        Stage::Creative => {
            let (money, backends) = purse_of(ctx, job).await?;
            let purse = Purse {
                money,
                prices: &settings.backends.prices,
                backends: &backends,
                keyframe: ctx.models.images.price(),
            };
            Box::pin(creative::run(job, planner, &purse)).await
        }
        Stage::Visual => {
            let drawer = visual::Drawer {
                planner,
                caller: self::caller(ctx, job),
                model: ctx.models.images.as_ref(),
                store: &ctx.store,
                media: &ctx.media,
                throttle_max,
            };
            Box::pin(visual::run(job, &drawer)).await
        }
        Stage::Financial => {
            let router = financial::Router {
                fleet: &ctx.backends,
                ledger: &ctx.ledger,
                backends: &settings.backends,
                worker_id: &ctx.worker_id,
            };
            Box::pin(financial::run(job, &router)).await
        }
        Stage::Render => {
            let judge = ctx
                .models
                .gemini
                .as_deref()
                .filter(|_| settings.models.qa_semantic == SemanticQaKind::Gemini)
                .map(|gemini| Judge {
                    caller: &caller,
                    gemini,
                    settings: &settings.models,
                    throttle_max,
                });
            // Parsed here only for the prompts, and dropped before the renders start.
            let prompts: BTreeMap<i32, String> = job
                .output::<visual::Visual>(Stage::Visual)?
                .shots
                .iter()
                .map(|s| (s.shot.index as i32, s.shot.render_prompt()))
                .collect();
            let sizes = output_sizes(settings);
            let renderer = ShotRenderer {
                judge,
                cache: job.spec.cache(),
                prompts: &prompts,
                sizes: &sizes,
                pool: &ctx.pool,
                writer: ctx.writer.as_ref(),
                posting: &ctx.posting,
                store: &ctx.store,
                media: &ctx.media,
                fleet: &ctx.backends,
                pollers: &ctx.pollers,
                backends: &settings.backends,
                retry: &settings.worker.retry,
                worker_id: &ctx.worker_id,
                job_id: job.id,
                tenant: job.tenant,
                lease_epoch: job.lease_epoch,
                deadline: job.deadline_from
                    + chrono::Duration::from_std(settings.worker.job_deadline)
                        .unwrap_or(chrono::TimeDelta::MAX),
            };
            Box::pin(render::run(job, &renderer)).await
        }
        Stage::QaTechnical => {
            Box::pin(qa_technical::run(job, &ctx.pool, &ctx.store, &ctx.media)).await
        }
        Stage::QaSemantic => Box::pin(qa_semantic::run(job, &ctx.pool, &settings.models)).await,
        Stage::Finalize => Box::pin(finalize::run(job, &ctx.store, &ctx.media)).await,
    }
}

/// Whether the job must see its earlier checkpoints committed before `stage` starts
/// (`pipeline`): so that a cancel or a lost lease they find stops it before it pays. That is a
/// stage that may call a paid service (`calls_out`), except `render`. Every paid call of
/// `render` follows an intent, a POST its own and a judge's the render's it scores, and an
/// intent is written only while the job's row is at `render`, running under this lease
/// (`aiprod_store::insert_intent`). The row reaches `render` only by the `financial`
/// checkpoint, which the writer commits before the intent queued behind it: an intent
/// written proves that checkpoint advanced the job, so `render` starts while it commits and
/// its first intent shares its group, one wait of the job's instead of two.
pub(crate) fn settles_first(stage: Stage, ctx: &WorkerContext) -> bool {
    stage != Stage::Render && calls_out(stage, ctx)
}

/// Whether `stage` may call a paid service (a planner, an image model, a video backend, a
/// judge), as this worker is configured.
pub(crate) fn calls_out(stage: Stage, ctx: &WorkerContext) -> bool {
    let m = &ctx.settings.models;
    let gemini = ctx.models.gemini.is_some();
    match stage {
        Stage::Analysis | Stage::Creative => gemini && m.planner == PlannerKind::Gemini,
        // A Gemini plan also has Gemini describe each keyframe.
        Stage::Visual => {
            m.keyframes != KeyframeKind::Simulated || (gemini && m.planner == PlannerKind::Gemini)
        }
        Stage::Render => true,
        Stage::QaSemantic => gemini && m.qa_semantic == SemanticQaKind::Gemini,
        Stage::Sanitize | Stage::Financial | Stage::QaTechnical | Stage::Finalize => false,
    }
}

/// The model caller of one job's try.
fn caller<'a>(ctx: &'a WorkerContext, job: &'a JobState) -> ModelCaller<'a> {
    ModelCaller {
        pool: &ctx.pool,
        ledger: &ctx.ledger,
        worker_id: &ctx.worker_id,
        job_id: job.id,
        lease_epoch: job.lease_epoch,
        spec: &job.spec,
        circuit: ctx.settings.backends.circuit_policy(),
        probe_ttl: ctx.settings.backends.circuit_probe_ttl,
        asked: job.fresh.then_some(&job.asked),
    }
}

/// What the job may spend (today's headroom, narrowed by its tenant's cap per job) and the
/// backends it may render on: what its plan's number of shots must fit.
async fn purse_of(
    ctx: &WorkerContext,
    job: &JobState,
) -> Result<(Option<Money>, Vec<BackendName>), StepError> {
    let (headroom, rights) = ctx
        .ledger
        .purse(job.id)
        .await
        .map_err(|e| StepError::Retryable(format!("cannot read the budget: {e}")))?;
    let money = match rights.max_job_cost {
        Some(cap) => cap.min(headroom.remaining),
        None => headroom.remaining,
    };
    let backends = ctx
        .backends
        .enabled()
        .into_iter()
        .filter(|b| {
            rights
                .allowed_backends
                .as_ref()
                .is_none_or(|a| a.contains(b))
        })
        .filter(|b| job.spec.backend().named().is_none_or(|n| n == *b))
        .collect();
    Ok((Some(money), backends))
}

/// Each backend's output as configured: part of a shot's specification, so that a change of
/// size or sound is never answered from the render cache.
fn output_sizes(s: &aiprod_platform::Settings) -> BTreeMap<BackendName, String> {
    BTreeMap::from([
        (BackendName::Runway, s.runway.runway_ratio.clone()),
        (
            BackendName::Veo3,
            format!(
                "{}/audio={}",
                s.veo.veo_resolution, s.veo.veo_generate_audio
            ),
        ),
        (
            BackendName::Replicate,
            s.replicate.replicate_version.clone(),
        ),
    ])
}
