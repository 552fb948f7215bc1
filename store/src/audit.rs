//! The audit log: admin actions and every use of money, with who, what, when and from where.
//! Append-only; nothing in the fleet updates or deletes its rows.

use aiprod_domain::TenantId;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

/// One action to record.
#[derive(Clone, Debug)]
pub struct AuditEntry<'a> {
    /// The tenant that acted, if a tenant's key did.
    pub tenant_id: Option<TenantId>,
    /// The key that acted, if one did.
    pub key_id: Option<Uuid>,
    /// Who, readably: `key:<prefix>`, `admin-token` or `cli:<user>`.
    pub actor: &'a str,
    /// What: `job.create`, `job.cancel`, `budget.set_limit`, `tenant.create`, `key.create`, …
    pub action: &'a str,
    /// On what: a job id, a tenant name, a key prefix.
    pub target: Option<String>,
    /// The particulars (an amount, the new limit, the scopes given).
    pub detail: Value,
    /// The peer's address, when the action came over the network.
    pub remote_addr: Option<String>,
    /// The request's id.
    pub request_id: Option<String>,
}

/// One recorded action.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AuditRecord {
    /// Its sequence number.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// The tenant that acted.
    pub tenant_id: Option<TenantId>,
    /// The key that acted.
    pub key_id: Option<Uuid>,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: Option<String>,
    /// The particulars.
    pub detail: Value,
    /// From where.
    pub remote_addr: Option<String>,
    /// The request's id.
    pub request_id: Option<String>,
}

/// Appends an entry.
pub async fn record_audit(db: impl PgExecutor<'_>, e: &AuditEntry<'_>) -> sqlx::Result<()> {
    sqlx::query!(
        "insert into audit_log (tenant_id, key_id, actor, action, target, detail, remote_addr,
                                request_id)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
        e.tenant_id as Option<TenantId>,
        e.key_id,
        e.actor,
        e.action,
        e.target,
        e.detail,
        e.remote_addr,
        e.request_id,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The newest entries, of one tenant or of all.
pub async fn list_audit(
    db: impl PgExecutor<'_>,
    tenant: Option<TenantId>,
    limit: i64,
) -> sqlx::Result<Vec<AuditRecord>> {
    sqlx::query_as!(
        AuditRecord,
        r#"select id, at, tenant_id as "tenant_id: TenantId", key_id, actor, action, target,
                  detail, remote_addr, request_id
             from audit_log where $1::uuid is null or tenant_id = $1
            order by id desc limit $2"#,
        tenant as Option<TenantId>,
        limit
    )
    .fetch_all(db)
    .await
}
