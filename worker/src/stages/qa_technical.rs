//! `qa_technical`: every shot's technical QA, gathered in plan order. Each clip was checked
//! when it was delivered, before it was stored (`crate::shot::download`), so that a clip no
//! transcode can save went to the next backend then; this stage reads those checks back. A
//! shot stored without checks (by an earlier release) is fetched and checked now. The final
//! video is checked by `finalize`, once it exists.

use aiprod_domain::{BackendName, Stage, StepError};
use aiprod_media::{Expect, Media, Report, Verdict};
use aiprod_platform::storage::ArtifactStore;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::render::{Render, recorded_checks};
use super::{JobState, StageOutput};

/// The checks of one shot's clip.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ShotQa {
    pub index: usize,
    pub backend: Option<BackendName>,
    pub uri: String,
    #[serde(flatten)]
    pub report: Report,
}

/// Every shot's checks.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct QaTechnical {
    pub shots: Vec<ShotQa>,
}

pub(crate) async fn run(
    job: &JobState,
    pool: &PgPool,
    store: &ArtifactStore,
    media: &Media,
) -> Result<StageOutput, StepError> {
    let r: Render = job.output(Stage::Render)?;
    let checks = recorded_checks(pool, job, &r).await?;
    let mut shots = Vec::with_capacity(r.shots.len());
    for (shot, recorded) in r.shots.iter().zip(checks) {
        let recorded = recorded.and_then(|qa| serde_json::from_value::<Report>(qa).ok());
        let report = match recorded {
            Some(r) => r,
            None => check_now(job, store, media, &shot.uri, shot.duration_s).await?,
        };
        if report.verdict == Verdict::Rerender {
            return Err(StepError::Permanent(format!(
                "shot {} failed technical QA: {}",
                shot.index,
                report.failures()
            )));
        }
        shots.push(ShotQa {
            index: shot.index,
            backend: shot.backend,
            uri: shot.uri.clone(),
            report,
        });
    }
    Ok(StageOutput::of(&QaTechnical { shots }))
}

/// Fetches a stored shot and checks it against the length it was asked for.
async fn check_now(
    job: &JobState,
    store: &ArtifactStore,
    media: &Media,
    uri: &str,
    asked_s: u32,
) -> Result<Report, StepError> {
    let scratch = media
        .scratch_dir()
        .map_err(|e| StepError::Retryable(e.to_string()))?;
    let file = scratch.path().join("shot.mp4");
    store
        .get_to_file(uri, &file)
        .await
        .map_err(|e| StepError::Retryable(format!("cannot fetch {uri}: {e}")))?;
    tracing::info!(job_id = %job.id, uri, "checking a shot stored without checks");
    let expect = Expect {
        duration_s: f64::from(asked_s),
        audio_required: false,
        tags: Vec::new(),
    };
    media
        .inspect(&file, &expect)
        .await
        .map(|i| i.report)
        .map_err(|e| StepError::Retryable(format!("cannot check {uri}: {e}")))
}
