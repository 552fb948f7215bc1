//! Who is calling, and what they may do. Every endpoint but the probes takes a [`Caller`]:
//! `Authorization: Bearer <key>` with a tenant's API key, or the operator's admin token
//! (`AIPROD_ADMIN_TOKEN`), which acts for no tenant and holds only `admin`. Keys are checked
//! by digest in constant time; a wrong, unknown, revoked or disabled key gets the same `401`,
//! so a caller cannot tell which.

use std::net::SocketAddr;

use aiprod_domain::Scope;
use aiprod_store::{self as store, ApiKeyInfo, AuditEntry, Tenant, keys};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;

/// An authenticated caller.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    /// The key's tenant; `None` for the admin token.
    pub tenant: Option<Tenant>,
    /// The key; `None` for the admin token.
    pub key: Option<ApiKeyInfo>,
    /// The peer's address, for the audit log.
    pub remote: Option<SocketAddr>,
    /// The request's id, for the audit log.
    pub request_id: Option<String>,
}

impl Caller {
    /// Whether the caller holds `scope`.
    fn holds(&self, scope: Scope) -> bool {
        match &self.key {
            Some(k) => k.scopes.contains(&scope),
            None => scope == Scope::Admin,
        }
    }

    /// Refuses with `403` unless the caller holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.holds(scope) {
            return Ok(());
        }
        Err(ApiError::refused(
            StatusCode::FORBIDDEN,
            "Authorization",
            "scope",
            format!("this needs an API key with the `{scope}` scope"),
        ))
    }

    /// The tenant a jobs endpoint acts for, after checking `scope`. The admin token has none:
    /// jobs always belong to a tenant, so it is refused here.
    pub fn tenant_for(&self, scope: Scope) -> Result<&Tenant, ApiError> {
        self.require(scope)?;
        self.tenant.as_ref().ok_or_else(|| {
            ApiError::refused(
                StatusCode::FORBIDDEN,
                "Authorization",
                "scope",
                "jobs belong to a tenant: use a tenant's API key, not the admin token",
            )
        })
    }

    /// Who, for logs and the audit log: `key:<prefix>` or `admin-token`.
    pub fn actor(&self) -> String {
        match &self.key {
            Some(k) => format!("key:{}", k.prefix),
            None => "admin-token".to_owned(),
        }
    }

    /// Records an action in the audit log. A failure to record is an error of the request:
    /// an action the log cannot hold is one the fleet should not take silently.
    pub async fn audit(
        &self,
        s: &AppState,
        action: &str,
        target: Option<String>,
        detail: Value,
    ) -> Result<(), ApiError> {
        let actor = self.actor();
        store::record_audit(
            &s.pool,
            &AuditEntry {
                tenant_id: self.tenant.as_ref().map(|t| t.id),
                key_id: self.key.as_ref().map(|k| k.id),
                actor: &actor,
                action,
                target,
                detail,
                remote_addr: self.remote.map(|a| a.ip().to_string()),
                request_id: self.request_id.clone(),
            },
        )
        .await?;
        Ok(())
    }
}

fn unauthorized(detail: &str) -> ApiError {
    ApiError::refused(StatusCode::UNAUTHORIZED, "Authorization", "api_key", detail).with_header(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"aiprod\""),
    )
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Caller, ApiError> {
        let remote = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| unauthorized("this needs Authorization: Bearer <API key>"))?;
        if let Some(prefix) = keys::key_prefix(given) {
            let found = s
                .keys
                .find(prefix, keys::digest(given))
                .await
                .map_err(|e| {
                    ApiError::Internal(anyhow::anyhow!("while looking up the API key: {e}"))
                })?;
            let ok = found
                .as_ref()
                .is_some_and(|f| keys::matches(given, &f.hash) && f.key.revoked_at.is_none());
            let Some(found) = found.filter(|f| ok && f.tenant.disabled_at.is_none()) else {
                return Err(unauthorized("the API key is not valid"));
            };
            return Ok(Caller {
                tenant: Some(found.tenant),
                key: Some(found.key),
                remote,
                request_id,
            });
        }
        match &s.settings.admin_token {
            Some(token) if keys::same_secret(given, token) => Ok(Caller {
                tenant: None,
                key: None,
                remote,
                request_id,
            }),
            _ => Err(unauthorized("the API key is not valid")),
        }
    }
}
