//! One function per alert rule: each reads what it measures from SQL (through the store) and
//! returns what fires. Thresholds are the `AIPROD_ALERT_*` settings.

use aiprod_domain::{AlertRule, Money, Severity};
use aiprod_platform::Settings;
use aiprod_platform::config::AlertSettings;
use aiprod_store::{
    Firing, backend_errors_over, get_budget_day, stuck_jobs, window_latency_p95, window_quality,
};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// The window's length for people: `1 h`, `0.5 h`.
fn hours(a: &AlertSettings) -> f64 {
    a.alert_window.as_secs_f64() / 3600.0
}

/// Budget: committed (reserved + spent) against today's limit, at the warning, critical and
/// exhausted shares, in exact integers.
pub(super) async fn budget(
    pool: &PgPool,
    settings: &Settings,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<Firing>> {
    let a = &settings.alerts;
    let cal = settings.budget.calendar();
    let Some(d) = get_budget_day(pool, cal.day_at(now)).await? else {
        return Ok(Vec::new());
    };
    let committed = d.committed();
    let mut firing = Vec::new();
    for (rule, pct, severity) in [
        (
            AlertRule::BudgetWarning,
            a.alert_budget_warning_pct,
            Severity::Warning,
        ),
        (
            AlertRule::BudgetCritical,
            a.alert_budget_critical_pct,
            Severity::Critical,
        ),
        (
            AlertRule::BudgetExhausted,
            a.alert_budget_exhausted_pct,
            Severity::Critical,
        ),
    ] {
        let reached =
            i128::from(committed.micros()) * 100 >= i128::from(d.limit.micros()) * i128::from(pct);
        if reached {
            let shown = share(committed, d.limit);
            firing.push(Firing {
                rule,
                subject: d.day.to_string(),
                severity,
                summary: format!(
                    "budget day {}: {committed} of {} committed ({shown}), at or past {pct} %",
                    d.day, d.limit
                ),
                value: shown,
                threshold: format!("{pct} %"),
            });
        }
    }
    Ok(firing)
}

/// Quality: the average score of the jobs that succeeded in the window, below the floor.
pub(super) async fn quality(
    pool: &PgPool,
    a: &AlertSettings,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Firing>> {
    let q = window_quality(pool, since, now, a.alert_quality_min).await?;
    let (Some(avg), true) = (q.average, q.below) else {
        return Ok(None);
    };
    Ok(Some(Firing {
        rule: AlertRule::QualityLow,
        subject: "fleet".into(),
        severity: Severity::Warning,
        summary: format!(
            "average quality {avg:.3} over {} jobs in the last {} h is below {}",
            q.scored,
            hours(a),
            a.alert_quality_min
        ),
        value: format!("{avg:.3}"),
        threshold: a.alert_quality_min.to_string(),
    }))
}

/// Latency: the pipeline's p95 over the jobs that succeeded in the window, above the bound.
pub(super) async fn latency(
    pool: &PgPool,
    a: &AlertSettings,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Firing>> {
    let bound = a.alert_latency_p95.as_secs();
    let Some(p95) = window_latency_p95(pool, since, now)
        .await?
        .filter(|v| *v > bound as f64)
    else {
        return Ok(None);
    };
    Ok(Some(Firing {
        rule: AlertRule::LatencyHigh,
        subject: "fleet".into(),
        severity: Severity::Warning,
        summary: format!(
            "pipeline p95 latency {p95:.1} s in the last {} h is over {bound} s",
            hours(a)
        ),
        value: format!("{p95:.1} s"),
        threshold: format!("{bound} s"),
    }))
}

/// Backend errors: failed or orphaned render tries in the window, per backend, above the
/// bound. Throttling, deadlines and refused inputs say nothing of the backend's health
/// (`is_backend_error()`).
pub(super) async fn backend_errors(
    pool: &PgPool,
    a: &AlertSettings,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<Firing>> {
    let max = a.alert_backend_errors_max;
    Ok(backend_errors_over(pool, since, now, i64::from(max))
        .await?
        .into_iter()
        .map(|(backend, n)| Firing {
            rule: AlertRule::BackendErrors,
            subject: backend.to_string(),
            severity: Severity::Critical,
            summary: format!(
                "{backend} failed {n} renders in the last {} h (more than {max})",
                hours(a)
            ),
            value: n.to_string(),
            threshold: max.to_string(),
        })
        .collect())
}

/// Stuck: unfinished jobs whose lease was reaped more often than allowed.
pub(super) async fn job_stuck(pool: &PgPool, a: &AlertSettings) -> anyhow::Result<Vec<Firing>> {
    let max = i32::try_from(a.alert_reaps_max).unwrap_or(i32::MAX);
    Ok(stuck_jobs(pool, max)
        .await?
        .into_iter()
        .map(|j| Firing {
            rule: AlertRule::JobStuck,
            subject: j.id.to_string(),
            severity: Severity::Warning,
            summary: format!(
                "job {} lost its lease {} times (at stage {}): a worker keeps dying on it",
                j.id,
                j.reap_count,
                j.stage.map_or("?", |s| s.as_str())
            ),
            value: j.reap_count.to_string(),
            threshold: a.alert_reaps_max.to_string(),
        })
        .collect())
}

/// `part / whole` as a percentage with one decimal, computed exactly.
fn share(part: Money, whole: Money) -> String {
    if whole.micros() <= 0 {
        return "100.0 %".into();
    }
    let tenths = i128::from(part.micros()) * 1000 / i128::from(whole.micros());
    format!("{}.{} %", tenths / 10, tenths % 10)
}
