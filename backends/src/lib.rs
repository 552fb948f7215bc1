//! The video backends behind one trait, one file per provider. A client only speaks its
//! provider's HTTP API (BACKENDS in ARCHITECTURE.md) and classifies its answers; the
//! write-ahead render protocol, health, fallback and money live in the worker, the same for
//! every backend, simulated or real. The scheduler uses the same clients to find orphans.
//!
//! Beside them, `models`: Gemini, which plans and judges, and the image models that draw
//! keyframes; and `vertex`, what every Vertex AI call (Veo, Gemini, Imagen) shares.
//!
//! Adding a backend: its client file here, one line in `Fleet::from_settings`, its settings,
//! its prices, a migration adding it to `backend_name`, and its test stub (ARCHITECTURE.md).

mod fleet;
mod http;
pub mod models;
mod replicate;
mod runway;
mod simulated;
mod veo3;
pub mod vertex;

use std::path::Path;
use std::time::Duration;

use aiprod_domain::{BackendName, HardwareSeconds, Money};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use aiprod_domain::FailureClass;
pub use fleet::Fleet;
pub use http::Api;
pub use replicate::Replicate;
pub use runway::Runway;
pub use simulated::Simulated;
pub use veo3::Veo3;

/// A rendered shot, stored in our artifact store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedShot {
    /// Which shot.
    pub index: usize,
    /// Where it was rendered (absent in checkpoints written before backends were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendName>,
    /// The provider's id of the render.
    pub remote_id: String,
    /// Where our copy is.
    pub uri: String,
    /// The length the provider was asked for (Veo rounds up to 4, 6 or 8 s).
    #[serde(default)]
    pub duration_s: u32,
    /// What it cost.
    pub cost: Money,
    /// The clip's QA checks as its render row records them (technical, and semantic when it
    /// was judged), carried here so that the QA stages need not read the row back (absent in
    /// checkpoints written before they were carried, and for a render cache hit without them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qa: Option<serde_json::Value>,
}

/// The keyframe a shot starts from.
#[derive(Clone, Debug)]
pub enum Image {
    /// A link the provider reads itself (Veo takes a `gs://` object). The worker never passes
    /// a client's http(s) link on: it fetches the image through its hardened fetcher and sends
    /// the copy inline.
    Url(String),
    /// Bytes we send inline.
    Inline {
        /// `image/png`, `image/jpeg`…
        mime: String,
        /// The image.
        data: Vec<u8>,
    },
}

impl Image {
    /// The image as a data URI, or the URL as given.
    pub fn as_uri(&self) -> String {
        use base64::Engine as _;
        match self {
            Image::Url(u) => u.clone(),
            Image::Inline { mime, data } => format!(
                "data:{mime};base64,{}",
                base64::engine::general_purpose::STANDARD.encode(data)
            ),
        }
    }
}

/// One shot to render.
#[derive(Clone, Debug)]
pub struct ShotRequest {
    /// The shot's place in the plan, from 0.
    pub shot: usize,
    /// The shot's prompt.
    pub prompt: String,
    /// The length to ask for, as the backend allows it (`Backend::render_seconds`).
    pub duration_s: u32,
    /// The keyframe.
    pub image: Image,
    /// A seed that identifies this try at the provider (see `render_task.seed`).
    pub seed: u32,
    /// When the provider should give up by itself, where it can be told.
    pub cancel_after: Option<Duration>,
}

/// The provider's id of a render.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteHandle(pub String);

/// Where a finished render's video is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// An (expiring) HTTPS URL.
    Url(String),
    /// A Cloud Storage object.
    Gcs(String),
    /// The bytes themselves (Veo without a storage URI, and the simulation).
    Inline(Vec<u8>),
}

impl Output {
    /// The output as recorded in `render_task.outputs`: inline bytes are not kept there.
    pub fn to_json(&self) -> Value {
        match self {
            Output::Url(u) => json!({"url": u}),
            Output::Gcs(u) => json!({"gcs": u}),
            Output::Inline(b) => json!({"inline_bytes": b.len()}),
        }
    }

    /// Reads back what `to_json` wrote; inline outputs must be fetched again.
    pub fn from_json(v: &Value) -> Option<Output> {
        if let Some(u) = v.get("url").and_then(Value::as_str) {
            Some(Output::Url(u.to_owned()))
        } else {
            v.get("gcs")
                .and_then(Value::as_str)
                .map(|u| Output::Gcs(u.to_owned()))
        }
    }
}

/// What a poll found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Queued or running; progress 0–1 where the provider tells.
    Pending(Option<u8>),
    /// Queued over our concurrency limit: capacity, not ill health.
    Throttled,
    /// Finished: where the video is, and the seconds of hardware the provider says it used,
    /// where it says (Replicate's `metrics.predict_time`; `None` elsewhere, or when the figure
    /// is missing or unreadable).
    Done(Vec<Output>, Option<HardwareSeconds>),
    /// Failed at the provider.
    Failed(FailureClass, String),
}

/// A call that did not get an answer it could use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// 429 or quota: capacity. Wait `retry_after` if given.
    #[error("throttled: {message}")]
    Throttled {
        /// What the provider said.
        message: String,
        /// The provider's `Retry-After` (or its words for it).
        retry_after: Option<Duration>,
    },
    /// A network error before the request was sent, or a 5xx: the same call may work later.
    #[error("{0}")]
    Transient(String),
    /// No answer in time: the provider may or may not have acted on the request.
    #[error("{0}")]
    Timeout(String),
    /// The provider refused this request (400, 404, 422): do not repeat it.
    #[error("{0}")]
    Rejected(String),
    /// Our credentials were refused (401, 403): the backend is unusable until fixed.
    #[error("{0}")]
    Unauthorized(String),
    /// An output URL that has expired (403, 404, 410 on download): fetch fresh ones.
    #[error("{0}")]
    Expired(String),
}

/// Writes bytes we already hold (an inline output) to `dest`, under the same cap as a
/// download.
pub(crate) async fn write_inline(
    backend: BackendName,
    bytes: &[u8],
    dest: &Path,
    cap: u64,
) -> Result<u64, BackendError> {
    if bytes.len() as u64 > cap {
        return Err(too_large(backend, cap));
    }
    tokio::fs::write(dest, bytes).await.map_err(|e| {
        BackendError::Transient(format!("{backend}: cannot write {}: {e}", dest.display()))
    })?;
    Ok(bytes.len() as u64)
}

/// An image's type from its link's file name (PNG when it does not say): for a `gs://`
/// keyframe Veo reads, or an image model's output whose answer names no type.
pub(crate) fn guess_mime(url: &str) -> &'static str {
    let path = url.split('?').next().unwrap_or(url).to_ascii_lowercase();
    if path.ends_with(".jpg") || path.ends_with(".jpeg") {
        "image/jpeg"
    } else if path.ends_with(".webp") {
        "image/webp"
    } else {
        "image/png"
    }
}

/// The answer to an output over the size cap.
pub(crate) fn too_large(backend: BackendName, cap: u64) -> BackendError {
    BackendError::Rejected(format!(
        "{backend}: the output is larger than {cap} bytes (AIPROD_MAX_DOWNLOAD_BYTES)"
    ))
}

/// A render the provider lists, for the orphan reconciler.
#[derive(Clone, Debug)]
pub struct RemoteSummary {
    /// The provider's id.
    pub id: String,
    /// When the provider created it.
    pub created_at: DateTime<Utc>,
    /// The seed it was given, if the listing shows it.
    pub seed: Option<u32>,
    /// Whether it may still run (and cost).
    pub running: bool,
    /// Whether it was billed: it ran, whatever its end (Replicate bills GPU time even for a
    /// failure, not an abort before it started).
    pub billed: bool,
}

/// One provider's API.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Which backend this is.
    fn name(&self) -> BackendName;
    /// The provider's polling cadence (jitter is added by the caller).
    fn poll_interval(&self) -> Duration;
    /// The length to ask for when a shot lasts `seconds` (the provider may allow only some).
    fn render_seconds(&self, seconds: u32) -> u32 {
        seconds
    }
    /// Whether this is the simulation rather than a provider.
    fn simulated(&self) -> bool {
        false
    }
    /// Whether a failure of this class is billed.
    fn charged_on_failure(&self, class: FailureClass) -> bool {
        class == FailureClass::InputSafety
    }
    /// Starts a render.
    async fn submit(&self, shot: &ShotRequest) -> Result<RemoteHandle, BackendError>;
    /// Asks how a render is going.
    async fn poll(&self, handle: &RemoteHandle) -> Result<Poll, BackendError>;
    /// Asks how several renders are going, one answer per handle in the order given. The
    /// default polls them one after another; a backend that can poll several in one call
    /// overrides it, and says how many with `poll_batch`.
    async fn poll_many(&self, handles: &[&RemoteHandle]) -> Vec<Result<Poll, BackendError>> {
        let mut answers = Vec::with_capacity(handles.len());
        for h in handles {
            answers.push(self.poll(h).await);
        }
        answers
    }
    /// The most renders one `poll_many` call should carry (1: the provider polls one at a
    /// time, so each is its own request).
    fn poll_batch(&self) -> usize {
        1
    }
    /// Asks the provider to stop a render.
    async fn cancel(&self, handle: &RemoteHandle) -> Result<(), BackendError>;
    /// Fresh output locations of a finished render, where the provider gives them again.
    async fn fetch_output(&self, handle: &RemoteHandle) -> Result<Vec<Output>, BackendError>;
    /// Streams one output into the file `dest`, never holding it whole in memory, and gives
    /// up once it passes `cap` bytes (a provider's answer that large is not a video we asked
    /// for). Returns the bytes written.
    async fn download(&self, output: &Output, dest: &Path, cap: u64) -> Result<u64, BackendError>;
    /// Renders created since `since`, where the provider lists them (`None`: it does not).
    async fn list_since(
        &self,
        _since: DateTime<Utc>,
    ) -> Result<Option<Vec<RemoteSummary>>, BackendError> {
        Ok(None)
    }
}
