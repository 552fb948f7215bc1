//! `/v1/budget`: today's money, and an admin's change to today's limit.

use std::collections::BTreeMap;

use aiprod_domain::{BackendName, Money, Scope};
use aiprod_store::{
    count_budget_waiters, get_budget_day, open_budget_day, set_budget_limit, wake_budget_waiters,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use chrono::Utc;
use serde::Serialize;
use serde_json::Value;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::problems::{JsonBody, Keyed};
use crate::openapi::schemas::BudgetRequest;
use crate::openapi::wire;

/// Today's budget as `GET /v1/budget` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BudgetView {
    /// Today, in the budget's zone.
    pub day: chrono::NaiveDate,
    /// The zone.
    pub time_zone: String,
    /// Whether the day has been opened (before that, it would open with the configured limit).
    pub opened: bool,
    /// Today's limit.
    #[schema(value_type = wire::Money)]
    pub limit_usd: Money,
    /// Reserved and not yet spent.
    #[schema(value_type = wire::Money)]
    pub reserved_usd: Money,
    /// Spent.
    #[schema(value_type = wire::Money)]
    pub spent_usd: Money,
    /// Left to reserve (negative when the limit was lowered below what is committed).
    #[schema(value_type = wire::Money)]
    pub remaining_usd: Money,
    /// Jobs waiting for money.
    pub waiting_jobs: i64,
    /// When the next day opens.
    pub next_day_opens_at: chrono::DateTime<Utc>,
    /// What a 5-second shot costs on each backend (at the length the provider bills), by
    /// backend name.
    #[schema(value_type = BTreeMap<String, wire::Money>)]
    pub estimate_5s_shot_usd: BTreeMap<BackendName, Money>,
}

async fn view(s: &AppState) -> Result<BudgetView, ApiError> {
    let cal = s.settings.budget.calendar();
    let now = Utc::now();
    let day = cal.day_at(now);
    let row = get_budget_day(&s.pool, day).await?;
    let opened = row.is_some();
    let (limit, reserved, spent, remaining, zone) = match row {
        Some(d) => (d.limit, d.reserved, d.spent, d.remaining(), d.time_zone),
        None => (
            cal.daily_limit,
            Money::ZERO,
            Money::ZERO,
            cal.daily_limit,
            cal.zone_name().to_owned(),
        ),
    };
    Ok(BudgetView {
        day,
        time_zone: zone,
        opened,
        limit_usd: limit,
        reserved_usd: reserved,
        spent_usd: spent,
        remaining_usd: remaining,
        waiting_jobs: count_budget_waiters(&s.pool).await?,
        next_day_opens_at: cal.next_open(now),
        estimate_5s_shot_usd: BackendName::ALL
            .iter()
            .map(|b| (*b, s.settings.backends.prices.estimate(*b, &[5])))
            .collect(),
    })
}

/// `GET /v1/budget` (admin): the fleet's money is the operator's, not a tenant's.
#[utoipa::path(
    get, path = "/v1/budget", tag = "admin", operation_id = "get_budget",
    security(("bearer" = [])),
    responses((status = 200, description = "Today's budget.", body = BudgetView), Keyed),
)]
pub(crate) async fn get(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<BudgetView>, ApiError> {
    caller.require(Scope::Admin)?;
    Ok(Json(view(&s).await?))
}

/// `PUT /v1/budget` `{"limit_usd": "150.00"}` (admin): sets today's limit, effective at once
/// for the whole fleet, and wakes the jobs the new limit covers.
#[utoipa::path(
    put, path = "/v1/budget", tag = "admin", operation_id = "set_budget",
    security(("bearer" = [])),
    request_body = BudgetRequest,
    responses(
        (status = 200, description = "Today's budget, with the new limit.", body = BudgetView),
        Keyed, JsonBody,
    ),
)]
pub(crate) async fn put(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BudgetView>, ApiError> {
    caller.require(Scope::Admin)?;
    let body = body.map_err(|r| ApiError::BadBody {
        status: r.status(),
        detail: format!("the body cannot be read: {}", r.body_text()),
    })?;
    let value = crate::input::json_body(&headers, &body)?;
    let limit = parse_limit(&value)?;
    let cal = s.settings.budget.calendar();
    let day = cal.day_at(Utc::now());
    open_budget_day(&s.pool, day, cal.zone_name(), cal.daily_limit).await?;
    let actor = caller.actor();
    let d = set_budget_limit(&s.pool, day, limit, &actor)
        .await?
        .ok_or_else(|| anyhow::anyhow!("budget day {day} vanished after it was opened"))?;
    caller
        .audit(
            &s,
            "budget.set_limit",
            Some(day.to_string()),
            serde_json::json!({"limit_usd": limit}),
        )
        .await?;
    let woken = wake_budget_waiters(&s.pool, day, 500).await?;
    if !woken.is_empty() {
        s.dispatched.poke();
    }
    tracing::info!(%day, limit = %d.limit, woken = woken.len(), "today's budget limit changed");
    Ok(Json(view(&s).await?))
}

fn parse_limit(v: &Value) -> Result<Money, ApiError> {
    let Some(obj) = v.as_object() else {
        return Err(ApiError::field(
            "body",
            "type",
            "the body must be a JSON object",
        ));
    };
    if let Some(k) = obj.keys().find(|k| k.as_str() != "limit_usd") {
        return Err(ApiError::field(
            k,
            "unknown",
            format!("`{k}` is not a budget field (limit_usd)"),
        ));
    }
    let money = match obj.get("limit_usd") {
        None | Some(Value::Null) => {
            return Err(ApiError::field(
                "limit_usd",
                "required",
                "the new limit, in dollars, such as \"150.00\"",
            ));
        }
        Some(Value::String(t)) => t.parse::<Money>(),
        Some(Value::Number(n)) => n.to_string().parse::<Money>(),
        Some(_) => {
            return Err(ApiError::field(
                "limit_usd",
                "type",
                "must be a decimal string of dollars such as \"150.00\"",
            ));
        }
    };
    match money {
        Ok(m) if m >= Money::ZERO => Ok(m),
        Ok(_) => Err(ApiError::field(
            "limit_usd",
            "range",
            "must not be negative",
        )),
        Err(e) => Err(ApiError::field("limit_usd", "format", e.to_string())),
    }
}
