//! The JSON shapes the document describes that have no type of the API's own: request bodies
//! (the handlers read them with the domain's parsers, which this mirrors with bounds and
//! patterns), the store's rows as the admin endpoints answer them, the list envelopes, and the
//! free-form parts of a job's view that the worker writes. Views the API builds itself
//! (`JobView`, `BudgetView`) derive their schemas where they are defined.
//!
//! None of these types is ever built: each only describes JSON. The request bodies derive
//! `Deserialize` for `deny_unknown_fields` alone, which becomes `additionalProperties: false`,
//! as the handlers refuse an unknown field. Response objects stay open to new properties.
//! A test below checks the mirrors of the store's rows against what those rows serialise to.
#![allow(dead_code)]

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::wire;
use crate::view::JobView;

/// A job request (`POST /v1/jobs`). Absent or null fields take their defaults.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"prompt": "A red fox runs through snow. It leaps over a log.", "duration_s": 12}))]
pub(crate) struct JobRequest {
    /// The brief: 1 to 2000 characters, not all blank, without a NUL character.
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
    )]
    prompt: String,
    /// The video's length in whole seconds.
    #[schema(minimum = 2, maximum = 60, default = 5)]
    duration_s: Option<i32>,
    /// The lowest acceptable quality score.
    #[schema(minimum = 0.0, maximum = 1.0, default = 0.7)]
    quality_min: Option<f64>,
    /// How urgently it should run (default `normal`).
    #[schema(value_type = Option<wire::Priority>)]
    priority: Option<String>,
    /// A backend by name, or `auto` (the default).
    #[schema(value_type = Option<wire::BackendChoice>)]
    backend: Option<String>,
    /// Prefer the fastest backend over the cheapest.
    #[schema(default = false)]
    speed_priority: Option<bool>,
    /// An input image: an https URL (fetched by a worker, never from a private address), or a
    /// `data:image/` URI.
    #[schema(pattern = r"^(https?://|data:image/)", max_length = 7340032)]
    image_url: Option<String>,
    /// Free-form client metadata, kept with the job (no NUL character in any key or string).
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
    /// What the job does when the budget does not cover it (default `wait`).
    #[schema(value_type = Option<wire::OverBudget>)]
    over_budget: Option<String>,
    /// Reuse an identical shot rendered earlier for this tenant, at $0 (default true); false
    /// renders every shot afresh.
    #[schema(default = true)]
    cache: Option<bool>,
}

/// A change of today's budget limit (`PUT /v1/budget`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BudgetRequest {
    /// The new limit, not negative.
    #[schema(value_type = wire::MoneyInput)]
    limit_usd: String,
}

/// A new tenant (`POST /v1/tenants`). Absent or null limits take their defaults.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantRequest {
    /// A unique name: lower-case letters, digits, `-` and `_`, starting with a letter or digit.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    name: String,
    /// Job submissions per minute.
    #[schema(minimum = 1, maximum = 1000000, default = 60)]
    rate_per_minute: Option<i32>,
    /// Jobs running at once.
    #[schema(minimum = 1, maximum = 1000000, default = 64)]
    max_in_flight: Option<i32>,
    /// Its own daily budget inside the fleet's; absent: only the fleet's day bounds it.
    #[schema(value_type = Option<wire::MoneyInput>)]
    daily_budget_usd: Option<String>,
    /// The most one job may be estimated to cost; absent: no cap beyond the budget.
    #[schema(value_type = Option<wire::MoneyInput>)]
    max_job_cost_usd: Option<String>,
    /// The backends it may ask for; absent: every one.
    #[schema(value_type = Option<Vec<wire::BackendName>>)]
    allowed_backends: Option<Vec<String>>,
    /// The priorities it may ask for; absent: every one.
    #[schema(value_type = Option<Vec<wire::Priority>>)]
    allowed_priorities: Option<Vec<String>>,
}

/// A new API key (`POST /v1/tenants/{name}/keys`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyRequest {
    /// What it may do.
    #[schema(value_type = Vec<wire::Scope>, min_items = 1)]
    scopes: Vec<String>,
    /// A label (no NUL character).
    #[schema(max_length = 100, pattern = r"^[^\u0000]*$")]
    name: Option<String>,
}

/// A tenant: an account, with its limits and entitlements.
#[derive(Serialize, ToSchema)]
pub(crate) struct Tenant {
    /// Its id.
    id: Uuid,
    /// Its unique name.
    name: String,
    /// Job submissions per minute.
    rate_per_minute: i32,
    /// Jobs running at once.
    max_in_flight: i32,
    /// Its own daily budget; null: only the fleet's day bounds it.
    #[schema(value_type = Option<wire::Money>, required = true)]
    daily_budget_usd: Option<String>,
    /// The most one job may be estimated to cost; null: no cap.
    #[schema(value_type = Option<wire::Money>, required = true)]
    max_job_cost_usd: Option<String>,
    /// The backends it may ask for; null: every one.
    #[schema(value_type = Option<Vec<wire::BackendName>>, required = true)]
    allowed_backends: Option<Vec<String>>,
    /// The priorities it may ask for; null: every one.
    #[schema(value_type = Option<Vec<wire::Priority>>, required = true)]
    allowed_priorities: Option<Vec<String>>,
    /// When it was made.
    created_at: chrono::DateTime<chrono::Utc>,
    /// Set: its keys no longer work.
    #[schema(required = true)]
    disabled_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// An API key as listings show it: never the key, never its digest.
#[derive(Serialize, ToSchema)]
pub(crate) struct ApiKey {
    /// Its id.
    id: Uuid,
    /// The tenant it acts for.
    tenant_id: Uuid,
    /// Its public prefix: the key begins `aiprod_<prefix>_`.
    prefix: String,
    /// A label.
    name: String,
    /// What it may do.
    #[schema(value_type = Vec<wire::Scope>)]
    scopes: Vec<String>,
    /// When it was made.
    created_at: chrono::DateTime<chrono::Utc>,
    /// When it was last used (to the minute).
    #[schema(required = true)]
    last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Set: it no longer works.
    #[schema(required = true)]
    revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A new API key: the key itself is in this answer and nowhere else, ever.
#[derive(Serialize, ToSchema)]
pub(crate) struct NewApiKey {
    /// The key's row.
    #[serde(flatten)]
    info: ApiKey,
    /// The key, `aiprod_<prefix>_<secret>`.
    key: String,
}

/// An alert the scheduler raised: one episode of a rule firing for a subject.
#[derive(Serialize, ToSchema)]
pub(crate) struct Alert {
    /// Its id.
    id: i64,
    /// The rule.
    #[schema(value_type = wire::AlertRule)]
    rule: String,
    /// What it fires for: a budget day, a backend, a job, or `fleet`.
    subject: String,
    /// How bad.
    #[schema(value_type = wire::Severity)]
    severity: String,
    /// One sentence.
    summary: String,
    /// The value when last seen.
    value: String,
    /// The threshold it crossed.
    threshold: String,
    /// First seen.
    opened_at: chrono::DateTime<chrono::Utc>,
    /// Last seen firing.
    last_seen_at: chrono::DateTime<chrono::Utc>,
    /// When it stopped firing; null while open.
    #[schema(required = true)]
    resolved_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When its opening was delivered to the webhook.
    #[schema(required = true)]
    notified_open_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When its resolution was delivered.
    #[schema(required = true)]
    notified_resolved_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Webhook tries so far.
    delivery_attempts: i32,
}

/// One recorded action of the audit log.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditEntry {
    /// Its sequence number.
    id: i64,
    /// When.
    at: chrono::DateTime<chrono::Utc>,
    /// The tenant that acted, if a tenant's key did.
    #[schema(required = true)]
    tenant_id: Option<Uuid>,
    /// The key that acted, if one did.
    #[schema(required = true)]
    key_id: Option<Uuid>,
    /// Who: `key:<prefix>`, `admin-token` or `cli:<user>`.
    actor: String,
    /// What: `job.create`, `job.cancel`, `budget.set_limit`, `tenant.create`, `key.create`,
    /// `key.revoke`.
    action: String,
    /// On what: a job id, a tenant name, a key prefix, a day.
    #[schema(required = true)]
    target: Option<String>,
    /// The particulars, free-form.
    #[schema(value_type = Object)]
    detail: serde_json::Value,
    /// The peer's address.
    #[schema(required = true)]
    remote_addr: Option<String>,
    /// The request's id.
    #[schema(required = true)]
    request_id: Option<String>,
}

/// A page of jobs, newest first (list entries leave out stages, routing and renders).
#[derive(Serialize, ToSchema)]
pub(crate) struct JobPage {
    /// The jobs.
    jobs: Vec<JobView>,
    /// Pass back as `cursor` for the next page; null on the last page.
    #[schema(format = Uuid, required = true)]
    next_cursor: Option<String>,
}

/// Alerts, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct AlertList {
    /// The alerts.
    alerts: Vec<Alert>,
}

/// Every tenant.
#[derive(Serialize, ToSchema)]
pub(crate) struct TenantList {
    /// The tenants.
    tenants: Vec<Tenant>,
}

/// API keys, never their secrets.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyList {
    /// The keys.
    keys: Vec<ApiKey>,
}

/// The audit log, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditLog {
    /// The entries.
    entries: Vec<AuditEntry>,
}

#[cfg(test)]
mod tests {
    //! The mirrors of the store's rows against what those rows serialise to: the same
    //! properties, and every required one present.

    use std::collections::BTreeSet;

    use aiprod_domain::{AlertRule, Scope, Severity, TenantId};
    use chrono::Utc;
    use serde::Serialize;
    use serde_json::json;
    use utoipa::PartialSchema;
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::Schema;

    fn assert_mirrors<S: PartialSchema>(row: impl Serialize) {
        let RefOr::T(Schema::Object(o)) = S::schema() else {
            panic!("an object schema");
        };
        let value = serde_json::to_value(row).expect("a row serialises");
        let keys: BTreeSet<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        let properties: BTreeSet<&str> = o.properties.keys().map(String::as_str).collect();
        assert_eq!(keys, properties);
        for r in &o.required {
            assert!(keys.contains(r.as_str()), "{r} is required and missing");
        }
    }

    #[test]
    fn the_mirrors_have_exactly_the_store_rows_properties() {
        let tenant = aiprod_store::Tenant {
            id: TenantId::new(),
            name: "acme".into(),
            limits: aiprod_store::TenantLimits::default(),
            created_at: Utc::now(),
            disabled_at: None,
        };
        let key = aiprod_store::ApiKeyInfo {
            id: uuid::Uuid::now_v7(),
            tenant_id: tenant.id,
            prefix: "012345678901".into(),
            name: "ci".into(),
            scopes: vec![Scope::JobsRead],
            created_at: Utc::now(),
            last_used_at: None,
            revoked_at: None,
        };
        let alert = aiprod_store::Alert {
            id: 1,
            rule: AlertRule::BudgetWarning,
            subject: "2026-12-01".into(),
            severity: Severity::Warning,
            summary: "s".into(),
            value: "1".into(),
            threshold: "2".into(),
            opened_at: Utc::now(),
            last_seen_at: Utc::now(),
            resolved_at: None,
            notified_open_at: None,
            notified_resolved_at: None,
            delivery_attempts: 0,
        };
        let entry = aiprod_store::AuditRecord {
            id: 1,
            at: Utc::now(),
            tenant_id: None,
            key_id: None,
            actor: "admin-token".into(),
            action: "tenant.create".into(),
            target: None,
            detail: json!({}),
            remote_addr: None,
            request_id: None,
        };
        assert_mirrors::<super::Tenant>(&tenant);
        assert_mirrors::<super::ApiKey>(&key);
        assert_mirrors::<super::Alert>(&alert);
        assert_mirrors::<super::AuditEntry>(&entry);
    }
}
