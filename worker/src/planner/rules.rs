//! The rules planner, offline and deterministic: brief → scenes → shots. The same brief always
//! gives the same plan, so a resumed job plans exactly what the first worker planned. It is
//! `aiprod dev`'s planner and the fallback while Gemini cannot be used.

use super::{MAX_SCENES, Plan, Scene, Shot};

const CAMERAS: [&str; 6] = [
    "wide establishing shot",
    "slow dolly in",
    "medium shot",
    "close-up",
    "tracking shot",
    "aerial view",
];

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

/// Plans shots for `scenes` that add up to `duration_s` (2–60), at most `cap` of them (the
/// budget's cap, `super::budget`), never fewer than the length needs.
pub fn shots(scenes: &[Scene], duration_s: i32, cap: usize) -> Vec<Shot> {
    let (min_shots, max_shots) = super::shot_range(duration_s);
    let max_shots = max_shots
        .min(i32::try_from(cap).unwrap_or(i32::MAX))
        .max(min_shots);
    let n = (scenes.len() as i32).clamp(min_shots, max_shots);
    let (base, extra) = (duration_s / n, duration_s % n);
    (0..n as usize)
        .map(|i| {
            let scene = i * scenes.len() / n as usize;
            let camera = CAMERAS[(i + scenes[scene].text.len()) % CAMERAS.len()];
            Shot {
                index: i,
                scene,
                prompt: scenes[scene].text.clone(),
                camera: camera.to_owned(),
                motion: String::new(),
                duration_s: base + i32::from((i as i32) < extra),
            }
        })
        .collect()
}

/// The whole plan of a brief, with no cap but the length's.
pub fn plan(prompt: &str, duration_s: i32) -> Plan {
    let scenes = scenes(prompt);
    let shots = shots(&scenes, duration_s, usize::MAX);
    Plan { scenes, shots }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::{SHOT_MAX_S, SHOT_MIN_S};

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
                let capped = shots(&p.scenes, d, 1);
                assert_eq!(capped.iter().map(|s| s.duration_s).sum::<i32>(), d);
                assert_eq!(capped.len() as i32, super::super::shot_range(d).0);
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
