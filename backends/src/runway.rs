//! Runway's developer API: `POST /v1/image_to_video` (gen4_turbo), `GET` and `DELETE
//! /v1/tasks/{id}`. Runway keeps no idempotency key and lists no tasks, so a crash between the
//! POST and saving the id loses a billed task: the caller writes an intent row first.

use std::time::Duration;

use aiprod_domain::BackendName;
use aiprod_platform::Settings;
use aiprod_platform::config::RunwaySettings;
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::{Api, Backend, BackendError, FailureClass, Output, Poll, RemoteHandle, ShotRequest};

/// The Runway client.
pub struct Runway {
    api: Api,
    base: String,
    key: SecretString,
    version: String,
    ratio: String,
    model: String,
    poll: Duration,
}

/// The client, when `AIPROD_RUNWAY_API_KEY` is set.
pub(crate) fn client(
    api: Api,
    s: &Settings,
) -> anyhow::Result<Option<std::sync::Arc<dyn Backend>>> {
    Ok(s.runway.runway_api_key.is_some().then(|| {
        std::sync::Arc::new(Runway::new(api, &s.runway, &s.backends.prices.runway.model))
            as std::sync::Arc<dyn Backend>
    }))
}

impl Runway {
    /// A client for the configured base URL and key, rendering with `model` (the price
    /// table's, `gen4_turbo` by default).
    pub fn new(api: Api, s: &RunwaySettings, model: &str) -> Runway {
        Runway {
            api,
            base: s.runway_base_url.trim_end_matches('/').to_owned(),
            key: s
                .runway_api_key
                .clone()
                .unwrap_or_else(|| SecretString::from("")),
            version: s.runway_api_version.clone(),
            ratio: s.runway_ratio.clone(),
            model: model.to_owned(),
            poll: s.runway_poll,
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.api
            .http()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.key.expose_secret())
            .header("X-Runway-Version", &self.version)
    }

    async fn task(&self, handle: &RemoteHandle) -> Result<Task, BackendError> {
        self.api
            .json(self.req(reqwest::Method::GET, &format!("/v1/tasks/{}", handle.0)))
            .await
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Task {
    status: String,
    progress: Option<f64>,
    #[serde(default)]
    output: Vec<String>,
    failure: Option<String>,
    failure_code: Option<String>,
}

/// Runway's failure codes, per its docs: input safety is charged and final; output safety and
/// bad output are worth another try; an invalid asset needs another input.
fn failure_class(code: Option<&str>) -> FailureClass {
    match code.unwrap_or("") {
        c if c.starts_with("SAFETY.INPUT") => FailureClass::InputSafety,
        c if c.starts_with("SAFETY.OUTPUT") => FailureClass::OutputSafety,
        c if c.starts_with("ASSET.INVALID") => FailureClass::InvalidAsset,
        _ => FailureClass::Internal,
    }
}

#[async_trait]
impl Backend for Runway {
    fn name(&self) -> BackendName {
        BackendName::Runway
    }

    fn poll_interval(&self) -> Duration {
        self.poll
    }

    fn render_seconds(&self, seconds: u32) -> u32 {
        seconds.clamp(2, 10)
    }

    async fn submit(&self, shot: &ShotRequest) -> Result<RemoteHandle, BackendError> {
        #[derive(Deserialize)]
        struct Created {
            id: String,
        }
        let prompt: String = shot.prompt.chars().take(1000).collect();
        let body = json!({
            "model": self.model,
            "promptImage": shot.image.as_uri(),
            "ratio": self.ratio,
            "duration": shot.duration_s,
            "promptText": prompt,
            "seed": shot.seed,
        });
        let created: Created = self
            .api
            .json(
                self.req(reqwest::Method::POST, "/v1/image_to_video")
                    .json(&body),
            )
            .await?;
        Ok(RemoteHandle(created.id))
    }

    async fn poll(&self, handle: &RemoteHandle) -> Result<Poll, BackendError> {
        let t = self.task(handle).await?;
        Ok(match t.status.as_str() {
            "PENDING" => Poll::Pending(None),
            "RUNNING" => Poll::Pending(t.progress.map(|p| (p.clamp(0.0, 1.0) * 100.0) as u8)),
            "THROTTLED" => Poll::Throttled,
            "SUCCEEDED" => Poll::Done(t.output.into_iter().map(Output::Url).collect(), None),
            "CANCELLED" => Poll::Failed(FailureClass::Canceled, "task was cancelled".into()),
            "FAILED" => {
                let code = t.failure_code.as_deref();
                Poll::Failed(
                    failure_class(code),
                    format!(
                        "{}: {}",
                        code.unwrap_or("FAILED"),
                        t.failure.as_deref().unwrap_or("no reason given")
                    ),
                )
            }
            other => {
                return Err(BackendError::Transient(format!(
                    "runway: unknown task status {other}"
                )));
            }
        })
    }

    async fn cancel(&self, handle: &RemoteHandle) -> Result<(), BackendError> {
        self.api
            .send(self.req(reqwest::Method::DELETE, &format!("/v1/tasks/{}", handle.0)))
            .await
            .map(|_| ())
    }

    async fn fetch_output(&self, handle: &RemoteHandle) -> Result<Vec<Output>, BackendError> {
        let t = self.task(handle).await?;
        if t.status != "SUCCEEDED" {
            return Err(BackendError::Rejected(format!(
                "runway: task {} is {}, not SUCCEEDED",
                handle.0, t.status
            )));
        }
        Ok(t.output.into_iter().map(Output::Url).collect())
    }

    async fn download(
        &self,
        output: &Output,
        dest: &std::path::Path,
        cap: u64,
    ) -> Result<u64, BackendError> {
        self.api.download_url(output, dest, cap).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_codes_map_to_classes() {
        use FailureClass::*;
        for (code, class) in [
            (Some("SAFETY.INPUT.TEXT"), InputSafety),
            (Some("SAFETY.OUTPUT.VIDEO"), OutputSafety),
            (Some("INTERNAL.BAD_OUTPUT.CODE01"), Internal),
            (Some("ASSET.INVALID"), InvalidAsset),
            (None, Internal),
        ] {
            assert_eq!(failure_class(code), class, "{code:?}");
        }
        assert!(!InputSafety.retryable());
        assert!(OutputSafety.retryable() && Internal.retryable());
        assert!(!InvalidAsset.retryable());
    }
}
