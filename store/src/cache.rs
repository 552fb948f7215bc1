//! Durable caches with single flight (`cache_entry`): model answers, keyframes and renders, by
//! a hash of everything that decides them, per tenant. A job claims an entry before it makes
//! the thing; a job that finds the entry claimed by a live job waits for it to be filled and
//! reuses it; a claim whose job no longer runs under a live lease (`cache_claim_abandoned()`)
//! is taken over. A render fills or frees its claim through the `render_task_cache` trigger, so
//! every path that ends a render does; model answers and keyframes do it here.

use aiprod_domain::{CacheTier, JobId, Money};
use serde_json::Value;
use sqlx::PgExecutor;

use super::millis;

/// What claiming an entry found.
#[derive(Clone, Debug, PartialEq)]
pub enum CacheClaim {
    /// Made already: reuse it.
    Ready {
        /// The cached value.
        value: Option<Value>,
        /// The cached artifact.
        artifact_uri: Option<String>,
        /// What making it cost: what this hit saves.
        cost: Money,
    },
    /// This job holds the claim: make it, then fill or release it.
    Mine,
    /// Another live job is making it: wait, then claim again.
    Pending,
}

/// Claims the entry `key` of `tier` for `job` (in its tenant's cache): `Mine` when it was free,
/// expired, abandoned, or this job's already.
pub async fn claim_cache(
    db: impl PgExecutor<'_> + Copy,
    job: JobId,
    tier: CacheTier,
    key: &str,
) -> sqlx::Result<CacheClaim> {
    let mine = sqlx::query_scalar!(
        r#"insert into cache_entry (tenant_id, tier, key, owner_job)
           select tenant_id, $2, $3, id from job where id = $1
           on conflict (tenant_id, tier, key) do update
              set state = 'pending', owner_job = excluded.owner_job, claimed_at = now(),
                  value = null, artifact_uri = null, cost_micros = 0, ready_at = null,
                  expires_at = null
            where (cache_entry.state = 'ready' and cache_entry.expires_at <= now())
               or cache_claim_abandoned(cache_entry)
               or (cache_entry.state = 'pending' and cache_entry.owner_job = excluded.owner_job)
           returning true as "mine!""#,
        job as JobId,
        tier as CacheTier,
        key,
    )
    .fetch_optional(db)
    .await?;
    if mine.is_some() {
        return Ok(CacheClaim::Mine);
    }
    // A fresh statement: it sees the entry the insert found in its way.
    let row = sqlx::query!(
        r#"select e.state::text as "state!", e.value, e.artifact_uri, e.cost_micros
             from cache_entry e join job j on j.tenant_id = e.tenant_id
            where j.id = $1 and e.tier = $2 and e.key = $3"#,
        job as JobId,
        tier as CacheTier,
        key,
    )
    .fetch_optional(db)
    .await?;
    Ok(match row {
        Some(r) if r.state == "ready" => CacheClaim::Ready {
            value: r.value,
            artifact_uri: r.artifact_uri,
            cost: Money::from_micros(r.cost_micros),
        },
        _ => CacheClaim::Pending,
    })
}

/// What fills an entry.
#[derive(Clone, Debug)]
pub struct CacheFill<'a> {
    /// The value.
    pub value: Option<&'a Value>,
    /// The artifact.
    pub artifact_uri: Option<&'a str>,
    /// What making it cost.
    pub cost: Money,
    /// How long it lives; `None`: as long as its artifact.
    pub ttl: Option<std::time::Duration>,
}

/// Fills the entry this job claimed.
pub async fn fill_cache(
    db: impl PgExecutor<'_>,
    job: JobId,
    tier: CacheTier,
    key: &str,
    f: &CacheFill<'_>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"update cache_entry e
              set state = 'ready', value = $4, artifact_uri = $5, cost_micros = $6,
                  ready_at = now(),
                  expires_at = case when $7::bigint is null then null
                                    else now() + $7::bigint * interval '1 millisecond' end
             from job j
            where j.id = $1 and e.tenant_id = j.tenant_id and e.tier = $2 and e.key = $3
              and e.owner_job = $1"#,
        job as JobId,
        tier as CacheTier,
        key,
        f.value,
        f.artifact_uri,
        f.cost.micros(),
        f.ttl.map(millis),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Frees this job's claim without filling it (the call failed), so a waiter may make it.
pub async fn release_cache(
    db: impl PgExecutor<'_>,
    job: JobId,
    tier: CacheTier,
    key: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"delete from cache_entry e using job j
            where j.id = $1 and e.tenant_id = j.tenant_id and e.tier = $2 and e.key = $3
              and e.state = 'pending' and e.owner_job = $1"#,
        job as JobId,
        tier as CacheTier,
        key,
    )
    .execute(db)
    .await?;
    Ok(())
}
