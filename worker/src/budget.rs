//! The budget as the worker sees it: what is left today, and a reservation for a job. The
//! `Ledger` is the real one (the `budget_day` row, fleet-wide); `Unlimited` and `Fixed` serve
//! tests and operators who run without a daily limit.

use std::sync::{Arc, Mutex};

use aiprod_shared::Money;
use aiprod_shared::budget::BudgetCalendar;
use aiprod_shared::clock::Clock;
use aiprod_shared::domain::JobId;
use aiprod_shared::metrics::Metrics;
use aiprod_shared::store::{
    Reservation, ReserveOutcome, get_budget_day, open_budget_day, reserve_budget,
};
use async_trait::async_trait;
use chrono::NaiveDate;
use sqlx::PgPool;

/// Today's money as routing sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headroom {
    /// Left to reserve now.
    pub remaining: Money,
    /// The whole day's limit.
    pub limit: Money,
}

/// What a reservation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// The job holds the amount.
    Reserved,
    /// The day cannot cover it; this much was left.
    Short(Money),
    /// The job's lease is gone.
    LeaseLost,
}

/// A job asking for money.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    /// The job.
    pub job_id: JobId,
    /// Its lease.
    pub lease_epoch: i64,
    /// The worker holding it.
    pub worker: &'a str,
    /// What the job must hold in all.
    pub amount: Money,
}

/// The budget routing reads and reserves from.
#[async_trait]
pub trait Budget: Send + Sync + 'static {
    /// Today's headroom; `None` when no limit applies.
    async fn headroom(&self) -> Result<Option<Headroom>, String>;
    /// Makes the job hold `ask.amount`.
    async fn reserve(&self, ask: Ask<'_>, note: &str) -> Result<Grant, String>;
}

/// No limit at all.
pub struct Unlimited;

#[async_trait]
impl Budget for Unlimited {
    async fn headroom(&self) -> Result<Option<Headroom>, String> {
        Ok(None)
    }

    async fn reserve(&self, _: Ask<'_>, _: &str) -> Result<Grant, String> {
        Ok(Grant::Reserved)
    }
}

/// A fixed amount left, for tests of routing.
pub struct Fixed(pub Money);

#[async_trait]
impl Budget for Fixed {
    async fn headroom(&self) -> Result<Option<Headroom>, String> {
        Ok(Some(Headroom {
            remaining: self.0,
            limit: self.0,
        }))
    }

    async fn reserve(&self, ask: Ask<'_>, _: &str) -> Result<Grant, String> {
        Ok(if ask.amount <= self.0 {
            Grant::Reserved
        } else {
            Grant::Short(self.0)
        })
    }
}

/// The daily budget ledger in PostgreSQL, shared by the whole fleet. The day is today in the
/// budget's time zone by `clock`; a worker opens it itself if the scheduler has not yet (just
/// past midnight), which is idempotent.
pub struct Ledger {
    pool: PgPool,
    calendar: BudgetCalendar,
    clock: Arc<dyn Clock>,
    opened: Mutex<Option<NaiveDate>>,
}

impl Ledger {
    /// A ledger over `pool`.
    pub fn new(pool: PgPool, calendar: BudgetCalendar, clock: Arc<dyn Clock>) -> Ledger {
        Ledger {
            pool,
            calendar,
            clock,
            opened: Mutex::new(None),
        }
    }

    async fn today(&self) -> Result<NaiveDate, String> {
        let day = self.calendar.day_at(self.clock.now());
        let known = *self.opened.lock().expect("never poisoned") == Some(day);
        if !known {
            open_budget_day(
                &self.pool,
                day,
                self.calendar.zone_name(),
                self.calendar.daily_limit,
            )
            .await
            .map_err(|e| format!("cannot open budget day {day}: {e}"))?;
            *self.opened.lock().expect("never poisoned") = Some(day);
        }
        Ok(day)
    }
}

#[async_trait]
impl Budget for Ledger {
    async fn headroom(&self) -> Result<Option<Headroom>, String> {
        let day = self.today().await?;
        let d = get_budget_day(&self.pool, day)
            .await
            .map_err(|e| format!("cannot read budget day {day}: {e}"))?
            .ok_or_else(|| format!("budget day {day} is not open"))?;
        Ok(Some(Headroom {
            remaining: d.remaining(),
            limit: d.limit,
        }))
    }

    async fn reserve(&self, ask: Ask<'_>, note: &str) -> Result<Grant, String> {
        let day = self.today().await?;
        let r = Reservation {
            job_id: ask.job_id,
            lease_epoch: ask.lease_epoch,
            worker: ask.worker,
            day,
            amount: ask.amount,
            note,
        };
        let outcome = reserve_budget(&self.pool, &r)
            .await
            .map_err(|e| format!("cannot reserve budget: {e}"))?;
        let m = &Metrics::global().budget_reservations;
        Ok(match outcome {
            ReserveOutcome::Reserved { .. } => {
                m.with_label_values(&["reserved"]).inc();
                Grant::Reserved
            }
            ReserveOutcome::Short { remaining } => {
                m.with_label_values(&["short"]).inc();
                Grant::Short(remaining)
            }
            ReserveOutcome::LeaseLost => Grant::LeaseLost,
        })
    }
}
