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

use std::collections::BTreeMap;

use aiprod_domain::{JobId, JobSpec, Stage, StepError};
use aiprod_store::JobPatch;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::context::WorkerContext;
use crate::shot::ShotRenderer;

/// What a stage sees of its job.
#[derive(Debug, Clone)]
pub(crate) struct JobState {
    pub id: JobId,
    pub lease_epoch: i64,
    /// Where the job's deadline counts from: acceptance, moved on by any time it waited
    /// for budget.
    pub deadline_from: chrono::DateTime<chrono::Utc>,
    pub spec: JobSpec,
    pub outputs: BTreeMap<Stage, Value>,
}

impl JobState {
    /// The typed output of an earlier stage. Missing or unreadable output is a bug or a schema
    /// change, which retrying cannot mend.
    pub fn output<T: DeserializeOwned>(&self, stage: Stage) -> Result<T, StepError> {
        let v = self.outputs.get(&stage).ok_or_else(|| {
            StepError::Permanent(format!("the output of stage {stage} is missing"))
        })?;
        serde_json::from_value(v.clone()).map_err(|e| {
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

/// Runs one try of `stage`, handing it what it uses.
#[tracing::instrument(skip_all, fields(job_id = %job.id, stage = %stage))]
pub(crate) async fn run(
    stage: Stage,
    ctx: &WorkerContext,
    job: &JobState,
) -> Result<StageOutput, StepError> {
    let settings = &ctx.settings;
    match stage {
        Stage::Sanitize => sanitize::run(job, &settings.worker.forbidden_words),
        Stage::Analysis => analysis::run(job),
        Stage::Creative => creative::run(job),
        Stage::Visual => visual::run(job, &ctx.store, &ctx.media).await,
        Stage::Financial => {
            let router = financial::Router {
                pool: &ctx.pool,
                fleet: &ctx.backends,
                ledger: &ctx.ledger,
                backends: &settings.backends,
                worker_id: &ctx.worker_id,
            };
            financial::run(job, &router).await
        }
        Stage::Render => {
            let renderer = ShotRenderer {
                pool: &ctx.pool,
                store: &ctx.store,
                media: &ctx.media,
                fleet: &ctx.backends,
                backends: &settings.backends,
                retry: &settings.worker.retry,
                worker_id: &ctx.worker_id,
                job_id: job.id,
                lease_epoch: job.lease_epoch,
                deadline: job.deadline_from
                    + chrono::Duration::from_std(settings.worker.job_deadline)
                        .unwrap_or(chrono::TimeDelta::MAX),
            };
            render::run(job, &renderer).await
        }
        Stage::QaTechnical => qa_technical::run(job, &ctx.pool, &ctx.store, &ctx.media).await,
        Stage::QaSemantic => qa_semantic::run(job, &settings.backends.prices),
        Stage::Finalize => finalize::run(job, &ctx.store, &ctx.media).await,
    }
}
