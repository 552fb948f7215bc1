//! What a job's view shows beside the job row: its stages' checkpoint rows, and the
//! checkpointed outputs of `creative` (the plan), `financial` (the routing), `qa_technical`,
//! `qa_semantic` and `finalize`.

use aiprod_domain::{JobId, Stage, StageStatus, routing::Routing};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;

/// One stage's checkpoint row.
#[derive(Clone, Debug)]
pub struct StageRecord {
    /// Which stage.
    pub stage: Stage,
    /// Its state.
    pub status: StageStatus,
    /// Starts of its work, retries and resumes included.
    pub attempts: i32,
    /// When it first started.
    pub started_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// How long it took, from first start to finish.
    pub duration_ms: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// The checkpoint rows of a job, in pipeline order.
#[tracing::instrument(skip_all, fields(job_id = %id))]
pub async fn get_stages(db: impl PgExecutor<'_>, id: JobId) -> sqlx::Result<Vec<StageRecord>> {
    sqlx::query_as!(
        StageRecord,
        r#"select stage as "stage: Stage", status as "status: StageStatus", attempts, started_at,
                  finished_at, duration_ms, error
             from job_stage where job_id = $1 order by stage"#,
        id as JobId
    )
    .fetch_all(db)
    .await
}

/// The routing decision of a job: the checkpointed output of its `financial` stage, once that
/// finished.
#[tracing::instrument(skip_all, fields(job_id = %id))]
pub async fn get_routing(db: impl PgExecutor<'_>, id: JobId) -> sqlx::Result<Option<Routing>> {
    let output = sqlx::query_scalar!(
        r#"select output as "output!" from job_stage
            where job_id = $1 and stage = 'financial' and status = 'succeeded'
              and output is not null"#,
        id as JobId
    )
    .fetch_optional(db)
    .await?;
    output
        .map(|v| {
            serde_json::from_value(v).map_err(|e| {
                sqlx::Error::Decode(format!("job {id}: unreadable routing: {e}").into())
            })
        })
        .transpose()
}

/// The checkpointed outputs the job's view shows, of the stages that finished.
#[derive(Clone, Debug, Default)]
pub struct StageOutputs {
    /// `creative`: the shots and who planned them.
    pub creative: Option<Value>,
    /// `qa_technical`: the shots' checks.
    pub qa_technical: Option<Value>,
    /// `qa_semantic`: the measured quality, shot by shot.
    pub qa_semantic: Option<Value>,
    /// `finalize`: the final video, its checks and its assembly.
    pub finalize: Option<Value>,
}

/// The checkpointed outputs of a job's finished `creative`, `qa_technical`, `qa_semantic` and
/// `finalize` stages, for the job's view.
#[tracing::instrument(skip_all, fields(job_id = %id))]
pub async fn get_media_outputs(db: impl PgExecutor<'_>, id: JobId) -> sqlx::Result<StageOutputs> {
    let rows = sqlx::query!(
        r#"select stage as "stage: Stage", output from job_stage
            where job_id = $1 and status = 'succeeded'
              and stage in ('creative', 'qa_technical', 'qa_semantic', 'finalize')"#,
        id as JobId
    )
    .fetch_all(db)
    .await?;
    let mut out = StageOutputs::default();
    for r in rows {
        let slot = match r.stage {
            Stage::Creative => &mut out.creative,
            Stage::QaTechnical => &mut out.qa_technical,
            Stage::QaSemantic => &mut out.qa_semantic,
            _ => &mut out.finalize,
        };
        *slot = r.output;
    }
    Ok(out)
}
