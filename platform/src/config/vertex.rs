//! Vertex AI, shared by every Google model we call (Veo, Gemini, Imagen), and the models that plan,
//! draw keyframes and judge shots: which one does each job, its id, its limits and its price. Model
//! ids and prices stay in settings (ARCHITECTURE.md, "The providers"): providers rename and
//! reprice.
//!
//! The Vertex variables were Veo's alone (`AIPROD_VEO_PROJECT`…); the old names still work,
//! and setting an old name beside its new one stops the start, so nobody wonders which won.

use std::time::Duration;

use aiprod_domain::Money;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_with::{DurationMilliSeconds, DurationSeconds, serde_as};

use super::check::{http_url, within, within_ms};

/// Where Vertex AI is and how we authenticate to it. Veo is enabled when the project is set.
#[derive(Clone, Debug, Deserialize, Serialize)]
// The defaults come from here rather than from the loader's defaults layer: an old name given
// alone must not meet a default under the new name (serde would call that a duplicate).
#[serde(default)]
pub struct VertexSettings {
    /// `AIPROD_VERTEX_PROJECT` (formerly `AIPROD_VEO_PROJECT`): the Google Cloud project.
    #[serde(alias = "veo_project")]
    pub vertex_project: Option<String>,
    /// `AIPROD_VERTEX_LOCATION` (formerly `AIPROD_VEO_LOCATION`): the Vertex AI region.
    #[serde(alias = "veo_location")]
    pub vertex_location: String,
    /// `AIPROD_VERTEX_BASE_URL` (formerly `AIPROD_VEO_BASE_URL`): default
    /// `https://{location}-aiplatform.googleapis.com`.
    #[serde(alias = "veo_base_url")]
    pub vertex_base_url: Option<String>,
    /// `AIPROD_VERTEX_ACCESS_TOKEN` (formerly `AIPROD_VEO_ACCESS_TOKEN`): a fixed OAuth token
    /// instead of Application Default Credentials (short-lived; for tests and checks).
    #[serde(alias = "veo_access_token", skip_serializing)]
    pub vertex_access_token: Option<SecretString>,
}

impl Default for VertexSettings {
    fn default() -> Self {
        VertexSettings {
            vertex_project: None,
            vertex_location: "us-central1".into(),
            vertex_base_url: None,
            vertex_access_token: None,
        }
    }
}

/// The settings' keys whose defaults `VertexSettings` gives itself, each with its old name.
pub(super) const RENAMED: [(&str, &str); 4] = [
    ("vertex_project", "veo_project"),
    ("vertex_location", "veo_location"),
    ("vertex_base_url", "veo_base_url"),
    ("vertex_access_token", "veo_access_token"),
];

impl VertexSettings {
    /// The base URL of every Vertex AI call: the configured one, else the region's.
    pub fn base_url(&self) -> String {
        self.vertex_base_url
            .clone()
            .unwrap_or_else(|| {
                format!("https://{}-aiplatform.googleapis.com", self.vertex_location)
            })
            .trim_end_matches('/')
            .to_owned()
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.vertex_base_url {
            http_url("AIPROD_VERTEX_BASE_URL", url)?;
        }
        if self.vertex_location.is_empty()
            || !self
                .vertex_location
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(format!(
                "AIPROD_VERTEX_LOCATION must be a region such as us-central1, got {:?}",
                self.vertex_location
            ));
        }
        Ok(())
    }
}

/// Who writes the shot plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlannerKind {
    /// Gemini on Vertex AI, with the rules as its fallback.
    Gemini,
    /// The built-in rules: free, instant, deterministic.
    Rules,
}

/// Who draws a shot's keyframe when the client sent no image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyframeKind {
    /// Imagen on Vertex AI.
    Imagen,
    /// An image model on Replicate (`AIPROD_REPLICATE_IMAGE_MODEL`).
    Replicate,
    /// The shot's text drawn on a still frame, free (dev and tests).
    Simulated,
}

/// Whether shots are judged for meaning (does the picture show the prompt?) after technical QA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SemanticQaKind {
    /// Gemini looks at a few frames of each shot beside its prompt.
    Gemini,
    /// No semantic judge.
    Off,
}

/// What a shot that the semantic judge scores below the threshold becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSemanticFail {
    /// Rendered again, up to `AIPROD_QA_SEMANTIC_MAX_RERENDERS` times.
    Rerender,
    /// The job fails.
    Fail,
    /// Kept, with its score recorded.
    Accept,
}

/// The models around the video backends (flat `AIPROD_*` names).
#[serde_as]
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ModelSettings {
    /// `AIPROD_PLANNER`: `gemini` or `rules`.
    pub planner: PlannerKind,
    /// `AIPROD_GEMINI_MODEL`: the Gemini model id for planning and judging.
    pub gemini_model: String,
    /// `AIPROD_KEYFRAMES`: `imagen`, `replicate` or `simulated`.
    pub keyframes: KeyframeKind,
    /// `AIPROD_IMAGEN_MODEL`: the Imagen model id.
    pub imagen_model: String,
    /// `AIPROD_REPLICATE_IMAGE_MODEL`: an official Replicate model, `owner/name`.
    pub replicate_image_model: String,
    /// `AIPROD_QA_SEMANTIC`: `gemini` or `off`.
    pub qa_semantic: SemanticQaKind,
    /// `AIPROD_QA_SEMANTIC_THRESHOLD`: the lowest passing score, 0–10.
    pub qa_semantic_threshold: f64,
    /// `AIPROD_QA_SEMANTIC_ON_FAIL`: `rerender`, `fail` or `accept`.
    pub qa_semantic_on_fail: OnSemanticFail,
    /// `AIPROD_QA_SEMANTIC_MAX_RERENDERS`: renders again of one shot for its meaning, 0–5.
    pub qa_semantic_max_rerenders: u32,
    /// `AIPROD_QA_SEMANTIC_FRAMES`: frames of a shot shown to the judge, 1–8.
    pub qa_semantic_frames: u32,
    /// `AIPROD_MODEL_CACHE_TTL_S`: how long a model's answer to the same request is reused
    /// (0: never).
    #[serde(rename = "model_cache_ttl_s")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub model_cache_ttl: Duration,
    /// `AIPROD_MODEL_TIMEOUT_MS`: the longest one model call may take.
    #[serde(rename = "model_timeout_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub model_timeout: Duration,
    /// `AIPROD_GEMINI_INPUT_USD_PER_MTOK`: the price of a million prompt tokens.
    pub gemini_input_usd_per_mtok: Money,
    /// `AIPROD_GEMINI_OUTPUT_USD_PER_MTOK`: the price of a million output tokens.
    pub gemini_output_usd_per_mtok: Money,
    /// `AIPROD_IMAGEN_USD_PER_IMAGE`: the price of one Imagen image.
    pub imagen_usd_per_image: Money,
    /// `AIPROD_REPLICATE_IMAGE_USD_PER_IMAGE`: the price of one Replicate image.
    pub replicate_image_usd_per_image: Money,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            planner: PlannerKind::Rules,
            gemini_model: "gemini-2.5-flash".into(),
            keyframes: KeyframeKind::Simulated,
            imagen_model: "imagen-4.0-fast-generate-001".into(),
            replicate_image_model: "black-forest-labs/flux-schnell".into(),
            qa_semantic: SemanticQaKind::Off,
            qa_semantic_threshold: 7.0,
            qa_semantic_on_fail: OnSemanticFail::Rerender,
            qa_semantic_max_rerenders: 2,
            qa_semantic_frames: 3,
            model_cache_ttl: Duration::from_secs(86_400),
            model_timeout: Duration::from_secs(60),
            gemini_input_usd_per_mtok: Money::from_micros(300_000),
            gemini_output_usd_per_mtok: Money::from_micros(2_500_000),
            imagen_usd_per_image: Money::from_micros(20_000),
            replicate_image_usd_per_image: Money::from_micros(3_000),
        }
    }
}

impl ModelSettings {
    /// Checks the ranges, and that a Vertex model has a project to run in.
    pub(super) fn validate(&self, vertex: &VertexSettings) -> Result<(), String> {
        if !(0.0..=10.0).contains(&self.qa_semantic_threshold) {
            return Err(format!(
                "AIPROD_QA_SEMANTIC_THRESHOLD must be 0–10, got {}",
                self.qa_semantic_threshold
            ));
        }
        within(
            "AIPROD_QA_SEMANTIC_MAX_RERENDERS",
            self.qa_semantic_max_rerenders,
            0..=5,
        )?;
        within("AIPROD_QA_SEMANTIC_FRAMES", self.qa_semantic_frames, 1..=8)?;
        within_ms("AIPROD_MODEL_TIMEOUT_MS", self.model_timeout, 100..=600_000)?;
        for (name, id) in [
            ("AIPROD_GEMINI_MODEL", &self.gemini_model),
            ("AIPROD_IMAGEN_MODEL", &self.imagen_model),
        ] {
            if id.is_empty() || id.contains(['/', ':', '?', '#', ' ']) {
                return Err(format!("{name} must be a model id, got {id:?}"));
            }
        }
        let (owner, name) = self
            .replicate_image_model
            .split_once('/')
            .unwrap_or(("", ""));
        if owner.is_empty() || name.is_empty() || name.contains(['/', ':']) {
            return Err(format!(
                "AIPROD_REPLICATE_IMAGE_MODEL must be owner/name, got {:?}",
                self.replicate_image_model
            ));
        }
        for (name, price) in [
            (
                "AIPROD_GEMINI_INPUT_USD_PER_MTOK",
                self.gemini_input_usd_per_mtok,
            ),
            (
                "AIPROD_GEMINI_OUTPUT_USD_PER_MTOK",
                self.gemini_output_usd_per_mtok,
            ),
            ("AIPROD_IMAGEN_USD_PER_IMAGE", self.imagen_usd_per_image),
            (
                "AIPROD_REPLICATE_IMAGE_USD_PER_IMAGE",
                self.replicate_image_usd_per_image,
            ),
        ] {
            if price < Money::ZERO {
                return Err(format!("{name} must not be negative, got {price}"));
            }
        }
        if vertex.vertex_project.is_none() {
            let needs = [
                (self.planner == PlannerKind::Gemini, "AIPROD_PLANNER=gemini"),
                (
                    self.keyframes == KeyframeKind::Imagen,
                    "AIPROD_KEYFRAMES=imagen",
                ),
                (
                    self.qa_semantic == SemanticQaKind::Gemini,
                    "AIPROD_QA_SEMANTIC=gemini",
                ),
            ];
            if let Some((_, what)) = needs.iter().find(|(on, _)| *on) {
                return Err(format!(
                    "{what} needs AIPROD_VERTEX_PROJECT (the Google Cloud project Vertex AI \
                     runs in)"
                ));
            }
        }
        Ok(())
    }
}
