//! Replicate: `POST /v1/predictions` with a model version and `Prefer: wait`, `GET` and
//! `POST …/cancel`, and the paginated `GET /v1/predictions` that lets the reconciler find
//! orphans. Outputs are deleted after about an hour, so they are downloaded at once. A finished
//! prediction's `metrics.predict_time` (the seconds of hardware Replicate bills) is read from
//! the number's own text and returned with the outputs.

use std::time::Duration;

use aiprod_domain::{BackendName, HardwareSeconds};
use aiprod_platform::Settings;
use aiprod_platform::config::ReplicateSettings;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{
    Api, Backend, BackendError, FailureClass, Output, Poll, RemoteHandle, RemoteSummary,
    ShotRequest,
};

/// The Replicate client.
pub struct Replicate {
    api: Api,
    base: String,
    token: SecretString,
    version: String,
    wait: Duration,
    poll: Duration,
}

/// The client, when `AIPROD_REPLICATE_API_TOKEN` is set.
pub(crate) fn client(
    api: Api,
    s: &Settings,
) -> anyhow::Result<Option<std::sync::Arc<dyn Backend>>> {
    Ok(s.replicate.replicate_api_token.is_some().then(|| {
        std::sync::Arc::new(Replicate::new(api, &s.replicate)) as std::sync::Arc<dyn Backend>
    }))
}

impl Replicate {
    /// A client for the configured base URL, token and model version.
    pub fn new(api: Api, s: &ReplicateSettings) -> Replicate {
        Replicate {
            api,
            base: s.replicate_base_url.trim_end_matches('/').to_owned(),
            token: s
                .replicate_api_token
                .clone()
                .unwrap_or_else(|| SecretString::from("")),
            version: s.replicate_version.clone(),
            wait: s.replicate_wait,
            poll: s.replicate_poll,
        }
    }

    fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let url = if url.starts_with("http") {
            url.to_owned()
        } else {
            format!("{}{url}", self.base)
        };
        self.api
            .http()
            .request(method, url)
            .bearer_auth(self.token.expose_secret())
    }

    async fn prediction(&self, handle: &RemoteHandle) -> Result<Prediction, BackendError> {
        self.api
            .json(self.req(
                reqwest::Method::GET,
                &format!("/v1/predictions/{}", handle.0),
            ))
            .await
    }
}

#[derive(Deserialize)]
struct Prediction {
    id: String,
    status: String,
    #[serde(default)]
    output: Value,
    #[serde(default)]
    error: Value,
    #[serde(default)]
    input: Value,
    created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    metrics: Option<Metrics>,
}

/// What Replicate measured of a prediction.
#[derive(Deserialize)]
struct Metrics {
    /// Seconds of hardware time, as the provider wrote the number (a float would round it).
    #[serde(default)]
    predict_time: Option<Box<RawValue>>,
}

impl Prediction {
    /// The hardware seconds billed, when the answer carries a usable figure. An unusable one
    /// is logged and left out: the render is still good, and the try is charged its estimate.
    fn hardware_seconds(&self) -> Option<HardwareSeconds> {
        let raw = self.metrics.as_ref()?.predict_time.as_ref()?;
        match HardwareSeconds::parse(raw.get()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(prediction = %self.id, error = %e, "replicate: unusable metrics.predict_time; charging the estimate");
                None
            }
        }
    }

    fn outputs(&self) -> Vec<Output> {
        match &self.output {
            Value::String(u) => vec![Output::Url(u.clone())],
            Value::Array(items) => items
                .iter()
                .filter_map(Value::as_str)
                .map(|u| Output::Url(u.to_owned()))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// SVD renders 14 or 25 frames; the frame rate is chosen so that the clip lasts the shot's
/// length within 5 %: the pair with the smallest error wins.
pub(crate) fn frames_for(seconds: u32) -> (u32, u32) {
    let mut best = (25, 5);
    let mut best_err = f64::MAX;
    for frames in [14u32, 25] {
        for fps in 1..=30u32 {
            let err = (f64::from(frames) / f64::from(fps) - f64::from(seconds)).abs();
            if err < best_err {
                best = (frames, fps);
                best_err = err;
            }
        }
    }
    best
}

/// Replicate's errors are free text; safety refusals name themselves.
fn failure_class(error: &Value) -> FailureClass {
    let text = error.as_str().unwrap_or("").to_ascii_lowercase();
    if text.contains("nsfw") || text.contains("safety") {
        FailureClass::OutputSafety
    } else if text.contains("input_image") || text.contains("invalid image") {
        FailureClass::InvalidAsset
    } else {
        FailureClass::Internal
    }
}

#[async_trait]
impl Backend for Replicate {
    fn name(&self) -> BackendName {
        BackendName::Replicate
    }

    fn poll_interval(&self) -> Duration {
        self.poll
    }

    async fn submit(&self, shot: &ShotRequest) -> Result<RemoteHandle, BackendError> {
        let (frames, fps) = frames_for(shot.duration_s);
        let video_length = if frames == 14 {
            "14_frames_with_svd"
        } else {
            "25_frames_with_svd_xt"
        };
        let body = json!({
            "version": self.version,
            "input": {
                "input_image": shot.image.as_uri(),
                "video_length": video_length,
                "frames_per_second": fps,
                "motion_bucket_id": 127,
                "seed": shot.seed,
            },
        });
        let mut req = self
            .req(reqwest::Method::POST, "/v1/predictions")
            .json(&body);
        if !self.wait.is_zero() {
            req = req.header("Prefer", format!("wait={}", self.wait.as_secs()));
        }
        if let Some(after) = shot.cancel_after {
            // Replicate stops it by itself even if every worker is gone: no bill past the
            // deadline.
            req = req.header("Cancel-After", format!("{}s", after.as_secs().max(1)));
        }
        let p: Prediction = self.api.json(req).await?;
        Ok(RemoteHandle(p.id))
    }

    async fn poll(&self, handle: &RemoteHandle) -> Result<Poll, BackendError> {
        let p = self.prediction(handle).await?;
        Ok(match p.status.as_str() {
            "starting" | "processing" => Poll::Pending(None),
            "succeeded" => Poll::Done(p.outputs(), p.hardware_seconds()),
            "canceled" => Poll::Failed(FailureClass::Canceled, "prediction was canceled".into()),
            "aborted" => Poll::Failed(
                FailureClass::Aborted,
                "prediction was aborted before it started".into(),
            ),
            "failed" => Poll::Failed(
                failure_class(&p.error),
                p.error.as_str().unwrap_or("failed").to_owned(),
            ),
            other => {
                return Err(BackendError::Transient(format!(
                    "replicate: unknown prediction status {other}"
                )));
            }
        })
    }

    async fn cancel(&self, handle: &RemoteHandle) -> Result<(), BackendError> {
        self.api
            .send(self.req(
                reqwest::Method::POST,
                &format!("/v1/predictions/{}/cancel", handle.0),
            ))
            .await
            .map(|_| ())
    }

    async fn fetch_output(&self, handle: &RemoteHandle) -> Result<Vec<Output>, BackendError> {
        let p = self.prediction(handle).await?;
        match p.status.as_str() {
            "succeeded" => Ok(p.outputs()),
            s => Err(BackendError::Rejected(format!(
                "replicate: prediction {} is {s}, not succeeded",
                handle.0
            ))),
        }
    }

    async fn download(
        &self,
        output: &Output,
        dest: &std::path::Path,
        cap: u64,
    ) -> Result<u64, BackendError> {
        self.api.download_url(output, dest, cap).await
    }

    async fn list_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Option<Vec<RemoteSummary>>, BackendError> {
        #[derive(Deserialize)]
        struct Page {
            next: Option<String>,
            results: Vec<Prediction>,
        }
        let mut found = Vec::new();
        let mut url = "/v1/predictions".to_owned();
        // Newest first; stop at the first page that reaches back past `since`.
        for _ in 0..50 {
            let page: Page = self.api.json(self.req(reqwest::Method::GET, &url)).await?;
            let mut older = false;
            for p in page.results {
                let Some(created) = p.created_at else {
                    continue;
                };
                if created < since {
                    older = true;
                    continue;
                }
                // The listing may leave out the input; the full prediction has it.
                let input = if p.input.is_null() {
                    self.prediction(&RemoteHandle(p.id.clone())).await?.input
                } else {
                    p.input
                };
                found.push(RemoteSummary {
                    seed: input
                        .get("seed")
                        .and_then(Value::as_u64)
                        .and_then(|s| u32::try_from(s).ok()),
                    running: matches!(p.status.as_str(), "starting" | "processing"),
                    billed: !matches!(p.status.as_str(), "aborted"),
                    id: p.id,
                    created_at: created,
                });
            }
            match page.next {
                Some(next) if !older => url = next,
                _ => break,
            }
        }
        Ok(Some(found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shot_length_fits_within_five_percent() {
        for s in 2..=8u32 {
            let (frames, fps) = frames_for(s);
            let got = f64::from(frames) / f64::from(fps);
            assert!(
                (got - f64::from(s)).abs() / f64::from(s) <= 0.05,
                "{s}s → {frames}/{fps}"
            );
        }
    }
}
