//! The orphan reconciler. A crash between a render's POST and saving the provider's id leaves
//! an `intent` row (later `orphaned`) for a render that may exist and cost money. Where the
//! provider lists renders (Replicate), the scheduler's leader runs this: it finds the render by
//! the seed we sent and its creation time, cancels it if it still runs, and records its id and
//! cost, so that the books show what was paid. Runway and Vertex list nothing: their orphans
//! stay visible as rows with no id.
//!
//! The same duty settles the model calls a job left unanswered when it ended
//! (`settle_abandoned_model_calls`): charged their estimate, so their reservations do not
//! hold the day's money for ever.

use std::time::Duration;

use aiprod_backends::{Fleet, RemoteHandle};
use aiprod_domain::{FailureClass, Money, RenderState};
use aiprod_platform::metrics::Metrics;
use aiprod_store::{RenderUpdate, adopt_orphan, orphans, update_render};
use async_trait::async_trait;
use chrono::Utc;
use sqlx::PgPool;

use crate::duty::Duty;

/// Looks for every suspected orphan older than `settle` at the providers that list renders.
/// Returns how many were found and recorded.
pub async fn reconcile_orphans(
    pool: &PgPool,
    fleet: &Fleet,
    settle: Duration,
) -> anyhow::Result<usize> {
    let mut adopted = 0;
    for name in fleet.enabled() {
        let Some(backend) = fleet.get(name) else {
            continue;
        };
        let suspects = orphans(pool, name, settle).await?;
        let Some(oldest) = suspects.iter().map(|o| o.created_at).min() else {
            continue;
        };
        let Some(listing) = backend
            .list_since(oldest - chrono::Duration::minutes(5))
            .await
            .map_err(|e| anyhow::anyhow!("cannot list {name} renders: {e}"))?
        else {
            continue;
        };
        for o in suspects {
            let window = o.created_at - chrono::Duration::minutes(1)
                ..o.created_at + chrono::Duration::minutes(10);
            let found = listing
                .iter()
                .find(|r| r.seed.map(i64::from) == Some(o.seed) && window.contains(&r.created_at));
            let Some(r) = found else {
                if o.created_at < Utc::now() - chrono::Duration::hours(1) {
                    // An hour on, the POST never reached the provider: nothing was paid.
                    update_render(
                        pool,
                        o.id,
                        o.state,
                        &RenderUpdate {
                            state: Some(RenderState::Orphaned),
                            failure: Some(FailureClass::NotAtProvider),
                            error: Some("not found at the provider".into()),
                            cost: Some(Money::ZERO),
                            ..RenderUpdate::default()
                        },
                    )
                    .await?;
                }
                continue;
            };
            if r.running
                && let Err(e) = backend.cancel(&RemoteHandle(r.id.clone())).await
            {
                tracing::warn!(backend = %name, remote_id = %r.id, error = %e, "cannot cancel an orphaned render");
            }
            let cost = if r.billed {
                Money::from_micros(o.estimated_cost_micros)
            } else {
                Money::ZERO
            };
            let note = if r.running {
                "orphan found at the provider and canceled; cost recorded at the estimate (an upper bound)"
            } else {
                "orphan found at the provider; its output was never used"
            };
            if adopt_orphan(pool, o.id, &r.id, cost, note).await? {
                tracing::warn!(backend = %name, job_id = %o.job_id, shot = o.shot, remote_id = %r.id, %cost, "reconciled an orphaned render");
                Metrics::global()
                    .backend_errors
                    .with_label_values(&[name.as_str()])
                    .inc();
                adopted += 1;
            }
        }
    }
    Ok(adopted)
}

/// The reconciler as a duty, every `AIPROD_RECONCILE_INTERVAL_MS`, over the real clients only
/// (the simulation leaves no orphans to find).
pub(crate) struct ReconcileOrphans {
    pub pool: PgPool,
    pub fleet: Fleet,
    pub settle: Duration,
    pub every: Duration,
}

#[async_trait]
impl Duty for ReconcileOrphans {
    fn name(&self) -> &'static str {
        "reconcile_orphans"
    }

    fn every(&self) -> Duration {
        self.every
    }

    async fn run(&self) -> anyhow::Result<()> {
        reconcile_orphans(&self.pool, &self.fleet, self.settle).await?;
        // Model calls (plans, keyframes, judgements) a job left unanswered when it ended hold
        // their reservation until settled here.
        let settled = aiprod_store::settle_abandoned_model_calls(&self.pool, 500).await?;
        if settled > 0 {
            tracing::warn!(settled, "charged model calls their jobs left unanswered");
        }
        Ok(())
    }
}
