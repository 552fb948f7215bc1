//! The render cache: a shot whose full specification (backend, model, prompt, keyframe,
//! length, output size and seed) matches one the tenant rendered before reuses that render's
//! artifact at $0, recorded as a cache hit on its own render row. Two jobs that ask for the
//! same shot at once render it once: the first claims the entry (`cache_entry`), the other
//! waits for the claim's render to end, then reuses it, or renders itself if it failed. The
//! claim is filled or freed by the `render_task_cache` trigger when the render ends, whatever
//! path ends it; a claim whose job died is taken over.

use std::time::{Duration, Instant};

use aiprod_backends::RenderedShot;
use aiprod_domain::{BackendName, CacheTier, Money, StepError};
use aiprod_platform::metrics::Metrics;
use aiprod_store::{CacheClaim, Intent, claim_cache, insert_render_hit};
use backon::Retryable;

use super::ShotRenderer;
use crate::dbretry::{db_retry, transient};
use crate::models::digest;

/// How often a job waiting for another's render looks again.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// A shot's full specification, as the cache keys it.
pub(super) struct ShotSpec<'a> {
    /// The tenant: its seeds are its own (see `seed`).
    pub tenant: &'a str,
    pub backend: BackendName,
    pub model: &'a str,
    pub prompt: &'a str,
    pub keyframe_sha256: &'a str,
    pub seconds: u32,
    pub size: &'a str,
}

impl ShotSpec<'_> {
    /// The seed the shot is rendered with: the same specification always gets the same seed
    /// within a tenant, so that the same shot is the same render (31 bits: every provider takes
    /// that). The tenant is in it so that the orphan reconciler, which finds a render by its
    /// seed, never finds another tenant's.
    pub fn seed(&self) -> i64 {
        let h = digest(&[
            self.tenant.as_bytes(),
            self.backend.as_str().as_bytes(),
            self.model.as_bytes(),
            self.prompt.as_bytes(),
            self.keyframe_sha256.as_bytes(),
            &self.seconds.to_be_bytes(),
            self.size.as_bytes(),
        ]);
        i64::from(u32::from_str_radix(&h[..8], 16).unwrap_or(0) >> 1)
    }

    /// The cache's key: everything above and the seed.
    pub fn key(&self) -> String {
        digest(&[
            b"render",
            self.backend.as_str().as_bytes(),
            self.model.as_bytes(),
            self.prompt.as_bytes(),
            self.keyframe_sha256.as_bytes(),
            &self.seconds.to_be_bytes(),
            self.size.as_bytes(),
            &self.seed().to_be_bytes(),
        ])
    }
}

/// What the cache said of a shot.
pub(super) enum Cached {
    /// Reused: the shot is stored, at $0.
    Hit(RenderedShot),
    /// This job renders it, and its render row fills the entry.
    Mine,
}

impl ShotRenderer<'_> {
    /// Claims `key` for this job, waiting while another live job renders it; a ready entry is
    /// recorded as this try's hit.
    pub(super) async fn cached(&self, key: &str, intent: &Intent<'_>) -> Result<Cached, StepError> {
        let m = &Metrics::global().models;
        let started = Instant::now();
        loop {
            let claim = (|| claim_cache(self.pool, self.job_id, CacheTier::Render, key))
                .retry(db_retry())
                .when(transient)
                .await
                .map_err(|e| StepError::Retryable(format!("cannot read the render cache: {e}")))?;
            match claim {
                CacheClaim::Mine => {
                    m.cache_misses.with_label_values(&["render"]).inc();
                    return Ok(Cached::Mine);
                }
                CacheClaim::Pending if self.left().is_some() => {
                    if started.elapsed() < WAIT_POLL {
                        tracing::info!(shot = intent.shot, backend = %intent.backend, "another job is rendering this very shot; waiting to reuse it");
                    }
                    self.pause(WAIT_POLL).await;
                }
                CacheClaim::Pending => {
                    return Err(StepError::Permanent(
                        "the job's deadline passed while it waited for another job's identical render"
                            .into(),
                    ));
                }
                CacheClaim::Ready {
                    value,
                    artifact_uri,
                    cost,
                } => {
                    let Some(uri) = artifact_uri else {
                        return Ok(Cached::Mine);
                    };
                    let qa = value.as_ref().and_then(|v| v.get("qa")).cloned();
                    let row = (|| insert_render_hit(self.pool, intent, &uri, qa.as_ref(), cost))
                        .retry(db_retry())
                        .when(transient)
                        .await
                        .map_err(|e| {
                            StepError::Retryable(format!("cannot record a cache hit: {e}"))
                        })?;
                    let Some(row) = row else {
                        return Err(StepError::Retryable("the job's lease is gone".into()));
                    };
                    m.cache_hits.with_label_values(&["render"]).inc();
                    tracing::info!(shot = intent.shot, backend = %intent.backend, saved = %cost, "reused an identical render");
                    return Ok(Cached::Hit(RenderedShot {
                        index: row.shot as usize,
                        backend: Some(row.backend),
                        remote_id: "cache".into(),
                        uri,
                        duration_s: row.duration_s as u32,
                        cost: Money::ZERO,
                        qa: row.qa.clone(),
                    }));
                }
            }
        }
    }
}
