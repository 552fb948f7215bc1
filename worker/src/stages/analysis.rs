//! `analysis`: splits the brief into scenes.

use aiprod_domain::{Stage, StepError};
use serde::{Deserialize, Serialize};

use super::sanitize::Sanitized;
use super::{JobState, StageOutput};
use crate::planner::{self, Scene};

/// The scenes of the brief.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Analysis {
    pub scenes: Vec<Scene>,
}

pub(crate) fn run(job: &JobState) -> Result<StageOutput, StepError> {
    let s: Sanitized = job.output(Stage::Sanitize)?;
    Ok(StageOutput::of(&Analysis {
        scenes: planner::scenes(&s.prompt),
    }))
}
