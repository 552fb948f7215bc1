//! `ApiError`: every failure of the API as `application/problem+json` (RFC 9457). Client errors
//! name the field and the rule; a server error logs its cause once and answers a generic text.

use aiprod_domain::FieldError;
use axum::Json;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An API failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request broke rules of the named fields.
    #[error("invalid request")]
    Invalid(Vec<FieldError>),
    /// The body is not JSON, or too large, or of the wrong type.
    #[error("{detail}")]
    BadBody {
        /// The HTTP status (400, 413 or 415).
        status: StatusCode,
        /// What is wrong.
        detail: String,
    },
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with an earlier one.
    #[error("{detail}")]
    Conflict {
        /// The field involved (such as the `Idempotency-Key` header).
        field: String,
        /// The rule broken.
        rule: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Refused before any work: no or a bad credential (401), a missing scope or entitlement
    /// (403), a rate limit (429) or load shed (503). Carries the headers that say when to
    /// come back.
    #[error("{}", .0.detail)]
    Refused(Box<Refusal>),
    /// Something failed on our side.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(anyhow::Error::new(e).context("while querying the database"))
    }
}

/// Why a request was refused before any work, as [`ApiError::Refused`] answers it.
#[derive(Debug)]
pub struct Refusal {
    /// 401, 403, 429 or 503.
    pub status: StatusCode,
    /// The field (or header) at fault: `Authorization`, `backend`, `priority`.
    pub field: String,
    /// The rule broken: `api_key`, `scope`, `entitlement`, `rate_limit`, `overloaded`.
    pub rule: &'static str,
    /// What is wrong, for a person.
    pub detail: String,
    /// Extra headers: `WWW-Authenticate`, `Retry-After`, `RateLimit`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    /// A refusal with `status`, naming the field and the rule.
    pub fn refused(
        status: StatusCode,
        field: &str,
        rule: &'static str,
        detail: impl Into<String>,
    ) -> ApiError {
        ApiError::Refused(Box::new(Refusal {
            status,
            field: field.to_owned(),
            rule,
            detail: detail.into(),
            headers: Vec::new(),
        }))
    }

    /// The same refusal with one more header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> ApiError {
        if let ApiError::Refused(r) = &mut self {
            r.headers.push((name, value));
        }
        self
    }

    /// One invalid field.
    pub fn field(field: &str, rule: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid(vec![FieldError {
            field: field.to_owned(),
            rule,
            message: message.into(),
        }])
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::Invalid(errors) => {
                let first = &errors[0];
                let detail = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({
                        "type": "https://aiprod.dev/problems/invalid-request",
                        "title": "The request is invalid",
                        "status": 422,
                        "detail": detail,
                        "field": first.field,
                        "rule": first.rule,
                        "errors": errors,
                    }),
                )
            }
            ApiError::BadBody { status, detail } => (
                *status,
                json!({
                    "type": "https://aiprod.dev/problems/bad-body",
                    "title": "The body cannot be read",
                    "status": status.as_u16(),
                    "detail": detail,
                    "field": "body",
                    "rule": match status.as_u16() { 413 => "size", 415 => "content_type", _ => "json" },
                }),
            ),
            ApiError::NotFound(detail) => (
                StatusCode::NOT_FOUND,
                json!({"type": "about:blank", "title": "Not found", "status": 404, "detail": detail}),
            ),
            ApiError::Conflict {
                field,
                rule,
                detail,
            } => (
                StatusCode::CONFLICT,
                json!({
                    "type": "https://aiprod.dev/problems/conflict",
                    "title": "Conflict",
                    "status": 409,
                    "detail": detail,
                    "field": field,
                    "rule": rule,
                }),
            ),
            ApiError::Refused(r) => (
                r.status,
                json!({
                    "type": format!("https://aiprod.dev/problems/{}", r.rule.replace('_', "-")),
                    "title": r.status.canonical_reason().unwrap_or("Refused"),
                    "status": r.status.as_u16(),
                    "detail": r.detail,
                    "field": r.field,
                    "rule": r.rule,
                }),
            ),
            ApiError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"type": "about:blank", "title": "Internal error", "status": 500,
                           "detail": "the server could not complete the request; it has been logged"}),
                )
            }
        };
        let extra = match self {
            ApiError::Refused(r) => r.headers,
            _ => Vec::new(),
        };
        let mut resp = (status, Json(body)).into_response();
        for (name, value) in extra {
            resp.headers_mut().append(name, value);
        }
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        resp
    }
}
