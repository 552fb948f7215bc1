//! What every model client shares: one HTTP client with a timeout, and the mapping of HTTP
//! answers onto `ModelError`, whether they came through reqwest (Replicate) or through Google's
//! client library (Gemini and Imagen). Like `crate::http` for the video backends, every error
//! text is built through `aiprod_platform::redact`: it never carries a URL or a token.

use std::time::Duration;

use aiprod_platform::redact::{error_text, redact_urls};
use google_cloud_auth::errors::CredentialsError;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::Value;

use super::ModelError;

/// How every model call names us to the provider, through reqwest or Google's client.
pub(crate) const USER_AGENT: &str = concat!("aiprod-fleet/", env!("CARGO_PKG_VERSION"));

/// An HTTP client for one model provider; `who` starts every error text.
#[derive(Clone)]
pub(crate) struct Call {
    client: reqwest::Client,
    who: &'static str,
}

impl Call {
    /// A client whose every call gives up after `timeout`.
    pub(crate) fn new(who: &'static str, timeout: Duration) -> anyhow::Result<Call> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(USER_AGENT)
            .build()?;
        Ok(Call { client, who })
    }

    /// The underlying client, to build requests.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends a request; any answer but 2xx becomes the matching `ModelError`.
    pub(crate) async fn send(&self, req: RequestBuilder) -> Result<Response, ModelError> {
        let who = self.who;
        let resp = req.send().await.map_err(|e| {
            let why = error_text(&e);
            if e.is_timeout() {
                ModelError::Timeout(format!("{who}: timed out: {why}"))
            } else if e.is_connect() {
                ModelError::Transient(format!("{who}: cannot connect: {why}"))
            } else {
                ModelError::Timeout(format!("{who}: request failed: {why}"))
            }
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = crate::http::retry_after(&resp);
        let body = resp.text().await.unwrap_or_default();
        Err(classify(who, status, &body, retry_after))
    }

    /// Sends a request and reads a JSON answer.
    pub(crate) async fn json<T: serde::de::DeserializeOwned>(
        &self,
        req: RequestBuilder,
    ) -> Result<T, ModelError> {
        let resp = self.send(req).await?;
        let who = self.who;
        resp.json().await.map_err(|e| {
            if e.is_timeout() {
                ModelError::Timeout(format!("{who}: answer cut short: {}", error_text(&e)))
            } else {
                ModelError::Malformed(format!("{who}: unreadable answer: {}", error_text(&e)))
            }
        })
    }

    /// Reads an answer's body whole, up to `cap` bytes (declared or received).
    pub(crate) async fn bytes_capped(
        &self,
        mut resp: Response,
        cap: u64,
    ) -> Result<Vec<u8>, ModelError> {
        let who = self.who;
        let too_large = || ModelError::Rejected(format!("{who}: the image is over {cap} bytes"));
        if resp.content_length().is_some_and(|n| n > cap) {
            return Err(too_large());
        }
        let mut data = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if (data.len() + chunk.len()) as u64 > cap {
                        return Err(too_large());
                    }
                    data.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(data),
                Err(e) => {
                    return Err(ModelError::Transient(format!(
                        "{who}: download cut short: {}",
                        error_text(&e)
                    )));
                }
            }
        }
    }
}

/// Maps a non-2xx answer. Google's errors are `{error:{code, message, status}}`, Replicate's
/// `{detail}`: their words go in the text, their links do not.
pub(crate) fn classify(
    who: &str,
    status: StatusCode,
    body: &str,
    retry_after: Option<Duration>,
) -> ModelError {
    let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let words = match (&parsed["error"], &parsed["detail"]) {
        (Value::Object(e), _) => format!(
            "{} {}",
            e.get("status").and_then(Value::as_str).unwrap_or(""),
            e.get("message").and_then(Value::as_str).unwrap_or("")
        )
        .trim()
        .to_owned(),
        (_, Value::String(d)) => d.clone(),
        _ => body.to_owned(),
    };
    let snippet = redact_urls(&words.chars().take(300).collect::<String>());
    let message = format!("{who}: HTTP {}: {snippet}", status.as_u16());
    match status.as_u16() {
        429 => ModelError::Throttled {
            retry_after: retry_after.or_else(|| crate::http::resets_in(body)),
            message,
        },
        401 | 403 => ModelError::Unauthorized(message),
        408 | 500..=599 => ModelError::Transient(message),
        _ => ModelError::Rejected(message),
    }
}

/// Maps an error of Google's client library (Gemini, Imagen) the way `classify` maps a reqwest
/// answer: an HTTP error keeps its status, its `Retry-After` and Google's words, and what never
/// reached Vertex is told apart from what may have.
pub(crate) fn google(who: &str, e: &google_cloud_gax::error::Error) -> ModelError {
    if let Some(code) = e.http_status_code() {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = e
            .http_headers()
            .and_then(|h| h.get(reqwest::header::RETRY_AFTER))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // The library parsed Google's `{error:{code, message, status}}` into a status, or kept
        // the body when it was something else (a proxy's page): `classify` reads either.
        let body = match (e.status(), e.http_payload()) {
            (Some(s), _) => serde_json::json!({"error": {
                "status": s.code.name(),
                "message": s.message,
            }})
            .to_string(),
            (None, Some(p)) => String::from_utf8_lossy(p).into_owned(),
            (None, None) => String::new(),
        };
        return classify(who, status, &body, retry_after);
    }
    let why = error_text(e);
    // Through the error's public surface only: the library's `is_connect`/`is_authentication`
    // are hidden from its API, so the causes are read from the source instead.
    let source = std::error::Error::source(e);
    let no_token = source.and_then(|s| s.downcast_ref::<CredentialsError>());
    let no_connection = source
        .and_then(|s| s.downcast_ref::<reqwest::Error>())
        .is_some_and(reqwest::Error::is_connect);
    if e.is_timeout() {
        ModelError::Timeout(format!("{who}: timed out: {why}"))
    } else if let Some(c) = no_token {
        // The metadata server may answer later; wrong credentials will not.
        let message = format!("{who}: cannot get a Google token: {why}");
        if c.is_transient() {
            ModelError::Transient(message)
        } else {
            ModelError::Unauthorized(message)
        }
    } else if no_connection {
        ModelError::Transient(format!("{who}: cannot connect: {why}"))
    } else if e.is_deserialization() {
        ModelError::Malformed(format!("{who}: unreadable answer: {why}"))
    } else if e.is_serialization() {
        // Nothing was sent: the request itself cannot be made.
        ModelError::Rejected(format!("{who}: cannot send the request: {why}"))
    } else {
        // Cut off mid-answer: Vertex may have acted on it, as after a timeout.
        ModelError::Timeout(format!("{who}: request failed: {why}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_and_replicate_errors_keep_their_words_not_their_links() {
        let s = |c| StatusCode::from_u16(c).expect("status");
        let e = classify(
            "gemini",
            s(400),
            r#"{"error":{"code":400,"message":"see https://x.example/a?sig=1","status":"INVALID_ARGUMENT"}}"#,
            None,
        );
        let ModelError::Rejected(m) = e else {
            panic!("{e:?}")
        };
        assert!(
            m.contains("INVALID_ARGUMENT") && !m.contains("sig=1"),
            "{m}"
        );
        assert!(matches!(
            classify("replicate", s(429), r#"{"detail":"throttled; resets in ~30s"}"#, None),
            ModelError::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(30)
        ));
        assert!(matches!(
            classify("imagen", s(503), "", None),
            ModelError::Transient(_)
        ));
        assert!(matches!(
            classify("imagen", s(403), "", None),
            ModelError::Unauthorized(_)
        ));
    }
}
