//! Reading requests strictly. A body must be declared `application/json` (so a web page's
//! `text/plain` form post cannot reach the API of a developer's `aiprod dev`), must be JSON,
//! and must hold nothing PostgreSQL cannot store (a NUL character). Path and query
//! rejections are problem+json like every other error.

use std::collections::HashMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;

use crate::error::ApiError;

/// The body as JSON, after checking its declared type.
pub(crate) fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
    if !ct.as_deref().is_some_and(is_json) {
        return Err(ApiError::BadBody {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            detail: format!(
                "Content-Type must be application/json, got {}",
                ct.as_deref().unwrap_or("none")
            ),
        });
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::BadBody {
        status: StatusCode::BAD_REQUEST,
        detail: format!("the body is not valid JSON: {e}"),
    })?;
    if let Some(path) = nul_at(&value, "") {
        let field = if path.is_empty() {
            "body".to_owned()
        } else {
            path
        };
        return Err(ApiError::field(
            &field,
            "nul_character",
            "must not contain the NUL character (\\u0000)",
        ));
    }
    Ok(value)
}

/// `application/json`, with at most a UTF-8 charset parameter. Nothing else: not
/// `text/plain; x=+json`, not `application/vnd.x+json`.
fn is_json(ct: &str) -> bool {
    let mut parts = ct.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|m| m.eq_ignore_ascii_case("application/json"))
    {
        return false;
    }
    parts.all(|p| {
        p.split_once('=').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("charset")
                && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        })
    })
}

/// Where a NUL character sits in `v` (a key or a string), as a field path like
/// `metadata.note`.
fn nul_at(v: &Value, path: &str) -> Option<String> {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::String(t) => t.contains('\0').then(|| path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| nul_at(x, &join(&i.to_string()))),
        Value::Object(map) => map.iter().find_map(|(k, x)| {
            if k.contains('\0') {
                Some(join(&k.replace('\0', "\\u0000")))
            } else {
                nul_at(x, &join(k))
            }
        }),
        _ => None,
    }
}

/// The query's parameters. A query axum could not read, or a NUL character (`%00`) in a
/// name or a value, is a `422`, like a NUL in a body: PostgreSQL's text cannot hold one.
pub(crate) fn query(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    let Query(q) = q.map_err(|r| ApiError::field("query", "format", r.body_text()))?;
    match q.iter().find(|(k, v)| k.contains('\0') || v.contains('\0')) {
        Some((k, _)) if !k.contains('\0') => Err(nul(k)),
        Some(_) => Err(nul("query")),
        None => Ok(q),
    }
}

/// The `limit` parameter of a listing: `default` when absent or empty, else a whole number
/// from 1 to `max` (`422` otherwise).
pub(crate) fn limit(q: &HashMap<String, String>, default: i64, max: i64) -> Result<i64, ApiError> {
    match q.get("limit").filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::field(
                    "limit",
                    "range",
                    format!("must be a whole number from 1 to {max}"),
                )
            }),
    }
}

/// The path segment `field`, refused like a query's parameters.
pub(crate) fn path(
    p: Result<Path<String>, PathRejection>,
    field: &str,
) -> Result<String, ApiError> {
    let Path(p) = p.map_err(|r| ApiError::field("path", "format", r.body_text()))?;
    if p.contains('\0') {
        return Err(nul(field));
    }
    Ok(p)
}

fn nul(field: &str) -> ApiError {
    ApiError::field(
        field,
        "nul_character",
        "must not contain the NUL character (%00)",
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{is_json, nul_at};

    #[test]
    fn only_application_json_is_json() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        for bad in [
            "text/plain; x=+json",
            "application/vnd.x+json",
            "application/json; x=1",
            "application/jsonx",
            "text/plain",
            "",
        ] {
            assert!(!is_json(bad), "{bad}");
        }
    }

    #[test]
    fn a_nul_is_found_with_its_path() {
        assert_eq!(
            nul_at(&json!({"prompt": "a\u{0}b"}), ""),
            Some("prompt".into())
        );
        assert_eq!(
            nul_at(&json!({"metadata": {"tags": ["x", "\u{0}"]}}), ""),
            Some("metadata.tags.1".into())
        );
        assert_eq!(nul_at(&json!({"prompt": "fine"}), ""), None);
    }
}
