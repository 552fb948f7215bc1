//! The fleet-wide circuit breaker's vocabulary. Its rule (when a backend may be called, who
//! gets the one half-open probe, when a circuit opens) lives in SQL, in one place: see the
//! store's `backend_health` and ARCHITECTURE.md.

use std::time::Duration;

use crate::wire::wire_enum;

wire_enum! {
    /// The circuit's state as the `backend_health` table has it.
    pub enum CircuitState in "circuit_state" {
        /// Healthy: every request goes through.
        Closed,
        /// Unhealthy until `open_until`.
        Open,
        /// One probe is in flight.
        HalfOpen,
    }
}

wire_enum! {
    /// Whether one caller may use a backend now, as the database's `backend_availability` rule
    /// decides it.
    pub enum Availability in "backend_availability" {
        /// Closed circuit.
        Healthy,
        /// The cooldown is over and nobody else holds the probe: this caller may probe.
        ProbeAvailable,
        /// Open, or half-open with another caller's probe in flight: skip it.
        Unhealthy,
    }
}

/// The breaker's knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitPolicy {
    /// Consecutive failures that open a closed circuit.
    pub threshold: u32,
    /// The first cooldown; it doubles with every failed probe.
    pub cooldown: Duration,
    /// The longest cooldown.
    pub cooldown_max: Duration,
}
