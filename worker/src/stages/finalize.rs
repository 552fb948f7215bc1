//! `finalize`: assembles the one video the customer paid for, checks it, publishes it, and
//! records the cost.
//!
//! Assembly works only on stored shots, so a crash here (or anywhere in this stage) resumes by
//! assembling again: nothing is rendered twice. Every artifact is written under a fixed name,
//! so a second run replaces the first run's files. The final video passes the same technical QA
//! as every shot, with sound required and its title tag; a failure fails the job with the
//! failed checks, since it is our own work and no backend can mend it.

use std::collections::BTreeSet;

use aiprod_domain::routing::Routing;
use aiprod_domain::{Money, Stage, StepError};
use aiprod_media::{Expect, Media, Repair, Report, ShotInput};
use aiprod_platform::metrics::Metrics;
use aiprod_platform::storage::ArtifactStore;
use aiprod_store::JobPatch;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::render::Render;
use super::visual::Visual;
use super::{JobState, StageOutput};

/// What the published video is.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct VideoInfo {
    pub duration_s: f64,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub codec: String,
    pub size_bytes: u64,
}

/// How the shots became one video.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AssemblyInfo {
    /// `copy`: joined as they were; `reencode`: normalised first.
    pub path: String,
    /// What normalisation changed, shot by shot.
    pub repairs: Vec<Repair>,
}

/// The published result.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Finalize {
    pub result_uri: String,
    pub poster_uri: String,
    pub manifest_uri: String,
    pub video: VideoInfo,
    pub qa: Report,
    pub assembly: AssemblyInfo,
    pub cost: Money,
}

pub(crate) async fn run(
    job: &JobState,
    store: &ArtifactStore,
    media: &Media,
) -> Result<StageOutput, StepError> {
    let r: Render = job.output(Stage::Render)?;
    let v: Visual = job.output(Stage::Visual)?;
    let routing: Routing = job.output(Stage::Financial)?;
    let retry =
        |what: &str, e: &dyn std::fmt::Display| StepError::Retryable(format!("{what}: {e}"));
    let scratch = media
        .scratch_dir()
        .map_err(|e| retry("no scratch directory", &e))?;
    let mut shots = r.shots.iter().collect::<Vec<_>>();
    shots.sort_by_key(|s| s.index);
    let mut inputs = Vec::with_capacity(shots.len());
    for shot in shots {
        let planned = v
            .shots
            .iter()
            .find(|p| p.shot.index == shot.index)
            .map(|p| p.shot.duration_s)
            .ok_or_else(|| {
                StepError::Permanent(format!("shot {} is not in the plan", shot.index))
            })?;
        let path = scratch.path().join(format!("shot-{:02}.mp4", shot.index));
        store
            .get_to_file(&shot.uri, &path)
            .await
            .map_err(|e| retry(&format!("cannot fetch shot {}", shot.index), &e))?;
        let probe = media
            .probe(&path)
            .await
            .map_err(|e| retry(&format!("cannot read shot {}", shot.index), &e))?;
        inputs.push(ShotInput {
            index: shot.index,
            path,
            planned_s: f64::from(planned),
            probe,
        });
    }
    let title = format!("AIPROD job {}", job.id);
    let comment = format!("{} shots; backend {}", inputs.len(), routing.backend);
    let assembly = media
        .assemble(&inputs, scratch.path(), &title, &comment)
        .await
        .map_err(|e| retry("cannot assemble the video", &e))?;
    let expect = Expect {
        duration_s: f64::from(job.spec.duration_s()),
        audio_required: true,
        tags: vec!["title".into()],
    };
    let checked = media
        .inspect(&assembly.video, &expect)
        .await
        .map_err(|e| retry("cannot check the final video", &e))?;
    if !checked.report.passed() {
        return Err(StepError::Permanent(format!(
            "the final video failed technical QA: {}",
            checked.report.failures()
        )));
    }
    let probe = checked
        .probe
        .as_ref()
        .ok_or_else(|| StepError::Permanent("the final video cannot be read".into()))?;
    let pv = probe
        .video
        .as_ref()
        .ok_or_else(|| StepError::Permanent("the final video has no picture".into()))?;
    let video = VideoInfo {
        duration_s: (probe.length_s().unwrap_or(0.0) * 1000.0).round() / 1000.0,
        width: pv.width,
        height: pv.height,
        fps: pv.fps,
        codec: pv.codec.clone(),
        size_bytes: probe.size_bytes,
    };
    let put = |name: &'static str, path: std::path::PathBuf| async move {
        store
            .put_file(job.id, name, &path)
            .await
            .map_err(|e| retry(&format!("cannot store {name}"), &e))
    };
    let result_uri = put("final.mp4", assembly.video.clone()).await?;
    let poster_uri = put("poster.jpg", assembly.poster.clone()).await?;
    let path = if assembly.copied { "copy" } else { "reencode" };
    // The shots, kept beside the video: where each came from and what was done to it.
    let manifest = json!({
        "job_id": job.id,
        "video": result_uri,
        "poster": poster_uri,
        "backend": routing.backend,
        "backends": r.shots.iter().filter_map(|s| s.backend).collect::<BTreeSet<_>>(),
        "duration_s": job.spec.duration_s(),
        "cost_usd": r.cost,
        "assembly": path,
        "repairs": assembly.repairs,
        "shots": r.shots.iter().map(|s| json!({"index": s.index, "backend": s.backend, "uri": s.uri})).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
    let manifest_uri = store
        .put(job.id, "manifest.json", &bytes)
        .await
        .map_err(|e| retry("cannot store manifest.json", &e))?;
    let metrics = Metrics::global();
    metrics.assemblies.with_label_values(&[path]).inc();
    metrics.cost_per_job.observe(r.cost.micros() as f64 / 1e6);
    let patch = JobPatch {
        cost_micros: Some(r.cost.micros()),
        result_uri: Some(result_uri.clone()),
        ..JobPatch::default()
    };
    Ok(StageOutput::of(&Finalize {
        result_uri,
        poster_uri,
        manifest_uri,
        video,
        qa: checked.report,
        assembly: AssemblyInfo {
            path: path.into(),
            repairs: assembly.repairs,
        },
        cost: r.cost,
    })
    .with(patch))
}
