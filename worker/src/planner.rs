//! The deterministic built-in planner: brief → scenes → shots. The same brief always gives the
//! same plan, so a resumed job plans exactly what the first worker planned.
//!
//! Shots last 2–8 s (the range every backend accepts) and their durations add up to the
//! requested length exactly.

use serde::{Deserialize, Serialize};

/// The most scenes a brief is split into.
const MAX_SCENES: usize = 6;
/// The shortest and longest shot, in seconds.
const SHOT_MIN_S: i32 = 2;
const SHOT_MAX_S: i32 = 8;

const CAMERAS: [&str; 6] = [
    "wide establishing shot",
    "slow dolly in",
    "medium shot",
    "close-up",
    "tracking shot",
    "aerial view",
];

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
    /// The prompt sent to the backend.
    pub prompt: String,
    /// Its length, 2–8 s.
    pub duration_s: i32,
}

/// Scenes and shots of a brief.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The scenes, in order.
    pub scenes: Vec<Scene>,
    /// The shots, in order; durations add up to the request.
    pub shots: Vec<Shot>,
}

/// Splits a brief into scenes: its sentences, with the surplus folded into the last scene.
pub fn scenes(prompt: &str) -> Vec<Scene> {
    let mut parts: Vec<String> = prompt
        .split(['.', '!', '?', ';', '\n'])
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        parts.push(prompt.trim().to_owned());
    }
    if parts.len() > MAX_SCENES {
        let tail = parts.split_off(MAX_SCENES - 1).join(". ");
        parts.push(tail);
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(index, text)| Scene { index, text })
        .collect()
}

/// Plans shots for `scenes` that add up to `duration_s` (2–60).
pub fn shots(scenes: &[Scene], duration_s: i32) -> Vec<Shot> {
    let min_shots = (duration_s + SHOT_MAX_S - 1) / SHOT_MAX_S;
    let max_shots = (duration_s / SHOT_MIN_S).max(1);
    let n = (scenes.len() as i32).clamp(min_shots.max(1), max_shots);
    let (base, extra) = (duration_s / n, duration_s % n);
    (0..n as usize)
        .map(|i| {
            let scene = i * scenes.len() / n as usize;
            let camera = CAMERAS[(i + scenes[scene].text.len()) % CAMERAS.len()];
            Shot {
                index: i,
                scene,
                prompt: format!("{}, {camera}", scenes[scene].text),
                duration_s: base + i32::from((i as i32) < extra),
            }
        })
        .collect()
}

/// The whole plan of a brief.
pub fn plan(prompt: &str, duration_s: i32) -> Plan {
    let scenes = scenes(prompt);
    let shots = shots(&scenes, duration_s);
    Plan { scenes, shots }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shot_durations_add_up_and_stay_in_range() {
        let briefs = [
            "A fox.",
            "A fox runs. It jumps! Snow falls? Night comes; stars. Dawn. The end. Credits.",
        ];
        for brief in briefs {
            for d in 2..=60 {
                let p = plan(brief, d);
                let total: i32 = p.shots.iter().map(|s| s.duration_s).sum();
                assert_eq!(total, d, "{brief} {d}");
                assert!(
                    p.shots
                        .iter()
                        .all(|s| (SHOT_MIN_S..=SHOT_MAX_S).contains(&s.duration_s)),
                    "{brief} {d}: {p:?}"
                );
                assert!(p.shots.iter().all(|s| s.scene < p.scenes.len()));
            }
        }
    }

    #[test]
    fn splits_sentences_into_scenes_and_caps_them() {
        let s = scenes("A fox runs.  It jumps!\nSnow falls");
        assert_eq!(
            s.iter().map(|s| s.text.as_str()).collect::<Vec<_>>(),
            ["A fox runs", "It jumps", "Snow falls"]
        );
        assert_eq!(scenes("a. b. c. d. e. f. g. h").len(), MAX_SCENES);
    }

    #[test]
    fn is_deterministic() {
        assert_eq!(
            plan("A fox runs. It jumps.", 17),
            plan("A fox runs. It jumps.", 17)
        );
    }

    #[test]
    fn every_scene_is_shown_when_time_allows() {
        let p = plan("a. b. c.", 9);
        assert_eq!(p.shots.len(), 3);
        assert_eq!(
            p.shots.iter().map(|s| s.scene).collect::<Vec<_>>(),
            [0, 1, 2]
        );
    }
}
