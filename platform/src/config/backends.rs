//! Which backends a process uses and how it treats them: simulation, prices and quality,
//! fallback, the fleet-wide circuit breaker and the provider calls' limits. Each provider's own
//! client settings are in `providers`.

use std::time::Duration;

use aiprod_domain::{BackendName, CircuitPolicy, PriceTable};
use serde::{Deserialize, Serialize};
use serde_with::{DurationMilliSeconds, serde_as};

use super::check::{share, within, within_ms};

/// The backends' settings (flat `AIPROD_*` names).
#[serde_as]
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct BackendSettings {
    /// `AIPROD_SIMULATE_BACKENDS`: fake the video backends (default: true in `aiprod dev`
    /// only).
    pub simulate_backends: Option<bool>,
    /// `AIPROD_SIM_LATENCY_MS`: base latency of a simulated render.
    #[serde(rename = "sim_latency_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub sim_latency: Duration,
    /// `AIPROD_SIM_FAILURE_RATE`: the share of simulated renders that fail (0–1).
    pub sim_failure_rate: f64,
    /// `AIPROD_BACKENDS__<NAME>__*`: price, quality and speed of each backend.
    #[serde(rename = "backends")]
    pub prices: PriceTable,
    /// `AIPROD_FALLBACK_ORDER`: the order in which backends are tried after the chosen one
    /// fails (comma-separated in env).
    #[serde(deserialize_with = "backend_list")]
    pub fallback_order: Vec<BackendName>,
    /// `AIPROD_CIRCUIT_FAILURE_THRESHOLD`: consecutive failures that open a backend's circuit.
    pub circuit_failure_threshold: u32,
    /// `AIPROD_CIRCUIT_COOLDOWN_MS`: how long a circuit stays open the first time; it doubles
    /// each time the half-open probe fails.
    #[serde(rename = "circuit_cooldown_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub circuit_cooldown: Duration,
    /// `AIPROD_CIRCUIT_COOLDOWN_MAX_MS`: the longest cooldown.
    #[serde(rename = "circuit_cooldown_max_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub circuit_cooldown_max: Duration,
    /// `AIPROD_CIRCUIT_PROBE_TTL_MS`: how long the one half-open probe may take before another
    /// worker may probe in its place (its worker may have died).
    #[serde(rename = "circuit_probe_ttl_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub circuit_probe_ttl: Duration,
    /// `AIPROD_BACKEND_HTTP_TIMEOUT_MS`: the longest one provider HTTP call may take.
    #[serde(rename = "backend_http_timeout_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub backend_http_timeout: Duration,
    /// `AIPROD_THROTTLE_WAIT_MAX_MS`: the longest a submit waits out a provider's 429 before it
    /// falls back to the next backend.
    #[serde(rename = "throttle_wait_max_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub throttle_wait_max: Duration,
}

impl Default for BackendSettings {
    fn default() -> Self {
        BackendSettings {
            simulate_backends: None,
            sim_latency: Duration::from_secs(2),
            sim_failure_rate: 0.0,
            prices: PriceTable::default(),
            fallback_order: BackendName::ALL.to_vec(),
            circuit_failure_threshold: 3,
            circuit_cooldown: Duration::from_secs(30),
            circuit_cooldown_max: Duration::from_secs(600),
            circuit_probe_ttl: Duration::from_secs(900),
            backend_http_timeout: Duration::from_secs(30),
            throttle_wait_max: Duration::from_secs(60),
        }
    }
}

impl BackendSettings {
    /// Whether backends without credentials are simulated: the explicit setting, else the
    /// mode's default.
    pub fn simulate(&self, default_for_mode: bool) -> bool {
        self.simulate_backends.unwrap_or(default_for_mode)
    }

    /// The circuit breaker's knobs.
    pub fn circuit_policy(&self) -> CircuitPolicy {
        CircuitPolicy {
            threshold: self.circuit_failure_threshold,
            cooldown: self.circuit_cooldown,
            cooldown_max: self.circuit_cooldown_max,
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        share("AIPROD_SIM_FAILURE_RATE", self.sim_failure_rate)?;
        within_ms("AIPROD_SIM_LATENCY_MS", self.sim_latency, 0..=3_600_000)?;
        if self.fallback_order.is_empty() {
            return Err("AIPROD_FALLBACK_ORDER must name at least one backend".into());
        }
        for (i, b) in self.fallback_order.iter().enumerate() {
            if self.fallback_order[..i].contains(b) {
                return Err(format!("AIPROD_FALLBACK_ORDER names {b} twice"));
            }
        }
        within(
            "AIPROD_CIRCUIT_FAILURE_THRESHOLD",
            self.circuit_failure_threshold,
            1..=100,
        )?;
        for (name, v) in [
            ("AIPROD_CIRCUIT_COOLDOWN_MS", self.circuit_cooldown),
            ("AIPROD_CIRCUIT_COOLDOWN_MAX_MS", self.circuit_cooldown_max),
            ("AIPROD_CIRCUIT_PROBE_TTL_MS", self.circuit_probe_ttl),
            ("AIPROD_BACKEND_HTTP_TIMEOUT_MS", self.backend_http_timeout),
            ("AIPROD_THROTTLE_WAIT_MAX_MS", self.throttle_wait_max),
        ] {
            within_ms(name, v, 10..=86_400_000)?;
        }
        if self.circuit_cooldown_max < self.circuit_cooldown {
            return Err(
                "AIPROD_CIRCUIT_COOLDOWN_MAX_MS must be at least AIPROD_CIRCUIT_COOLDOWN_MS".into(),
            );
        }
        for name in BackendName::ALL {
            self.prices.profile(*name).validate(*name)?;
        }
        Ok(())
    }
}

/// A list of backend names, or one comma-separated string.
fn backend_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<BackendName>, D::Error> {
    super::list_or_csv(d)?
        .iter()
        .map(|s| {
            s.parse::<BackendName>()
                .map_err(|_| serde::de::Error::custom(format!("unknown backend `{s}`")))
        })
        .collect()
}
