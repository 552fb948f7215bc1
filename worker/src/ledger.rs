//! The budget as the worker sees it: what is left today, and a reservation for a job, both
//! read from the fleet-wide `budget_day` row.

use std::sync::Mutex;

use aiprod_domain::{BudgetCalendar, JobId, Money};
use aiprod_platform::metrics::Metrics;
use aiprod_store::{Reservation, ReserveOutcome, get_budget_day, open_budget_day, reserve_budget};
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

/// The daily budget ledger in PostgreSQL, shared by the whole fleet. The day is today in the
/// budget's time zone; a worker opens it itself if the scheduler has not yet (just
/// past midnight), which is idempotent.
pub struct Ledger {
    pool: PgPool,
    calendar: BudgetCalendar,
    opened: Mutex<Option<NaiveDate>>,
}

impl Ledger {
    /// A ledger over `pool`.
    pub fn new(pool: PgPool, calendar: BudgetCalendar) -> Ledger {
        Ledger {
            pool,
            calendar,
            opened: Mutex::new(None),
        }
    }

    async fn today(&self) -> Result<NaiveDate, String> {
        let day = self.calendar.day_at(chrono::Utc::now());
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

impl Ledger {
    /// Today's headroom.
    pub async fn headroom(&self) -> Result<Headroom, String> {
        let day = self.today().await?;
        let d = get_budget_day(&self.pool, day)
            .await
            .map_err(|e| format!("cannot read budget day {day}: {e}"))?
            .ok_or_else(|| format!("budget day {day} is not open"))?;
        Ok(Headroom {
            remaining: d.remaining(),
            limit: d.limit,
        })
    }

    /// Makes the job hold `ask.amount`, booked to today (or to the day it already holds on).
    pub async fn reserve(&self, ask: Ask<'_>, note: &str) -> Result<Grant, String> {
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
