//! The SLO report and the measurements the alert rules read, over SQL. Each function is one
//! query; what counts as breached is the caller's (the scheduler's rules, the gauges).

use aiprod_domain::{BackendName, JobId, Stage};
use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// The SLOs' bounds and objectives, over a rolling window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SloTargets {
    /// The window, in days.
    pub window_days: i32,
    /// The latency bound, in seconds.
    pub latency_s: f64,
    /// The share of jobs that must be within it.
    pub latency_objective: f64,
    /// The quality floor.
    pub quality_min: f64,
    /// The share of jobs that must score at least that.
    pub quality_objective: f64,
}

/// One SLO's standing.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SloStanding {
    /// `latency` or `quality`.
    pub slo: String,
    /// The share of jobs that must meet it.
    pub objective: f64,
    /// Jobs that met it.
    pub good: i64,
    /// Jobs counted.
    pub total: i64,
    /// `good / total`; `None` with no jobs.
    pub attainment: Option<f64>,
    /// Attainment at or above the objective.
    pub met: Option<bool>,
}

/// The SLO report (the `slo_report()` SQL function) over the window ending at `at`.
pub async fn slo_report(
    db: impl PgExecutor<'_>,
    t: &SloTargets,
    at: DateTime<Utc>,
) -> sqlx::Result<Vec<SloStanding>> {
    sqlx::query_as!(
        SloStanding,
        r#"select slo as "slo!", objective::float8 as "objective!", good as "good!",
                  total as "total!", attainment::float8 as attainment, met
             from slo_report($1, make_interval(days => $2), $3, $4::text::numeric, $5, $6::text::numeric)"#,
        at,
        t.window_days,
        t.latency_s,
        t.latency_objective.to_string(),
        t.quality_min,
        t.quality_objective.to_string(),
    )
    .fetch_all(db)
    .await
}

/// The quality of the jobs that succeeded in `(since, until]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowQuality {
    /// Their average score, to three decimals; `None` with no scored job.
    pub average: Option<f64>,
    /// How many had a score.
    pub scored: i64,
    /// Whether the exact average is below the floor that was asked about.
    pub below: bool,
}

/// The average quality score of the jobs that succeeded in `(since, until]`, compared with
/// `floor` in exact numeric, so that ten scores of 0.6 average 0.6, not a hair below.
pub async fn window_quality(
    db: impl PgExecutor<'_>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    floor: f64,
) -> sqlx::Result<WindowQuality> {
    let r = sqlx::query!(
        r#"select round(avg(quality_score::numeric), 3)::float8 as average,
                  count(quality_score) as "scored!",
                  coalesce(avg(quality_score::numeric) < $3::text::numeric, false) as "below!"
             from job
            where status = 'succeeded' and finished_at > $1 and finished_at <= $2"#,
        since,
        until,
        floor.to_string(),
    )
    .fetch_one(db)
    .await?;
    Ok(WindowQuality {
        average: r.average,
        scored: r.scored,
        below: r.below,
    })
}

/// The p95 pipeline latency, in seconds, of the jobs that succeeded in `(since, until]` (time
/// spent waiting for money left out); `None` with none.
pub async fn window_latency_p95(
    db: impl PgExecutor<'_>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> sqlx::Result<Option<f64>> {
    sqlx::query_scalar!(
        "select percentile_cont(0.95) within group (
                    order by job_latency_s(created_at, finished_at, waited_ms))
           from job where status = 'succeeded' and finished_at > $1 and finished_at <= $2",
        since,
        until,
    )
    .fetch_one(db)
    .await
}

/// Backends with more than `max` errors (`is_backend_error()`) among the tries that ended in
/// `(since, until]`, with their count.
pub async fn backend_errors_over(
    db: impl PgExecutor<'_>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    max: i64,
) -> sqlx::Result<Vec<(BackendName, i64)>> {
    Ok(sqlx::query!(
        r#"select backend as "backend: BackendName", count(*) as "errors!" from render_task
            where is_backend_error(state, failure) and finished_at > $1 and finished_at <= $2
            group by backend having count(*) > $3
            order by backend"#,
        since,
        until,
        max,
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|r| (r.backend, r.errors))
    .collect())
}

/// An unfinished job whose lease was reaped too often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StuckJob {
    /// The job.
    pub id: JobId,
    /// Its reaps.
    pub reap_count: i32,
    /// The stage it keeps dying at.
    pub stage: Option<Stage>,
}

/// Unfinished jobs reaped more than `max` times (at most 100, oldest first).
pub async fn stuck_jobs(db: impl PgExecutor<'_>, max: i32) -> sqlx::Result<Vec<StuckJob>> {
    sqlx::query_as!(
        StuckJob,
        r#"select id as "id: JobId", reap_count, stage as "stage: Stage" from job
            where status in ('queued', 'running') and reap_count > $1
            order by id limit 100"#,
        max
    )
    .fetch_all(db)
    .await
}
