//! `visual`: gives every shot a keyframe image (Runway gen4_turbo and Replicate SVD need one).
//! The client's `image_url` when given; otherwise a generated placeholder frame (a 640×360 PNG
//! in a gradient coloured from the shot's prompt, which every provider accepts) stored as an
//! artifact.
//!
//! A client's http(s) image is fetched once, here, into the artifact store, and every backend
//! is sent our copy. The fetch is `crate::image_fetch`'s: https to public addresses only,
//! redirects vetted hop by hop, a PNG, JPEG or WebP under `AIPROD_MAX_IMAGE_BYTES`; whatever
//! it refuses fails the job as `invalid_asset` before any backend is called.

use aiprod_domain::{Stage, StepError};
use aiprod_media::Media;
use aiprod_platform::storage::ArtifactStore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::creative::Creative;
use super::{JobState, StageOutput};
use crate::image_fetch::ImageFetcher;
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

pub(crate) async fn run(
    job: &JobState,
    store: &ArtifactStore,
    media: &Media,
) -> Result<StageOutput, StepError> {
    let c: Creative = job.output(Stage::Creative)?;
    let client_image = match job.spec.image_url() {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            Some(fetch_client_image(job, store, media, url).await?)
        }
        other => other.map(str::to_owned),
    };
    let mut shots = Vec::with_capacity(c.shots.len());
    for shot in c.shots {
        let keyframe_uri = match &client_image {
            Some(uri) => uri.clone(),
            None => store
                .put(
                    job.id,
                    &format!("keyframe-{:02}.png", shot.index),
                    &keyframe(&shot.prompt)?,
                )
                .await
                .map_err(|e| StepError::Retryable(e.to_string()))?,
        };
        shots.push(VisualShot { shot, keyframe_uri });
    }
    Ok(StageOutput::of(&Visual { shots }))
}

/// Copies the client's image into the store, as `client-image.{png,jpg,webp}`, through the
/// hardened fetcher (`crate::image_fetch`): a link it refuses fails the job as `invalid_asset`.
async fn fetch_client_image(
    job: &JobState,
    store: &ArtifactStore,
    media: &Media,
    url: &str,
) -> Result<String, StepError> {
    let scratch = media
        .scratch_dir()
        .map_err(|e| StepError::Retryable(e.to_string()))?;
    let image = ImageFetcher::new(media.settings())
        .fetch(url, scratch.path())
        .await?;
    store
        .put_file(job.id, &format!("client-image.{}", image.ext), &image.path)
        .await
        .map_err(|e| StepError::Retryable(format!("cannot store the client's image: {e}")))
}

/// A 640×360 PNG in a horizontal gradient of two colours derived from the prompt. Every row is
/// the same, so with PNG's `Up` filter all rows but the first encode as zeros: about 0.1 ms and
/// 7 KB a frame (a diagonal gradient cost 2 ms and 116 KB, most of a simulated job's CPU).
fn keyframe(prompt: &str) -> Result<Vec<u8>, StepError> {
    const W: u32 = 640;
    const H: u32 = 360;
    let h = Sha256::digest(prompt.as_bytes());
    let mut row = Vec::with_capacity((W * 3) as usize);
    for x in 0..W {
        for c in 0..3 {
            let (a, b) = (u32::from(h[c]), u32::from(h[c + 3]));
            row.push(((a * (W - x) + b * x) / W) as u8);
        }
    }
    let pixels = row.repeat(H as usize);
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, W, H);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Fast);
    enc.set_filter(png::Filter::Up);
    let fail =
        |e: png::EncodingError| StepError::Permanent(format!("cannot encode the keyframe: {e}"));
    let mut w = enc.write_header().map_err(fail)?;
    w.write_image_data(&pixels).map_err(fail)?;
    w.finish().map_err(fail)?;
    Ok(out)
}
