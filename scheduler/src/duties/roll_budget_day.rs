//! The budget day roll-over: open today's day at local midnight and wake the jobs it can
//! cover. Every step is idempotent, so two schedulers, a restart or a missed tick never open a
//! day twice or lose an admin's change to it.

use std::time::Duration;

use aiprod_domain::{BudgetCalendar, JobId};
use aiprod_store::{Wake, open_budget_day, wake_budget_waiters};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;

use crate::duty::Duty;

/// Jobs woken per tick at most; the rest wake at the next tick.
const WAKE_BATCH: i64 = 500;

/// What one budget tick did.
#[derive(Debug, Default)]
pub struct BudgetTick {
    /// Today, in the budget's zone.
    pub day: Option<NaiveDate>,
    /// This tick opened it.
    pub opened: bool,
    /// Jobs re-dispatched because the day now covers them.
    pub woken: Vec<JobId>,
}

/// Opens the budget day `now` falls in, if it is not open, and wakes the waiting jobs it can
/// cover (after midnight, after a limit was raised, or after other jobs gave money back).
pub async fn roll_budget(
    pool: &PgPool,
    calendar: &BudgetCalendar,
    now: DateTime<Utc>,
) -> anyhow::Result<BudgetTick> {
    let day = calendar.day_at(now);
    let opened = open_budget_day(pool, day, calendar.zone_name(), calendar.daily_limit).await?;
    if opened {
        tracing::info!(%day, zone = calendar.zone_name(), limit = %calendar.daily_limit, "opened a new budget day");
    }
    let woken = wake_budget_waiters(pool, day, WAKE_BATCH).await?;
    if !woken.is_empty() {
        tracing::info!(%day, count = woken.len(), "re-dispatched jobs that were waiting for budget");
    }
    Ok(BudgetTick {
        day: Some(day),
        opened,
        woken,
    })
}

/// The roll-over as a duty, every `AIPROD_BUDGET_TICK_MS`.
pub(crate) struct RollBudgetDay {
    pub pool: PgPool,
    pub calendar: BudgetCalendar,
    pub every: Duration,
    pub dispatched: Wake,
}

#[async_trait]
impl Duty for RollBudgetDay {
    fn name(&self) -> &'static str {
        "roll_budget_day"
    }

    fn every(&self) -> Duration {
        self.every
    }

    async fn run(&self) -> anyhow::Result<()> {
        let tick = roll_budget(&self.pool, &self.calendar, Utc::now()).await?;
        if !tick.woken.is_empty() {
            self.dispatched.poke();
        }
        Ok(())
    }
}
