//! The alert rules as a duty: evaluated every `AIPROD_ALERT_INTERVAL_MS`, their openings and
//! resolutions delivered to the webhook in the background.

use std::sync::Arc;
use std::time::Duration;

use aiprod_platform::Settings;
use async_trait::async_trait;
use chrono::Utc;
use sqlx::PgPool;

use crate::alerts::{Notifier, run_alert_rules};
use crate::duty::Duty;

/// Evaluates the rules, then hands what is undelivered to the webhook without waiting for it.
pub(crate) struct EvaluateAlerts {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    pub notifier: Option<Notifier>,
}

#[async_trait]
impl Duty for EvaluateAlerts {
    fn name(&self) -> &'static str {
        "evaluate_alerts"
    }

    fn every(&self) -> Duration {
        self.settings.alerts.alert_interval
    }

    async fn run(&self) -> anyhow::Result<()> {
        let evaluated = run_alert_rules(&self.pool, &self.settings, Utc::now()).await;
        // Deliver what earlier evaluations left undelivered even when this one failed.
        if let Some(n) = &self.notifier {
            n.spawn_delivery(self.pool.clone());
        }
        evaluated.map(drop)
    }
}
