//! The alert rules' thresholds, their webhook, and the SLOs.

use std::time::Duration;

use aiprod_store::SloTargets;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_with::{DurationMilliSeconds, DurationSeconds, serde_as};

use super::check::{share, within, within_ms, within_s};

/// Alert rules (every threshold), their delivery, and the SLOs (flat `AIPROD_*` names).
#[serde_as]
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct AlertSettings {
    /// `AIPROD_ALERT_INTERVAL_MS`: how often the scheduler evaluates the rules.
    #[serde(rename = "alert_interval_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub alert_interval: Duration,
    /// `AIPROD_ALERT_WINDOW_S`: the rolling window of the quality, latency and error rules.
    #[serde(rename = "alert_window_s")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub alert_window: Duration,
    /// `AIPROD_ALERT_BUDGET_WARNING_PCT`: share of today's limit committed that warns.
    pub alert_budget_warning_pct: u32,
    /// `AIPROD_ALERT_BUDGET_CRITICAL_PCT`: share of today's limit committed that is critical.
    pub alert_budget_critical_pct: u32,
    /// `AIPROD_ALERT_BUDGET_EXHAUSTED_PCT`: share at which the limit counts as reached.
    pub alert_budget_exhausted_pct: u32,
    /// `AIPROD_ALERT_QUALITY_MIN`: the average quality score below which the fleet alerts.
    pub alert_quality_min: f64,
    /// `AIPROD_ALERT_LATENCY_P95_S`: the pipeline p95 latency above which the fleet alerts.
    #[serde(rename = "alert_latency_p95_s")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub alert_latency_p95: Duration,
    /// `AIPROD_ALERT_BACKEND_ERRORS_MAX`: a backend's errors in the window above which it alerts.
    pub alert_backend_errors_max: u32,
    /// `AIPROD_ALERT_REAPS_MAX`: a job whose lease was reaped more often than this is stuck.
    pub alert_reaps_max: u32,
    /// `AIPROD_ALERT_WEBHOOK_URL`: where alerts are POSTed as Slack-compatible JSON. A secret:
    /// a Slack webhook's path is its credential, so it is never printed, logged or stored.
    #[serde(skip_serializing)]
    pub alert_webhook_url: Option<SecretString>,
    /// `AIPROD_ALERT_WEBHOOK_ATTEMPTS`: tries per delivery (with backoff) before it waits for
    /// the next evaluation.
    pub alert_webhook_attempts: u32,
    /// `AIPROD_SLO_WINDOW_DAYS`: the rolling window of the SLO report.
    pub slo_window_days: u32,
    /// `AIPROD_SLO_LATENCY_S`: the latency bound of the latency SLO.
    #[serde(rename = "slo_latency_s")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub slo_latency: Duration,
    /// `AIPROD_SLO_LATENCY_OBJECTIVE`: the share of jobs that must meet it.
    pub slo_latency_objective: f64,
    /// `AIPROD_SLO_QUALITY_MIN`: the quality floor of the quality SLO.
    pub slo_quality_min: f64,
    /// `AIPROD_SLO_QUALITY_OBJECTIVE`: the share of jobs that must meet it.
    pub slo_quality_objective: f64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            alert_interval: Duration::from_secs(60),
            alert_window: Duration::from_secs(3_600),
            alert_budget_warning_pct: 70,
            alert_budget_critical_pct: 90,
            alert_budget_exhausted_pct: 100,
            alert_quality_min: 0.6,
            alert_latency_p95: Duration::from_secs(900),
            alert_backend_errors_max: 5,
            alert_reaps_max: 2,
            alert_webhook_url: None,
            alert_webhook_attempts: 5,
            slo_window_days: 7,
            slo_latency: Duration::from_secs(900),
            slo_latency_objective: 0.95,
            slo_quality_min: 0.6,
            slo_quality_objective: 0.90,
        }
    }
}

impl AlertSettings {
    /// The SLOs as the store's report takes them.
    pub fn slo_targets(&self) -> SloTargets {
        SloTargets {
            window_days: i32::try_from(self.slo_window_days).unwrap_or(i32::MAX),
            latency_s: self.slo_latency.as_secs_f64(),
            latency_objective: self.slo_latency_objective,
            quality_min: self.slo_quality_min,
            quality_objective: self.slo_quality_objective,
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        within_ms(
            "AIPROD_ALERT_INTERVAL_MS",
            self.alert_interval,
            10..=86_400_000,
        )?;
        within_s("AIPROD_ALERT_WINDOW_S", self.alert_window, 60..=7 * 86_400)?;
        let (w, c, x) = (
            self.alert_budget_warning_pct,
            self.alert_budget_critical_pct,
            self.alert_budget_exhausted_pct,
        );
        if !(w <= c && c <= x && (1..=1000).contains(&w) && x <= 1000) {
            return Err(format!(
                "AIPROD_ALERT_BUDGET_WARNING_PCT ≤ _CRITICAL_PCT ≤ _EXHAUSTED_PCT must hold within 1–1000, got {w}, {c}, {x}"
            ));
        }
        share("AIPROD_ALERT_QUALITY_MIN", self.alert_quality_min)?;
        share("AIPROD_SLO_LATENCY_OBJECTIVE", self.slo_latency_objective)?;
        share("AIPROD_SLO_QUALITY_MIN", self.slo_quality_min)?;
        share("AIPROD_SLO_QUALITY_OBJECTIVE", self.slo_quality_objective)?;
        within(
            "AIPROD_ALERT_WEBHOOK_ATTEMPTS",
            self.alert_webhook_attempts,
            1..=30,
        )?;
        within("AIPROD_SLO_WINDOW_DAYS", self.slo_window_days, 1..=90)?;
        if let Some(url) = &self.alert_webhook_url {
            let url = url.expose_secret();
            // Unlike other URLs, the value is not repeated: it is a credential.
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(
                    "AIPROD_ALERT_WEBHOOK_URL must be an http(s) URL (the value is not shown: \
                     it is a secret)"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
// figment's Jail returns its large error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use crate::Settings;

    #[test]
    fn the_webhook_url_is_a_secret_never_repeated() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "AIPROD_ALERT_WEBHOOK_URL",
                "https://hooks.slack.com/services/T0/B0/xoxSecretPath",
            );
            let s = Settings::load(None).expect("loads");
            assert!(s.alerts.alert_webhook_url.is_some());
            assert!(!format!("{s:?}").contains("xoxSecretPath"));
            jail.set_env("AIPROD_ALERT_WEBHOOK_URL", "hooks.slack.com/xoxSecretPath");
            let e = Settings::load(None).expect_err("no scheme").to_string();
            assert!(
                e.contains("AIPROD_ALERT_WEBHOOK_URL must be an http(s) URL"),
                "{e}"
            );
            assert!(!e.contains("xoxSecretPath"), "{e}");
            Ok(())
        });
    }
}
