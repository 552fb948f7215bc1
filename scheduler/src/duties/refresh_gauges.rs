//! The fleet gauges (budget, waiting jobs, open alerts, SLOs) on the leader's `/metrics`, read
//! from SQL every `AIPROD_ALERT_INTERVAL_MS` (an API replica reads them at each scrape).

use std::sync::Arc;
use std::time::Duration;

use aiprod_platform::Settings;
use aiprod_platform::gauges::refresh_fleet_gauges;
use async_trait::async_trait;
use chrono::Utc;
use sqlx::PgPool;

use crate::duty::Duty;

/// Refreshes the fleet gauges.
pub(crate) struct RefreshGauges {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
}

#[async_trait]
impl Duty for RefreshGauges {
    fn name(&self) -> &'static str {
        "refresh_gauges"
    }

    fn every(&self) -> Duration {
        self.settings.alerts.alert_interval
    }

    async fn run(&self) -> anyhow::Result<()> {
        Ok(refresh_fleet_gauges(&self.pool, &self.settings, Utc::now()).await?)
    }
}
