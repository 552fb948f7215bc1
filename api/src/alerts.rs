//! `/v1/alerts`: the alerts the scheduler raised.

use std::collections::HashMap;

use aiprod_domain::Scope;
use aiprod_store as store;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::problems::{Invalid, Keyed};
use crate::openapi::schemas::AlertList;

/// `GET /v1/alerts?open=true&limit=` (admin): alerts, newest first.
#[utoipa::path(
    get, path = "/v1/alerts", tag = "admin", operation_id = "list_alerts",
    security(("bearer" = [])),
    params(
        ("open" = Option<bool>, Query, description = "Only open alerts (default false: all)."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "At most this many (default 100)."),
    ),
    responses((status = 200, description = "Alerts, newest first.", body = AlertList), Keyed, Invalid),
)]
pub(crate) async fn list(
    State(s): State<AppState>,
    caller: Caller,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    let q = crate::input::query(q)?;
    let open = match q.get("open").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::field("open", "enum", "must be true or false")),
    };
    let limit = crate::input::limit(&q, 100, 1000)?;
    let rows = store::list_alerts(&s.pool, open, limit).await?;
    Ok(Json(json!({ "alerts": rows })))
}
