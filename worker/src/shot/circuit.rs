//! Each try's end booked in the backend's fleet-wide health (the circuit breaker in
//! `backend_health`): a success closes the circuit (in the statement that marks the try
//! downloaded), a failure that speaks of the backend counts against it, and anything else hands
//! back a half-open probe this job may hold.

use aiprod_domain::{BackendName, StepError};
use aiprod_platform::metrics::Metrics;
use aiprod_store::{record_failure, release_probe};
use backon::Retryable;

use super::ShotRenderer;
use super::end::TryEnd;
use crate::dbretry::{db_retry, transient};
use aiprod_backends::RenderedShot;

impl ShotRenderer<'_> {
    /// Books a try's end in the backend's health; returns the shot's result, or `None` to go on
    /// to the next backend. An end that says nothing of health hands back the half-open probe
    /// if this job holds it (a no-op otherwise), resumed tries included.
    pub(super) async fn settle(
        &self,
        name: BackendName,
        end: TryEnd,
        left: &mut Vec<String>,
    ) -> Option<Result<RenderedShot, StepError>> {
        let metrics = Metrics::global();
        let pool = self.pool;
        let holder = self.holder();
        let holder = holder.as_str();
        let policy = self.backends.circuit_policy();
        let health_failure = |reason: String| async move {
            metrics
                .backend_errors
                .with_label_values(&[name.as_str()])
                .inc();
            let r = (|| record_failure(pool, name, holder, &reason, policy))
                .retry(db_retry())
                .when(transient)
                .await;
            match r {
                Ok(state) => {
                    tracing::info!(backend = %name, ?state, %reason, "backend failure recorded")
                }
                Err(e) => {
                    tracing::warn!(backend = %name, error = %e, "cannot record a backend failure")
                }
            }
        };
        let neutral = || async move {
            if let Err(e) = release_probe(pool, name, holder).await {
                tracing::warn!(backend = %name, error = %e, "cannot hand the probe back; it expires by itself");
            }
        };
        match end {
            // The step that marked the try downloaded closed the circuit (`close_circuits()`).
            TryEnd::Shot(s) => Some(Ok(s)),
            TryEnd::Next { reason, health } => {
                if health {
                    health_failure(reason.clone()).await;
                } else {
                    neutral().await;
                }
                metrics
                    .backend_fallbacks
                    .with_label_values(&[name.as_str()])
                    .inc();
                tracing::warn!(backend = %name, %reason, "falling back to the next backend");
                left.push(format!("{name}: {reason}"));
                None
            }
            TryEnd::Stop { error, health } => {
                if health {
                    health_failure(error.to_string()).await;
                } else {
                    neutral().await;
                }
                Some(Err(error))
            }
        }
    }
}
