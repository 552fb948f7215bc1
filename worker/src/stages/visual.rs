//! `visual`: gives every shot a keyframe drawn from that shot's own keyframe prompt by the
//! image model `AIPROD_KEYFRAMES` names. When Gemini planned the shots, it writes those prompts
//! (one call for all shots, `planner::gemini::keyframes`: a still's description, where the
//! shot's prompt describes motion); otherwise they are the shot's prompt with the plan's style
//! and consistency note. The image models are Imagen on Vertex
//! AI, a Replicate image model, or the simulation, which draws the shot's text on a frame.
//! Image-to-video backends then animate the right picture. Each keyframe is a paid model call
//! through `crate::models` (intent, ledger line, cache, breaker): it is never paid for twice.
//!
//! A client's `image_url` wins for the first shot. An http(s) image is fetched once, here,
//! into the artifact store, and every backend is sent our copy. The fetch is
//! `crate::image_fetch`'s: https to public addresses only, redirects vetted hop by hop, a PNG,
//! JPEG or WebP under `AIPROD_MAX_IMAGE_BYTES`; whatever it refuses fails the job as
//! `invalid_asset` before any backend is called.

use std::time::Duration;

use aiprod_backends::models::{ImageModel, ImageRequest};
use aiprod_domain::{Stage, StepError};
use aiprod_media::Media;
use aiprod_platform::storage::ArtifactStore;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::analysis::{Analysis, fallback};
use super::creative::Creative;
use super::{JobState, StageOutput};
use crate::image_fetch::ImageFetcher;
use crate::models::{CallError, ModelCaller, digest};
use crate::planner::{Shot, gemini};

/// A keyframe's size: 16:9, what every backend renders.
const KEYFRAME_SIZE: (u32, u32) = (1280, 720);
/// Keyframes drawn at once per job.
const AT_ONCE: usize = 4;

/// A shot with its keyframe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct VisualShot {
    #[serde(flatten)]
    pub shot: Shot,
    pub keyframe_uri: String,
    /// sha256 of the keyframe's bytes (the render cache's key covers the picture).
    #[serde(default)]
    pub keyframe_sha256: String,
    /// Who made it: `client`, or the image model's provider.
    #[serde(default)]
    pub keyframe_source: String,
}

/// Every shot with its keyframe.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Visual {
    pub shots: Vec<VisualShot>,
    /// Who wrote the keyframes' prompts: `gemini`, or `rules` (the shot's prompt with the
    /// plan's style and consistency note).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts_by: Option<String>,
    /// Why the rules stood in for Gemini.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What drawing keyframes takes.
pub(crate) struct Drawer<'a> {
    /// Gemini, which writes the keyframes' prompts when it planned the shots.
    pub planner: Option<gemini::Ask<'a>>,
    pub caller: ModelCaller<'a>,
    pub model: &'a dyn ImageModel,
    pub store: &'a ArtifactStore,
    pub media: &'a Media,
    pub throttle_max: Duration,
}

pub(crate) async fn run(job: &JobState, d: &Drawer<'_>) -> Result<StageOutput, StepError> {
    let c: Creative = job.output(Stage::Creative)?;
    let a: Analysis = job.output(Stage::Analysis)?;
    let client_image = match job.spec.image_url() {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            Some(fetch_client_image(job, d.store, d.media, url).await?)
        }
        other => other.map(str::to_owned),
    };
    let (written, prompts_by, note) = keyframe_prompts(d, &c, &a).await?;
    let shots = futures::stream::iter(c.shots.into_iter().map(|shot| {
        let client = client_image.clone().filter(|_| shot.index == 0);
        let a = &a;
        let written = written.as_ref().and_then(|w| w.get(shot.index).cloned());
        async move {
            if let Some(uri) = client {
                // A stored copy is hashed by its bytes (the render cache keys the picture); a
                // data URI carries its bytes.
                let sha = match d.store.get(&uri).await {
                    Ok(bytes) if !uri.starts_with("data:") => digest(&[&bytes]),
                    _ => digest(&[uri.as_bytes()]),
                };
                return Ok(VisualShot {
                    shot,
                    keyframe_uri: uri,
                    keyframe_sha256: sha,
                    keyframe_source: "client".into(),
                });
            }
            let prompt = written.unwrap_or_else(|| {
                [shot.render_prompt(), a.style.clone(), a.consistency.clone()]
                    .into_iter()
                    .filter(|s| !s.trim().is_empty())
                    .collect::<Vec<_>>()
                    .join(". ")
            });
            let seed = seed_of(job.tenant, &prompt);
            let req = ImageRequest {
                prompt,
                negative_prompt: Some(a.negative_prompt.clone()).filter(|n| !n.is_empty()),
                seed,
                width: KEYFRAME_SIZE.0,
                height: KEYFRAME_SIZE.1,
            };
            let step = format!("keyframe-{:02}", shot.index);
            let (uri, sha) = d
                .caller
                .draw(
                    d.model,
                    &step,
                    &req,
                    d.store,
                    &step,
                    job.spec.cache(),
                    d.throttle_max,
                    Duration::from_secs(1),
                )
                .await
                .map_err(|e| keyframe_error(shot.index, e))?;
            Ok::<_, StepError>(VisualShot {
                shot,
                keyframe_uri: uri,
                keyframe_sha256: sha,
                keyframe_source: d.model.provider().into(),
            })
        }
    }))
    .buffered(AT_ONCE)
    .try_collect::<Vec<_>>()
    .await?;
    Ok(StageOutput::of(&Visual {
        shots,
        prompts_by: Some(prompts_by.into()),
        note,
    }))
}

/// The keyframes' prompts Gemini writes, when it planned the shots; `None` where the rules
/// compose them. Gemini out of reach leaves the rules to it, and the output says so.
async fn keyframe_prompts(
    d: &Drawer<'_>,
    c: &Creative,
    a: &Analysis,
) -> Result<(Option<Vec<String>>, &'static str, Option<String>), StepError> {
    let Some(ask) = d.planner.as_ref().filter(|_| c.planner == "gemini") else {
        return Ok((None, "rules", None));
    };
    match gemini::keyframes(ask, &c.shots, &a.style, &a.consistency).await {
        Ok(prompts) => Ok((Some(prompts), "gemini", None)),
        Err(e) => Ok((None, "rules", Some(fallback(Stage::Visual, e)?))),
    }
}

/// A seed the same prompt always gets within a tenant, so the same shot draws the same picture
/// (31 bits: every provider takes that). The tenant is in it so that finding a crashed call's
/// prediction by its seed never finds another tenant's.
fn seed_of(tenant: aiprod_domain::TenantId, prompt: &str) -> u32 {
    let h = digest(&[tenant.to_string().as_bytes(), prompt.as_bytes()]);
    u32::from_str_radix(&h[..8], 16).unwrap_or(0) >> 1
}

fn keyframe_error(shot: usize, e: CallError) -> StepError {
    match e {
        CallError::Unavailable(m) => {
            StepError::Retryable(format!("cannot draw shot {shot}'s keyframe: {m}"))
        }
        CallError::Blocked(m) => StepError::Permanent(format!(
            "the image model refused shot {shot}'s keyframe: {m}"
        )),
        CallError::Malformed(m) => StepError::Permanent(format!("shot {shot}'s keyframe: {m}")),
        CallError::Step(e) => e,
    }
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
