//! `creative`: turns scenes into shots whose durations add up to the requested length.

use aiprod_domain::{Stage, StepError};
use serde::{Deserialize, Serialize};

use super::analysis::Analysis;
use super::sanitize::Sanitized;
use super::{JobState, StageOutput};
use crate::planner::{self, Shot};

/// The shots to render.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Creative {
    pub shots: Vec<Shot>,
}

pub(crate) fn run(job: &JobState) -> Result<StageOutput, StepError> {
    let s: Sanitized = job.output(Stage::Sanitize)?;
    let a: Analysis = job.output(Stage::Analysis)?;
    if a.scenes.is_empty() {
        return Err(StepError::Permanent(
            "analysis found no scene in the prompt".into(),
        ));
    }
    Ok(StageOutput::of(&Creative {
        shots: planner::shots(&a.scenes, s.duration_s),
    }))
}
