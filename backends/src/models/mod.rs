//! The models around the video backends: Gemini, which writes JSON to a schema (the planner and
//! the semantic judge), and the image models that draw a shot's keyframe (Imagen, an image model
//! on Replicate, or the simulation). A client only speaks its provider's API and classifies its
//! answers into `ModelError`; caching, ledger entries and fallbacks are the worker's.
//!
//! Model ids and prices come from `ModelSettings` (ARCHITECTURE.md, "The providers": keep them in
//! config).

mod call;
mod gemini;
mod imagen;
mod replicate_image;
mod simulated_image;

use std::sync::Arc;
use std::time::Duration;

use aiprod_domain::Money;
use aiprod_platform::Settings;
use aiprod_platform::config::{KeyframeKind, ModelSettings};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use gemini::Gemini;
pub use imagen::Imagen;
pub use replicate_image::ReplicateImage;
pub use simulated_image::SimulatedImage;

/// A model call that gave no answer we can use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// 429 or quota: capacity, not ill health. Wait `retry_after` if given.
    #[error("throttled: {message}")]
    Throttled {
        /// What the provider said.
        message: String,
        /// The provider's `Retry-After` (or its words for it).
        retry_after: Option<Duration>,
    },
    /// A network error or a 5xx: the same call may work later.
    #[error("{0}")]
    Transient(String),
    /// No answer in time: the provider may or may not have acted on the request.
    #[error("{0}")]
    Timeout(String),
    /// Safety: the prompt was blocked, the answer stopped for SAFETY, BLOCKLIST,
    /// PROHIBITED_CONTENT or RECITATION, or the image was filtered (Imagen's
    /// `raiFilteredReason`). The same request will be refused again.
    #[error("blocked: {0}")]
    Blocked(String),
    /// An answer we cannot use: no candidate, cut short at MAX_TOKENS, text that is not JSON.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The provider refused this request (400, 404): do not repeat it.
    #[error("{0}")]
    Rejected(String),
    /// Our credentials were refused (401, 403): the model is unusable until fixed.
    #[error("{0}")]
    Unauthorized(String),
}

impl ModelError {
    /// Whether this failure says something about the model's health (as a failed render does
    /// for a backend's). Throttling is capacity; a blocked or refused request is about the
    /// request.
    pub fn counts_against_health(&self) -> bool {
        match self {
            ModelError::Transient(_)
            | ModelError::Timeout(_)
            | ModelError::Unauthorized(_)
            | ModelError::Malformed(_) => true,
            ModelError::Throttled { .. } | ModelError::Blocked(_) | ModelError::Rejected(_) => {
                false
            }
        }
    }
}

/// One part of what Gemini is shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Text.
    Text(String),
    /// An image sent inline (a frame of a shot for the judge).
    Image {
        /// `image/jpeg`, `image/png`…
        mime: String,
        /// The image.
        data: Vec<u8>,
    },
}

/// A request for JSON that follows a schema.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    /// The system instruction: the model's role and rules.
    pub system: String,
    /// The user turn.
    pub parts: Vec<Part>,
    /// The answer's schema, in Vertex's OpenAPI subset (`{"type": "OBJECT", properties,
    /// required}`).
    pub schema: serde_json::Value,
    /// Sampling temperature (0 for the most repeatable answers).
    pub temperature: f32,
    /// The longest answer, in tokens; an answer cut there is `Malformed`.
    pub max_output_tokens: u32,
}

/// What Gemini wrote, and what it cost in tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    /// The JSON the model wrote, parsed (it follows the schema as far as Gemini keeps to it;
    /// the caller parses it into its own type).
    pub value: serde_json::Value,
    /// `usageMetadata.promptTokenCount`.
    pub prompt_tokens: u64,
    /// `usageMetadata.candidatesTokenCount`.
    pub output_tokens: u64,
    /// `modelVersion`, where the answer gives it.
    pub model_version: Option<String>,
}

/// The price of one Gemini call: exact integer micro-dollar arithmetic, rounded up to the next
/// micro-dollar, never floats.
pub fn gemini_cost(settings: &ModelSettings, prompt_tokens: u64, output_tokens: u64) -> Money {
    let per_mtok = |m: Money| u128::try_from(m.micros()).unwrap_or(0);
    let scaled = u128::from(prompt_tokens) * per_mtok(settings.gemini_input_usd_per_mtok)
        + u128::from(output_tokens) * per_mtok(settings.gemini_output_usd_per_mtok);
    let micros = scaled.div_ceil(1_000_000);
    Money::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
}

/// A keyframe to draw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRequest {
    /// What the image shows.
    pub prompt: String,
    /// What it must not show, where the model takes it.
    pub negative_prompt: Option<String>,
    /// Identifies this try at the provider (how `ImageModel::find` recognises it).
    pub seed: u32,
    /// Width in pixels; with the height, it gives the aspect ratio asked for (1280×720 is
    /// 16:9).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// A drawn image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedImage {
    /// `image/png`, `image/webp`…
    pub mime: String,
    /// The image's bytes.
    pub data: Vec<u8>,
}

/// What starting an image gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageStart {
    /// The provider's id, when it has one (Replicate): save it before anything else, and poll
    /// it after a restart.
    pub id: Option<String>,
    /// The image, when it is done already (always for Imagen and the simulation).
    pub image: Option<GeneratedImage>,
}

/// A model that draws keyframes.
#[async_trait]
pub trait ImageModel: Send + Sync {
    /// `imagen`, `replicate` or `simulated`.
    fn provider(&self) -> &'static str;
    /// The model id.
    fn model(&self) -> &str;
    /// The price of one image.
    fn price(&self) -> Money;
    /// Starts an image; some providers answer with it at once.
    async fn start(&self, req: &ImageRequest) -> Result<ImageStart, ModelError>;
    /// The image of a started prediction; `None` while it is still running.
    async fn poll(&self, id: &str) -> Result<Option<GeneratedImage>, ModelError>;
    /// The id of a prediction of this model started since `since` with `seed`: how a crash
    /// between the start and saving its id is recovered without a second (billed) start.
    /// `Ok(None)` where the provider cannot list.
    async fn find(&self, since: DateTime<Utc>, seed: u32) -> Result<Option<String>, ModelError>;
}

/// The image model `AIPROD_KEYFRAMES` names.
pub fn image_model(settings: &Settings) -> anyhow::Result<Arc<dyn ImageModel>> {
    let m = &settings.models;
    Ok(match m.keyframes {
        KeyframeKind::Imagen => Arc::new(Imagen::new(
            &settings.vertex,
            &m.imagen_model,
            m.imagen_usd_per_image,
            m.model_timeout,
        )?),
        KeyframeKind::Replicate => Arc::new(ReplicateImage::new(
            &settings.replicate,
            &m.replicate_image_model,
            m.replicate_image_usd_per_image,
            m.model_timeout,
        )?),
        KeyframeKind::Simulated => Arc::new(SimulatedImage::new(aiprod_media::Media::new(
            &settings.media,
        ))),
    })
}

/// Gemini, when `AIPROD_VERTEX_PROJECT` is set (whoever uses it decides whether it is wanted).
pub fn gemini(settings: &Settings) -> anyhow::Result<Option<Gemini>> {
    if settings.vertex.vertex_project.is_none() {
        return Ok(None);
    }
    let m = &settings.models;
    Gemini::new(&settings.vertex, &m.gemini_model, m.model_timeout).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemini_cost_is_exact_and_rounds_up() {
        let s = ModelSettings::default();
        // 1000 × $0.30/M + 500 × $2.50/M = $0.0003 + $0.00125.
        assert_eq!(gemini_cost(&s, 1000, 500).micros(), 1550);
        // One token of input is 0.3 micro-dollars: one micro-dollar, never zero.
        assert_eq!(gemini_cost(&s, 1, 0).micros(), 1);
        assert_eq!(gemini_cost(&s, 0, 0), Money::ZERO);
        assert_eq!(gemini_cost(&s, 1_000_000, 1_000_000).micros(), 2_800_000);
    }

    #[test]
    fn only_ill_health_counts_against_a_model() {
        assert!(ModelError::Transient("x".into()).counts_against_health());
        assert!(ModelError::Malformed("x".into()).counts_against_health());
        assert!(!ModelError::Blocked("x".into()).counts_against_health());
        assert!(
            !ModelError::Throttled {
                message: "x".into(),
                retry_after: None
            }
            .counts_against_health()
        );
    }
}
