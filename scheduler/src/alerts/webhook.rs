//! Delivery of alert openings and resolutions to a Slack-compatible webhook: retried with
//! backoff in the background, so a slow or failing webhook never holds the scheduler up.
//!
//! The webhook's URL is a credential (a Slack webhook's path is its secret), and reqwest puts
//! the URL in its errors: a delivery's error is logged and stored only as
//! `aiprod_platform::redact::error_text` gives it, without the URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aiprod_domain::Severity;
use aiprod_platform::Settings;
use aiprod_platform::redact::{error_text, redact_urls};
use aiprod_store::{
    Alert, mark_alert_delivered, record_alert_delivery_failure, undelivered_alerts,
};
use backon::{ExponentialBuilder, Retryable};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sqlx::PgPool;

/// Delivers alerts to a Slack-compatible webhook.
#[derive(Clone)]
pub struct Notifier {
    client: reqwest::Client,
    url: SecretString,
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
                // A webhook answers by itself; following a redirect would send the alert
                // wherever the answer points.
                .redirect(reqwest::redirect::Policy::none())
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
                tracing::warn!(
                    error = redact_urls(&format!("{e:#}")),
                    "alert delivery round failed"
                );
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
                let r = self
                    .client
                    .post(self.url.expose_secret())
                    .json(&body)
                    .send()
                    .await?;
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
                tracing::info!(
                    alert_id = alert.id,
                    error = error_text(e),
                    retry_in_ms = d.as_millis() as u64,
                    "alert webhook failed; retrying"
                );
            })
            .await;
            let tries = tries.load(Ordering::Relaxed);
            match sent {
                Ok(()) => {
                    mark_alert_delivered(pool, alert.id, resolved).await?;
                    delivered += 1;
                }
                Err(e) => {
                    let error = error_text(&e);
                    tracing::warn!(alert_id = alert.id, %error, tries, "cannot deliver an alert to the webhook");
                    record_alert_delivery_failure(pool, alert.id, tries, &error).await?;
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
