//! The alert rules, evaluated over SQL, and their delivery. Each evaluation lists what fires
//! now; `sync_alerts` turns that into opened, refreshed and resolved rows (one open alert per
//! rule and subject, so a budget alert fires once a day, not once a minute). Openings and
//! resolutions are logged at once and POSTed to the webhook by a separate task, with backoff,
//! so a slow or failing webhook never holds the scheduler up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aiprod_shared::budget::BudgetCalendar;
use aiprod_shared::metrics::Metrics;
use aiprod_shared::store::{
    Alert, AlertChanges, AlertRule, Firing, Severity, get_budget_day, mark_alert_delivered,
    record_alert_delivery_failure, sync_alerts, undelivered_alerts,
};
use aiprod_shared::{Money, Settings};
use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;

/// Evaluates every rule as of `now`.
pub async fn evaluate_rules(
    pool: &PgPool,
    settings: &Settings,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<Firing>> {
    let a = &settings.alerts;
    let mut firing = Vec::new();
    let window = chrono::Duration::seconds(a.alert_window_s as i64);
    let since = now - window;
    let hours = a.alert_window_s as f64 / 3600.0;

    // Budget: committed (reserved + spent) against today's limit, in exact integers.
    let cal = BudgetCalendar::from_settings(&settings.budget);
    if let Some(d) = get_budget_day(pool, cal.day_at(now)).await? {
        let committed = d.committed();
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
            let reached = i128::from(committed.micros()) * 100
                >= i128::from(d.limit.micros()) * i128::from(pct);
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
    }

    // Quality: the average score of jobs that succeeded in the window, in numeric so that ten
    // scores of 0.6 average 0.6 exactly, not a hair below.
    let (avg, n, breach): (Option<f64>, i64, Option<bool>) = sqlx::query_as(
        "select round(avg(quality_score::numeric), 3)::float8, count(quality_score),
                avg(quality_score::numeric) < $3::numeric
           from job
          where status = 'succeeded' and finished_at > $1 and finished_at <= $2",
    )
    .bind(since)
    .bind(now)
    .bind(a.alert_quality_min.to_string())
    .fetch_one(pool)
    .await?;
    if let (Some(avg), Some(true)) = (avg, breach) {
        firing.push(Firing {
            rule: AlertRule::QualityLow,
            subject: "fleet".into(),
            severity: Severity::Warning,
            summary: format!(
                "average quality {avg:.3} over {n} jobs in the last {hours} h is below {}",
                a.alert_quality_min
            ),
            value: format!("{avg:.3}"),
            threshold: a.alert_quality_min.to_string(),
        });
    }

    // Latency: the pipeline's p95 over jobs that succeeded in the window.
    let p95: Option<f64> = sqlx::query_scalar(
        "select percentile_cont(0.95) within group (order by job_latency_s(created_at, finished_at, waited_ms))
           from job where status = 'succeeded' and finished_at > $1 and finished_at <= $2",
    )
    .bind(since)
    .bind(now)
    .fetch_one(pool)
    .await?;
    if let Some(p95) = p95.filter(|v| *v > a.alert_latency_p95_s as f64) {
        firing.push(Firing {
            rule: AlertRule::LatencyHigh,
            subject: "fleet".into(),
            severity: Severity::Warning,
            summary: format!(
                "pipeline p95 latency {p95:.1} s in the last {hours} h is over {} s",
                a.alert_latency_p95_s
            ),
            value: format!("{p95:.1} s"),
            threshold: format!("{} s", a.alert_latency_p95_s),
        });
    }

    // Backend errors: failed or orphaned render tries in the window. Throttling, deadlines
    // and refused inputs say nothing of the backend's health.
    let errors: Vec<(String, i64)> = sqlx::query_as(
        "select backend::text, count(*) from render_task
          where state in ('failed', 'orphaned')
            and coalesce(failure_class, '') not in ('throttled', 'deadline', 'input_safety')
            and finished_at > $1 and finished_at <= $2
          group by backend having count(*) > $3",
    )
    .bind(since)
    .bind(now)
    .bind(i64::from(a.alert_backend_errors_max))
    .fetch_all(pool)
    .await?;
    for (backend, n) in errors {
        firing.push(Firing {
            rule: AlertRule::BackendErrors,
            subject: backend.clone(),
            severity: Severity::Critical,
            summary: format!(
                "{backend} failed {n} renders in the last {hours} h (more than {})",
                a.alert_backend_errors_max
            ),
            value: n.to_string(),
            threshold: a.alert_backend_errors_max.to_string(),
        });
    }

    // Stuck: unfinished jobs whose lease was reaped more often than allowed.
    let stuck: Vec<(uuid::Uuid, i32, Option<String>)> = sqlx::query_as(
        "select id, reap_count, stage::text from job
          where status in ('queued', 'running') and reap_count > $1
          order by id limit 100",
    )
    .bind(a.alert_reaps_max as i32)
    .fetch_all(pool)
    .await?;
    for (id, reaps, stage) in stuck {
        firing.push(Firing {
            rule: AlertRule::JobStuck,
            subject: id.to_string(),
            severity: Severity::Warning,
            summary: format!(
                "job {id} lost its lease {reaps} times (at stage {}): a worker keeps dying on it",
                stage.as_deref().unwrap_or("?")
            ),
            value: reaps.to_string(),
            threshold: a.alert_reaps_max.to_string(),
        });
    }
    Ok(firing)
}

/// `part / whole` as a percentage with one decimal, computed exactly.
fn share(part: Money, whole: Money) -> String {
    if whole.micros() <= 0 {
        return "100.0 %".into();
    }
    let tenths = i128::from(part.micros()) * 1000 / i128::from(whole.micros());
    format!("{}.{} %", tenths / 10, tenths % 10)
}

/// Evaluates the rules and records the outcome: rows, log lines and metrics.
pub async fn run_alert_rules(
    pool: &PgPool,
    settings: &Settings,
    now: DateTime<Utc>,
) -> anyhow::Result<AlertChanges> {
    let firing = evaluate_rules(pool, settings, now).await?;
    let changes = sync_alerts(pool, &AlertRule::ALL, &firing, now).await?;
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

/// Delivers alerts to a Slack-compatible webhook.
#[derive(Clone)]
pub struct Notifier {
    client: reqwest::Client,
    url: String,
    attempts: u32,
    busy: Arc<AtomicBool>,
    first_delay: Duration,
}

impl Notifier {
    /// A notifier for `AIPROD_ALERT_WEBHOOK_URL`, or `None` when it is unset.
    pub fn from_settings(settings: &Settings) -> Option<Notifier> {
        let url = settings.alerts.alert_webhook_url.clone()?;
        Some(Notifier {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a client with a timeout builds"),
            url,
            attempts: settings.alerts.alert_webhook_attempts,
            busy: Arc::new(AtomicBool::new(false)),
            first_delay: Duration::from_secs(1),
        })
    }

    /// The same notifier with a shorter first backoff delay (tests).
    pub fn with_first_delay(mut self, d: Duration) -> Notifier {
        self.first_delay = d;
        self
    }

    /// Delivers in the background unless a delivery round is already running; returns at once.
    pub fn spawn_delivery(&self, pool: PgPool) {
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.deliver_pending(&pool).await {
                tracing::warn!(error = format!("{e:#}"), "alert delivery round failed");
            }
            me.busy.store(false, Ordering::Release);
        });
    }

    /// Delivers every undelivered opening and resolution, each retried with backoff up to the
    /// tries it has left. Returns how many were delivered.
    pub async fn deliver_pending(&self, pool: &PgPool) -> anyhow::Result<usize> {
        let max = self.attempts as i32;
        let mut delivered = 0;
        for alert in undelivered_alerts(pool, max).await? {
            let resolved = alert.notified_open_at.is_some() && alert.resolved_at.is_some();
            let body = slack_message(&alert, resolved);
            let left = (max - alert.delivery_attempts).max(1) as usize;
            let tries = std::sync::atomic::AtomicI32::new(0);
            let sent = (|| async {
                tries.fetch_add(1, Ordering::Relaxed);
                let r = self.client.post(&self.url).json(&body).send().await?;
                r.error_for_status().map(|_| ())
            })
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(self.first_delay)
                    .with_max_delay(Duration::from_secs(60))
                    .with_max_times(left - 1)
                    .with_jitter(),
            )
            .notify(|e, d| {
                tracing::info!(alert_id = alert.id, error = %e, retry_in_ms = d.as_millis() as u64, "alert webhook failed; retrying");
            })
            .await;
            let tries = tries.load(Ordering::Relaxed);
            match sent {
                Ok(()) => {
                    mark_alert_delivered(pool, alert.id, resolved).await?;
                    delivered += 1;
                }
                Err(e) => {
                    tracing::warn!(alert_id = alert.id, error = %e, tries, "cannot deliver an alert to the webhook");
                    record_alert_delivery_failure(pool, alert.id, tries, &e.to_string()).await?;
                }
            }
        }
        Ok(delivered)
    }
}

/// The alert as Slack's incoming-webhook JSON: a `text` line any compatible receiver shows,
/// and an attachment with the details.
pub fn slack_message(a: &Alert, resolved: bool) -> Value {
    let (icon, color, state) = match (resolved, a.severity) {
        (true, _) => (":white_check_mark:", "#2eb886", "RESOLVED"),
        (false, Severity::Critical) => (":rotating_light:", "#d00000", "CRITICAL"),
        (false, Severity::Warning) => (":warning:", "#daa038", "WARNING"),
    };
    json!({
        "text": format!("{icon} [{state}] {}: {}", a.rule.as_str(), a.summary),
        "attachments": [{
            "color": color,
            "fields": [
                {"title": "rule", "value": a.rule.as_str(), "short": true},
                {"title": "subject", "value": a.subject, "short": true},
                {"title": "value", "value": a.value, "short": true},
                {"title": "threshold", "value": a.threshold, "short": true},
            ],
            "footer": format!("aiprod alert #{}", a.id),
            "ts": a.opened_at.timestamp(),
        }],
    })
}
