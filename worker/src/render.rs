//! The render of one shot as a write-ahead protocol over `render_task`, the same for every
//! backend:
//!
//! 1. an intent row (job, shot, backend, try) before the POST;
//! 2. the POST;
//! 3. the provider's id saved at once;
//! 4. polls at the provider's cadence, with jitter;
//! 5. the output downloaded into our artifact store as its own recorded step;
//! 6. the actual cost recorded.
//!
//! A worker that finds a `submitted` or `rendered` row resumes it and never submits again. An
//! `intent` row with no id means a crash between the POST and saving the id: the render may
//! exist and be billed, and only a provider that lists renders (Replicate) lets the scheduler's
//! reconciler find it. That window is the one place where a render can be paid twice.
//!
//! Around each try sit the fleet-wide circuit breaker (`backend_health`) and the fallback order
//! chosen by `financial`.

use std::collections::BTreeMap;
use std::time::Duration;

use aiprod_shared::Money;
use aiprod_shared::domain::BackendName;
use aiprod_shared::metrics::Metrics;
use aiprod_shared::retry::StepError;
use aiprod_shared::store::{
    CircuitPolicy, Gate, Intent, IntentOutcome, RenderState, RenderTask, RenderUpdate, gate,
    insert_intent, record_failure, record_success, release_probe, update_render,
};
use backon::Retryable;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::Value;

use crate::backend::{
    Backend, BackendError, FailureClass, Image, Output, Poll, RemoteHandle, RenderedShot,
    ShotRequest,
};
use crate::context::WorkerContext;
use crate::dbretry::{db_retry, transient};
use crate::planner::Shot;

/// How one try on one backend ended.
enum TryEnd {
    /// The shot is stored.
    Shot(RenderedShot),
    /// This backend could not render it; the next one in the order may. `health`: the failure
    /// speaks of the backend's health.
    Next { reason: String, health: bool },
    /// Stop here: the stage ends with this error (a later try of the stage resumes whatever
    /// is still running at the provider).
    Stop { error: StepError, health: bool },
}

impl TryEnd {
    /// Stop, for a reason that says nothing of the backend's health.
    fn halt(error: StepError) -> TryEnd {
        TryEnd::Stop {
            error,
            health: false,
        }
    }

    /// Go on to the next backend once the try's end is recorded; stop if it could not be.
    fn next_after(recorded: Result<(), StepError>, reason: String, health: bool) -> TryEnd {
        match recorded {
            Ok(()) => TryEnd::Next { reason, health },
            Err(error) => TryEnd::Stop { error, health },
        }
    }

    /// Stop with `error` once the try's end is recorded, or with the recording's error.
    fn stop_after(recorded: Result<(), StepError>, error: StepError, health: bool) -> TryEnd {
        TryEnd::Stop {
            error: recorded.err().unwrap_or(error),
            health,
        }
    }
}

/// Renders shots of one job.
pub(crate) struct Renderer<'a> {
    pub ctx: &'a WorkerContext,
    pub job_id: aiprod_shared::domain::JobId,
    pub lease_epoch: i64,
    pub deadline: DateTime<Utc>,
}

impl Renderer<'_> {
    fn policy(&self) -> CircuitPolicy {
        let s = &self.ctx.settings;
        CircuitPolicy {
            threshold: s.circuit_failure_threshold,
            cooldown: Duration::from_millis(s.circuit_cooldown_ms),
            cooldown_max: Duration::from_millis(s.circuit_cooldown_max_ms),
        }
    }

    fn holder(&self) -> String {
        self.job_id.to_string()
    }

    /// Renders `shot` from `keyframe`, resuming its last try if one is unfinished, then walking
    /// `candidates` in order.
    pub async fn render_shot(
        &self,
        shot: &Shot,
        keyframe: &str,
        candidates: &[BackendName],
        history: &[RenderTask],
    ) -> Result<RenderedShot, StepError> {
        let mut attempt = history.iter().map(|t| t.attempt).max().unwrap_or(0);
        let mut left: Vec<String> = Vec::new();
        if let Some(last) = history.iter().max_by_key(|t| t.attempt) {
            match last.state {
                RenderState::Downloaded => return Ok(rendered(last)),
                RenderState::Submitted | RenderState::Rendered => {
                    let Some(backend) = self.ctx.backends.get(last.backend) else {
                        return Err(StepError::Permanent(format!(
                            "shot {} is rendering on {} (task {}), which this worker has not \
                             enabled; start a worker with that backend configured",
                            shot.index,
                            last.backend,
                            last.remote_id.as_deref().unwrap_or("?")
                        )));
                    };
                    tracing::info!(shot = shot.index, backend = %last.backend, remote_id = ?last.remote_id, "resuming a render");
                    let end = self.follow(backend.as_ref(), last.clone()).await;
                    if let Some(result) = self.settle(last.backend, end, &mut left).await {
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
                _ => {}
            }
        }
        let image = self.image(keyframe).await?;
        let holder = self.holder();
        for &name in candidates {
            let Some(backend) = self.ctx.backends.get(name) else {
                left.push(format!("{name}: not enabled on this worker"));
                continue;
            };
            let gate = (|| gate(&self.ctx.pool, name, &holder, self.probe_ttl()))
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
                .ctx
                .settings
                .backends
                .profile(name)
                .shot_cost(i64::from(seconds));
            let baseline = self
                .ctx
                .settings
                .backends
                .estimate(BackendName::Runway, &[i64::from(shot.duration_s)]);
            let intent = Intent {
                job_id: self.job_id,
                lease_epoch: self.lease_epoch,
                worker_id: &self.ctx.worker_id,
                shot: shot.index as i32,
                attempt,
                backend: name,
                duration_s: seconds as i32,
                estimate,
                baseline: Some(baseline),
            };
            let task = (|| insert_intent(&self.ctx.pool, &intent))
                .retry(db_retry())
                .when(transient)
                .await
                .map_err(|e| {
                    StepError::Retryable(format!("cannot write the render intent: {e}"))
                })?;
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
                    if let Some(result) = self.settle(name, end, &mut left).await {
                        return result;
                    }
                    continue;
                }
            };
            let end = self
                .submit_and_follow(backend.as_ref(), task, shot, &image)
                .await;
            if let Some(result) = self.settle(name, end, &mut left).await {
                return result;
            }
        }
        Err(StepError::Retryable(format!(
            "shot {}: no backend rendered it ({})",
            shot.index,
            left.join("; ")
        )))
    }

    fn probe_ttl(&self) -> Duration {
        Duration::from_millis(self.ctx.settings.circuit_probe_ttl_ms)
    }

    /// Books a try's end in the backend's health; returns the shot's result, or `None` to go on
    /// to the next backend. An end that says nothing of health hands back the half-open probe
    /// if this job holds it (a no-op otherwise), resumed tries included.
    async fn settle(
        &self,
        name: BackendName,
        end: TryEnd,
        left: &mut Vec<String>,
    ) -> Option<Result<RenderedShot, StepError>> {
        let metrics = Metrics::global();
        let pool = &self.ctx.pool;
        let holder = self.holder();
        let holder = holder.as_str();
        let policy = self.policy();
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
            TryEnd::Shot(s) => {
                if let Err(e) = (|| record_success(pool, name))
                    .retry(db_retry())
                    .when(transient)
                    .await
                {
                    tracing::warn!(backend = %name, error = %e, "cannot record a backend success");
                }
                Some(Ok(s))
            }
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

    async fn update(
        &self,
        id: uuid::Uuid,
        from: RenderState,
        u: RenderUpdate,
    ) -> Result<bool, StepError> {
        (|| update_render(&self.ctx.pool, id, from, &u))
            .retry(db_retry())
            .when(transient)
            .await
            .map_err(|e| StepError::Retryable(format!("cannot record a render step: {e}")))
    }

    /// Closes a try as failed, with what it was charged.
    async fn fail(
        &self,
        task: &RenderTask,
        class: &str,
        error: &str,
        cost: Money,
    ) -> Result<(), StepError> {
        self.update(
            task.id,
            task.state,
            RenderUpdate {
                state: Some(RenderState::Failed),
                failure_class: Some(class.into()),
                error: Some(error.into()),
                cost: Some(cost),
                ..RenderUpdate::default()
            },
        )
        .await
        .map(|_| ())
    }

    fn left(&self) -> Option<Duration> {
        (self.deadline - Utc::now())
            .to_std()
            .ok()
            .filter(|d| !d.is_zero())
    }

    /// Sleeps `d`, or until the deadline if that comes first.
    async fn pause(&self, d: Duration) {
        let d = self.left().map_or(Duration::ZERO, |left| d.min(left));
        tokio::time::sleep(d).await;
    }

    async fn submit_and_follow(
        &self,
        backend: &dyn Backend,
        mut task: RenderTask,
        shot: &Shot,
        image: &Image,
    ) -> TryEnd {
        let name = backend.name();
        let req = ShotRequest {
            prompt: shot.prompt.clone(),
            duration_s: task.duration_s as u32,
            image: image.clone(),
            seed: task.seed as u32,
            cancel_after: self.left(),
        };
        let throttle_max = Duration::from_millis(self.ctx.settings.throttle_wait_max_ms);
        let mut throttled = Duration::ZERO;
        let mut delays = self.ctx.settings.retry.delays();
        let handle = loop {
            if self.left().is_none() {
                let why = "the job's deadline passed before the shot could be submitted";
                return TryEnd::stop_after(
                    self.fail(&task, "deadline", why, Money::ZERO).await,
                    StepError::Permanent(why.into()),
                    false,
                );
            }
            let result = backend.submit(&req).await;
            match result {
                Ok(h) => break h,
                Err(BackendError::Throttled {
                    message,
                    retry_after,
                }) => {
                    let wait = retry_after.unwrap_or_else(|| backend.poll_interval());
                    if throttled + wait > throttle_max {
                        let r = self.fail(&task, "throttled", &message, Money::ZERO).await;
                        return TryEnd::next_after(r, format!("throttled ({message})"), false);
                    }
                    tracing::info!(backend = %name, wait_ms = wait.as_millis() as u64, "provider throttled the submit; waiting");
                    throttled += wait;
                    self.pause(wait).await;
                }
                Err(BackendError::Transient(m)) => match delays.next() {
                    Some(d) => {
                        Metrics::global()
                            .backend_errors
                            .with_label_values(&[name.as_str()])
                            .inc();
                        tracing::info!(backend = %name, error = %m, "submit failed before reaching the provider; retrying");
                        self.pause(d).await;
                    }
                    None => {
                        let r = self.fail(&task, "unavailable", &m, Money::ZERO).await;
                        return TryEnd::next_after(r, m, true);
                    }
                },
                Err(BackendError::Timeout(m)) => {
                    // The provider may have started it: never POST again; leave it to the
                    // reconciler.
                    let note = format!("{m}; the render may exist at the provider");
                    let r = self
                        .update(
                            task.id,
                            RenderState::Intent,
                            RenderUpdate {
                                state: Some(RenderState::Orphaned),
                                error: Some(note.clone()),
                                ..RenderUpdate::default()
                            },
                        )
                        .await;
                    return TryEnd::next_after(r.map(|_| ()), note, true);
                }
                Err(BackendError::Rejected(m)) => {
                    let r = self.fail(&task, "rejected", &m, Money::ZERO).await;
                    return TryEnd::next_after(r, m, false);
                }
                Err(BackendError::Unauthorized(m) | BackendError::Expired(m)) => {
                    let r = self.fail(&task, "unavailable", &m, Money::ZERO).await;
                    return TryEnd::next_after(r, m, true);
                }
            }
        };
        let saved = self
            .update(
                task.id,
                RenderState::Intent,
                RenderUpdate {
                    state: Some(RenderState::Submitted),
                    remote_id: Some(handle.0.clone()),
                    ..RenderUpdate::default()
                },
            )
            .await;
        match saved {
            Ok(true) => {}
            Ok(false) => {
                return TryEnd::halt(StepError::Retryable(
                    "another worker took over this render".into(),
                ));
            }
            Err(e) => {
                tracing::error!(backend = %name, remote_id = %handle.0, "cannot save the provider's id: the render is an orphan");
                return TryEnd::halt(e);
            }
        }
        tracing::info!(backend = %name, shot = task.shot, remote_id = %handle.0, "submitted");
        task.state = RenderState::Submitted;
        task.remote_id = Some(handle.0);
        task.submitted_at = Some(Utc::now());
        self.follow(backend, task).await
    }

    /// Polls a submitted render to its end, then downloads it.
    async fn follow(&self, backend: &dyn Backend, task: RenderTask) -> TryEnd {
        let name = backend.name();
        let handle = RemoteHandle(task.remote_id.clone().unwrap_or_default());
        if task.state == RenderState::Rendered {
            let outputs: Vec<Output> = match &task.outputs {
                Some(Value::Array(items)) => items.iter().filter_map(Output::from_json).collect(),
                _ => Vec::new(),
            };
            return self.download(backend, task, &handle, outputs).await;
        }
        let started = task.submitted_at.unwrap_or_else(Utc::now);
        let mut errors = 0u32;
        let mut wait = Duration::ZERO;
        loop {
            if self.left().is_none() {
                if let Err(e) = backend.cancel(&handle).await {
                    tracing::warn!(backend = %name, remote_id = %handle.0, error = %e, "cannot cancel a render past its deadline");
                }
                let why = format!(
                    "shot {} passed the job's deadline while rendering on {name}; the render was canceled",
                    task.shot
                );
                let r = self
                    .update(
                        task.id,
                        RenderState::Submitted,
                        RenderUpdate {
                            state: Some(RenderState::Canceled),
                            failure_class: Some("deadline".into()),
                            error: Some(why.clone()),
                            cost: Some(Money::ZERO),
                            ..RenderUpdate::default()
                        },
                    )
                    .await;
                return TryEnd::stop_after(r.map(|_| ()), StepError::Permanent(why), false);
            }
            self.pause(wait).await;
            wait = jitter(backend.poll_interval());
            match backend.poll(&handle).await {
                Ok(Poll::Pending(_) | Poll::Throttled) => errors = 0,
                Ok(Poll::Done(outputs)) => {
                    let secs = (Utc::now() - started).num_milliseconds().max(0) as f64 / 1000.0;
                    Metrics::global()
                        .render_duration
                        .with_label_values(&[name.as_str()])
                        .observe(secs);
                    return self.download(backend, task, &handle, outputs).await;
                }
                Ok(Poll::Failed(class, message)) => {
                    let cost = if backend.charged_on_failure(class) {
                        Money::from_micros(task.estimated_cost_micros)
                    } else {
                        Money::ZERO
                    };
                    let reason = format!("{message} ({})", class.as_str());
                    let r = self.fail(&task, class.as_str(), &message, cost).await;
                    return match class {
                        FailureClass::InputSafety => TryEnd::stop_after(
                            r,
                            StepError::Permanent(format!(
                                "{name} refused the input of shot {}: {reason}",
                                task.shot
                            )),
                            false,
                        ),
                        c => TryEnd::next_after(r, reason, c.counts_against_health()),
                    };
                }
                Err(BackendError::Throttled { retry_after, .. }) => {
                    wait = retry_after.unwrap_or(wait);
                }
                Err(BackendError::Expired(m)) => {
                    let r = self.fail(&task, "lost", &m, Money::ZERO).await;
                    return TryEnd::next_after(
                        r,
                        format!("the provider no longer knows the render ({m})"),
                        true,
                    );
                }
                Err(e) => {
                    errors += 1;
                    Metrics::global()
                        .backend_errors
                        .with_label_values(&[name.as_str()])
                        .inc();
                    if errors >= 5 {
                        return TryEnd::Stop {
                            error: StepError::Retryable(format!(
                                "cannot poll {name} render {}: {e}; the next try resumes it",
                                handle.0
                            )),
                            health: true,
                        };
                    }
                }
            }
        }
    }

    /// Stores a finished render's output, then records it and its cost.
    async fn download(
        &self,
        backend: &dyn Backend,
        mut task: RenderTask,
        handle: &RemoteHandle,
        mut outputs: Vec<Output>,
    ) -> TryEnd {
        let name = backend.name();
        if task.state == RenderState::Submitted
            && !outputs.iter().any(|o| matches!(o, Output::Inline(_)))
        {
            let recorded = self
                .update(
                    task.id,
                    RenderState::Submitted,
                    RenderUpdate {
                        state: Some(RenderState::Rendered),
                        outputs: Some(Value::Array(outputs.iter().map(Output::to_json).collect())),
                        ..RenderUpdate::default()
                    },
                )
                .await;
            if let Err(error) = recorded {
                return TryEnd::halt(error);
            }
            task.state = RenderState::Rendered;
        }
        let cost = Money::from_micros(task.estimated_cost_micros);
        let mut delays = self.ctx.settings.retry.delays();
        let mut refreshed = false;
        let bytes = loop {
            let got = match outputs.first() {
                Some(o) => backend.download(o).await,
                None => Err(BackendError::Expired(format!(
                    "{name}: the render has no output"
                ))),
            };
            match got {
                Ok(b) => break b,
                Err(BackendError::Expired(m)) if !refreshed => {
                    refreshed = true;
                    tracing::info!(backend = %name, error = %m, "output gone; asking for fresh URLs");
                    match backend.fetch_output(handle).await {
                        Ok(fresh) => outputs = fresh,
                        Err(e) => {
                            tracing::warn!(backend = %name, error = %e, "cannot get fresh output URLs")
                        }
                    }
                }
                Err(BackendError::Expired(m)) => {
                    // Paid for, and lost: the provider deleted it before we stored it.
                    let r = self.fail(&task, "output_expired", &m, cost).await;
                    return TryEnd::next_after(
                        r,
                        format!("its output expired before download ({m})"),
                        false,
                    );
                }
                Err(e) => match delays.next() {
                    Some(d) => self.pause(d).await,
                    None => {
                        return TryEnd::halt(StepError::Retryable(format!(
                            "cannot download shot {}: {e}",
                            task.shot
                        )));
                    }
                },
            }
        };
        let name_in_store = format!("shot-{:02}-try{}.mp4", task.shot, task.attempt);
        let uri = match self
            .ctx
            .store
            .put(self.job_id, &name_in_store, &bytes)
            .await
        {
            Ok(u) => u,
            Err(e) => {
                return TryEnd::halt(StepError::Retryable(format!(
                    "cannot store shot {}: {e}",
                    task.shot
                )));
            }
        };
        let recorded = self
            .update(
                task.id,
                task.state,
                RenderUpdate {
                    state: Some(RenderState::Downloaded),
                    artifact_uri: Some(uri.clone()),
                    cost: Some(cost),
                    ..RenderUpdate::default()
                },
            )
            .await;
        if let Err(error) = recorded {
            return TryEnd::halt(error);
        }
        TryEnd::Shot(RenderedShot {
            index: task.shot as usize,
            backend: Some(name),
            remote_id: handle.0.clone(),
            uri,
            duration_s: task.duration_s as u32,
            cost,
        })
    }

    /// The keyframe as the providers take it: our stored frame inline, a client's URL as is.
    async fn image(&self, keyframe: &str) -> Result<Image, StepError> {
        if let Some(rest) = keyframe.strip_prefix("data:") {
            let (meta, data) = rest.split_once(',').unwrap_or(("", rest));
            let mime = meta.trim_end_matches(";base64").to_owned();
            let data = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| StepError::Permanent(format!("image_url is not valid base64: {e}")))?;
            return Ok(Image::Inline { mime, data });
        }
        if keyframe.starts_with("http://") || keyframe.starts_with("https://") {
            return Ok(Image::Url(keyframe.to_owned()));
        }
        let data = self
            .ctx
            .store
            .get(keyframe)
            .await
            .map_err(|e| StepError::Retryable(format!("cannot read the keyframe: {e}")))?;
        let mime = if keyframe.ends_with(".png") {
            "image/png"
        } else {
            "image/x-portable-pixmap"
        };
        Ok(Image::Inline {
            mime: mime.into(),
            data,
        })
    }
}

/// The provider's cadence ±20 %, so that a fleet's polls do not march in step.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.8..1.2))
}

fn rendered(t: &RenderTask) -> RenderedShot {
    RenderedShot {
        index: t.shot as usize,
        backend: Some(t.backend),
        remote_id: t.remote_id.clone().unwrap_or_default(),
        uri: t.artifact_uri.clone().unwrap_or_default(),
        duration_s: t.duration_s as u32,
        cost: Money::from_micros(t.cost_micros.unwrap_or(t.estimated_cost_micros)),
    }
}

/// A job's render rows, by shot.
pub(crate) fn by_shot(tasks: Vec<RenderTask>) -> BTreeMap<i32, Vec<RenderTask>> {
    let mut map: BTreeMap<i32, Vec<RenderTask>> = BTreeMap::new();
    for t in tasks {
        map.entry(t.shot).or_default().push(t);
    }
    map
}
