//! Each provider's client: where it is, its credentials and its cadence. A client is enabled
//! when its credentials are set (see `aiprod_backends::Fleet`).

use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_with::{DurationMilliSeconds, DurationSeconds, serde_as};

use super::check::{http_url, within_ms, within_s};

/// The Runway client. Enabled when `AIPROD_RUNWAY_API_KEY` is set.
#[serde_as]
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct RunwaySettings {
    /// `AIPROD_RUNWAY_BASE_URL`.
    pub runway_base_url: String,
    /// `AIPROD_RUNWAY_API_KEY`.
    #[serde(skip_serializing)]
    pub runway_api_key: Option<SecretString>,
    /// `AIPROD_RUNWAY_API_VERSION`: the `X-Runway-Version` header.
    pub runway_api_version: String,
    /// `AIPROD_RUNWAY_RATIO`: the output's `ratio`.
    pub runway_ratio: String,
    /// `AIPROD_RUNWAY_POLL_MS`: the task polling cadence (±20 % jitter).
    #[serde(rename = "runway_poll_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub runway_poll: Duration,
}

impl Default for RunwaySettings {
    fn default() -> Self {
        RunwaySettings {
            runway_base_url: "https://api.dev.runwayml.com".into(),
            runway_api_key: None,
            runway_api_version: "2024-11-06".into(),
            runway_ratio: "1280:720".into(),
            runway_poll: Duration::from_secs(6),
        }
    }
}

/// The ratios Runway's `image_to_video` takes.
const RUNWAY_RATIOS: [&str; 6] = [
    "1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672",
];

impl RunwaySettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        http_url("AIPROD_RUNWAY_BASE_URL", &self.runway_base_url)?;
        within_ms("AIPROD_RUNWAY_POLL_MS", self.runway_poll, 10..=86_400_000)?;
        if !RUNWAY_RATIOS.contains(&self.runway_ratio.as_str()) {
            return Err(format!(
                "AIPROD_RUNWAY_RATIO must be one of {}, got {}",
                RUNWAY_RATIOS.join(", "),
                self.runway_ratio
            ));
        }
        Ok(())
    }
}

/// The Veo 3 client. Enabled when `AIPROD_VERTEX_PROJECT` is set; where Vertex AI is and how
/// we authenticate to it are `VertexSettings`, shared with the other Google models.
#[serde_as]
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct VeoSettings {
    /// `AIPROD_VEO_STORAGE_URI`: a `gs://` prefix for outputs; unset, videos come back inline.
    pub veo_storage_uri: Option<String>,
    /// `AIPROD_VEO_GCS_BASE_URL`: where `gs://` outputs are read (the Cloud Storage JSON API).
    pub veo_gcs_base_url: String,
    /// `AIPROD_VEO_RESOLUTION`: `720p` or `1080p`.
    pub veo_resolution: String,
    /// `AIPROD_VEO_GENERATE_AUDIO`: ask for an audio track.
    pub veo_generate_audio: bool,
    /// `AIPROD_VEO_POLL_MS`: the operation polling cadence (±20 % jitter).
    #[serde(rename = "veo_poll_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub veo_poll: Duration,
}

impl Default for VeoSettings {
    fn default() -> Self {
        VeoSettings {
            veo_storage_uri: None,
            veo_gcs_base_url: "https://storage.googleapis.com".into(),
            veo_resolution: "720p".into(),
            veo_generate_audio: false,
            veo_poll: Duration::from_secs(10),
        }
    }
}

impl VeoSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        http_url("AIPROD_VEO_GCS_BASE_URL", &self.veo_gcs_base_url)?;
        within_ms("AIPROD_VEO_POLL_MS", self.veo_poll, 10..=86_400_000)?;
        if !["720p", "1080p"].contains(&self.veo_resolution.as_str()) {
            return Err(format!(
                "AIPROD_VEO_RESOLUTION must be 720p or 1080p, got {}",
                self.veo_resolution
            ));
        }
        if let Some(uri) = &self.veo_storage_uri
            && !uri.starts_with("gs://")
        {
            return Err(format!(
                "AIPROD_VEO_STORAGE_URI must start with gs://, got {uri}"
            ));
        }
        Ok(())
    }
}

/// The Replicate client. Enabled when `AIPROD_REPLICATE_API_TOKEN` is set.
#[serde_as]
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ReplicateSettings {
    /// `AIPROD_REPLICATE_BASE_URL`.
    pub replicate_base_url: String,
    /// `AIPROD_REPLICATE_API_TOKEN`.
    #[serde(skip_serializing)]
    pub replicate_api_token: Option<SecretString>,
    /// `AIPROD_REPLICATE_VERSION`: the model version to run.
    pub replicate_version: String,
    /// `AIPROD_REPLICATE_WAIT_S`: `Prefer: wait=N` on create (1–60; 0 leaves it out).
    #[serde(rename = "replicate_wait_s")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub replicate_wait: Duration,
    /// `AIPROD_REPLICATE_POLL_MS`: the prediction polling cadence (±20 % jitter).
    #[serde(rename = "replicate_poll_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub replicate_poll: Duration,
}

impl Default for ReplicateSettings {
    fn default() -> Self {
        ReplicateSettings {
            replicate_base_url: "https://api.replicate.com".into(),
            replicate_api_token: None,
            replicate_version: "stability-ai/stable-video-diffusion:3f0457e4619daac51203dedb472816fd4af51f3149fa7a9e0b5ffcf1b8172438".into(),
            replicate_wait: Duration::from_secs(5),
            replicate_poll: Duration::from_secs(2),
        }
    }
}

impl ReplicateSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        http_url("AIPROD_REPLICATE_BASE_URL", &self.replicate_base_url)?;
        within_s("AIPROD_REPLICATE_WAIT_S", self.replicate_wait, 0..=60)?;
        within_ms(
            "AIPROD_REPLICATE_POLL_MS",
            self.replicate_poll,
            10..=86_400_000,
        )
    }
}
