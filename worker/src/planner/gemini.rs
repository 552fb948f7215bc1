//! The Gemini planner: three calls with structured output (a response schema), each read into
//! typed values and checked against the rules of `super`; a broken answer is sent back once
//! with what it broke (`ModelCaller::ask_checked`), and a second broken answer fails the stage.
//!
//! 1. `analysis`: the brief → scenes, a style, a consistency note carried from shot to shot,
//!    and a negative prompt.
//! 2. `creative`: scenes → shots, each with its own prompt, camera, motion and length, between
//!    the fewest shots the length needs and the most the job can pay for.
//! 3. `visual`: each shot's keyframe prompt, a still image's description for the image model
//!    (a shot's prompt describes motion; its first frame does not move).

use std::time::Duration;

use aiprod_backends::models::{Gemini, GenerateRequest, Part};
use aiprod_domain::ModelCallKind;
use aiprod_platform::config::ModelSettings;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{MAX_SCENES, SHOT_MAX_S, SHOT_MIN_S, Scene, Shot, check_shots};
use crate::models::{CallError, ModelCaller};

/// What `analysis` makes of the brief.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Brief {
    /// The scenes, in order.
    pub scenes: Vec<Scene>,
    /// The look of the whole video (medium, palette, light).
    #[serde(default)]
    pub style: String,
    /// What stays the same from shot to shot (characters, wardrobe, setting).
    #[serde(default)]
    pub consistency: String,
    /// What no shot may show.
    #[serde(default)]
    pub negative_prompt: String,
}

/// A Gemini call's context.
pub(crate) struct Ask<'a> {
    pub caller: &'a ModelCaller<'a>,
    pub gemini: &'a Gemini,
    pub settings: &'a ModelSettings,
    pub throttle_max: Duration,
}

const ANALYSIS: &str = "You are the pre-production planner of a video studio. Read the \
client's brief and split it into its scenes, in order, each a short visual description in the \
brief's language. Add the style of the whole video (medium, palette, light, lens), a \
consistency note of what must look the same in every shot (characters, wardrobe, setting), and \
a negative prompt of what no shot may show. Never add content the brief does not ask for.";

const CREATIVE: &str = "You are the director of a video studio. Turn the scenes into shots for \
a video generator. Each shot has the scene it shows (its index), its own self-contained visual \
prompt (subject, action, setting and style, as a generator needs it, without referring to other \
shots), a camera (framing and movement), the motion in the frame, and a length in whole seconds. \
Keep the rules you are given exactly: the number of shots, each length, and the total.";

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().trim().to_owned()
}

/// The brief's scenes, style, consistency note and negative prompt.
pub(crate) async fn analysis(
    a: &Ask<'_>,
    prompt: &str,
    duration_s: i32,
) -> Result<Brief, CallError> {
    let schema = json!({
        "type": "OBJECT",
        "properties": {
            "scenes": {"type": "ARRAY", "minItems": 1, "maxItems": MAX_SCENES,
                       "items": {"type": "STRING"}},
            "style": {"type": "STRING"},
            "consistency": {"type": "STRING"},
            "negative_prompt": {"type": "STRING"},
        },
        "required": ["scenes", "style", "consistency", "negative_prompt"],
    });
    let req = GenerateRequest {
        system: ANALYSIS.into(),
        parts: vec![Part::Text(format!(
            "Brief ({duration_s} s of video, at most {MAX_SCENES} scenes):\n{prompt}"
        ))],
        schema,
        temperature: 0.2,
        max_output_tokens: 2048,
    };
    let read = |v: Value| {
        let mut broken = Vec::new();
        let scenes: Vec<String> = v["scenes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::trim)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        if scenes.is_empty() || scenes.len() > MAX_SCENES {
            broken.push(format!(
                "there must be 1 to {MAX_SCENES} scenes, not {}",
                scenes.len()
            ));
        }
        if scenes.iter().any(|s| s.is_empty() || s.len() > 1000) {
            broken.push("every scene is a description of 1 to 1000 characters".into());
        }
        for key in ["style", "consistency", "negative_prompt"] {
            if text(&v, key).len() > 1000 {
                broken.push(format!("{key} must be at most 1000 characters"));
            }
        }
        if !broken.is_empty() {
            return Err(broken);
        }
        Ok(Brief {
            scenes: scenes
                .into_iter()
                .enumerate()
                .map(|(index, text)| Scene { index, text })
                .collect(),
            style: text(&v, "style"),
            consistency: text(&v, "consistency"),
            negative_prompt: text(&v, "negative_prompt"),
        })
    };
    a.caller
        .ask_checked(
            a.gemini,
            a.settings,
            ModelCallKind::Plan,
            "analysis",
            req,
            a.throttle_max,
            read,
        )
        .await
}

/// Shots for `brief` adding up to `duration_s`, between `range.0` and `range.1` of them.
pub(crate) async fn creative(
    a: &Ask<'_>,
    brief: &Brief,
    duration_s: i32,
    (min, max): (i32, i32),
) -> Result<Vec<Shot>, CallError> {
    let schema = json!({
        "type": "OBJECT",
        "properties": {
            "shots": {"type": "ARRAY", "minItems": min, "maxItems": max, "items": {
                "type": "OBJECT",
                "properties": {
                    "scene": {"type": "INTEGER"},
                    "prompt": {"type": "STRING"},
                    "camera": {"type": "STRING"},
                    "motion": {"type": "STRING"},
                    "duration_s": {"type": "INTEGER", "minimum": SHOT_MIN_S, "maximum": SHOT_MAX_S},
                },
                "required": ["scene", "prompt", "camera", "motion", "duration_s"],
            }},
        },
        "required": ["shots"],
    });
    let scenes: Vec<String> = brief
        .scenes
        .iter()
        .map(|s| format!("{}: {}", s.index, s.text))
        .collect();
    let req = GenerateRequest {
        system: CREATIVE.into(),
        parts: vec![Part::Text(format!(
            "Scenes:\n{}\nStyle: {}\nKeep consistent: {}\n\nRules: {min} to {max} shots; each \
             lasts {SHOT_MIN_S} to {SHOT_MAX_S} s; their lengths add up to exactly {duration_s} s. \
             Fewer, longer shots cost less.",
            scenes.join("\n"),
            brief.style,
            brief.consistency
        ))],
        schema,
        temperature: 0.4,
        max_output_tokens: 4096,
    };
    let count = brief.scenes.len();
    let read = |v: Value| {
        let shots: Vec<Shot> = v["shots"]
            .as_array()
            .map(|a| {
                a.iter()
                    .enumerate()
                    .map(|(index, s)| Shot {
                        index,
                        scene: s["scene"].as_u64().map_or(usize::MAX, |n| n as usize),
                        prompt: text(s, "prompt"),
                        camera: text(s, "camera"),
                        motion: text(s, "motion"),
                        duration_s: s["duration_s"]
                            .as_i64()
                            .and_then(|d| i32::try_from(d).ok())
                            .unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let broken = check_shots(&shots, count, duration_s, (min, max));
        if broken.is_empty() {
            Ok(shots)
        } else {
            Err(broken)
        }
    };
    a.caller
        .ask_checked(
            a.gemini,
            a.settings,
            ModelCallKind::Plan,
            "creative",
            req,
            a.throttle_max,
            read,
        )
        .await
}

const VISUAL: &str = "You are the art director of a video studio. For each shot, write the \
prompt of its keyframe: one still image, the shot's first frame, for an image model. Describe \
what is in the frame, its composition, light and style; no camera moves, no motion, no text \
overlays. Keep what the consistency note says the same in every keyframe.";

/// Each shot's keyframe prompt: a still image's description, where the shot's prompt
/// describes motion. One answer for all shots, so that they share one look.
pub(crate) async fn keyframes(
    a: &Ask<'_>,
    shots: &[Shot],
    style: &str,
    consistency: &str,
) -> Result<Vec<String>, CallError> {
    let n = shots.len();
    let schema = json!({
        "type": "OBJECT",
        "properties": {
            "keyframes": {"type": "ARRAY", "minItems": n, "maxItems": n, "items": {
                "type": "OBJECT",
                "properties": {"shot": {"type": "INTEGER"}, "prompt": {"type": "STRING"}},
                "required": ["shot", "prompt"],
            }},
        },
        "required": ["keyframes"],
    });
    let listed: Vec<String> = shots
        .iter()
        .map(|s| format!("{}: {}", s.index, s.render_prompt()))
        .collect();
    let req = GenerateRequest {
        system: VISUAL.into(),
        parts: vec![Part::Text(format!(
            "Shots:\n{}\nStyle: {style}\nKeep consistent: {consistency}\n\nRules: exactly one \
             keyframe per shot, {n} in all, each naming its shot.",
            listed.join("\n")
        ))],
        schema,
        temperature: 0.4,
        max_output_tokens: 4096,
    };
    let read = |v: Value| {
        let mut prompts = vec![None::<String>; n];
        let mut broken = Vec::new();
        for k in v["keyframes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let prompt = text(k, "prompt");
            match k["shot"].as_u64().map(|i| i as usize) {
                Some(i)
                    if i < n
                        && prompts[i].is_none()
                        && !prompt.is_empty()
                        && prompt.len() <= 2000 =>
                {
                    prompts[i] = Some(prompt);
                }
                Some(i) if i < n && prompts[i].is_some() => {
                    broken.push(format!("shot {i} has more than one keyframe"));
                }
                Some(i) if i < n => broken.push(format!(
                    "shot {i}'s keyframe needs a prompt of 1 to 2000 characters"
                )),
                other => broken.push(format!(
                    "there is no shot {other:?}; the shots are 0 to {}",
                    n - 1
                )),
            }
        }
        for (i, p) in prompts.iter().enumerate() {
            if p.is_none() && !broken.iter().any(|b| b.contains(&format!("shot {i}"))) {
                broken.push(format!("shot {i} has no keyframe"));
            }
        }
        if broken.is_empty() {
            Ok(prompts.into_iter().flatten().collect())
        } else {
            Err(broken)
        }
    };
    a.caller
        .ask_checked(
            a.gemini,
            a.settings,
            ModelCallKind::Plan,
            "visual",
            req,
            a.throttle_max,
            read,
        )
        .await
}
