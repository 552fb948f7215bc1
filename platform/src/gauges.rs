//! The fleet's state as gauges: today's budget, jobs waiting for money, open alerts per rule
//! and SLO attainment. They are read from SQL, so every process that serves `/metrics`
//! reports the same fleet-wide figures.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aiprod_domain::AlertRule;
use aiprod_store::{count_budget_waiters, get_budget_day, open_alert_counts, slo_report};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::Settings;
use crate::metrics::Metrics;

/// How often the SLO gauges are recomputed at most: the report reads a week of jobs, and
/// `/metrics` may be scraped every few seconds by several Prometheus servers.
const SLO_REFRESH: Duration = Duration::from_secs(60);

/// Sets the fleet gauges from the database as of `now` (the SLO gauges at most once a minute
/// per process).
pub async fn refresh_fleet_gauges(
    pool: &PgPool,
    settings: &Settings,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    let m = Metrics::global();
    let cal = settings.budget.calendar();
    let usd = |micros: i64| micros as f64 / 1e6;
    match get_budget_day(pool, cal.day_at(now)).await? {
        Some(d) => {
            m.budget_limit_usd.set(usd(d.limit.micros()));
            m.budget_remaining_usd.set(usd(d.remaining().micros()));
            m.budget_reserved_usd.set(usd(d.reserved.micros()));
            m.budget_spent_usd.set(usd(d.spent.micros()));
        }
        None => {
            m.budget_limit_usd.set(usd(cal.daily_limit.micros()));
            m.budget_remaining_usd.set(usd(cal.daily_limit.micros()));
            m.budget_reserved_usd.set(0.0);
            m.budget_spent_usd.set(0.0);
        }
    }
    m.budget_waiting_jobs.set(count_budget_waiters(pool).await?);
    let open = open_alert_counts(pool).await?;
    for &rule in AlertRule::ALL {
        let n = open.iter().find(|(r, _)| *r == rule).map_or(0, |(_, n)| *n);
        m.alerts_open.with_label_values(&[rule.as_str()]).set(n);
    }
    static LAST_SLO: Mutex<Option<Instant>> = Mutex::new(None);
    let due = LAST_SLO
        .lock()
        .expect("never poisoned")
        .is_none_or(|t| t.elapsed() >= SLO_REFRESH);
    if !due {
        return Ok(());
    }
    *LAST_SLO.lock().expect("never poisoned") = Some(Instant::now());
    for s in slo_report(pool, &settings.alerts.slo_targets(), now).await? {
        if let Some(a) = s.attainment {
            m.slo_attainment.with_label_values(&[&s.slo]).set(a);
        }
    }
    Ok(())
}
