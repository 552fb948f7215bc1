//! `qa_semantic`: the job's measured quality. Every clip was judged when it was delivered
//! (`crate::shot::semantic`), where a clip under the threshold was rendered again, failed the
//! job, or was kept flagged; this stage reads those verdicts back in plan order. The job's
//! `quality_score` is the shots' average score over 10 (0–1, like `quality_min`), and below the
//! job's `quality_min` the job fails. With no judge configured, or no clip scored, the job is
//! unscored: no `quality_score`, and the quality metric, alert and SLO leave it out. A backend's
//! prior is never reported as a measurement.

use aiprod_domain::{Stage, StepError};
use aiprod_platform::config::{ModelSettings, SemanticQaKind};
use aiprod_store::JobPatch;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::render::{Render, recorded_checks};
use super::{JobState, StageOutput};
use crate::models::judge::SemanticVerdict;

/// One shot's verdict.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ShotScore {
    pub index: usize,
    #[serde(flatten)]
    pub verdict: Option<SemanticVerdict>,
}

/// The job's measured quality.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct QaSemantic {
    /// Whether `score` is a measurement.
    #[serde(default)]
    pub scored: bool,
    /// The shots' average over 10 (0–1); absent when unscored.
    pub score: Option<f64>,
    /// The judge's model, or `off`.
    pub scorer: String,
    /// Shots kept under the threshold (`AIPROD_QA_SEMANTIC_ON_FAIL=accept`).
    #[serde(default)]
    pub flagged: Vec<usize>,
    /// Each shot's verdict.
    #[serde(default)]
    pub shots: Vec<ShotScore>,
}

pub(crate) async fn run(
    job: &JobState,
    pool: &PgPool,
    settings: &ModelSettings,
) -> Result<StageOutput, StepError> {
    let r: Render = job.output(Stage::Render)?;
    if settings.qa_semantic == SemanticQaKind::Off {
        return Ok(StageOutput::of(&QaSemantic {
            scored: false,
            score: None,
            scorer: "off".into(),
            flagged: Vec::new(),
            shots: Vec::new(),
        }));
    }
    let checks = recorded_checks(pool, job, &r).await?;
    let shots: Vec<ShotScore> = r
        .shots
        .iter()
        .zip(checks)
        .map(|(shot, qa)| ShotScore {
            index: shot.index,
            verdict: qa
                .and_then(|qa| qa.get("semantic").cloned())
                .and_then(|v| serde_json::from_value(v).ok()),
        })
        .collect();
    let averages: Vec<f64> = shots
        .iter()
        .filter_map(|s| s.verdict.as_ref()?.average)
        .collect();
    let flagged = shots
        .iter()
        .filter(|s| s.verdict.as_ref().is_some_and(|v| v.flagged))
        .map(|s| s.index)
        .collect();
    let scorer = shots
        .iter()
        .find_map(|s| Some(s.verdict.as_ref()?.judge.clone()))
        .unwrap_or_else(|| settings.gemini_model.clone());
    if averages.is_empty() {
        return Ok(StageOutput::of(&QaSemantic {
            scored: false,
            score: None,
            scorer,
            flagged,
            shots,
        }));
    }
    let score = averages.iter().sum::<f64>() / averages.len() as f64 / 10.0;
    if score < job.spec.quality_min() {
        return Err(StepError::Permanent(format!(
            "quality score {score:.3} is below quality_min {}",
            job.spec.quality_min()
        )));
    }
    aiprod_platform::metrics::Metrics::global()
        .quality_score
        .observe(score);
    let out = QaSemantic {
        scored: true,
        score: Some(score),
        scorer,
        flagged,
        shots,
    };
    Ok(StageOutput::of(&out).with(JobPatch {
        quality_score: Some(score),
        ..JobPatch::default()
    }))
}
