//! `qa_semantic`: scores the result from 0 to 1. Today the score is the chosen backend's
//! quality prior; a vision scorer replaces it later. Below the job's floor the job fails.

use aiprod_shared::domain::Stage;
use aiprod_shared::retry::StepError;
use aiprod_shared::store::JobPatch;
use serde::{Deserialize, Serialize};

use super::financial::Financial;
use super::{JobState, StageOutput};
use crate::context::WorkerContext;

/// The score and where it came from.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct QaSemantic {
    pub score: f64,
    pub scorer: String,
}

pub(crate) fn run(ctx: &WorkerContext, job: &JobState) -> Result<StageOutput, StepError> {
    let f: Financial = job.output(Stage::Financial)?;
    let score = ctx.settings.backends.profile(f.backend).quality;
    if score < job.spec.quality_min {
        return Err(StepError::Permanent(format!(
            "quality score {score} is below quality_min {}",
            job.spec.quality_min
        )));
    }
    aiprod_shared::metrics::Metrics::global()
        .quality_score
        .observe(score);
    let out = QaSemantic {
        score,
        scorer: format!("prior:{}", f.backend),
    };
    Ok(StageOutput::of(&out).with(JobPatch {
        quality_score: Some(score),
        ..JobPatch::default()
    }))
}
