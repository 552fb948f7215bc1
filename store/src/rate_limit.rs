//! Each tenant's submission rate limit, the same for every API replica: GCRA (the `gcra`
//! crate's algorithm) over a theoretical arrival time kept in `rate_limit_state`. One short
//! transaction locks the tenant's row, so two replicas cannot both take the last slot; the
//! database's clock is the only clock, so replicas with skewed clocks still agree.

use std::time::{Duration, Instant};

use aiprod_domain::TenantId;
use gcra::{GcraError, GcraState, RateLimit};
use sqlx::PgPool;

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
    let limit = RateLimit::new(per_minute.max(1), WINDOW);
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "insert into rate_limit_state (tenant_id, tat) values ($1, now()) on conflict do nothing",
        tenant as TenantId
    )
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query!(
        r#"select tat, now() as "now!" from rate_limit_state where tenant_id = $1 for update"#,
        tenant as TenantId
    )
    .fetch_one(&mut *tx)
    .await?;
    // The stored time becomes an `Instant` relative to one reading of both clocks. A TAT in the
    // past means the same to GCRA as none at all, so only a future one is carried over.
    let base = Instant::now();
    let ahead = (row.tat - row.now).to_std().ok();
    let mut state = GcraState {
        tat: ahead.map(|d| base + d),
    };
    let decision = match state.check_and_modify_at(&limit, base, 1) {
        Ok(()) => {
            let tat = state.tat.map_or(Duration::ZERO, |t| t - base);
            let new_tat = row.now + to_chrono(tat);
            sqlx::query!(
                "update rate_limit_state set tat = $2 where tenant_id = $1",
                tenant as TenantId,
                new_tat
            )
            .execute(&mut *tx)
            .await?;
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
    };
    tx.commit().await?;
    Ok(decision)
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
