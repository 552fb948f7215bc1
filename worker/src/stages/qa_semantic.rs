//! `qa_semantic`: scores the result from 0 to 1. Today the score is the chosen backend's
//! quality prior; a vision scorer replaces it later. Below the job's floor the job fails.

use aiprod_domain::routing::Routing;
use aiprod_domain::{PriceTable, Stage, StepError};
use aiprod_store::JobPatch;
use serde::{Deserialize, Serialize};

use super::{JobState, StageOutput};

/// The score and where it came from.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct QaSemantic {
    pub score: f64,
    pub scorer: String,
}

pub(crate) fn run(job: &JobState, prices: &PriceTable) -> Result<StageOutput, StepError> {
    let routing: Routing = job.output(Stage::Financial)?;
    let score = prices.profile(routing.backend).quality;
    if score < job.spec.quality_min() {
        return Err(StepError::Permanent(format!(
            "quality score {score} is below quality_min {}",
            job.spec.quality_min()
        )));
    }
    aiprod_platform::metrics::Metrics::global()
        .quality_score
        .observe(score);
    let out = QaSemantic {
        score,
        scorer: format!("prior:{}", routing.backend),
    };
    Ok(StageOutput::of(&out).with(JobPatch {
        quality_score: Some(score),
        ..JobPatch::default()
    }))
}
