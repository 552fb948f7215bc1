//! The admin endpoints for tenants, keys and the audit log (`admin` scope, or the admin
//! token). A key is shown once, in the answer that created it.

use std::collections::HashMap;

use aiprod_domain::{BackendName, Money, Priority, Scope};
use aiprod_store::{self as store, TenantLimits, keys::NewKey};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::problems::{Conflict, Invalid, JsonBody, Keyed, NotFound};
use crate::openapi::schemas::{
    ApiKey, AuditLog, KeyList, KeyRequest, NewApiKey, Tenant, TenantList, TenantRequest,
};

fn body_object(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Map<String, Value>, ApiError> {
    let body = body.map_err(|r| ApiError::BadBody {
        status: r.status(),
        detail: format!("the body cannot be read: {}", r.body_text()),
    })?;
    match crate::input::json_body(headers, &body)? {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::field(
            "body",
            "type",
            "the body must be a JSON object",
        )),
    }
}

fn only(obj: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::field(
            k,
            "unknown",
            format!("`{k}` is not a field here ({})", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

fn int(obj: &Map<String, Value>, field: &str, default: i32) -> Result<i32, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(|| ApiError::field(field, "range", "must be a whole number, 1–1000000")),
    }
}

fn money(obj: &Map<String, Value>, field: &str) -> Result<Option<Money>, ApiError> {
    let parsed = match obj.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(t)) => t.parse::<Money>(),
        Some(v) => Err(aiprod_domain::MoneyError::Syntax(v.to_string())),
    };
    match parsed {
        Ok(m) if m >= Money::ZERO => Ok(Some(m)),
        _ => Err(ApiError::field(
            field,
            "format",
            "must be a decimal string of dollars, such as \"25.00\"",
        )),
    }
}

fn names<T: std::str::FromStr>(
    obj: &Map<String, Value>,
    field: &str,
    one_of: &str,
) -> Result<Option<Vec<T>>, ApiError> {
    let bad = || ApiError::field(field, "enum", format!("must be a list of {one_of}"));
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().and_then(|t| t.parse().ok()).ok_or_else(bad))
            .collect::<Result<Vec<T>, _>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

/// `POST /v1/tenants`: a new tenant with its limits and entitlements.
#[utoipa::path(
    post, path = "/v1/tenants", tag = "admin", operation_id = "create_tenant",
    security(("bearer" = [])),
    request_body = TenantRequest,
    responses(
        (status = 201, description = "The new tenant.", body = Tenant),
        Keyed, JsonBody, Conflict,
    ),
)]
pub(crate) async fn create(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Admin)?;
    let obj = body_object(&headers, body)?;
    only(
        &obj,
        &[
            "name",
            "rate_per_minute",
            "max_in_flight",
            "daily_budget_usd",
            "max_job_cost_usd",
            "allowed_backends",
            "allowed_priorities",
        ],
    )?;
    let name = obj.get("name").and_then(Value::as_str).unwrap_or_default();
    if !store::valid_tenant_name(name) {
        return Err(ApiError::field(
            "name",
            "format",
            "1–63 characters: lower-case letters, digits, `-` and `_`, starting with a letter or digit",
        ));
    }
    let d = TenantLimits::default();
    let limits = TenantLimits {
        rate_per_minute: int(&obj, "rate_per_minute", d.rate_per_minute)?,
        max_in_flight: int(&obj, "max_in_flight", d.max_in_flight)?,
        daily_budget: money(&obj, "daily_budget_usd")?,
        max_job_cost: money(&obj, "max_job_cost_usd")?,
        allowed_backends: names::<BackendName>(&obj, "allowed_backends", &BackendName::one_of())?,
        allowed_priorities: names::<Priority>(&obj, "allowed_priorities", &Priority::one_of())?,
    };
    let Some(t) = store::create_tenant(&s.pool, name, &limits).await? else {
        return Err(ApiError::Conflict {
            field: "name".into(),
            rule: "taken",
            detail: format!("a tenant named {name} exists"),
        });
    };
    caller
        .audit(&s, "tenant.create", Some(t.name.clone()), json!(t))
        .await?;
    Ok((StatusCode::CREATED, Json(t)).into_response())
}

/// `GET /v1/tenants`.
#[utoipa::path(
    get, path = "/v1/tenants", tag = "admin", operation_id = "list_tenants",
    security(("bearer" = [])),
    responses((status = 200, description = "Every tenant.", body = TenantList), Keyed),
)]
pub(crate) async fn list(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    Ok(Json(
        json!({"tenants": store::list_tenants(&s.pool).await?}),
    ))
}

/// `POST /v1/tenants/{name}/keys` `{"scopes": ["jobs:write", "jobs:read"], "name": "ci"}`:
/// a new key, shown once.
#[utoipa::path(
    post, path = "/v1/tenants/{name}/keys", tag = "admin", operation_id = "create_key",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The tenant's name.")),
    request_body = KeyRequest,
    responses(
        (status = 201, description = "The new key; `key` is shown here and never again.", body = NewApiKey),
        Keyed, JsonBody, NotFound,
    ),
)]
pub(crate) async fn create_key(
    State(s): State<AppState>,
    caller: Caller,
    tenant: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Admin)?;
    let tenant = crate::input::path(tenant, "name")?;
    let obj = body_object(&headers, body)?;
    only(&obj, &["scopes", "name"])?;
    let scopes = names::<Scope>(&obj, "scopes", &Scope::one_of())?
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ApiError::field(
                "scopes",
                "required",
                format!("a list of {}", Scope::one_of()),
            )
        })?;
    let name = match obj.get("name") {
        None | Some(Value::Null) => "",
        Some(Value::String(n)) if n.chars().count() <= 100 && !n.contains('\0') => n,
        Some(_) => {
            return Err(ApiError::field(
                "name",
                "length",
                "a label of at most 100 characters",
            ));
        }
    };
    let t = store::tenant_by_name(&s.pool, &tenant)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no tenant {tenant}")))?;
    let new = NewKey::generate();
    let info = store::insert_api_key(&s.pool, t.id, &new.prefix, &new.hash, name, &scopes).await?;
    caller
        .audit(
            &s,
            "key.create",
            Some(info.prefix.clone()),
            json!({"tenant": t.name, "scopes": scopes}),
        )
        .await?;
    let mut body = json!(info);
    body["key"] = Value::String(new.secret.expose_secret().to_owned());
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /v1/keys?tenant=NAME`: keys, never their secrets.
#[utoipa::path(
    get, path = "/v1/keys", tag = "admin", operation_id = "list_keys",
    security(("bearer" = [])),
    params(("tenant" = Option<String>, Query, description = "Only this tenant's keys (an unknown tenant is a `422`).")),
    responses((status = 200, description = "Keys, never their secrets.", body = KeyList), Keyed, Invalid),
)]
pub(crate) async fn list_keys(
    State(s): State<AppState>,
    caller: Caller,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    let q = crate::input::query(q)?;
    let tenant = match q.get("tenant").filter(|t| !t.is_empty()) {
        None => None,
        Some(name) => Some(
            store::tenant_by_name(&s.pool, name)
                .await?
                .ok_or_else(|| ApiError::field("tenant", "exists", format!("no tenant {name}")))?
                .id,
        ),
    };
    Ok(Json(
        json!({"keys": store::list_api_keys(&s.pool, tenant).await?}),
    ))
}

/// `POST /v1/keys/{id or prefix}/revoke`: the key stops working at once, on every replica.
#[utoipa::path(
    post, path = "/v1/keys/{key}/revoke", tag = "admin", operation_id = "revoke_key",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "The key's id or its prefix.")),
    responses(
        (status = 200, description = "The revoked key (revoking it again changes nothing).", body = ApiKey),
        Keyed, Invalid, NotFound,
    ),
)]
pub(crate) async fn revoke_key(
    State(s): State<AppState>,
    caller: Caller,
    key: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    let key = crate::input::path(key, "key")?;
    let info = store::revoke_api_key(&s.pool, &key, None)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no key {key}")))?;
    caller
        .audit(&s, "key.revoke", Some(info.prefix.clone()), json!({}))
        .await?;
    Ok(Json(json!(info)))
}

/// `GET /v1/audit?limit=`: the audit log, newest first.
#[utoipa::path(
    get, path = "/v1/audit", tag = "admin", operation_id = "list_audit",
    security(("bearer" = [])),
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100).")),
    responses((status = 200, description = "The audit log, newest first.", body = AuditLog), Keyed, Invalid),
)]
pub(crate) async fn audit(
    State(s): State<AppState>,
    caller: Caller,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    let q = crate::input::query(q)?;
    let limit = crate::input::limit(&q, 100, 1000)?;
    Ok(Json(
        json!({"entries": store::list_audit(&s.pool, None, limit).await?}),
    ))
}
