//! What every provider client shares: one HTTP client with a timeout, request counting, and
//! the mapping of HTTP answers onto `BackendError`.
//!
//! A `BackendError`'s text ends up in `render_task.error`, `backend_health.last_error`, the
//! job's error and the logs, so it never carries a URL: reqwest's own error texts name the URL
//! of the call, and a provider's output link is signed (its query is a credential). Every
//! error text is built through `aiprod_platform::redact`.

use std::path::Path;
use std::time::Duration;

use aiprod_domain::BackendName;
use aiprod_platform::metrics::Metrics;
use aiprod_platform::redact::{error_text, redact_urls};
use reqwest::{RequestBuilder, Response, StatusCode};

use super::{BackendError, Output};

/// An HTTP client for one backend.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    backend: BackendName,
}

impl Api {
    /// A client whose every call gives up after `timeout`.
    pub fn new(backend: BackendName, timeout: Duration) -> anyhow::Result<Api> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("aiprod-fleet/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Api { client, backend })
    }

    /// The underlying client, to build requests.
    pub fn http(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends a request; any answer but 2xx becomes the matching `BackendError`.
    pub async fn send(&self, req: RequestBuilder) -> Result<Response, BackendError> {
        let metrics = Metrics::global();
        metrics
            .backend_requests
            .with_label_values(&[self.backend.as_str()])
            .inc();
        let resp = req.send().await.map_err(|e| {
            let why = error_text(&e);
            if e.is_timeout() {
                BackendError::Timeout(format!("{}: timed out: {why}", self.backend))
            } else if e.is_connect() {
                BackendError::Transient(format!("{}: cannot connect: {why}", self.backend))
            } else {
                BackendError::Timeout(format!("{}: request failed: {why}", self.backend))
            }
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = retry_after(&resp);
        let body = resp.text().await.unwrap_or_default();
        Err(classify(self.backend, status, &body, retry_after))
    }

    /// Sends a request and reads a JSON answer.
    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        req: RequestBuilder,
    ) -> Result<T, BackendError> {
        let resp = self.send(req).await?;
        resp.json().await.map_err(|e| {
            BackendError::Transient(format!(
                "{}: unreadable answer: {}",
                self.backend,
                error_text(&e)
            ))
        })
    }

    /// Downloads an HTTPS output into `dest`, chunk by chunk, up to `cap` bytes. 403, 404
    /// and 410 mean the signed URL has expired.
    pub async fn download_url(
        &self,
        output: &Output,
        dest: &Path,
        cap: u64,
    ) -> Result<u64, BackendError> {
        let Output::Url(url) = output else {
            return Err(BackendError::Rejected(format!(
                "{}: cannot download {output:?} over HTTP",
                self.backend
            )));
        };
        match self.send(self.client.get(url)).await {
            Ok(resp) => self.stream_to(resp, dest, cap).await,
            Err(BackendError::Rejected(m) | BackendError::Unauthorized(m)) => {
                Err(BackendError::Expired(m))
            }
            Err(e) => Err(e),
        }
    }

    /// Writes an answer's body to `dest` as it arrives; more than `cap` bytes (declared or
    /// received) is refused, and a refused or cut-short file is removed.
    pub async fn stream_to(
        &self,
        mut resp: Response,
        dest: &Path,
        cap: u64,
    ) -> Result<u64, BackendError> {
        use tokio::io::AsyncWriteExt;
        let b = self.backend;
        if resp.content_length().is_some_and(|n| n > cap) {
            return Err(crate::too_large(b, cap));
        }
        let io = |e: std::io::Error| {
            BackendError::Transient(format!("{b}: cannot write {}: {e}", dest.display()))
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut written = 0u64;
        let result = loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    written += chunk.len() as u64;
                    if written > cap {
                        break Err(crate::too_large(b, cap));
                    }
                    if let Err(e) = file.write_all(&chunk).await {
                        break Err(io(e));
                    }
                }
                Ok(None) => break file.flush().await.map(|()| written).map_err(io),
                Err(e) => {
                    break Err(BackendError::Transient(format!(
                        "{b}: download cut short: {}",
                        error_text(&e)
                    )));
                }
            }
        };
        if result.is_err() {
            drop(file);
            let _ = tokio::fs::remove_file(dest).await;
        }
        result
    }
}

/// Maps a non-2xx answer. Shared so that every client classifies alike.
pub(crate) fn classify(
    backend: BackendName,
    status: StatusCode,
    body: &str,
    retry_after: Option<Duration>,
) -> BackendError {
    // A provider's own words help whoever reads the error, but not its links: an answer can
    // quote a signed URL.
    let snippet = redact_urls(&body.chars().take(300).collect::<String>());
    let message = format!("{backend}: HTTP {}: {snippet}", status.as_u16());
    match status.as_u16() {
        429 => BackendError::Throttled {
            retry_after: retry_after.or_else(|| resets_in(body)),
            message,
        },
        401 | 403 => BackendError::Unauthorized(message),
        404 | 410 => BackendError::Expired(message),
        408 | 500..=599 => BackendError::Transient(message),
        _ => BackendError::Rejected(message),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is read as "unknown").
pub(crate) fn retry_after(resp: &Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Replicate says "…resets in ~30s" in its 429 body instead of a header.
pub(crate) fn resets_in(body: &str) -> Option<Duration> {
    let at = body.find("resets in")? + "resets in".len();
    let digits: String = body[at..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_error_classes() {
        let b = BackendName::Runway;
        let s = |c| StatusCode::from_u16(c).expect("status");
        assert!(matches!(
            classify(b, s(429), "", Some(Duration::from_secs(7))),
            BackendError::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            classify(b, s(429), r#"{"detail":"Request was throttled. Your rate limit resets in ~30s."}"#, None),
            BackendError::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(30)
        ));
        assert!(matches!(
            classify(b, s(503), "", None),
            BackendError::Transient(_)
        ));
        assert!(matches!(
            classify(b, s(401), "", None),
            BackendError::Unauthorized(_)
        ));
        assert!(matches!(
            classify(b, s(400), "bad ratio", None),
            BackendError::Rejected(m) if m.contains("bad ratio")
        ));
    }
}
