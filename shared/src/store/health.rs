//! The fleet-wide circuit breaker of each backend: one row per backend, changed only by single
//! conditional statements, so that every worker sees the same state and exactly one wins the
//! half-open probe.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::millis;
use crate::domain::BackendName;

/// The circuit's state as the table has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::Type, serde::Serialize)]
#[sqlx(type_name = "circuit_state", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Healthy: every request goes through.
    Closed,
    /// Unhealthy until `open_until`.
    Open,
    /// One probe is in flight.
    HalfOpen,
}

/// One backend's row.
#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
pub struct BackendHealth {
    /// The backend.
    pub backend: BackendName,
    /// Its circuit.
    pub state: CircuitState,
    /// Failures since the last success.
    pub consecutive_failures: i32,
    /// Opens since the last success; the cooldown doubles with each.
    pub trips: i32,
    /// When an open circuit lets a probe through.
    pub open_until: Option<DateTime<Utc>>,
    /// Who holds the half-open probe.
    pub probe_holder: Option<String>,
    /// When the probe's holder loses it (it may have died).
    pub probe_until: Option<DateTime<Utc>>,
    /// The last failure's reason.
    pub last_error: Option<String>,
}

/// Whether a backend may be used, as seen by selection at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    /// Closed circuit.
    Healthy,
    /// Open, or half-open with another holder's probe in flight: skip it, for this reason.
    Unhealthy(String),
    /// The cooldown is over and nobody holds the probe: the next user may probe.
    ProbeAvailable,
}

impl BackendHealth {
    /// What selection makes of this row now, for a caller named `holder`.
    pub fn availability(&self, holder: &str, now: DateTime<Utc>) -> Availability {
        match self.state {
            CircuitState::Closed => Availability::Healthy,
            CircuitState::Open => match self.open_until {
                Some(t) if t > now => Availability::Unhealthy(format!(
                    "circuit open until {} after {} consecutive failures (last: {})",
                    t.format("%H:%M:%S%.3f UTC"),
                    self.consecutive_failures,
                    self.last_error.as_deref().unwrap_or("unknown")
                )),
                _ => Availability::ProbeAvailable,
            },
            CircuitState::HalfOpen => {
                if self.probe_holder.as_deref() == Some(holder) {
                    Availability::ProbeAvailable
                } else if self.probe_until.is_some_and(|t| t > now) {
                    Availability::Unhealthy(
                        "circuit half-open: another worker's probe is in flight".into(),
                    )
                } else {
                    Availability::ProbeAvailable
                }
            }
        }
    }
}

/// Every backend's row, and the database's clock when it was read: every worker compares
/// against the same clock.
#[derive(Clone, Debug)]
pub struct HealthSnapshot {
    /// The rows, by backend.
    pub rows: BTreeMap<BackendName, BackendHealth>,
    /// `now()` of the reading statement.
    pub now: DateTime<Utc>,
}

/// Reads every backend's row in one statement.
pub async fn backend_health(db: impl PgExecutor<'_>) -> Result<HealthSnapshot, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        health: BackendHealth,
        now: DateTime<Utc>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "select backend, state, consecutive_failures, trips, open_until, probe_holder, \
         probe_until, last_error, now() as now from backend_health",
    )
    .fetch_all(db)
    .await?;
    let now = rows.first().map_or_else(Utc::now, |r| r.now);
    Ok(HealthSnapshot {
        rows: rows
            .into_iter()
            .map(|r| (r.health.backend, r.health))
            .collect(),
        now,
    })
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
/// to exactly one caller once the cooldown is over (or the previous probe's holder let its
/// time run out). `holder` names the caller: a job, so that a resumed job keeps its probe.
pub async fn gate(
    db: impl PgExecutor<'_>,
    backend: BackendName,
    holder: &str,
    probe_ttl: Duration,
) -> Result<Gate, sqlx::Error> {
    // One statement: take the probe if it is free, else report the state as it is.
    let row: (CircuitState, Option<String>, bool, Option<String>) = sqlx::query_as(
        "with took as (
             update backend_health
                set state = 'half_open', probe_holder = $2,
                    probe_until = now() + make_interval(secs => $3::double precision / 1000),
                    updated_at = now()
              where backend = $1
                and ((state = 'open' and open_until <= now())
                  or (state = 'half_open' and (probe_until <= now() or probe_holder = $2)))
          returning state, probe_holder
         )
         select coalesce(t.state, h.state), coalesce(t.probe_holder, h.probe_holder),
                t.state is not null, h.last_error
           from backend_health h left join took t on true
          where h.backend = $1",
    )
    .bind(backend)
    .bind(holder)
    .bind(millis(probe_ttl))
    .fetch_one(db)
    .await?;
    Ok(match row {
        (_, _, true, _) => Gate::Probe,
        (CircuitState::Closed, _, false, _) => Gate::Pass,
        (CircuitState::Open, _, false, last) => Gate::Blocked(format!(
            "circuit open (last failure: {})",
            last.as_deref().unwrap_or("unknown")
        )),
        (CircuitState::HalfOpen, _, false, _) => {
            Gate::Blocked("circuit half-open: another worker's probe is in flight".into())
        }
    })
}

/// A call succeeded: the circuit closes and every count starts again.
pub async fn record_success(
    db: impl PgExecutor<'_>,
    backend: BackendName,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update backend_health
            set state = 'closed', consecutive_failures = 0, trips = 0, open_until = null,
                probe_holder = null, probe_until = null, last_success_at = now(),
                updated_at = now()
          where backend = $1
            and (state <> 'closed' or consecutive_failures <> 0)",
    )
    .bind(backend)
    .execute(db)
    .await?;
    Ok(())
}

/// The breaker's knobs.
#[derive(Clone, Copy, Debug)]
pub struct CircuitPolicy {
    /// Consecutive failures that open a closed circuit.
    pub threshold: u32,
    /// The first cooldown; it doubles with every failed probe.
    pub cooldown: Duration,
    /// The longest cooldown.
    pub cooldown_max: Duration,
}

/// A call failed in a way that speaks of the backend's health (not throttling, not the
/// caller's bad input). Opens the circuit at the threshold, or at once when the failure is the
/// half-open probe's own; returns the state after.
pub async fn record_failure(
    db: impl PgExecutor<'_>,
    backend: BackendName,
    holder: &str,
    error: &str,
    policy: CircuitPolicy,
) -> Result<CircuitState, sqlx::Error> {
    // Every SET expression reads the row as it was before this update, and a concurrent
    // failure re-evaluates against the newest row (the row lock), so `opens` is decided once.
    let opens = "((state = 'closed' and consecutive_failures + 1 >= $6) \
                  or (state = 'half_open' and probe_holder = $2))";
    sqlx::query_scalar(&format!(
        "update backend_health
            set consecutive_failures = consecutive_failures + 1,
                last_error = left($3, 500), last_failure_at = now(), updated_at = now(),
                state = case when {opens} then 'open'::circuit_state else state end,
                trips = case when {opens} then trips + 1 else trips end,
                open_until = case when {opens}
                    then now() + make_interval(secs => least($5::double precision,
                         $4::double precision * power(2, least(trips, 30))) / 1000)
                    else open_until end,
                probe_holder = case when {opens} then null else probe_holder end,
                probe_until = case when {opens} then null else probe_until end
          where backend = $1
      returning state"
    ))
    .bind(backend)
    .bind(holder)
    .bind(error)
    .bind(millis(policy.cooldown))
    .bind(millis(policy.cooldown_max))
    .bind(i32::try_from(policy.threshold).unwrap_or(i32::MAX))
    .fetch_one(db)
    .await
}

/// Gives the probe back without a verdict (the probe's job was canceled or hit its deadline
/// before the backend answered), so that another worker may probe at once.
pub async fn release_probe(
    db: impl PgExecutor<'_>,
    backend: BackendName,
    holder: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update backend_health set state = 'open', open_until = now(), probe_holder = null,
                probe_until = null, updated_at = now()
          where backend = $1 and state = 'half_open' and probe_holder = $2",
    )
    .bind(backend)
    .bind(holder)
    .execute(db)
    .await?;
    Ok(())
}
