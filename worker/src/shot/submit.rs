//! The POST of a try, between its intent row and its saved id: throttling waited out (up to a
//! limit), connection failures retried, and a submit with no answer in time never repeated
//! (the render may exist: the row becomes an orphan).

use std::time::Duration;

use aiprod_backends::{Backend, BackendError, Image, ShotRequest};
use aiprod_domain::{FailureClass, Money, RenderState, StepError};
use aiprod_platform::metrics::Metrics;
use aiprod_store::{RenderTask, RenderUpdate};
use chrono::Utc;

use super::ShotRenderer;
use super::end::TryEnd;
use crate::planner::Shot;

impl ShotRenderer<'_> {
    /// POSTs the try and saves the provider's id: the task, now `submitted`, to follow; or
    /// how the try ended before that.
    pub(super) async fn submit(
        &self,
        backend: &dyn Backend,
        mut task: RenderTask,
        shot: &Shot,
        image: &Image,
    ) -> Result<RenderTask, TryEnd> {
        let name = backend.name();
        let req = ShotRequest {
            shot: shot.index,
            prompt: shot.render_prompt(),
            duration_s: task.duration_s as u32,
            image: image.clone(),
            seed: task.seed as u32,
            cancel_after: self.left(),
        };
        let throttle_max = self.backends.throttle_wait_max;
        let mut throttled = Duration::ZERO;
        let mut delays = self.retry.delays();
        let handle = loop {
            if self.left().is_none() {
                let why = "the job's deadline passed before the shot could be submitted";
                return Err(TryEnd::stop_after(
                    self.fail(&task, FailureClass::Deadline, why, Money::ZERO)
                        .await,
                    StepError::Permanent(why.into()),
                    false,
                ));
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
                        let r = self
                            .fail(&task, FailureClass::Throttled, &message, Money::ZERO)
                            .await;
                        return Err(TryEnd::next_after(
                            r,
                            format!("throttled ({message})"),
                            false,
                        ));
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
                        let r = self
                            .fail(&task, FailureClass::Unavailable, &m, Money::ZERO)
                            .await;
                        return Err(TryEnd::next_after(r, m, true));
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
                    return Err(TryEnd::next_after(r.map(|_| ()), note, true));
                }
                Err(BackendError::Rejected(m)) => {
                    let r = self
                        .fail(&task, FailureClass::Rejected, &m, Money::ZERO)
                        .await;
                    return Err(TryEnd::next_after(r, m, false));
                }
                Err(BackendError::Unauthorized(m) | BackendError::Expired(m)) => {
                    let r = self
                        .fail(&task, FailureClass::Unavailable, &m, Money::ZERO)
                        .await;
                    return Err(TryEnd::next_after(r, m, true));
                }
            }
        };
        // Not waited for: the render's polls and download need nothing from the row. If it is
        // refused, the writer fails every later write of the job, its checkpoint included.
        let saved = self
            .update_behind(
                task.id,
                RenderState::Intent,
                RenderUpdate {
                    state: Some(RenderState::Submitted),
                    remote_id: Some(handle.0.clone()),
                    ..RenderUpdate::default()
                },
            )
            .await;
        if let Err(e) = saved {
            tracing::error!(backend = %name, remote_id = %handle.0, error = %e, "cannot save the provider's id");
            return Err(TryEnd::halt(e));
        }
        tracing::info!(backend = %name, shot = task.shot, remote_id = %handle.0, "submitted");
        task.state = RenderState::Submitted;
        task.remote_id = Some(handle.0);
        task.submitted_at = Some(Utc::now());
        Ok(task)
    }
}
