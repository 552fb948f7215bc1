//! `render`: renders every shot on the chosen backend, concurrently, and stores each output in
//! the artifact store at once (provider URLs expire).

use aiprod_shared::Money;
use aiprod_shared::domain::Stage;
use aiprod_shared::retry::StepError;
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};

use super::financial::Financial;
use super::visual::Visual;
use super::{JobState, StageOutput};
use crate::backend::RenderedShot;
use crate::context::WorkerContext;

/// The rendered shots and what they cost.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Render {
    pub shots: Vec<RenderedShot>,
    pub cost: Money,
}

pub(crate) async fn run(ctx: &WorkerContext, job: &JobState) -> Result<StageOutput, StepError> {
    let f: Financial = job.output(Stage::Financial)?;
    let v: Visual = job.output(Stage::Visual)?;
    let renders = v.shots.iter().map(|s| {
        ctx.backends
            .render(f.backend, job.id, &s.shot, &s.keyframe_uri)
    });
    let shots = try_join_all(renders).await?;
    let cost = shots.iter().map(|s| s.cost).sum();
    Ok(StageOutput::of(&Render { shots, cost }))
}
