//! A finished render's output copied into our artifact store at once (provider URLs expire),
//! recorded as its own step, then its cost: the provider's own figure where it gives one and the
//! backend is billed by it (Replicate's hardware seconds), else the estimate. The figure is
//! recorded with the outputs, so a download resumed after a crash charges it too.
//!
//! The output is streamed into a scratch file under the size cap, never held in memory, and checked
//! by technical QA before it is stored: a clip QA rejects (`Verdict::Rerender`) closes the try as
//! `qa_rejected`, paid, and the next backend renders the shot; a clip that only needs repair is
//! stored, and assembly repairs it (README, "Media: clips, technical QA and the final video").

use aiprod_backends::{Backend, BackendError, Output, RemoteHandle, RenderedShot};
use aiprod_domain::{FailureClass, HardwareSeconds, Money, RenderState, StepError};
use aiprod_media::{Expect, Verdict};
use aiprod_platform::metrics::Metrics;
use aiprod_store::{RenderTask, RenderUpdate};
use serde_json::Value;

use super::end::TryEnd;
use super::{QA_REJECTED, ShotRenderer};
use crate::models::judge::SEMANTIC_REJECTED;
use aiprod_platform::config::OnSemanticFail;

impl ShotRenderer<'_> {
    /// Stores a finished render's output, then records it and its cost.
    pub(super) async fn download(
        &self,
        backend: &dyn Backend,
        mut task: RenderTask,
        handle: &RemoteHandle,
        mut outputs: Vec<Output>,
        used: Option<HardwareSeconds>,
    ) -> TryEnd {
        let name = backend.name();
        let measured = self.measured(name, &task, used);
        let rendered = task.state == RenderState::Submitted
            && !outputs.iter().any(|o| matches!(o, Output::Inline(_)));
        if rendered || measured.provider_seconds.is_some() {
            // Inline outputs cannot be read back from the row, so such a render stays
            // `submitted` (a resumed try polls it again) and only the provider's figure is kept.
            // Not waited for, as the provider's id: a step that follows and is awaited (a
            // failure) says if this one was refused; a lost lease refuses the checkpoint.
            let recorded = self
                .update_behind(
                    task.id,
                    task.state,
                    RenderUpdate {
                        state: rendered.then_some(RenderState::Rendered),
                        outputs: rendered
                            .then(|| Value::Array(outputs.iter().map(Output::to_json).collect())),
                        ..measured.clone()
                    },
                )
                .await;
            if let Err(error) = recorded {
                return TryEnd::halt(error);
            }
            if rendered {
                task.state = RenderState::Rendered;
            }
            if let Some(c) = measured.provider_cost {
                task.provider_cost_micros = Some(c.micros());
            }
        }
        let cost = Money::from_micros(
            task.provider_cost_micros
                .unwrap_or(task.estimated_cost_micros),
        );
        let scratch = match self.media.scratch_dir() {
            Ok(d) => d,
            Err(e) => return TryEnd::halt(StepError::Retryable(e.to_string())),
        };
        // The same name in scratch and in the store.
        let name_in_store = format!("shot-{:02}-try{}.mp4", task.shot, task.attempt);
        let file = scratch.path().join(&name_in_store);
        let cap = self.media.settings().max_download_bytes;
        let mut delays = self.retry.delays();
        let mut refreshed = false;
        loop {
            let got = match outputs.first() {
                Some(o) => backend.download(o, &file, cap).await,
                None => Err(BackendError::Expired(format!(
                    "{name}: the render has no output"
                ))),
            };
            match got {
                Ok(_) => break,
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
                    let r = self
                        .fail(&task, FailureClass::OutputExpired, &m, cost)
                        .await;
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
        }
        let expect = Expect {
            duration_s: f64::from(task.duration_s),
            audio_required: false,
            tags: Vec::new(),
        };
        let report = match self.media.inspect(&file, &expect).await {
            Ok(i) => i.report,
            Err(e) => {
                return TryEnd::halt(StepError::Retryable(format!(
                    "cannot check shot {}: {e}",
                    task.shot
                )));
            }
        };
        let mut qa = serde_json::to_value(&report).expect("a QA report serialises");
        let metrics = Metrics::global();
        metrics
            .qa_verdicts
            .with_label_values(&[name.as_str(), report.verdict.as_str()])
            .inc();
        if !report.checks.is_empty() {
            let passed = report.checks.iter().filter(|c| c.pass).count();
            metrics
                .models
                .technical_qa_score
                .observe(passed as f64 / report.checks.len() as f64);
        }
        if report.verdict == Verdict::Rerender {
            metrics
                .models
                .qa_rejections
                .with_label_values(&["technical"])
                .inc();
            let why = format!("{QA_REJECTED}: {}", report.failures());
            tracing::warn!(backend = %name, shot = task.shot, %why, "clip rejected");
            let recorded = self.reject(&task, &why, cost, qa).await;
            return TryEnd::next_after(recorded, why, false);
        }
        if let Some(judge) = &self.judge {
            let mut verdict = match self.semantic(judge, &task, &file).await {
                Ok(v) => v,
                Err(e) => return TryEnd::halt(e),
            };
            if !verdict.passed {
                let scores = verdict
                    .scores
                    .as_ref()
                    .map(|s| s.line())
                    .unwrap_or_default();
                let why = format!(
                    "{SEMANTIC_REJECTED}: scored {scores}, under the threshold of {:.1}",
                    verdict.threshold
                );
                match judge.settings.qa_semantic_on_fail {
                    OnSemanticFail::Accept => {
                        tracing::warn!(shot = task.shot, %why, "kept below the threshold, flagged");
                        verdict.flagged = true;
                    }
                    on_fail => {
                        metrics
                            .models
                            .qa_rejections
                            .with_label_values(&["semantic"])
                            .inc();
                        let before = match self.semantic_rejections(task.shot).await {
                            Ok(n) => n,
                            Err(e) => return TryEnd::halt(e),
                        };
                        qa["semantic"] = serde_json::to_value(&verdict).expect("serialises");
                        let recorded = self.reject(&task, &why, cost, qa).await;
                        let cap = judge.settings.qa_semantic_max_rerenders;
                        tracing::warn!(shot = task.shot, %why, rejections = before + 1, cap, "clip rejected by semantic QA");
                        if on_fail == OnSemanticFail::Fail || before >= cap {
                            let rule = if on_fail == OnSemanticFail::Fail {
                                "AIPROD_QA_SEMANTIC_ON_FAIL=fail".to_owned()
                            } else {
                                format!("{cap} re-renders allowed per shot")
                            };
                            let error = StepError::Permanent(format!(
                                "shot {} failed semantic QA: {why} ({rule})",
                                task.shot
                            ));
                            return TryEnd::stop_after(recorded, error, false);
                        }
                        return TryEnd::next_after(recorded, why, false);
                    }
                }
            }
            qa["semantic"] = serde_json::to_value(&verdict).expect("serialises");
        }
        let uri = match self
            .store
            .put_file(self.job_id, &name_in_store, &file)
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
        // Not waited for either: the stage's checkpoint queues behind it, and what the QA
        // stages read of it (the checks) travels in the shot. A step that fails or is refused
        // fails the job's later writes, its checkpoint included (`Writer::step_behind`), so
        // the job never moves on without its cost; in the same transaction, a step not taken
        // means another run holds the job (only the lease holder moves a row on from
        // `rendered`; ARCHITECTURE.md, "Invariants"), whose lease fences the checkpoint out.
        let recorded = self
            .update_behind(
                task.id,
                task.state,
                RenderUpdate {
                    state: Some(RenderState::Downloaded),
                    artifact_uri: Some(uri.clone()),
                    cost: Some(cost),
                    qa: Some(qa.clone()),
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
            qa: Some(qa),
        })
    }
}

impl ShotRenderer<'_> {
    /// The provider's measure of a finished try and what it costs, as the fields that record
    /// them. A figure that cannot be costed (absurdly large) is kept, logged, and not charged.
    fn measured(
        &self,
        name: aiprod_domain::BackendName,
        task: &RenderTask,
        used: Option<HardwareSeconds>,
    ) -> RenderUpdate {
        let Some(used) = used else {
            return RenderUpdate::default();
        };
        let provider_cost = match self.backends.prices.profile(name).hardware_cost(&used) {
            Some(Ok(cost)) => {
                tracing::info!(backend = %name, shot = task.shot, seconds = %used, %cost,
                    estimate = %Money::from_micros(task.estimated_cost_micros),
                    "the provider's figure replaces the estimate");
                Some(cost)
            }
            Some(Err(e)) => {
                tracing::warn!(backend = %name, shot = task.shot, error = %e, "cannot cost the provider's figure; charging the estimate");
                None
            }
            None => None,
        };
        RenderUpdate {
            provider_seconds: Some(used),
            provider_cost,
            ..RenderUpdate::default()
        }
    }

    /// Closes a try whose clip QA rejected: failed as `qa_rejected`, paid (the provider billed
    /// it), with its checks.
    async fn reject(
        &self,
        task: &RenderTask,
        why: &str,
        cost: Money,
        qa: Value,
    ) -> Result<(), StepError> {
        self.update(
            task.id,
            task.state,
            RenderUpdate {
                state: Some(RenderState::Failed),
                failure: Some(FailureClass::QaRejected),
                error: Some(why.to_owned()),
                cost: Some(cost),
                qa: Some(qa),
                ..RenderUpdate::default()
            },
        )
        .await
        .map(|_| ())
    }
}
