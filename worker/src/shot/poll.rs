//! Following a submitted render to its end: the backend's poll scheduler (`pollers`) polls it
//! at the provider's cadence (with jitter) until the job's deadline, with throttling as
//! capacity and five failed polls in a row handing the render to the stage's next try; here
//! its verdict is recorded: a failure at the provider classified, a render past the deadline
//! canceled, a finished one downloaded.

use std::sync::Arc;

use aiprod_backends::{Backend, FailureClass, Output, RemoteHandle};
use aiprod_domain::{Money, RenderState, StepError};
use aiprod_platform::metrics::Metrics;
use aiprod_store::{RenderTask, RenderUpdate};
use chrono::Utc;
use serde_json::Value;

use super::ShotRenderer;
use super::end::TryEnd;
use super::pollers::Verdict;

impl ShotRenderer<'_> {
    /// Polls a submitted render to its end, then downloads it.
    pub(super) async fn follow(&self, backend: &Arc<dyn Backend>, task: RenderTask) -> TryEnd {
        let name = backend.name();
        let handle = RemoteHandle(task.remote_id.clone().unwrap_or_default());
        if task.state == RenderState::Rendered {
            let outputs: Vec<Output> = match &task.outputs {
                Some(Value::Array(items)) => items.iter().filter_map(Output::from_json).collect(),
                _ => Vec::new(),
            };
            // A resumed download charges the figure saved with the outputs (download.rs).
            return Box::pin(self.download(backend.as_ref(), task, &handle, outputs, None)).await;
        }
        let started = task.submitted_at.unwrap_or_else(Utc::now);
        // The deadline on the runtime's clock, which the scheduler's timer wheel runs on.
        let deadline = tokio::time::Instant::now() + self.left().unwrap_or_default();
        let verdict = self.pollers.follow(backend, handle.clone(), deadline).await;
        match verdict {
            Verdict::Done(outputs, used) => {
                let secs = (Utc::now() - started).num_milliseconds().max(0) as f64 / 1000.0;
                Metrics::global()
                    .render_duration
                    .with_label_values(&[name.as_str()])
                    .observe(secs);
                // Boxed, like every large step around the wait: a waiting render's future is
                // then only as large as the wait.
                Box::pin(self.download(backend.as_ref(), task, &handle, outputs, used)).await
            }
            Verdict::Failed(class, message) => {
                let cost = if backend.charged_on_failure(class) {
                    Money::from_micros(task.estimated_cost_micros)
                } else {
                    Money::ZERO
                };
                let reason = format!("{message} ({})", class.as_str());
                let r = self.fail(&task, class, &message, cost).await;
                match class {
                    FailureClass::InputSafety => TryEnd::stop_after(
                        r,
                        StepError::Permanent(format!(
                            "{name} refused the input of shot {}: {reason}",
                            task.shot
                        )),
                        false,
                    ),
                    c => TryEnd::next_after(r, reason, c.counts_against_health()),
                }
            }
            Verdict::Expired(m) => {
                let r = self.fail(&task, FailureClass::Lost, &m, Money::ZERO).await;
                TryEnd::next_after(
                    r,
                    format!("the provider no longer knows the render ({m})"),
                    true,
                )
            }
            Verdict::Unreachable(e) => TryEnd::Stop {
                error: StepError::Retryable(format!(
                    "cannot poll {name} render {}: {e}; the next try resumes it",
                    handle.0
                )),
                health: true,
            },
            Verdict::Stopped => TryEnd::halt(StepError::Retryable(format!(
                "the worker stopped polling {name} render {}; the next try resumes it",
                handle.0
            ))),
            Verdict::Deadline => {
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
                TryEnd::stop_after(r.map(|_| ()), StepError::Permanent(why), false)
            }
        }
    }
}
