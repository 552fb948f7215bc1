//! The API's edge: how long a client may take to send a request, how many the process serves
//! at once, how long shutdown may drain them, which browser origins may call it, and how long
//! an idempotency key stays bound to its job.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_with::{DurationMilliSeconds, DurationSeconds, serde_as};

use super::check::{within, within_ms, within_s};

/// The API's settings (flat `AIPROD_*` names).
#[serde_as]
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ApiSettings {
    /// `AIPROD_HTTP_HEADER_TIMEOUT_MS`: the longest a client may take to send a request's
    /// headers; a half-sent request is dropped after it instead of holding a connection.
    #[serde(rename = "http_header_timeout_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub header_timeout: Duration,
    /// `AIPROD_HTTP_BODY_TIMEOUT_MS`: the longest a client may take to send a body.
    #[serde(rename = "http_body_timeout_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub body_timeout: Duration,
    /// `AIPROD_HTTP_REQUEST_TIMEOUT_MS`: the longest one request may take in all (`503`).
    #[serde(rename = "http_request_timeout_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub request_timeout: Duration,
    /// `AIPROD_HTTP_MAX_IN_FLIGHT`: requests one API process serves at once; past it, `503`
    /// with `Retry-After` at once, instead of a queue that grows until memory runs out.
    pub http_max_in_flight: usize,
    /// `AIPROD_HTTP_SHUTDOWN_DEADLINE_MS`: after SIGTERM, how long open requests may finish
    /// before the process exits anyway.
    #[serde(rename = "http_shutdown_deadline_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub shutdown_deadline: Duration,
    /// `AIPROD_CORS_ORIGINS`: browser origins allowed to call the API (`https://app.example`),
    /// comma-separated; empty (the default): none.
    #[serde(deserialize_with = "super::list_or_csv")]
    pub cors_origins: Vec<String>,
    /// `AIPROD_IDEMPOTENCY_TTL_S`: how long an `Idempotency-Key` stays bound to its job.
    #[serde(rename = "idempotency_ttl_s")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub idempotency_ttl: Duration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            http_max_in_flight: 1024,
            shutdown_deadline: Duration::from_secs(20),
            cors_origins: Vec::new(),
            idempotency_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl ApiSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        within_ms(
            "AIPROD_HTTP_HEADER_TIMEOUT_MS",
            self.header_timeout,
            100..=600_000,
        )?;
        within_ms(
            "AIPROD_HTTP_BODY_TIMEOUT_MS",
            self.body_timeout,
            100..=600_000,
        )?;
        within_ms(
            "AIPROD_HTTP_REQUEST_TIMEOUT_MS",
            self.request_timeout,
            100..=3_600_000,
        )?;
        within(
            "AIPROD_HTTP_MAX_IN_FLIGHT",
            self.http_max_in_flight,
            1..=1_000_000,
        )?;
        within_ms(
            "AIPROD_HTTP_SHUTDOWN_DEADLINE_MS",
            self.shutdown_deadline,
            0..=600_000,
        )?;
        within_s(
            "AIPROD_IDEMPOTENCY_TTL_S",
            self.idempotency_ttl,
            60..=30 * 86_400,
        )?;
        for o in &self.cors_origins {
            let ok = (o.starts_with("https://") || o.starts_with("http://"))
                && !o.trim_end_matches('/').contains(['*', ' '])
                && o.matches('/').count() == 2;
            if !ok {
                return Err(format!(
                    "AIPROD_CORS_ORIGINS must list origins such as https://app.example, got {o}"
                ));
            }
        }
        Ok(())
    }
}
