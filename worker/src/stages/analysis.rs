//! `analysis`: the brief → scenes, with the style, consistency note and negative prompt every
//! shot carries. By Gemini when `AIPROD_PLANNER=gemini`; by the rules planner otherwise, and
//! whenever Gemini cannot be used (its circuit open, down, throttled past the wait), which the
//! output says (`planner`, `note`).

use aiprod_domain::{Stage, StepError};
use serde::{Deserialize, Serialize};

use super::sanitize::Sanitized;
use super::{JobState, StageOutput};
use crate::models::CallError;
use crate::planner::gemini::{self, Brief};
use crate::planner::{Scene, rules};

/// The scenes of the brief, and who found them.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Analysis {
    pub scenes: Vec<Scene>,
    #[serde(default)]
    pub style: String,
    #[serde(default)]
    pub consistency: String,
    #[serde(default)]
    pub negative_prompt: String,
    /// `gemini` or `rules`.
    #[serde(default = "rules_name")]
    pub planner: String,
    /// Why the rules planner stood in for Gemini.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn rules_name() -> String {
    "rules".into()
}

/// What a Gemini planning call's failure means for the stage: `Ok(note)` when the rules
/// planner may take over, an error when the job must stop.
pub(crate) fn fallback(stage: Stage, e: CallError) -> Result<String, StepError> {
    match e {
        CallError::Unavailable(why) => {
            tracing::warn!(%stage, %why, "Gemini cannot plan; the rules planner takes over");
            Ok(format!(
                "Gemini could not be used ({why}); the rules planner made this part of the plan"
            ))
        }
        CallError::Blocked(m) => Err(StepError::Permanent(format!(
            "{stage}: Gemini refused the brief: {m}"
        ))),
        CallError::Malformed(m) => Err(StepError::Permanent(format!("{stage}: {m}"))),
        CallError::Step(e) => Err(e),
    }
}

pub(crate) async fn run(
    job: &JobState,
    ask: Option<gemini::Ask<'_>>,
) -> Result<StageOutput, StepError> {
    let s: Sanitized = job.output(Stage::Sanitize)?;
    let mut note = None;
    if let Some(ask) = ask {
        match gemini::analysis(&ask, &s.prompt, s.duration_s).await {
            Ok(brief) => return Ok(StageOutput::of(&of(brief, "gemini", None))),
            Err(e) => note = Some(fallback(Stage::Analysis, e)?),
        }
    }
    let brief = Brief {
        scenes: rules::scenes(&s.prompt),
        style: String::new(),
        consistency: String::new(),
        negative_prompt: String::new(),
    };
    Ok(StageOutput::of(&of(brief, "rules", note)))
}

fn of(b: Brief, planner: &str, note: Option<String>) -> Analysis {
    Analysis {
        scenes: b.scenes,
        style: b.style,
        consistency: b.consistency,
        negative_prompt: b.negative_prompt,
        planner: planner.into(),
        note,
    }
}
