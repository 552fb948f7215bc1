//! Planning a job: the brief → scenes (with a style carried from shot to shot) → shots whose
//! lengths add up to the request exactly (README, "Planning").
//!
//! - `gemini`: Gemini on Vertex AI, with structured output, checked against the rules here and
//!   repaired once.
//! - `rules`: the offline planner, the default of `aiprod dev`, and the fallback while Gemini's
//!   circuit is open or it cannot be reached.
//! - `budget`: how many shots a job can pay for: a cheap job gets fewer, longer shots.

pub(crate) mod budget;
pub(crate) mod gemini;
pub mod rules;

use serde::{Deserialize, Serialize};

pub use rules::plan;

/// The most scenes a brief is split into.
pub(crate) const MAX_SCENES: usize = 6;
/// The shortest and longest shot, in seconds (the range every backend accepts).
pub(crate) const SHOT_MIN_S: i32 = 2;
pub(crate) const SHOT_MAX_S: i32 = 8;

/// The fewest and most shots a video of `duration_s` can have.
pub(crate) fn shot_range(duration_s: i32) -> (i32, i32) {
    let min = ((duration_s + SHOT_MAX_S - 1) / SHOT_MAX_S).max(1);
    let max = (duration_s / SHOT_MIN_S).max(1);
    (min, max)
}

/// One scene of the brief.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scene {
    /// Position, from 0.
    pub index: usize,
    /// The scene's text.
    pub text: String,
}

/// One shot to render.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shot {
    /// Position, from 0.
    pub index: usize,
    /// The scene it shows.
    pub scene: usize,
    /// What the shot shows.
    pub prompt: String,
    /// The camera: framing and movement (`slow dolly in`).
    #[serde(default)]
    pub camera: String,
    /// What moves in the frame.
    #[serde(default)]
    pub motion: String,
    /// Its length, 2–8 s.
    pub duration_s: i32,
}

impl Shot {
    /// The text a video backend is sent: the prompt, then the camera and the motion.
    pub fn render_prompt(&self) -> String {
        [&self.prompt, &self.camera, &self.motion]
            .into_iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Scenes and shots of a brief.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The scenes, in order.
    pub scenes: Vec<Scene>,
    /// The shots, in order; durations add up to the request.
    pub shots: Vec<Shot>,
}

/// Checks shots against the rules every plan keeps: between `min` and `max` of them, each
/// 2–8 s, the lengths adding up to `duration_s`, each of a known scene and with a prompt.
/// Returns every broken rule, for the repair request and the stage's error.
pub(crate) fn check_shots(
    shots: &[Shot],
    scenes: usize,
    duration_s: i32,
    (min, max): (i32, i32),
) -> Vec<String> {
    let mut broken = Vec::new();
    let n = shots.len() as i32;
    if n < min || n > max {
        broken.push(format!("there must be {min} to {max} shots, not {n}"));
    }
    for s in shots {
        if !(SHOT_MIN_S..=SHOT_MAX_S).contains(&s.duration_s) {
            broken.push(format!(
                "shot {} lasts {} s; each shot lasts {SHOT_MIN_S} to {SHOT_MAX_S} s",
                s.index, s.duration_s
            ));
        }
        if s.scene >= scenes {
            broken.push(format!(
                "shot {} shows scene {}, and there are only {scenes} scenes",
                s.index, s.scene
            ));
        }
        if s.prompt.trim().is_empty() || s.prompt.len() > 2000 {
            broken.push(format!(
                "shot {} needs a prompt of 1 to 2000 characters",
                s.index
            ));
        }
    }
    let total: i32 = shots.iter().map(|s| s.duration_s).sum();
    if total != duration_s {
        broken.push(format!(
            "the shots' lengths add up to {total} s; they must add up to exactly {duration_s} s"
        ));
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shot(index: usize, scene: usize, duration_s: i32) -> Shot {
        Shot {
            index,
            scene,
            prompt: "a fox".into(),
            camera: String::new(),
            motion: String::new(),
            duration_s,
        }
    }

    #[test]
    fn a_plan_that_breaks_a_rule_is_told_which() {
        assert!(check_shots(&[shot(0, 0, 4), shot(1, 1, 4)], 2, 8, (1, 4)).is_empty());
        let broken = check_shots(&[shot(0, 0, 9), shot(1, 3, 2)], 2, 10, (1, 4));
        assert_eq!(broken.len(), 3, "{broken:?}");
        assert!(broken[0].contains("shot 0 lasts 9 s"));
        assert!(broken[1].contains("scene 3"));
        assert!(broken[2].contains("add up to 11 s"));
        let broken = check_shots(&[shot(0, 0, 8)], 1, 8, (2, 4));
        assert_eq!(broken, ["there must be 2 to 4 shots, not 1"]);
    }

    #[test]
    fn the_backend_hears_the_prompt_camera_and_motion() {
        let mut s = shot(0, 0, 4);
        assert_eq!(s.render_prompt(), "a fox");
        s.camera = "slow dolly in".into();
        s.motion = " snow drifting ".into();
        assert_eq!(s.render_prompt(), "a fox, slow dolly in, snow drifting");
    }
}
