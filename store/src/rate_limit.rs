//! Each tenant's submission rate limit, the same for every API replica: GCRA (the `gcra`
//! crate's algorithm) over a theoretical arrival time kept in `rate_limit_state`. One short
//! transaction locks the tenant's row, so two replicas cannot both take the last slot; the
//! database's clock is the only clock, so replicas with skewed clocks still agree.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aiprod_domain::TenantId;
use chrono::{DateTime, Utc};
use gcra::{GcraError, GcraState, RateLimit};
use sqlx::{PgConnection, PgPool};

/// What one submission's check decided, with what the `RateLimit` headers need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateDecision {
    /// Whether the submission may go on.
    pub allowed: bool,
    /// Submissions per window.
    pub limit: u32,
    /// Submissions left in the window now.
    pub remaining: u32,
    /// Until the window is whole again.
    pub reset_after: Duration,
    /// Refused: how long until one more is allowed.
    pub retry_after: Option<Duration>,
}

/// The window a tenant's rate is counted over.
const WINDOW: Duration = Duration::from_secs(60);

/// Checks one submission of `tenant` against `per_minute` and, if allowed, counts it.
pub async fn check_rate(
    pool: &PgPool,
    tenant: TenantId,
    per_minute: u32,
) -> sqlx::Result<RateDecision> {
    let mut tx = pool.begin().await?;
    let decisions = check_rates(&mut tx, &[(tenant, per_minute)]).await?;
    tx.commit().await?;
    Ok(decisions[0])
}

/// Checks a batch of submissions, each `(tenant, per_minute)`, in order, inside the caller's
/// transaction, and counts the allowed ones: one decision per submission. The batch's tenants
/// are locked in id order (so two batches wait for each other rather than deadlock) and each
/// tenant's state is written once, so a batch of any size costs the same four statements. The
/// caller's commit makes the counts stick; a rollback forgets them.
pub(crate) async fn check_rates(
    conn: &mut PgConnection,
    asks: &[(TenantId, u32)],
) -> sqlx::Result<Vec<RateDecision>> {
    let mut tenants: Vec<TenantId> = asks.iter().map(|(t, _)| *t).collect();
    tenants.sort_unstable();
    tenants.dedup();
    if tenants.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query!(
        "insert into rate_limit_state (tenant_id, tat)
         select t, now() from unnest($1::uuid[]) t
          order by t
         on conflict do nothing",
        &tenants as &[TenantId]
    )
    .execute(&mut *conn)
    .await?;
    let rows = sqlx::query!(
        r#"select tenant_id as "tenant_id: TenantId", tat, now() as "now!"
             from rate_limit_state where tenant_id = any($1)
            order by tenant_id for update"#,
        &tenants as &[TenantId]
    )
    .fetch_all(&mut *conn)
    .await?;
    // The stored times become `Instant`s relative to one reading of both clocks. A TAT in the
    // past means the same to GCRA as none at all, so only a future one is carried over.
    let base = Instant::now();
    let mut states: HashMap<TenantId, (GcraState, Option<Duration>, DateTime<Utc>, bool)> = rows
        .into_iter()
        .map(|r| {
            let ahead = (r.tat - r.now).to_std().ok();
            let state = GcraState {
                tat: ahead.map(|d| base + d),
            };
            (r.tenant_id, (state, ahead, r.now, false))
        })
        .collect();
    let mut decisions = Vec::with_capacity(asks.len());
    for &(tenant, per_minute) in asks {
        let limit = RateLimit::new(per_minute.max(1), WINDOW);
        let Some((state, ahead, _, changed)) = states.get_mut(&tenant) else {
            return Err(sqlx::Error::RowNotFound);
        };
        decisions.push(match state.check_and_modify_at(&limit, base, 1) {
            Ok(()) => {
                *changed = true;
                let tat = state.tat.map_or(Duration::ZERO, |t| t - base);
                *ahead = Some(tat);
                RateDecision {
                    allowed: true,
                    limit: limit.resource_limit,
                    remaining: state.remaining_resources(&limit, base),
                    reset_after: tat,
                    retry_after: None,
                }
            }
            Err(GcraError::DeniedUntil { next_allowed_at }) => RateDecision {
                allowed: false,
                limit: limit.resource_limit,
                remaining: 0,
                reset_after: ahead.unwrap_or_default(),
                retry_after: Some(next_allowed_at.saturating_duration_since(base)),
            },
            Err(GcraError::DeniedIndefinitely { .. }) => RateDecision {
                allowed: false,
                limit: limit.resource_limit,
                remaining: 0,
                reset_after: WINDOW,
                retry_after: Some(WINDOW),
            },
        });
    }
    let (ids, tats): (Vec<TenantId>, Vec<DateTime<Utc>>) = states
        .into_iter()
        .filter(|(_, (_, _, _, changed))| *changed)
        .map(|(t, (state, _, now, _))| {
            let tat = state
                .tat
                .map_or(Duration::ZERO, |i| i.saturating_duration_since(base));
            (t, now + to_chrono(tat))
        })
        .unzip();
    if !ids.is_empty() {
        sqlx::query!(
            "update rate_limit_state s set tat = u.tat
               from unnest($1::uuid[], $2::timestamptz[]) as u(tenant_id, tat)
              where s.tenant_id = u.tenant_id",
            &ids as &[TenantId],
            &tats,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(decisions)
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
