//! The parts of a job's view that are JSON the worker wrote (`waiting`, `video`, `assembly`,
//! `qa`, a render's `qa`), described as the worker writes them: `qa_technical`'s shots,
//! `finalize`'s video, assembly and checks, and the media crate's QA report. Their objects stay
//! open to new properties, so a field the worker adds later does not make the document lie.
#![allow(dead_code)]

use serde::Serialize;
use utoipa::ToSchema;

use super::wire;

/// Why and since when a job waits for money (status `waiting_budget`).
#[derive(Serialize, ToSchema)]
pub(crate) struct Waiting {
    /// Why: which budget does not cover it.
    #[schema(required = true)]
    reason: Option<String>,
    /// The least it needs.
    #[schema(value_type = Option<wire::Money>, required = true)]
    need_usd: Option<String>,
    /// Since when it waits.
    #[schema(required = true)]
    since: Option<chrono::DateTime<chrono::Utc>>,
}

/// The final video, as `finalize` probed it.
#[derive(Serialize, ToSchema)]
pub(crate) struct Video {
    /// Its length, seconds.
    duration_s: f64,
    /// Frame width, pixels.
    #[schema(minimum = 0)]
    width: u32,
    /// Frame height, pixels.
    #[schema(minimum = 0)]
    height: u32,
    /// Frames per second.
    fps: f64,
    /// The video codec, such as `h264`.
    codec: String,
    /// The file's size.
    #[schema(minimum = 0)]
    size_bytes: u64,
}

/// How the shots were joined into one video.
#[derive(Serialize, ToSchema)]
pub(crate) struct Assembly {
    /// `copy`: joined as they were; `reencode`: normalised first.
    #[schema(example = "copy")]
    path: String,
    /// What normalisation changed, shot by shot.
    repairs: Vec<Repair>,
}

/// Something normalisation changed in a shot.
#[derive(Serialize, ToSchema)]
pub(crate) struct Repair {
    /// The shot.
    #[schema(minimum = 0)]
    shot: u64,
    /// What was done, such as `upscaled from 1024x576 to 1280x720`.
    what: String,
}

/// The job's quality checks.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobQa {
    /// Technical QA.
    technical: TechnicalQa,
    /// Semantic QA, once `qa_semantic` has run: `scored` (false when no judge is configured
    /// or no shot could be scored), `score` (0–1), `scorer`, `flagged` shots, and each shot's
    /// `scores` (visual_quality, prompt_adherence, technical_excellence, overall, 0–10).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    semantic: Option<serde_json::Value>,
}

/// Technical QA: each shot's clip, and the final video.
#[derive(Serialize, ToSchema)]
pub(crate) struct TechnicalQa {
    /// Each shot's checks, once `qa_technical` has run.
    #[schema(required = true)]
    shots: Option<Vec<ShotQa>>,
    /// The final video's checks, once `finalize` has run.
    #[serde(rename = "final")]
    #[schema(required = true)]
    final_video: Option<QaReport>,
}

/// The checks of one shot's clip.
#[derive(Serialize, ToSchema)]
pub(crate) struct ShotQa {
    /// The shot.
    #[schema(minimum = 0)]
    index: u64,
    /// The backend that rendered it.
    #[schema(value_type = Option<wire::BackendName>, required = true)]
    backend: Option<String>,
    /// Where the clip is stored.
    uri: String,
    /// The worst verdict of any check.
    verdict: Verdict,
    /// The checks, in a fixed order.
    checks: Vec<QaCheck>,
}

/// Every check of one file.
#[derive(Serialize, ToSchema)]
pub(crate) struct QaReport {
    /// The worst verdict of any check.
    verdict: Verdict,
    /// The checks, in a fixed order.
    checks: Vec<QaCheck>,
    /// A delivered clip's semantic QA verdict (a render try's only, when a judge is
    /// configured): its scores, average, threshold, and whether it passed or was kept flagged.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    semantic: Option<serde_json::Value>,
}

/// One technical check.
#[derive(Serialize, ToSchema)]
pub(crate) struct QaCheck {
    /// `resolution`, `codec`…
    name: String,
    /// What was measured.
    value: String,
    /// What it had to be.
    limit: String,
    /// Whether it held.
    pass: bool,
    /// What a failure of this check means for the clip (`pass` when it held).
    verdict: Verdict,
}

/// What a clip's checks mean for it: `pass`; `repair` (normalisation fixes it); `rerender` (the
/// next backend renders the shot again).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Verdict {
    /// Every check passed.
    Pass,
    /// Usable once normalised.
    Repair,
    /// Unusable.
    Rerender,
}
