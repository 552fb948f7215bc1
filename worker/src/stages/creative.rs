//! `creative`: scenes → shots whose lengths add up to the request, no more of them than the job
//! can pay for (`planner::budget`). By Gemini when it found the scenes and can still be used;
//! by the rules planner otherwise, which the output says.

use aiprod_domain::{Stage, StepError};
use aiprod_platform::metrics::Metrics;
use serde::{Deserialize, Serialize};

use super::analysis::{Analysis, fallback};
use super::sanitize::Sanitized;
use super::{JobState, StageOutput};
use crate::planner::budget::Purse;
use crate::planner::gemini::{self, Brief};
use crate::planner::{Shot, rules, shot_range};

/// The shots to render, and who planned them.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Creative {
    pub shots: Vec<Shot>,
    /// `gemini` or `rules`: who planned the shots.
    #[serde(default = "rules_name")]
    pub planner: String,
    /// Why the rules planner stood in for Gemini, here or in `analysis`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The most shots the job could pay for when it was planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_shots: Option<usize>,
}

fn rules_name() -> String {
    "rules".into()
}

pub(crate) async fn run(
    job: &JobState,
    ask: Option<gemini::Ask<'_>>,
    purse: &Purse<'_>,
) -> Result<StageOutput, StepError> {
    let s: Sanitized = job.output(Stage::Sanitize)?;
    let a: Analysis = job.output(Stage::Analysis)?;
    if a.scenes.is_empty() {
        return Err(StepError::Permanent(
            "analysis found no scene in the prompt".into(),
        ));
    }
    let cap = purse.cap(s.duration_s);
    let (min, max) = shot_range(s.duration_s);
    let range = (
        min,
        max.min(i32::try_from(cap).unwrap_or(i32::MAX)).max(min),
    );
    let mut note = a.note.clone();
    let ask = ask.filter(|_| a.planner == "gemini");
    if let Some(ask) = ask {
        let brief = Brief {
            scenes: a.scenes.clone(),
            style: a.style.clone(),
            consistency: a.consistency.clone(),
            negative_prompt: a.negative_prompt.clone(),
        };
        match gemini::creative(&ask, &brief, s.duration_s, range).await {
            Ok(shots) => return Ok(done(shots, "gemini", None, cap)),
            Err(e) => note = Some(fallback(Stage::Creative, e)?),
        }
    }
    let shots = rules::shots(&a.scenes, s.duration_s, cap);
    Ok(done(shots, "rules", note, cap))
}

fn done(shots: Vec<Shot>, planner: &str, note: Option<String>, cap: usize) -> StageOutput {
    Metrics::global()
        .models
        .plans
        .with_label_values(&[planner])
        .inc();
    StageOutput::of(&Creative {
        shots,
        planner: planner.into(),
        note,
        max_shots: Some(cap),
    })
}
