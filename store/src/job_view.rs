//! What a job's view shows beside the job row: its stages' checkpoint rows, and the
//! checkpointed outputs of `financial` (the routing), `qa_technical` and `finalize`.

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

/// The checkpointed outputs of a job's finished `qa_technical` and `finalize` stages (the
/// shots' checks; the final video, its checks and its assembly), for the job's view.
#[tracing::instrument(skip_all, fields(job_id = %id))]
pub async fn get_media_outputs(
    db: impl PgExecutor<'_>,
    id: JobId,
) -> sqlx::Result<(Option<Value>, Option<Value>)> {
    let r = sqlx::query!(
        r#"select (select output from job_stage
                    where job_id = $1 and stage = 'qa_technical' and status = 'succeeded') as qa,
                  (select output from job_stage
                    where job_id = $1 and stage = 'finalize' and status = 'succeeded') as fin"#,
        id as JobId
    )
    .fetch_one(db)
    .await?;
    Ok((r.qa, r.fin))
}
