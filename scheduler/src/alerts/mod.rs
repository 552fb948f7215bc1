//! The alert rules, evaluated over SQL, one function per rule (`rules`), and their delivery
//! (`webhook`). Each evaluation lists what fires now; `sync_alerts` turns that into opened,
//! refreshed and resolved rows (one open alert per rule and subject, so a budget alert fires
//! once a day, not once a minute). Openings and resolutions are logged at once and POSTed to
//! the webhook by a separate task.

mod rules;
mod webhook;

use aiprod_domain::AlertRule;
use aiprod_platform::Settings;
use aiprod_platform::metrics::Metrics;
use aiprod_store::{AlertChanges, Firing, sync_alerts};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

pub use webhook::{Notifier, slack_message};

/// Evaluates every rule as of `now`.
pub async fn evaluate_rules(
    pool: &PgPool,
    settings: &Settings,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<Firing>> {
    let a = &settings.alerts;
    let since = now - chrono::Duration::from_std(a.alert_window)?;
    let mut firing = Vec::new();
    firing.extend(rules::budget(pool, settings, now).await?);
    firing.extend(rules::quality(pool, a, since, now).await?);
    firing.extend(rules::latency(pool, a, since, now).await?);
    firing.extend(rules::backend_errors(pool, a, since, now).await?);
    firing.extend(rules::job_stuck(pool, a).await?);
    Ok(firing)
}

/// Evaluates the rules and records the outcome: rows, log lines and metrics.
pub async fn run_alert_rules(
    pool: &PgPool,
    settings: &Settings,
    now: DateTime<Utc>,
) -> anyhow::Result<AlertChanges> {
    let firing = evaluate_rules(pool, settings, now).await?;
    let changes = sync_alerts(pool, AlertRule::ALL, &firing, now).await?;
    for a in &changes.opened {
        Metrics::global()
            .alerts_fired
            .with_label_values(&[a.rule.as_str()])
            .inc();
        tracing::warn!(
            target: "aiprod::alert",
            alert_id = a.id,
            rule = a.rule.as_str(),
            subject = %a.subject,
            severity = ?a.severity,
            value = %a.value,
            threshold = %a.threshold,
            "alert opened: {}",
            a.summary
        );
    }
    for a in &changes.resolved {
        tracing::info!(
            target: "aiprod::alert",
            alert_id = a.id,
            rule = a.rule.as_str(),
            subject = %a.subject,
            "alert resolved: {}",
            a.summary
        );
    }
    Ok(changes)
}
