//! Simulated backends for `aiprod dev` and tests: each with its seed profile of cost, quality
//! and relative latency, failing at the configured rate, and writing a real MP4 container of
//! the shot's length into the artifact store.

use std::time::Duration;

use aiprod_shared::domain::{BackendName, JobId};
use aiprod_shared::mp4;
use aiprod_shared::pricing::PriceTable;
use aiprod_shared::retry::StepError;
use aiprod_shared::storage::ArtifactStore;
use async_trait::async_trait;
use rand::Rng;

use super::{Backends, RenderedShot};
use crate::planner::Shot;

/// Every backend, simulated.
pub struct SimulatedBackends {
    prices: PriceTable,
    store: ArtifactStore,
    base_latency: Duration,
    failure_rate: f64,
}

impl SimulatedBackends {
    /// Simulated backends with the given profiles, base latency and failure rate (0–1).
    pub fn new(
        prices: PriceTable,
        store: ArtifactStore,
        base_latency: Duration,
        failure_rate: f64,
    ) -> Self {
        SimulatedBackends {
            prices,
            store,
            base_latency,
            failure_rate,
        }
    }
}

#[async_trait]
impl Backends for SimulatedBackends {
    fn enabled(&self) -> Vec<BackendName> {
        BackendName::ALL.to_vec()
    }

    async fn render(
        &self,
        backend: BackendName,
        job: JobId,
        shot: &Shot,
        _keyframe_uri: &str,
    ) -> Result<RenderedShot, StepError> {
        let profile = self.prices.profile(backend);
        let latency = self.base_latency.mul_f64(profile.latency_factor);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if self.failure_rate > 0.0 && rand::rng().random_bool(self.failure_rate) {
            return Err(StepError::Retryable(format!(
                "simulated {backend} render of shot {} failed",
                shot.index
            )));
        }
        let remote_id = format!("sim-{backend}-{}", uuid::Uuid::new_v4());
        let payload = format!("{remote_id}\n{}\n", shot.prompt);
        let bytes = mp4::write_minimal(
            Duration::from_secs(shot.duration_s as u64),
            payload.as_bytes(),
        );
        let uri = self
            .store
            .put(job, &format!("shot-{:02}.mp4", shot.index), &bytes)
            .await
            .map_err(|e| StepError::Retryable(e.to_string()))?;
        Ok(RenderedShot {
            index: shot.index,
            remote_id,
            uri,
            cost: profile.shot_cost(i64::from(shot.duration_s)),
        })
    }
}
