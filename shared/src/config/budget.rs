//! The budget, alert and SLO settings: flat `AIPROD_*` names, validated at start-up.

use serde::{Deserialize, Serialize};

use crate::money::Money;

/// The daily budget.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct BudgetSettings {
    /// `AIPROD_DAILY_BUDGET_USD`: the limit of each new budget day (admins may change today's).
    pub daily_budget_usd: Money,
    /// `AIPROD_BUDGET_TIMEZONE`: the IANA time zone whose midnight starts a budget day.
    pub budget_timezone: String,
    /// `AIPROD_BUDGET_TICK_MS`: how often the scheduler opens the day and wakes jobs waiting for
    /// money (the longest a job waits after midnight or after money is freed).
    pub budget_tick_ms: u64,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        BudgetSettings {
            daily_budget_usd: Money::from_usd(100),
            budget_timezone: "UTC".into(),
            budget_tick_ms: 5_000,
        }
    }
}

impl BudgetSettings {
    /// The time zone, parsed.
    pub fn time_zone(&self) -> chrono_tz::Tz {
        self.budget_timezone.parse().unwrap_or(chrono_tz::UTC)
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if self.daily_budget_usd < Money::ZERO {
            return Err(format!(
                "AIPROD_DAILY_BUDGET_USD must not be negative, got {}",
                self.daily_budget_usd
            ));
        }
        if self.budget_timezone.parse::<chrono_tz::Tz>().is_err() {
            return Err(format!(
                "AIPROD_BUDGET_TIMEZONE must be an IANA time zone such as Europe/Paris, got {}",
                self.budget_timezone
            ));
        }
        if !(10..=3_600_000).contains(&self.budget_tick_ms) {
            return Err(format!(
                "AIPROD_BUDGET_TICK_MS must be 10–3600000, got {}",
                self.budget_tick_ms
            ));
        }
        Ok(())
    }
}

/// Alert rules (every threshold), their delivery, and the SLOs.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct AlertSettings {
    /// `AIPROD_ALERT_INTERVAL_MS`: how often the scheduler evaluates the rules.
    pub alert_interval_ms: u64,
    /// `AIPROD_ALERT_WINDOW_S`: the rolling window of the quality, latency and error rules.
    pub alert_window_s: u64,
    /// `AIPROD_ALERT_BUDGET_WARNING_PCT`: share of today's limit committed that warns.
    pub alert_budget_warning_pct: u32,
    /// `AIPROD_ALERT_BUDGET_CRITICAL_PCT`: share of today's limit committed that is critical.
    pub alert_budget_critical_pct: u32,
    /// `AIPROD_ALERT_BUDGET_EXHAUSTED_PCT`: share at which the limit counts as reached.
    pub alert_budget_exhausted_pct: u32,
    /// `AIPROD_ALERT_QUALITY_MIN`: the average quality score below which the fleet alerts.
    pub alert_quality_min: f64,
    /// `AIPROD_ALERT_LATENCY_P95_S`: the pipeline p95 latency above which the fleet alerts.
    pub alert_latency_p95_s: u64,
    /// `AIPROD_ALERT_BACKEND_ERRORS_MAX`: a backend's errors in the window above which it alerts.
    pub alert_backend_errors_max: u32,
    /// `AIPROD_ALERT_REAPS_MAX`: a job whose lease was reaped more often than this is stuck.
    pub alert_reaps_max: u32,
    /// `AIPROD_ALERT_WEBHOOK_URL`: where alerts are POSTed as Slack-compatible JSON.
    pub alert_webhook_url: Option<String>,
    /// `AIPROD_ALERT_WEBHOOK_ATTEMPTS`: tries per delivery (with backoff) before it waits for
    /// the next evaluation.
    pub alert_webhook_attempts: u32,
    /// `AIPROD_SLO_WINDOW_DAYS`: the rolling window of the SLO report.
    pub slo_window_days: u32,
    /// `AIPROD_SLO_LATENCY_S`: the latency bound of the latency SLO.
    pub slo_latency_s: u64,
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
            alert_interval_ms: 60_000,
            alert_window_s: 3_600,
            alert_budget_warning_pct: 70,
            alert_budget_critical_pct: 90,
            alert_budget_exhausted_pct: 100,
            alert_quality_min: 0.6,
            alert_latency_p95_s: 900,
            alert_backend_errors_max: 5,
            alert_reaps_max: 2,
            alert_webhook_url: None,
            alert_webhook_attempts: 5,
            slo_window_days: 7,
            slo_latency_s: 900,
            slo_latency_objective: 0.95,
            slo_quality_min: 0.6,
            slo_quality_objective: 0.90,
        }
    }
}

impl AlertSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        if !(10..=86_400_000).contains(&self.alert_interval_ms) {
            return Err(format!(
                "AIPROD_ALERT_INTERVAL_MS must be 10–86400000, got {}",
                self.alert_interval_ms
            ));
        }
        if !(60..=7 * 86_400).contains(&self.alert_window_s) {
            return Err(format!(
                "AIPROD_ALERT_WINDOW_S must be 60–604800, got {}",
                self.alert_window_s
            ));
        }
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
        for (name, v) in [
            ("AIPROD_ALERT_QUALITY_MIN", self.alert_quality_min),
            ("AIPROD_SLO_LATENCY_OBJECTIVE", self.slo_latency_objective),
            ("AIPROD_SLO_QUALITY_MIN", self.slo_quality_min),
            ("AIPROD_SLO_QUALITY_OBJECTIVE", self.slo_quality_objective),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be between 0 and 1, got {v}"));
            }
        }
        if !(1..=30).contains(&self.alert_webhook_attempts) {
            return Err(format!(
                "AIPROD_ALERT_WEBHOOK_ATTEMPTS must be 1–30, got {}",
                self.alert_webhook_attempts
            ));
        }
        if !(1..=90).contains(&self.slo_window_days) {
            return Err(format!(
                "AIPROD_SLO_WINDOW_DAYS must be 1–90, got {}",
                self.slo_window_days
            ));
        }
        if let Some(url) = &self.alert_webhook_url
            && !url.starts_with("http://")
            && !url.starts_with("https://")
        {
            return Err(format!(
                "AIPROD_ALERT_WEBHOOK_URL must be an http(s) URL, got {url}"
            ));
        }
        Ok(())
    }
}
