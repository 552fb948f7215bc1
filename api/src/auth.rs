//! Who may call what. Today: the admin endpoints need `Authorization: Bearer
//! $AIPROD_ADMIN_TOKEN`, and without a configured token they are disabled.

use axum::http::{HeaderMap, StatusCode, header};
use secrecy::ExposeSecret;

use crate::AppState;
use crate::error::ApiError;

/// Admin endpoints need `Authorization: Bearer $AIPROD_ADMIN_TOKEN`; without a configured
/// token they are disabled.
pub(crate) fn admin(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &s.settings.admin_token else {
        return Err(ApiError::Forbidden {
            status: StatusCode::FORBIDDEN,
            detail: "admin endpoints are disabled: set AIPROD_ADMIN_TOKEN on the API".into(),
        });
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !same(given.as_bytes(), token.expose_secret().as_bytes()) {
        return Err(ApiError::Forbidden {
            status: StatusCode::UNAUTHORIZED,
            detail: "this needs Authorization: Bearer <AIPROD_ADMIN_TOKEN>".into(),
        });
    }
    Ok(())
}

/// Compares without leaking where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
