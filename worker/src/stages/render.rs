//! `render`: renders every shot, concurrently, through the write-ahead protocol of
//! `crate::shot`: resumed after a crash, on the backend routing chose and then down its fallback
//! order.

use aiprod_backends::RenderedShot;
use aiprod_domain::routing::Routing;
use aiprod_domain::{Money, Stage, StepError};
use aiprod_store::{JobPatch, render_tasks};
use backon::Retryable;
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};

use super::visual::Visual;
use super::{JobState, StageOutput};
use crate::dbretry::{db_retry, transient};
use crate::shot::{ShotRenderer, by_shot};

/// The rendered shots and what they cost.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Render {
    pub shots: Vec<RenderedShot>,
    pub cost: Money,
}

/// Each shot's QA checks as its render row records them, in the order of `r.shots`: carried by
/// the shot itself, or read from its row when it does not carry them (a render output from
/// before they were carried). Only such shots are looked up: their rows were committed before
/// the output was made (a resumed or cached shot), while a shot downloaded in this run may still
/// have its step queued in the writer.
pub(crate) async fn recorded_checks(
    pool: &sqlx::PgPool,
    job: &JobState,
    r: &Render,
) -> Result<Vec<Option<serde_json::Value>>, StepError> {
    if r.shots.iter().all(|s| s.qa.is_some()) {
        return Ok(r.shots.iter().map(|s| s.qa.clone()).collect());
    }
    let tasks = (|| render_tasks(pool, job.id))
        .retry(db_retry())
        .when(transient)
        .await
        .map_err(|e| StepError::Retryable(format!("cannot read the renders: {e}")))?;
    Ok(r.shots
        .iter()
        .map(|shot| {
            shot.qa.clone().or_else(|| {
                tasks
                    .iter()
                    .find(|t| t.artifact_uri.as_deref() == Some(shot.uri.as_str()))
                    .and_then(|t| t.qa.clone())
            })
        })
        .collect())
}

pub(crate) async fn run(
    job: &JobState,
    renderer: &ShotRenderer<'_>,
) -> Result<StageOutput, StepError> {
    let routing: Routing = job.output(Stage::Financial)?;
    let v: Visual = job.output(Stage::Visual)?;
    // A run whose rows are all its own, on this stage's first try, has rendered nothing yet.
    let history = if job.fresh {
        Vec::new()
    } else {
        (|| render_tasks(renderer.pool, job.id))
            .retry(db_retry())
            .when(transient)
            .await
            .map_err(|e| StepError::Retryable(format!("cannot read earlier renders: {e}")))?
    };
    let history = by_shot(history);
    let candidates = routing.candidates();
    let renders = v.shots.iter().map(|s| {
        let past = history
            .get(&(s.shot.index as i32))
            .map(Vec::as_slice)
            .unwrap_or_default();
        renderer.render_shot(
            &s.shot,
            &s.keyframe_uri,
            &s.keyframe_sha256,
            &candidates,
            past,
        )
    });
    let shots = try_join_all(renders).await?;
    let cost = shots.iter().map(|s| s.cost).sum();
    // The job's backend is the one that rendered it, when one backend rendered every shot.
    let backend = shots
        .first()
        .and_then(|s| s.backend)
        .filter(|b| shots.iter().all(|s| s.backend == Some(*b)));
    let patch = JobPatch {
        backend,
        ..JobPatch::default()
    };
    Ok(StageOutput::of(&Render { shots, cost }).with(patch))
}
