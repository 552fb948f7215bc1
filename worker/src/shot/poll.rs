//! Polling a submitted render to its end at the provider's cadence (with jitter), until the
//! job's deadline: throttling is capacity, five failed polls in a row hand the render to the
//! stage's next try, and a failure at the provider is classified.

use std::time::Duration;

use aiprod_backends::{Backend, BackendError, FailureClass, Output, Poll, RemoteHandle};
use aiprod_domain::{Money, RenderState, StepError};
use aiprod_platform::metrics::Metrics;
use aiprod_store::{RenderTask, RenderUpdate};
use chrono::Utc;
use serde_json::Value;

use super::end::TryEnd;
use super::{ShotRenderer, jitter};

impl ShotRenderer<'_> {
    /// Polls a submitted render to its end, then downloads it.
    pub(super) async fn follow(&self, backend: &dyn Backend, task: RenderTask) -> TryEnd {
        let name = backend.name();
        let handle = RemoteHandle(task.remote_id.clone().unwrap_or_default());
        if task.state == RenderState::Rendered {
            let outputs: Vec<Output> = match &task.outputs {
                Some(Value::Array(items)) => items.iter().filter_map(Output::from_json).collect(),
                _ => Vec::new(),
            };
            return self.download(backend, task, &handle, outputs, None).await;
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
                            failure: Some(FailureClass::Deadline),
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
                Ok(Poll::Done(outputs, used)) => {
                    let secs = (Utc::now() - started).num_milliseconds().max(0) as f64 / 1000.0;
                    Metrics::global()
                        .render_duration
                        .with_label_values(&[name.as_str()])
                        .observe(secs);
                    return self.download(backend, task, &handle, outputs, used).await;
                }
                Ok(Poll::Failed(class, message)) => {
                    let cost = if backend.charged_on_failure(class) {
                        Money::from_micros(task.estimated_cost_micros)
                    } else {
                        Money::ZERO
                    };
                    let reason = format!("{message} ({})", class.as_str());
                    let r = self.fail(&task, class, &message, cost).await;
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
                    let r = self.fail(&task, FailureClass::Lost, &m, Money::ZERO).await;
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
}
