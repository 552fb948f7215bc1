//! `finalize`: publishes the result (a manifest of the shots, in order) and records the cost.

use aiprod_domain::routing::Routing;
use aiprod_domain::{Money, Stage, StepError};
use aiprod_platform::storage::ArtifactStore;
use aiprod_store::JobPatch;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::render::Render;
use super::{JobState, StageOutput};

/// The published result.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Finalize {
    pub result_uri: String,
    pub cost: Money,
}

pub(crate) async fn run(job: &JobState, store: &ArtifactStore) -> Result<StageOutput, StepError> {
    let r: Render = job.output(Stage::Render)?;
    let routing: Routing = job.output(Stage::Financial)?;
    let manifest = json!({
        "job_id": job.id,
        "backend": routing.backend,
        "backends": r.shots.iter().filter_map(|s| s.backend).collect::<std::collections::BTreeSet<_>>(),
        "duration_s": job.spec.duration_s(),
        "cost_usd": r.cost,
        "shots": r.shots.iter().map(|s| json!({"index": s.index, "uri": s.uri})).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
    let result_uri = store
        .put(job.id, "manifest.json", &bytes)
        .await
        .map_err(|e| StepError::Retryable(e.to_string()))?;
    aiprod_platform::metrics::Metrics::global()
        .cost_per_job
        .observe(r.cost.micros() as f64 / 1e6);
    let patch = JobPatch {
        cost_micros: Some(r.cost.micros()),
        result_uri: Some(result_uri.clone()),
        ..JobPatch::default()
    };
    Ok(StageOutput::of(&Finalize {
        result_uri,
        cost: r.cost,
    })
    .with(patch))
}
