//! The render of one shot as a write-ahead protocol over `render_task`, the same for every
//! backend (ARCHITECTURE.md, "Never pay twice"):
//!
//! 1. an intent row (job, shot, backend, try) before the POST, reserving the try's money;
//! 2. the POST (`submit`);
//! 3. the provider's id saved at once;
//! 4. polls at the provider's cadence, with jitter, by the backend's poll scheduler
//!    (`pollers`), which the try awaits (`poll`);
//! 5. the output downloaded into our artifact store as its own recorded step (`download`);
//! 6. the actual cost recorded.
//!
//! A worker that finds a `submitted` or `rendered` row resumes it and never submits again. An
//! `intent` row with no id means a crash between the POST and saving the id: the render may
//! exist and be billed, and only a provider that lists renders (Replicate) lets the scheduler's
//! reconciler find it. That window is the one place where a render can be paid twice.
//!
//! Around each try sit the fleet-wide circuit breaker (`circuit`) and the fallback order
//! routing chose.

mod cache;
mod circuit;
mod download;
mod end;
mod keyframe;
mod poll;
mod pollers;
mod rows;
mod semantic;
mod submit;

pub(crate) use pollers::Pollers;
pub(crate) use semantic::Judge;

use std::collections::BTreeMap;
use std::time::Duration;

use aiprod_backends::{Fleet, RenderedShot};
use aiprod_domain::{
    BackendName, CacheTier, FailureClass, JobId, Money, RenderState, RetryPolicy, StepError,
};
use aiprod_platform::config::BackendSettings;
use aiprod_platform::metrics::Metrics;
use aiprod_platform::storage::ArtifactStore;
use aiprod_store::{
    Gate, Intent, IntentOutcome, RenderTask, RenderUpdate, gate, insert_intent, release_cache,
    update_render,
};
use backon::Retryable;
use chrono::{DateTime, Utc};
use rand::Rng;
use sqlx::PgPool;

use crate::dbretry::{db_retry, transient};
use crate::models::judge::SEMANTIC_REJECTED;
use crate::planner::Shot;
use cache::{Cached, ShotSpec};
use end::TryEnd;
pub(crate) use rows::by_shot;
use rows::rendered;

/// How a try that technical QA rejected is described; a shot whose tries ended so fails its
/// job for good once no backend is left (another try on the same backends would be paid again
/// for the same flaw).
pub(crate) const QA_REJECTED: &str = "technical QA rejected its clip";

/// Renders the shots of one job: what the protocol uses, and nothing more.
pub(crate) struct ShotRenderer<'a> {
    /// Semantic QA's judge of each delivered clip, when `AIPROD_QA_SEMANTIC=gemini`.
    pub judge: Option<Judge<'a>>,
    /// Whether the job may reuse identical renders (`cache`).
    pub cache: bool,
    /// Each shot's prompt as the backends hear it, by shot (what the judge scores against).
    pub prompts: &'a BTreeMap<i32, String>,
    /// Each backend's output size as configured (part of a render's specification).
    pub sizes: &'a BTreeMap<BackendName, String>,
    /// The database.
    pub pool: &'a PgPool,
    /// The process's group commit for the protocol's steps; `None` writes each alone.
    pub writer: Option<&'a crate::writer::Writer>,
    /// The process's bound on shots holding a keyframe before their POST.
    pub posting: &'a tokio::sync::Semaphore,
    /// Where shots are copied to.
    pub store: &'a ArtifactStore,
    /// Checks each delivered clip.
    pub media: &'a aiprod_media::Media,
    /// The backends this worker can call.
    pub fleet: &'a Fleet,
    /// The process's poll schedulers, one per backend.
    pub pollers: &'a Pollers,
    /// Prices, the circuit's knobs, throttling.
    pub backends: &'a BackendSettings,
    /// Retries of a submit or a download within one try.
    pub retry: &'a RetryPolicy,
    /// The holder of the job's lease.
    pub worker_id: &'a str,
    /// The job.
    pub job_id: JobId,
    /// Its tenant.
    pub tenant: aiprod_domain::TenantId,
    /// Its lease.
    pub lease_epoch: i64,
    /// When its renders must be done.
    pub deadline: DateTime<Utc>,
}

impl ShotRenderer<'_> {
    /// The circuit's probe holder: the job, so that a resumed job keeps its probe.
    fn holder(&self) -> String {
        self.job_id.to_string()
    }

    /// Renders `shot` from `keyframe`, resuming its last try if one is unfinished, then walking
    /// `candidates` in order.
    #[tracing::instrument(skip_all, fields(job_id = %self.job_id, shot = shot.index))]
    pub async fn render_shot(
        &self,
        shot: &Shot,
        keyframe: &str,
        keyframe_sha256: &str,
        candidates: &[BackendName],
        history: &[RenderTask],
    ) -> Result<RenderedShot, StepError> {
        let mut attempt = history.iter().map(|t| t.attempt).max().unwrap_or(0);
        let mut left: Vec<String> = Vec::new();
        if let Some(last) = history.iter().max_by_key(|t| t.attempt) {
            match last.state {
                RenderState::Downloaded => return Ok(rendered(last)),
                RenderState::Submitted | RenderState::Rendered => {
                    let Some(backend) = self.fleet.get(last.backend) else {
                        return Err(StepError::Permanent(format!(
                            "shot {} is rendering on {} (task {}), which this worker has not \
                             enabled; start a worker with that backend configured",
                            shot.index,
                            last.backend,
                            last.remote_id.as_deref().unwrap_or("?")
                        )));
                    };
                    tracing::info!(shot = shot.index, backend = %last.backend, remote_id = ?last.remote_id, "resuming a render");
                    let end = self.follow(backend, last.clone()).await;
                    if let Some(result) = Box::pin(self.settle(last.backend, end, &mut left)).await
                    {
                        return result;
                    }
                }
                RenderState::Intent => {
                    let note = "the worker stopped between the POST and saving the provider's \
                                id; the render may exist and be billed";
                    tracing::warn!(shot = shot.index, backend = %last.backend, task = %last.id, "{note}");
                    self.update(
                        last.id,
                        RenderState::Intent,
                        RenderUpdate {
                            state: Some(RenderState::Orphaned),
                            error: Some(note.into()),
                            ..RenderUpdate::default()
                        },
                    )
                    .await?;
                    left.push(format!(
                        "{}: try {} was orphaned",
                        last.backend, last.attempt
                    ));
                }
                // The last try ended without a shot: the next backend in line takes it.
                RenderState::Failed | RenderState::Canceled | RenderState::Orphaned => {}
            }
        }
        let holder = self.holder();
        for &name in candidates {
            let Some(backend) = self.fleet.get(name) else {
                left.push(format!("{name}: not enabled on this worker"));
                continue;
            };
            // Read for each try and dropped once the POST is made: a job holds no keyframe in
            // memory while its render runs.
            // A permit per keyframe held: the process holds at most so many at once.
            let held = self
                .posting
                .acquire()
                .await
                .map_err(|e| StepError::Retryable(format!("the worker is stopping: {e}")))?;
            let image = Box::pin(self.image(keyframe)).await?;
            let gate = (|| gate(self.pool, name, &holder, self.backends.circuit_probe_ttl))
                .retry(db_retry())
                .when(transient)
                .await
                .map_err(|e| StepError::Retryable(format!("cannot read {name}'s health: {e}")))?;
            match gate {
                Gate::Pass => {}
                Gate::Probe => {
                    tracing::info!(backend = %name, "this job carries the half-open probe");
                }
                Gate::Blocked(why) => {
                    tracing::info!(backend = %name, %why, "skipping a backend");
                    Metrics::global()
                        .backend_fallbacks
                        .with_label_values(&[name.as_str()])
                        .inc();
                    left.push(format!("{name}: {why}"));
                    continue;
                }
            }
            attempt += 1;
            let seconds = backend.render_seconds(shot.duration_s.unsigned_abs());
            let estimate = self
                .backends
                .prices
                .profile(name)
                .shot_cost(i64::from(seconds));
            let baseline = self
                .backends
                .prices
                .estimate(BackendName::Runway, &[i64::from(shot.duration_s)]);
            let prompt = shot.render_prompt();
            let tenant = self.tenant.to_string();
            let spec = ShotSpec {
                tenant: &tenant,
                backend: name,
                model: &self.backends.prices.profile(name).model,
                prompt: &prompt,
                keyframe_sha256,
                seconds,
                size: self.sizes.get(&name).map_or("", String::as_str),
            };
            // A keyframe of unknown content (a checkpoint from before keyframes were hashed)
            // could match another picture: such a shot is never cached.
            let cacheable = self.cache && !keyframe_sha256.is_empty();
            let key = cacheable.then(|| spec.key());
            let intent = Intent {
                job_id: self.job_id,
                lease_epoch: self.lease_epoch,
                worker_id: self.worker_id,
                shot: shot.index as i32,
                attempt,
                backend: name,
                duration_s: seconds as i32,
                estimate,
                baseline: Some(baseline),
                seed: cacheable.then(|| spec.seed()),
                spec_key: key.as_deref(),
            };
            if let Some(key) = &key
                && let Cached::Hit(shot) = Box::pin(self.cached(key, &intent)).await?
            {
                return Ok(shot);
            }
            let task = Box::pin(self.write_intent(&intent)).await?;
            if !matches!(task, IntentOutcome::Written(_))
                && let Some(key) = &key
                && let Err(e) = release_cache(self.pool, self.job_id, CacheTier::Render, key).await
            {
                tracing::warn!(error = %e, "cannot free a render cache claim; it is taken over once this job ends");
            }
            let task = match task {
                IntentOutcome::Written(task) => *task,
                IntentOutcome::LeaseLost => {
                    return Err(StepError::Retryable("the job's lease is gone".into()));
                }
                IntentOutcome::OverBudget => {
                    let end = TryEnd::Next {
                        reason: format!(
                            "the job's budget day cannot cover another try ({estimate})"
                        ),
                        health: false,
                    };
                    if let Some(result) = Box::pin(self.settle(name, end, &mut left)).await {
                        return result;
                    }
                    continue;
                }
            };
            let submitted = Box::pin(self.submit(backend.as_ref(), task, shot, &image)).await;
            drop(image);
            drop(held);
            let end = match submitted {
                Ok(task) => self.follow(backend, task).await,
                Err(end) => end,
            };
            if let Some(result) = Box::pin(self.settle(name, end, &mut left)).await {
                return result;
            }
        }
        let why = format!(
            "shot {}: no backend rendered it ({})",
            shot.index,
            left.join("; ")
        );
        if left
            .iter()
            .any(|l| l.contains(QA_REJECTED) || l.contains(SEMANTIC_REJECTED))
        {
            return Err(StepError::Permanent(why));
        }
        Err(StepError::Retryable(why))
    }

    /// Writes the intent before the POST: in the process's group commit when it runs, and
    /// alone when the group could not take the money from the job's stripe (the single write
    /// looks at the whole day, and tells a short day from a lost lease).
    async fn write_intent(&self, intent: &Intent<'_>) -> Result<IntentOutcome, StepError> {
        let cannot = |e: &dyn std::fmt::Display| {
            StepError::Retryable(format!("cannot write the render intent: {e}"))
        };
        if let Some(writer) = self.writer
            && let Some(task) = writer.intent(intent).await.map_err(|e| cannot(&e))?
        {
            return Ok(IntentOutcome::Written(Box::new(task)));
        }
        (|| insert_intent(self.pool, intent))
            .retry(db_retry())
            .when(transient)
            .await
            .map_err(|e| cannot(&e))
    }

    async fn update(
        &self,
        id: uuid::Uuid,
        from: RenderState,
        u: RenderUpdate,
    ) -> Result<bool, StepError> {
        if let Some(writer) = self.writer {
            return writer
                .step(self.job_id, id, from, u)
                .await
                .map_err(|e| StepError::Retryable(format!("cannot record a render step: {e}")));
        }
        Box::pin(
            (|| update_render(self.pool, id, from, &u))
                .retry(db_retry())
                .when(transient),
        )
        .await
        .map_err(|e| StepError::Retryable(format!("cannot record a render step: {e}")))
    }

    /// Takes a step without waiting for its commit where the writer runs (`Writer::step_behind`):
    /// whether it was taken is told by the render's next awaited step. Without the writer it
    /// is written at once, and a step not taken is an error here.
    async fn update_behind(
        &self,
        id: uuid::Uuid,
        from: RenderState,
        u: RenderUpdate,
    ) -> Result<(), StepError> {
        let cannot = |e: String| StepError::Retryable(format!("cannot record a render step: {e}"));
        if let Some(writer) = self.writer {
            return writer.step_behind(self.job_id, id, from, u).map_err(cannot);
        }
        match self.update(id, from, u).await? {
            true => Ok(()),
            false => Err(StepError::Retryable(
                "another worker took over this render".into(),
            )),
        }
    }

    /// Closes a try as failed, with what it was charged.
    pub(super) async fn fail(
        &self,
        task: &RenderTask,
        class: FailureClass,
        error: &str,
        cost: Money,
    ) -> Result<(), StepError> {
        self.update(
            task.id,
            task.state,
            RenderUpdate {
                state: Some(RenderState::Failed),
                failure: Some(class),
                error: Some(error.into()),
                cost: Some(cost),
                ..RenderUpdate::default()
            },
        )
        .await
        .map(|_| ())
    }

    pub(super) fn left(&self) -> Option<Duration> {
        (self.deadline - Utc::now())
            .to_std()
            .ok()
            .filter(|d| !d.is_zero())
    }

    /// Sleeps `d`, or until the deadline if that comes first.
    pub(super) async fn pause(&self, d: Duration) {
        let d = self.left().map_or(Duration::ZERO, |left| d.min(left));
        tokio::time::sleep(d).await;
    }
}

/// The provider's cadence ±20 %, so that a fleet's polls do not march in step.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.8..1.2))
}
