//! `visual`: gives every shot a keyframe image (Runway gen4_turbo and Replicate SVD need one).
//! The client's `image_url` when given; otherwise a generated placeholder frame (a PPM image
//! coloured from the shot's prompt) stored as an artifact.

use aiprod_shared::domain::Stage;
use aiprod_shared::retry::StepError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::creative::Creative;
use super::{JobState, StageOutput};
use crate::context::WorkerContext;
use crate::planner::Shot;

/// A shot with its keyframe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct VisualShot {
    #[serde(flatten)]
    pub shot: Shot,
    pub keyframe_uri: String,
}

/// Every shot with its keyframe.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Visual {
    pub shots: Vec<VisualShot>,
}

pub(crate) async fn run(ctx: &WorkerContext, job: &JobState) -> Result<StageOutput, StepError> {
    let c: Creative = job.output(Stage::Creative)?;
    let mut shots = Vec::with_capacity(c.shots.len());
    for shot in c.shots {
        let keyframe_uri = match &job.spec.image_url {
            Some(url) => url.clone(),
            None => ctx
                .store
                .put(
                    job.id,
                    &format!("keyframe-{:02}.ppm", shot.index),
                    &keyframe(&shot.prompt),
                )
                .await
                .map_err(|e| StepError::Retryable(e.to_string()))?,
        };
        shots.push(VisualShot { shot, keyframe_uri });
    }
    Ok(StageOutput::of(&Visual { shots }))
}

/// A 16×9 binary PPM in a gradient of two colours derived from the prompt.
fn keyframe(prompt: &str) -> Vec<u8> {
    let h = Sha256::digest(prompt.as_bytes());
    let (w, ht) = (16u8, 9u8);
    let mut out = format!("P6\n{w} {ht}\n255\n").into_bytes();
    for y in 0..ht {
        for x in 0..w {
            for c in 0..3 {
                let (a, b) = (u16::from(h[c]), u16::from(h[c + 3]));
                let t = u16::from(x) + u16::from(y);
                out.push(((a * (24 - t) + b * t) / 24) as u8);
            }
        }
    }
    out
}
