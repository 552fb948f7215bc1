//! The daily budget: its limit, its time zone, and how often the leader looks at it.

use std::time::Duration;

use aiprod_domain::{BudgetCalendar, Money};
use serde::{Deserialize, Serialize};
use serde_with::{DurationMilliSeconds, serde_as};

use super::check::within_ms;

/// The daily budget (flat `AIPROD_*` names).
#[serde_as]
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct BudgetSettings {
    /// `AIPROD_DAILY_BUDGET_USD`: the limit of each new budget day (admins may change today's).
    pub daily_budget_usd: Money,
    /// `AIPROD_BUDGET_TIMEZONE`: the IANA time zone whose midnight starts a budget day.
    pub budget_timezone: String,
    /// `AIPROD_BUDGET_TICK_MS`: how often the scheduler opens the day and wakes jobs waiting for
    /// money (the longest a job waits after midnight or after money is freed).
    #[serde(rename = "budget_tick_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub budget_tick: Duration,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        BudgetSettings {
            daily_budget_usd: Money::from_usd(100),
            budget_timezone: "UTC".into(),
            budget_tick: Duration::from_secs(5),
        }
    }
}

impl BudgetSettings {
    /// The calendar of budget days these settings describe.
    pub fn calendar(&self) -> BudgetCalendar {
        BudgetCalendar::new(
            self.budget_timezone.parse().unwrap_or(chrono_tz::UTC),
            self.daily_budget_usd,
        )
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
        within_ms("AIPROD_BUDGET_TICK_MS", self.budget_tick, 10..=3_600_000)
    }
}
