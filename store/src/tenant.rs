//! Tenants and their API keys in SQL. A key is stored as its public prefix and the SHA-256 of
//! the whole key (see `keys`); the lookup finds a key by prefix, and the caller compares the
//! digests in constant time.

use aiprod_domain::{BackendName, Money, Priority, Scope, TenantId};
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// A tenant: an account, with its limits and entitlements.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Tenant {
    /// Its id.
    pub id: TenantId,
    /// A short unique name (`[a-z0-9][a-z0-9_-]*`).
    pub name: String,
    /// Its limits and entitlements.
    #[serde(flatten)]
    pub limits: TenantLimits,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Set: its keys no longer work.
    pub disabled_at: Option<DateTime<Utc>>,
}

/// What a tenant may do and spend.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TenantLimits {
    /// Job submissions per minute (GCRA; this many at once, then one every `60 s / rate`).
    pub rate_per_minute: i32,
    /// Jobs running at once, fleet-wide.
    pub max_in_flight: i32,
    /// Its own daily budget inside the fleet's; `None`: only the fleet's day bounds it.
    #[serde(rename = "daily_budget_usd")]
    pub daily_budget: Option<Money>,
    /// The most one job may be estimated to cost; `None`: no cap beyond the budget.
    #[serde(rename = "max_job_cost_usd")]
    pub max_job_cost: Option<Money>,
    /// The backends it may ask for; `None`: every one.
    pub allowed_backends: Option<Vec<BackendName>>,
    /// The priorities it may ask for; `None`: every one.
    pub allowed_priorities: Option<Vec<Priority>>,
}

impl Default for TenantLimits {
    /// The limits a new tenant gets unless told otherwise (the migration's defaults).
    fn default() -> Self {
        TenantLimits {
            rate_per_minute: 60,
            max_in_flight: 64,
            daily_budget: None,
            max_job_cost: None,
            allowed_backends: None,
            allowed_priorities: None,
        }
    }
}

struct TenantRow {
    id: TenantId,
    name: String,
    rate_per_minute: i32,
    max_in_flight: i32,
    daily_budget_micros: Option<i64>,
    max_job_cost_micros: Option<i64>,
    allowed_backends: Option<Vec<BackendName>>,
    allowed_priorities: Option<Vec<Priority>>,
    created_at: DateTime<Utc>,
    disabled_at: Option<DateTime<Utc>>,
}

impl From<TenantRow> for Tenant {
    fn from(r: TenantRow) -> Tenant {
        Tenant {
            id: r.id,
            name: r.name,
            limits: TenantLimits {
                rate_per_minute: r.rate_per_minute,
                max_in_flight: r.max_in_flight,
                daily_budget: r.daily_budget_micros.map(Money::from_micros),
                max_job_cost: r.max_job_cost_micros.map(Money::from_micros),
                allowed_backends: r.allowed_backends,
                allowed_priorities: r.allowed_priorities,
            },
            created_at: r.created_at,
            disabled_at: r.disabled_at,
        }
    }
}

/// Creates a tenant; `None` when the name is taken.
pub async fn create_tenant(
    db: impl PgExecutor<'_>,
    name: &str,
    limits: &TenantLimits,
) -> sqlx::Result<Option<Tenant>> {
    Ok(sqlx::query_as!(
        TenantRow,
        r#"insert into tenant (id, name, rate_per_minute, max_in_flight, daily_budget_micros,
                               max_job_cost_micros, allowed_backends, allowed_priorities)
           values ($1, $2, $3, $4, $5, $6, $7, $8)
           on conflict (name) do nothing
           returning id as "id: TenantId", name, rate_per_minute, max_in_flight,
                     daily_budget_micros, max_job_cost_micros,
                     allowed_backends as "allowed_backends: Vec<BackendName>",
                     allowed_priorities as "allowed_priorities: Vec<Priority>",
                     created_at, disabled_at"#,
        TenantId::new() as TenantId,
        name,
        limits.rate_per_minute,
        limits.max_in_flight,
        limits.daily_budget.map(Money::micros),
        limits.max_job_cost.map(Money::micros),
        limits.allowed_backends.as_deref() as Option<&[BackendName]>,
        limits.allowed_priorities.as_deref() as Option<&[Priority]>,
    )
    .fetch_optional(db)
    .await?
    .map(Tenant::from))
}

/// Every tenant, oldest first.
pub async fn list_tenants(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Tenant>> {
    tenants(db, None).await
}

/// The tenant of that name, or `None`.
pub async fn tenant_by_name(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<Option<Tenant>> {
    Ok(tenants(db, Some(name)).await?.pop())
}

/// Tenants, oldest first: all, or the one named.
async fn tenants(db: impl PgExecutor<'_>, name: Option<&str>) -> sqlx::Result<Vec<Tenant>> {
    Ok(sqlx::query_as!(
        TenantRow,
        r#"select id as "id: TenantId", name, rate_per_minute, max_in_flight,
                  daily_budget_micros, max_job_cost_micros,
                  allowed_backends as "allowed_backends: Vec<BackendName>",
                  allowed_priorities as "allowed_priorities: Vec<Priority>",
                  created_at, disabled_at
             from tenant where $1::text is null or name = $1
            order by created_at, name"#,
        name
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(Tenant::from)
    .collect())
}

/// An API key as listings show it: never the key, never its digest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ApiKeyInfo {
    /// Its id.
    pub id: Uuid,
    /// The tenant it acts for.
    pub tenant_id: TenantId,
    /// Its public prefix: the key begins `aiprod_<prefix>_`.
    pub prefix: String,
    /// A label.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was last used (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Set: it no longer works.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new key's row. The caller generated the key and hashed it (`keys::NewKey`).
pub async fn insert_api_key(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    prefix: &str,
    hash: &[u8],
    name: &str,
    scopes: &[Scope],
) -> sqlx::Result<ApiKeyInfo> {
    sqlx::query_as!(
        ApiKeyInfo,
        r#"insert into api_key (id, tenant_id, prefix, hash, name, scopes)
           values ($1, $2, $3, $4, $5, $6)
           returning id, tenant_id as "tenant_id: TenantId", prefix, name,
                     scopes as "scopes: Vec<Scope>", created_at, last_used_at, revoked_at"#,
        Uuid::now_v7(),
        tenant as TenantId,
        prefix,
        hash,
        name,
        scopes as &[Scope],
    )
    .fetch_one(db)
    .await
}

/// The keys of one tenant, or of all, oldest first.
pub async fn list_api_keys(
    db: impl PgExecutor<'_>,
    tenant: Option<TenantId>,
) -> sqlx::Result<Vec<ApiKeyInfo>> {
    sqlx::query_as!(
        ApiKeyInfo,
        r#"select id, tenant_id as "tenant_id: TenantId", prefix, name,
                  scopes as "scopes: Vec<Scope>", created_at, last_used_at, revoked_at
             from api_key where $1::uuid is null or tenant_id = $1
            order by created_at, id"#,
        tenant as Option<TenantId>,
    )
    .fetch_all(db)
    .await
}

/// Revokes the key with that id or prefix (of `tenant`, when given). `None`: no such key. A
/// key revoked before keeps its first revocation time.
pub async fn revoke_api_key(
    db: impl PgExecutor<'_>,
    id_or_prefix: &str,
    tenant: Option<TenantId>,
) -> sqlx::Result<Option<ApiKeyInfo>> {
    sqlx::query_as!(
        ApiKeyInfo,
        r#"update api_key set revoked_at = coalesce(revoked_at, now())
            where (id::text = $1 or prefix = $1) and ($2::uuid is null or tenant_id = $2)
           returning id, tenant_id as "tenant_id: TenantId", prefix, name,
                     scopes as "scopes: Vec<Scope>", created_at, last_used_at, revoked_at"#,
        id_or_prefix,
        tenant as Option<TenantId>,
    )
    .fetch_optional(db)
    .await
}

/// A key found by its prefix, with its digest and its tenant, for the caller to verify.
#[derive(Clone, Debug)]
pub struct KeyLookup {
    /// The key.
    pub key: ApiKeyInfo,
    /// The SHA-256 of the whole key.
    pub hash: Vec<u8>,
    /// Its tenant.
    pub tenant: Tenant,
}

/// The key with `prefix`, whatever its state (the caller refuses revoked keys and disabled
/// tenants, after comparing digests, so a wrong key never learns which). With `used`, the
/// SHA-256 of the key presented, the same statement records the use when that is the key and
/// it is live (at most once a minute per key, so a busy key is not a row every request writes):
/// a request costs one round trip for its key.
pub async fn find_api_key(
    db: impl PgExecutor<'_>,
    prefix: &str,
    used: Option<&[u8]>,
) -> sqlx::Result<Option<KeyLookup>> {
    Ok(find_api_keys(db, &[(prefix, used)]).await?.pop().flatten())
}

/// [`find_api_key`] for several presented keys in one statement (the API's concurrent
/// requests, `KeyFinder`): one answer per `(prefix, used)`, in order.
pub async fn find_api_keys(
    db: impl PgExecutor<'_>,
    asks: &[(&str, Option<&[u8]>)],
) -> sqlx::Result<Vec<Option<KeyLookup>>> {
    let prefixes: Vec<&str> = asks.iter().map(|a| a.0).collect();
    let used: Vec<Option<&[u8]>> = asks.iter().map(|a| a.1).collect();
    let rows = sqlx::query!(
        r#"with a as (
               select * from unnest($1::text[], $2::bytea[]) with ordinality as a(prefix, hash, n)
           ), used as (
               update api_key k set last_used_at = now()
                 from tenant t, (select distinct prefix, hash from a where hash is not null) u
                where k.prefix = u.prefix and k.hash = u.hash and k.revoked_at is null
                  and t.id = k.tenant_id and t.disabled_at is null
                  and (k.last_used_at is null or k.last_used_at < now() - interval '1 minute')
           )
           select a.n as "n!", k.id, k.prefix, k.hash, k.name, k.scopes as "scopes: Vec<Scope>",
                  k.created_at as key_created_at, k.last_used_at, k.revoked_at,
                  t.id as "tenant_id: TenantId", t.name as tenant_name, t.rate_per_minute,
                  t.max_in_flight, t.daily_budget_micros, t.max_job_cost_micros,
                  t.allowed_backends as "allowed_backends: Vec<BackendName>",
                  t.allowed_priorities as "allowed_priorities: Vec<Priority>",
                  t.created_at, t.disabled_at
             from a join api_key k on k.prefix = a.prefix join tenant t on t.id = k.tenant_id"#,
        &prefixes as &[&str],
        &used as &[Option<&[u8]>],
    )
    .fetch_all(db)
    .await?;
    let mut found: Vec<Option<KeyLookup>> = vec![None; asks.len()];
    for r in rows {
        let Some(slot) = usize::try_from(r.n - 1).ok().and_then(|i| found.get_mut(i)) else {
            continue;
        };
        *slot = Some(KeyLookup {
            key: ApiKeyInfo {
                id: r.id,
                tenant_id: r.tenant_id,
                prefix: r.prefix,
                name: r.name,
                scopes: r.scopes,
                created_at: r.key_created_at,
                last_used_at: r.last_used_at,
                revoked_at: r.revoked_at,
            },
            hash: r.hash,
            tenant: Tenant::from(TenantRow {
                id: r.tenant_id,
                name: r.tenant_name,
                rate_per_minute: r.rate_per_minute,
                max_in_flight: r.max_in_flight,
                daily_budget_micros: r.daily_budget_micros,
                max_job_cost_micros: r.max_job_cost_micros,
                allowed_backends: r.allowed_backends,
                allowed_priorities: r.allowed_priorities,
                created_at: r.created_at,
                disabled_at: r.disabled_at,
            }),
        });
    }
    Ok(found)
}

/// Whether `name` is a tenant name: 1–63 of `[a-z0-9_-]`, starting with a letter or digit
/// (the table's check says the same).
pub fn valid_tenant_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

/// What a job's tenant lets it use, as routing needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entitlements {
    /// The backends it may use; `None`: every one.
    pub allowed_backends: Option<Vec<BackendName>>,
    /// The most one job may cost; `None`: no cap.
    pub max_job_cost: Option<Money>,
}
