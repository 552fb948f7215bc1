//! Semantic QA of a delivered clip, at delivery, beside technical QA (README, "Semantic QA"):
//! frames sampled by ffmpeg are scored by Gemini vision against the shot's prompt. Below the
//! threshold, `AIPROD_QA_SEMANTIC_ON_FAIL` decides: `rerender` closes the try as rejected and
//! the next backend in the job's order renders the shot (within the budget, as any try, and
//! at most `AIPROD_QA_SEMANTIC_MAX_RERENDERS` times per shot); `fail` fails the job with the
//! scores; `accept` keeps the clip, flagged. A clip the judge cannot score (Gemini down, its
//! answer broken twice) is kept unscored: a prior is never reported as a measurement.

use std::path::Path;
use std::time::Duration;

use aiprod_backends::models::Gemini;
use aiprod_domain::{FailureClass, StepError};
use aiprod_platform::config::ModelSettings;
use aiprod_platform::metrics::Metrics;
use aiprod_store::{RenderTask, render_tasks};
use backon::Retryable;

use super::ShotRenderer;
use crate::dbretry::{db_retry, transient};
use crate::models::judge::{SEMANTIC_REJECTED, SemanticVerdict, judge};
use crate::models::{CallError, ModelCaller};

/// What semantic QA calls.
pub(crate) struct Judge<'a> {
    pub caller: &'a ModelCaller<'a>,
    pub gemini: &'a Gemini,
    pub settings: &'a ModelSettings,
    pub throttle_max: Duration,
}

impl ShotRenderer<'_> {
    /// Scores the clip `file` of try `task`.
    pub(super) async fn semantic(
        &self,
        j: &Judge<'_>,
        task: &RenderTask,
        file: &Path,
    ) -> Result<SemanticVerdict, StepError> {
        let threshold = j.settings.qa_semantic_threshold;
        let unscored = |why: String| {
            tracing::warn!(shot = task.shot, %why, "semantic QA could not score the clip; it stays unscored");
            SemanticVerdict {
                scores: None,
                average: None,
                threshold,
                passed: true,
                flagged: false,
                judge: j.gemini.model().to_owned(),
                unscored_because: Some(why),
            }
        };
        let prompt = self.prompts.get(&task.shot).map_or("", String::as_str);
        let frames = match self
            .media
            .sample_frames(
                file,
                f64::from(task.duration_s),
                j.settings.qa_semantic_frames,
            )
            .await
        {
            Ok(f) => f,
            Err(e) => return Ok(unscored(format!("cannot sample frames: {e}"))),
        };
        let step = format!("judge-{:02}-{}", task.shot, task.attempt);
        match judge(
            j.caller,
            j.gemini,
            j.settings,
            &step,
            prompt,
            frames,
            j.throttle_max,
        )
        .await
        {
            Ok(scores) => {
                let average = scores.average();
                Metrics::global().models.semantic_qa_score.observe(average);
                Ok(SemanticVerdict {
                    average: Some(average),
                    passed: average >= threshold,
                    scores: Some(scores),
                    threshold,
                    flagged: false,
                    judge: j.gemini.model().to_owned(),
                    unscored_because: None,
                })
            }
            Err(CallError::Step(e)) => Err(e),
            Err(e) => Ok(unscored(e.to_string())),
        }
    }

    /// How many of this shot's tries semantic QA rejected before.
    pub(super) async fn semantic_rejections(&self, shot: i32) -> Result<u32, StepError> {
        let tasks = (|| render_tasks(self.pool, self.job_id))
            .retry(db_retry())
            .when(transient)
            .await
            .map_err(|e| StepError::Retryable(format!("cannot read the renders: {e}")))?;
        Ok(tasks
            .iter()
            .filter(|t| {
                t.shot == shot
                    && t.failure == Some(FailureClass::QaRejected)
                    && t.error
                        .as_deref()
                        .is_some_and(|e| e.starts_with(SEMANTIC_REJECTED))
            })
            .count() as u32)
    }
}
