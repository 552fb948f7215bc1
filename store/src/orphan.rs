//! Renders that may exist at a provider without our knowing their id: a worker died between
//! the POST and saving the id (ARCHITECTURE.md, "Never pay twice"). The scheduler's reconciler
//! lists them here and, once it finds one at the provider, adopts it with its cost.

use aiprod_domain::{BackendName, FailureClass, JobId, Money, RenderState};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::millis;
use crate::RenderTask;

/// Suspected orphans on `backend` older than `settle` (their POST may still be in flight):
/// intents whose worker died, and intents a later try marked orphaned, with no remote id and
/// not yet found missing at the provider.
pub async fn orphans(
    db: impl PgExecutor<'_>,
    backend: BackendName,
    settle: std::time::Duration,
) -> sqlx::Result<Vec<RenderTask>> {
    sqlx::query_as!(
        RenderTask,
        r#"select id, job_id as "job_id: JobId", shot, attempt, backend as "backend: BackendName",
                  state as "state: RenderState", remote_id, seed, duration_s, estimated_cost_micros,
                  cost_micros, provider_cost_micros, outputs, artifact_uri,
                  failure as "failure: FailureClass", error, qa, created_at, submitted_at,
                  finished_at
             from render_task r
            where r.backend = $1 and r.remote_id is null
              and r.created_at < now() - $2::bigint * interval '1 millisecond'
              and r.created_at > now() - interval '1 day'
              and r.failure is distinct from 'not_at_provider'
              and (r.state = 'orphaned'
                   or (r.state = 'intent' and not exists (
                          select 1 from job j where j.id = r.job_id and j.status = 'running'
                             and j.locked_until > now())))
            order by r.created_at
            limit 500"#,
        backend as BackendName,
        millis(settle),
    )
    .fetch_all(db)
    .await
}

/// The reconciler found orphan `id` at the provider: records its id and what it cost, and
/// closes it as orphaned (its job has moved on, so nobody downloads it).
pub async fn adopt_orphan(
    db: impl PgExecutor<'_>,
    id: Uuid,
    remote_id: &str,
    cost: Money,
    note: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "update render_task
            set state = 'orphaned', remote_id = $2, cost_micros = $3, error = $4,
                submitted_at = coalesce(submitted_at, now()), finished_at = now(),
                updated_at = now()
          where id = $1 and remote_id is null and state in ('intent', 'orphaned')",
        id,
        remote_id,
        cost.micros(),
        note,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
