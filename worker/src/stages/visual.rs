//! `visual`: gives every shot a keyframe image (Runway gen4_turbo and Replicate SVD need one).
//! The client's `image_url` when given; otherwise a generated placeholder frame (a 640×360 PNG
//! in a gradient coloured from the shot's prompt, which every provider accepts) stored as an
//! artifact.
//!
//! A client's http(s) image is fetched once, here, into the artifact store, and every backend
//! is sent our copy: streamed to a scratch file under `AIPROD_MAX_IMAGE_BYTES`, never held
//! whole, with no redirect followed and nothing of the server's answer repeated in an error.
//! (Which hosts may be fetched at all is the security work's allow-list.)

use aiprod_domain::{Stage, StepError};
use aiprod_media::Media;
use aiprod_platform::storage::ArtifactStore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::creative::Creative;
use super::{JobState, StageOutput};
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

/// One HTTP client for client images: no redirects (a redirect is how a public URL reaches an
/// internal one), a whole-fetch timeout.
fn image_http() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30))
            .user_agent(concat!("aiprod-fleet/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a static HTTP client builds")
    })
}

/// Copies the client's image into the store, as `client-image.{png,jpg,webp}`.
async fn fetch_client_image(
    job: &JobState,
    store: &ArtifactStore,
    media: &Media,
    url: &str,
) -> Result<String, StepError> {
    use tokio::io::AsyncWriteExt;
    let cap = media.settings().max_image_bytes;
    let refuse = |why: String| StepError::Permanent(format!("image_url: {why}"));
    let mut resp = image_http()
        .get(url)
        .send()
        .await
        .map_err(|e| StepError::Retryable(format!("image_url: cannot fetch it: {e}")))?;
    let status = resp.status();
    if !status.is_success() {
        // The status only: the body of whatever answered stays out of the job's error.
        return Err(refuse(format!(
            "the server answered HTTP {}",
            status.as_u16()
        )));
    }
    let ext = match resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .as_deref()
    {
        Some("image/png") => "png",
        Some("image/jpeg") => "jpg",
        Some("image/webp") => "webp",
        other => {
            return Err(refuse(format!(
                "must be a PNG, JPEG or WebP image, got content type {}",
                other.unwrap_or("none")
            )));
        }
    };
    let too_large = || {
        refuse(format!(
            "the image is larger than {cap} bytes (AIPROD_MAX_IMAGE_BYTES)"
        ))
    };
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(too_large());
    }
    let scratch = media
        .scratch_dir()
        .map_err(|e| StepError::Retryable(e.to_string()))?;
    let path = scratch.path().join(format!("client-image.{ext}"));
    let io = |e: std::io::Error| StepError::Retryable(format!("image_url: cannot write it: {e}"));
    let mut file = tokio::fs::File::create(&path).await.map_err(io)?;
    let mut written = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| StepError::Retryable(format!("image_url: the download was cut short: {e}")))?
    {
        written += chunk.len() as u64;
        if written > cap {
            return Err(too_large());
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    store
        .put_file(job.id, &format!("client-image.{ext}"), &path)
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
