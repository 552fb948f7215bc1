//! `qa_technical`: checks what can be checked today of each rendered shot: the artifact
//! exists, is not empty, and its container declares the shot's duration (±5 %).

use aiprod_backends::mp4;
use aiprod_domain::{Stage, StepError};
use aiprod_platform::storage::ArtifactStore;
use serde::{Deserialize, Serialize};

use super::render::Render;
use super::visual::Visual;
use super::{JobState, StageOutput};

/// The check of one shot.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ShotCheck {
    pub index: usize,
    pub bytes: usize,
    pub duration_ms: u128,
    pub expected_ms: u128,
}

/// Every shot's check.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct QaTechnical {
    pub shots: Vec<ShotCheck>,
}

pub(crate) async fn run(job: &JobState, store: &ArtifactStore) -> Result<StageOutput, StepError> {
    let r: Render = job.output(Stage::Render)?;
    let v: Visual = job.output(Stage::Visual)?;
    let mut checks = Vec::with_capacity(r.shots.len());
    for shot in &r.shots {
        let bytes = store
            .get(&shot.uri)
            .await
            .map_err(|e| StepError::Retryable(e.to_string()))?;
        if bytes.is_empty() {
            return Err(StepError::Permanent(format!(
                "shot {} artifact is empty",
                shot.index
            )));
        }
        let expected_s = v
            .shots
            .iter()
            .find(|s| s.shot.index == shot.index)
            .map(|s| s.shot.duration_s)
            .ok_or_else(|| {
                StepError::Permanent(format!("shot {} is not in the plan", shot.index))
            })?;
        // A backend may render only some lengths (Veo: 4, 6 or 8 s); the check holds the clip
        // to the length it was asked for.
        let asked = if shot.duration_s > 0 {
            shot.duration_s
        } else {
            expected_s.unsigned_abs()
        };
        let expected_ms = u128::from(asked) * 1000;
        let duration = mp4::read_duration(&bytes).ok_or_else(|| {
            StepError::Permanent(format!("shot {} artifact declares no duration", shot.index))
        })?;
        let got = duration.as_millis();
        if got.abs_diff(expected_ms) * 100 > expected_ms * 5 {
            return Err(StepError::Permanent(format!(
                "shot {} lasts {got} ms, expected {expected_ms} ms ±5 %",
                shot.index
            )));
        }
        checks.push(ShotCheck {
            index: shot.index,
            bytes: bytes.len(),
            duration_ms: got,
            expected_ms,
        });
    }
    Ok(StageOutput::of(&QaTechnical { shots: checks }))
}
