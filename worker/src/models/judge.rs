//! Semantic QA's judge: a few frames of a delivered clip, with the shot's prompt, scored by
//! Gemini vision in four dimensions, 0–10 each (README, "Semantic QA"). The clip passes when
//! the average reaches `AIPROD_QA_SEMANTIC_THRESHOLD`.

use std::time::Duration;

use aiprod_backends::models::{Gemini, GenerateRequest, Part};
use aiprod_domain::ModelCallKind;
use aiprod_platform::config::ModelSettings;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{CallError, ModelCaller};

/// How a try that semantic QA rejected is described in its row.
pub(crate) const SEMANTIC_REJECTED: &str = "semantic QA rejected its clip";

/// A judge's four scores, 0–10.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Scores {
    /// Visual quality: sharpness, lighting, composition, artefacts.
    pub visual_quality: f64,
    /// Prompt adherence and narrative coherence.
    pub prompt_adherence: f64,
    /// Technical excellence: motion, temporal consistency, no glitches.
    pub technical_excellence: f64,
    /// Overall.
    pub overall: f64,
    /// The judge's reasons, for people.
    #[serde(default)]
    pub reasoning: String,
}

impl Scores {
    /// The average of the four dimensions.
    pub fn average(&self) -> f64 {
        (self.visual_quality + self.prompt_adherence + self.technical_excellence + self.overall)
            / 4.0
    }

    fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("visual_quality", self.visual_quality),
            ("prompt_adherence", self.prompt_adherence),
            ("technical_excellence", self.technical_excellence),
            ("overall", self.overall),
        ] {
            if !(0.0..=10.0).contains(&v) {
                return Err(format!("{name} must be within 0 and 10, got {v}"));
            }
        }
        Ok(())
    }

    /// The scores in one line, for an error or a log.
    pub fn line(&self) -> String {
        format!(
            "{:.1}/10 (visual {:.1}, adherence {:.1}, technical {:.1}, overall {:.1})",
            self.average(),
            self.visual_quality,
            self.prompt_adherence,
            self.technical_excellence,
            self.overall
        )
    }
}

/// What semantic QA made of one clip, kept with its render row (`qa.semantic`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SemanticVerdict {
    /// The scores; absent when the clip could not be scored.
    pub scores: Option<Scores>,
    /// Their average.
    pub average: Option<f64>,
    /// The threshold it was held to.
    pub threshold: f64,
    /// Whether it reached the threshold.
    pub passed: bool,
    /// Kept below the threshold (`AIPROD_QA_SEMANTIC_ON_FAIL=accept`).
    #[serde(default)]
    pub flagged: bool,
    /// The judge's model.
    pub judge: String,
    /// Why it is unscored, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unscored_because: Option<String>,
}

/// The answer's schema, in Vertex's OpenAPI subset.
fn schema() -> Value {
    let score = json!({"type": "NUMBER", "minimum": 0, "maximum": 10});
    json!({
        "type": "OBJECT",
        "properties": {
            "visual_quality": score,
            "prompt_adherence": score,
            "technical_excellence": score,
            "overall": score,
            "reasoning": {"type": "STRING"},
        },
        "required": ["visual_quality", "prompt_adherence", "technical_excellence", "overall",
                     "reasoning"],
    })
}

const SYSTEM: &str = "You are a strict quality reviewer for a video studio. You see frames \
sampled evenly, in order, from one generated shot, and the prompt the shot was made from. Score \
from 0 to 10: visual_quality (sharpness, lighting, composition, no artefacts), prompt_adherence \
(does it show what the prompt asks, coherently), technical_excellence (consistent motion between \
frames, no glitches or warping), and overall. 7 means ready for a client. Be honest: a frame \
that does not show the prompt's subject scores low on prompt_adherence whatever its beauty.";

/// Scores `frames` of one clip against `prompt`. An answer outside the schema's ranges is
/// sent back once (`ask_checked`); a second bad answer is `Malformed`.
pub(crate) async fn judge(
    caller: &ModelCaller<'_>,
    gemini: &Gemini,
    settings: &ModelSettings,
    step: &str,
    prompt: &str,
    frames: Vec<Vec<u8>>,
    throttle_max: Duration,
) -> Result<Scores, CallError> {
    let mut parts = vec![Part::Text(format!(
        "The shot's prompt: {prompt}\nIts {} frames follow, in order.",
        frames.len()
    ))];
    parts.extend(frames.into_iter().map(|data| Part::Image {
        mime: "image/jpeg".into(),
        data,
    }));
    let req = GenerateRequest {
        system: SYSTEM.into(),
        parts,
        schema: schema(),
        temperature: 0.0,
        max_output_tokens: 1024,
    };
    caller
        .ask_checked(
            gemini,
            settings,
            ModelCallKind::Judge,
            step,
            req,
            throttle_max,
            |value| {
                serde_json::from_value::<Scores>(value)
                    .map_err(|e| e.to_string())
                    .and_then(|s| s.check().map(|()| s))
                    .map_err(|e| vec![e])
            },
        )
        .await
}
