//! The fleet-wide circuit breaker of each model service (`model_health`: `gemini`, `imagen`,
//! `replicate_image`), by the same rules as the video backends' (`backend_health`): the SQL
//! functions `backend_availability()` and `circuit_opens()` are overloaded for its rows, so
//! the rule is written once per row type and read the same way.

use aiprod_domain::{CircuitPolicy, CircuitState};
use sqlx::PgExecutor;

use super::millis;
use crate::Gate;

/// Asks to call `service`: as `gate` does for a backend.
pub async fn model_gate(
    db: impl PgExecutor<'_>,
    service: &str,
    holder: &str,
    probe_ttl: std::time::Duration,
) -> sqlx::Result<Gate> {
    let row = sqlx::query!(
        r#"with took as (
               update model_health h
                  set state = 'half_open', probe_holder = $2,
                      probe_until = now() + $3::bigint * interval '1 millisecond', updated_at = now()
                where service = $1 and state <> 'closed'
                  and backend_availability(h, $2, now()) = 'probe_available'
               returning state
           )
           select h.state as "state!: CircuitState", exists (select 1 from took) as "took!",
                  h.last_error
             from model_health h
            where h.service = $1"#,
        service,
        holder,
        millis(probe_ttl),
    )
    .fetch_optional(db)
    .await?;
    let Some(row) = row else {
        // A service with no row has no breaker yet: the simulation.
        return Ok(Gate::Pass);
    };
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

/// A call succeeded: the circuit closes (`close_model_circuit()`, migrations/20261208000001).
/// The worker never calls this: a call's answer closes the circuit inside the statement that
/// records it (`update_model_call`). It closes a circuit directly, by the same rule (the
/// breaker's own tests).
pub async fn record_model_success(db: impl PgExecutor<'_>, service: &str) -> sqlx::Result<()> {
    sqlx::query_scalar!("select close_model_circuit($1)", service)
        .fetch_one(db)
        .await?;
    Ok(())
}

/// A call failed in a way that speaks of the service's health; as `record_failure`.
pub async fn record_model_failure(
    db: impl PgExecutor<'_>,
    service: &str,
    holder: &str,
    error: &str,
    policy: CircuitPolicy,
) -> sqlx::Result<Option<CircuitState>> {
    sqlx::query_scalar!(
        r#"update model_health h
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
            where h.service = $1
           returning h.state as "state: CircuitState""#,
        service,
        holder,
        error,
        millis(policy.cooldown),
        millis(policy.cooldown_max),
        i32::try_from(policy.threshold).unwrap_or(i32::MAX),
    )
    .fetch_optional(db)
    .await
}

/// Gives a half-open probe back without a verdict.
pub async fn release_model_probe(
    db: impl PgExecutor<'_>,
    service: &str,
    holder: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "update model_health set state = 'open', open_until = now(), probe_holder = null,
                probe_until = null, updated_at = now()
          where service = $1 and state = 'half_open' and probe_holder = $2",
        service,
        holder
    )
    .execute(db)
    .await?;
    Ok(())
}
