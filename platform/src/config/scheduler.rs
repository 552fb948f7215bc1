//! How often the scheduler's leader does its periodic duties (those with settings of their own
//! elsewhere: the budget tick, the alert rules, the re-dispatch sweep), and when the reaper
//! gives up on a job.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_with::{DurationMilliSeconds, serde_as};

use super::check::{within, within_ms};

/// The scheduler's settings (flat `AIPROD_*` names).
#[serde_as]
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct SchedulerSettings {
    /// `AIPROD_REAPER_INTERVAL_MS`: how often the leader looks for expired leases.
    #[serde(rename = "reaper_interval_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub reaper_interval: Duration,
    /// `AIPROD_RELAY_INTERVAL_MS`: the longest the outbox waits for the relay when no
    /// notification arrives.
    #[serde(rename = "relay_interval_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub relay_interval: Duration,
    /// `AIPROD_RECONCILE_INTERVAL_MS`: how often the leader looks for orphaned renders at
    /// providers that list them.
    #[serde(rename = "reconcile_interval_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub reconcile_interval: Duration,
    /// `AIPROD_ORPHAN_SETTLE_MS`: how old a suspected orphan must be before it is looked for
    /// (its POST may still be in flight).
    #[serde(rename = "orphan_settle_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub orphan_settle: Duration,
    /// `AIPROD_MAX_REAPS`: how many times the reaper re-dispatches a job whose lease expired.
    /// Past that the job fails as poison: something in it kills or stalls every worker that
    /// runs it, and dispatching it again would only take down the next one.
    pub max_reaps: u32,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            reaper_interval: Duration::from_secs(1),
            relay_interval: Duration::from_millis(500),
            reconcile_interval: Duration::from_secs(60),
            orphan_settle: Duration::from_secs(60),
            max_reaps: 5,
        }
    }
}

impl SchedulerSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        within_ms(
            "AIPROD_REAPER_INTERVAL_MS",
            self.reaper_interval,
            10..=3_600_000,
        )?;
        within_ms(
            "AIPROD_RELAY_INTERVAL_MS",
            self.relay_interval,
            10..=3_600_000,
        )?;
        within_ms(
            "AIPROD_RECONCILE_INTERVAL_MS",
            self.reconcile_interval,
            10..=86_400_000,
        )?;
        within_ms(
            "AIPROD_ORPHAN_SETTLE_MS",
            self.orphan_settle,
            10..=86_400_000,
        )?;
        within("AIPROD_MAX_REAPS", self.max_reaps, 1..=1000)
    }
}

#[cfg(test)]
// figment's Jail returns its large error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use crate::Settings;

    #[test]
    fn max_reaps_defaults_to_five_and_zero_is_refused() {
        figment::Jail::expect_with(|jail| {
            assert_eq!(Settings::load(None).expect("loads").scheduler.max_reaps, 5);
            jail.set_env("AIPROD_MAX_REAPS", "2");
            assert_eq!(Settings::load(None).expect("loads").scheduler.max_reaps, 2);
            jail.set_env("AIPROD_MAX_REAPS", "0");
            let e = Settings::load(None).expect_err("zero").to_string();
            assert!(e.contains("AIPROD_MAX_REAPS must be 1–1000, got 0"), "{e}");
            Ok(())
        });
    }
}
