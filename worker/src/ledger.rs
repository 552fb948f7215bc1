//! The budget as the worker sees it: what is left today for a job, and a reservation for it,
//! both read from the fleet-wide `budget_day` row and, when the job's tenant has a daily budget,
//! from its tenant's day, which lies inside the fleet's.

use std::collections::BTreeMap;
use std::sync::Mutex;

use aiprod_domain::{BackendName, BudgetCalendar, JobId, Money};
use aiprod_platform::metrics::Metrics;
use aiprod_store::{
    BackendHealth, Entitlements, Reservation, ReserveOutcome, Shortfall, job_purse,
    open_budget_day, reserve_budget,
};
use backon::Retryable;
use chrono::NaiveDate;
use sqlx::PgPool;

use crate::dbretry::{db_retry, transient};

/// Today's money for one job as routing sees it: the fleet's day, narrowed by its tenant's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headroom {
    /// Left to reserve now: the least of what the days have left.
    pub remaining: Money,
    /// The whole day's limit: the least of the days' limits.
    pub limit: Money,
    /// Which day is the tighter: the one to name when the job waits.
    pub bound_by: Shortfall,
}

/// What a reservation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// The job holds the amount.
    Reserved,
    /// A day cannot cover it: this much was left, and this day was short.
    Short(Money, Shortfall),
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
    /// Today's headroom for `job`.
    pub async fn headroom(&self, job: JobId) -> Result<Headroom, String> {
        Ok(self.purse(job).await?.0)
    }

    /// Today's headroom for `job` and what its tenant lets it use, read together (routing
    /// needs both, and one statement is one round trip instead of three).
    pub async fn purse(&self, job: JobId) -> Result<(Headroom, Entitlements), String> {
        let (headroom, rights, _) = self.purse_and_health(job, None).await?;
        Ok((headroom, rights))
    }

    /// `purse`, and with `health_for` the backends' circuits as that holder sees them, in the
    /// same statement (the financial stage routes on all three).
    pub async fn purse_and_health(
        &self,
        job: JobId,
        health_for: Option<&str>,
    ) -> Result<(Headroom, Entitlements, BTreeMap<BackendName, BackendHealth>), String> {
        let day = self.today().await?;
        let p = (|| job_purse(&self.pool, job, day, health_for))
            .retry(db_retry())
            .when(transient)
            .await
            .map_err(|e| format!("cannot read budget day {day}: {e}"))?
            .ok_or_else(|| format!("budget day {day} is not open"))?;
        let fleet = Headroom {
            remaining: p.fleet_left,
            limit: p.fleet_limit,
            bound_by: Shortfall::Fleet,
        };
        Ok((narrow(fleet, p.tenant), p.entitlements, p.health))
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
            ReserveOutcome::Short { remaining, of } => {
                m.with_label_values(&["short"]).inc();
                Grant::Short(remaining, of)
            }
            ReserveOutcome::LeaseLost => Grant::LeaseLost,
        })
    }
}

/// The fleet's headroom narrowed by the tenant's `(limit, remaining)`, if it has a day.
fn narrow(fleet: Headroom, tenant: Option<(Money, Money)>) -> Headroom {
    match tenant {
        Some((limit, remaining)) => Headroom {
            remaining: remaining.min(fleet.remaining),
            limit: limit.min(fleet.limit),
            bound_by: if remaining < fleet.remaining {
                Shortfall::Tenant
            } else {
                Shortfall::Fleet
            },
        },
        None => fleet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(s: &str) -> Money {
        s.parse().expect("money")
    }

    #[test]
    fn a_tenant_day_narrows_the_fleet_day_only_where_it_is_tighter() {
        let fleet = Headroom {
            remaining: usd("40"),
            limit: usd("100"),
            bound_by: Shortfall::Fleet,
        };
        assert_eq!(narrow(fleet, None), fleet);
        assert_eq!(
            narrow(fleet, Some((usd("10"), usd("3")))),
            Headroom {
                remaining: usd("3"),
                limit: usd("10"),
                bound_by: Shortfall::Tenant,
            }
        );
        assert_eq!(
            narrow(fleet, Some((usd("500"), usd("60")))),
            Headroom {
                remaining: usd("40"),
                limit: usd("100"),
                bound_by: Shortfall::Fleet,
            }
        );
    }
}
