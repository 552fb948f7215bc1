//! The fleet-wide circuit breaker of each backend: one row per backend, changed only by single
//! conditional statements, so that every worker sees the same state and exactly one wins the
//! half-open probe. Whether a caller may use a backend is one SQL function,
//! `backend_availability()`, which both routing's read and the gate's update apply.

use std::collections::BTreeMap;

use aiprod_domain::{Availability, BackendName, CircuitPolicy, CircuitState};
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::millis;

/// One backend's row, with what it means for one caller at the moment it was read.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackendHealth {
    /// The backend.
    pub backend: BackendName,
    /// Its circuit.
    pub state: CircuitState,
    /// What `backend_availability()` made of the row for the caller.
    pub availability: Availability,
    /// Failures since the last success.
    pub consecutive_failures: i32,
    /// Opens since the last success; the cooldown doubles with each.
    pub trips: i32,
    /// When an open circuit lets a probe through.
    pub open_until: Option<DateTime<Utc>>,
    /// The last failure's reason.
    pub last_error: Option<String>,
}

impl BackendHealth {
    /// Why routing must skip this backend, for people; `None` when it may be used.
    pub fn unhealthy_because(&self) -> Option<String> {
        match (self.availability, self.state) {
            (Availability::Healthy | Availability::ProbeAvailable, _) => None,
            (Availability::Unhealthy, CircuitState::HalfOpen) => {
                Some("circuit half-open: another worker's probe is in flight".into())
            }
            (Availability::Unhealthy, _) => Some(format!(
                "circuit open until {} after {} consecutive failures (last: {})",
                self.open_until
                    .map_or_else(|| "?".into(), |t| t.format("%H:%M:%S%.3f UTC").to_string()),
                self.consecutive_failures,
                self.last_error.as_deref().unwrap_or("unknown")
            )),
        }
    }
}

/// Every backend's row as `holder` sees it now, in one statement: every worker compares
/// against the database's clock.
pub async fn backend_health(
    db: impl PgExecutor<'_>,
    holder: &str,
) -> sqlx::Result<BTreeMap<BackendName, BackendHealth>> {
    let rows = sqlx::query_as!(
        BackendHealth,
        r#"select backend as "backend: BackendName", state as "state: CircuitState",
                  backend_availability(h, $1, now()) as "availability!: Availability",
                  consecutive_failures, trips, open_until, last_error
             from backend_health h"#,
        holder
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.backend, r)).collect())
}

/// The gate in front of one call to a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Closed circuit: go.
    Pass,
    /// The caller holds the one half-open probe: go, and report the outcome.
    Probe,
    /// Do not call it, for this reason.
    Blocked(String),
}

/// Asks to call `backend`: passes when the circuit is closed, and grants the half-open probe
/// to exactly one caller once `backend_availability()` lets it (the cooldown is over, or the
/// previous probe's holder let its time run out). `holder` names the caller: a job, so that a
/// resumed job keeps its probe.
#[tracing::instrument(skip_all, fields(backend = %backend, holder))]
pub async fn gate(
    db: impl PgExecutor<'_>,
    backend: BackendName,
    holder: &str,
    probe_ttl: std::time::Duration,
) -> sqlx::Result<Gate> {
    // One statement: take the probe if the rule allows it, else report the state as it is.
    let row = sqlx::query!(
        r#"with took as (
               update backend_health h
                  set state = 'half_open', probe_holder = $2,
                      probe_until = now() + $3::bigint * interval '1 millisecond', updated_at = now()
                where backend = $1 and state <> 'closed'
                  and backend_availability(h, $2, now()) = 'probe_available'
               returning state
           )
           select h.state as "state!: CircuitState", exists (select 1 from took) as "took!",
                  h.last_error
             from backend_health h
            where h.backend = $1"#,
        backend as BackendName,
        holder,
        millis(probe_ttl),
    )
    .fetch_one(db)
    .await?;
    Ok(match (row.took, row.state) {
        (true, _) => Gate::Probe,
        (false, CircuitState::Closed) => Gate::Pass,
        (false, CircuitState::Open) => Gate::Blocked(format!(
            "circuit open (last failure: {})",
            row.last_error.as_deref().unwrap_or("unknown")
        )),
        (false, CircuitState::HalfOpen) => {
            Gate::Blocked("circuit half-open: another worker's probe is in flight".into())
        }
    })
}

/// A call succeeded: the circuit closes and every count starts again (`close_circuits()`,
/// migrations/20261208000001). The worker never calls this: a render's success closes the
/// circuit inside the statement that marks it downloaded. It closes a circuit directly, by the
/// same rule (the breaker's own tests).
pub async fn record_success(db: impl PgExecutor<'_>, backend: BackendName) -> sqlx::Result<()> {
    sqlx::query_scalar!(
        "select close_circuits(array[$1::backend_name])",
        backend as BackendName
    )
    .fetch_one(db)
    .await?;
    Ok(())
}

/// A call failed in a way that speaks of the backend's health (not throttling, not the
/// caller's bad input). Opens the circuit at the threshold, or at once when the failure is the
/// half-open probe's own; returns the state after.
#[tracing::instrument(skip_all, fields(backend = %backend, holder))]
pub async fn record_failure(
    db: impl PgExecutor<'_>,
    backend: BackendName,
    holder: &str,
    error: &str,
    policy: CircuitPolicy,
) -> sqlx::Result<CircuitState> {
    // Every SET expression reads the row as it was before this update, and a concurrent
    // failure re-evaluates against the newest row (the row lock), so `circuit_opens()` is
    // decided once.
    sqlx::query_scalar!(
        r#"update backend_health h
              set consecutive_failures = h.consecutive_failures + 1,
                  last_error = left($3, 500), last_failure_at = now(), updated_at = now(),
                  state = case when circuit_opens(h, $2, $6) then 'open'::circuit_state
                               else h.state end,
                  trips = case when circuit_opens(h, $2, $6) then h.trips + 1 else h.trips end,
                  open_until = case when circuit_opens(h, $2, $6)
                      then now() + least($5::bigint,
                                         $4::bigint * power(2, least(h.trips, 30)))
                                   * interval '1 millisecond'
                      else h.open_until end,
                  probe_holder = case when circuit_opens(h, $2, $6) then null
                                      else h.probe_holder end,
                  probe_until = case when circuit_opens(h, $2, $6) then null
                                     else h.probe_until end
            where h.backend = $1
           returning h.state as "state: CircuitState""#,
        backend as BackendName,
        holder,
        error,
        millis(policy.cooldown),
        millis(policy.cooldown_max),
        i32::try_from(policy.threshold).unwrap_or(i32::MAX),
    )
    .fetch_one(db)
    .await
}

/// Gives the probe back without a verdict (the probe's job was canceled or hit its deadline
/// before the backend answered), so that another worker may probe at once.
pub async fn release_probe(
    db: impl PgExecutor<'_>,
    backend: BackendName,
    holder: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "update backend_health set state = 'open', open_until = now(), probe_holder = null,
                probe_until = null, updated_at = now()
          where backend = $1 and state = 'half_open' and probe_holder = $2",
        backend as BackendName,
        holder
    )
    .execute(db)
    .await?;
    Ok(())
}
