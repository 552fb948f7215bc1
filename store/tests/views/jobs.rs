//! `jobs_by_status_day` and `latency_by_day_stage`: jobs counted by UTC acceptance day and
//! current status, and exact latency percentiles per stage and for the whole pipeline.

use aiprod_testkit::TestDb;

use super::seed;

#[tokio::test]
async fn jobs_by_status_day_counts_jobs_by_utc_acceptance_day_and_current_status()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    // The session is in New York: the view must still cut days at UTC midnight. Job 4 was
    // accepted on the evening of 1 March in New York, which is 2 March in UTC.
    let mut tx = seed(
        &pool,
        "set local time zone 'America/New_York';
         insert into job (id, prompt, duration_s, quality_min, request_hash, status, created_at)
         select pg_temp.jid(n), 'fixture', 10, 0.5, 'h' || n, status::job_status, created::timestamptz
           from (values
             (1, 'succeeded',      '2026-03-01 00:00:00Z'),
             (2, 'succeeded',      '2026-03-01 23:59:59Z'),
             (3, 'failed',         '2026-03-01 12:00:00Z'),
             (4, 'succeeded',      '2026-03-01 23:30:00-05'),
             (5, 'waiting_budget', '2026-03-02 10:00:00Z'),
             (6, 'queued',         '2026-03-02 23:59:59.999Z'),
             (7, 'canceled',       '2026-02-28 23:59:59Z')
           ) v(n, status, created);",
    )
    .await?;
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "select day::text, status::text, jobs from jobs_by_status_day order by day, status::text",
    )
    .fetch_all(&mut *tx)
    .await?;
    let got: Vec<_> = rows
        .iter()
        .map(|(d, s, n)| (d.as_str(), s.as_str(), *n))
        .collect();
    assert_eq!(
        got,
        [
            ("2026-02-28", "canceled", 1),
            ("2026-03-01", "failed", 1),
            ("2026-03-01", "succeeded", 2),
            ("2026-03-02", "queued", 1),
            ("2026-03-02", "succeeded", 1),
            ("2026-03-02", "waiting_budget", 1),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn latency_by_day_stage_gives_exact_percentiles_per_stage_and_for_the_pipeline_less_budget_waits()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    // Pipeline latencies (finished - created - waited) of the jobs that succeeded on 1 March
    // (UTC): 60, 120, 600 - 420 = 180, 241.5 - 1.5 = 240 and 300 s. percentile_cont over five
    // sorted values sits at p * 4: p50 = 180, p95 = 240 + 0.8 * 60 = 288, p99 = 240 + 0.96 * 60
    // = 297.6. Job 6 failed (not counted); job 7 (90 - 60 = 30 s) finished on 2 March.
    //
    // Succeeded sanitize stages finished on 1 March: 1, 5, 3, 2, 4 s, so p50 = 3, p95 = 4.8,
    // p99 = 4.96; the failed one (99 s) is not counted; job 7's (7 s) finished on 2 March. One
    // render stage (42 s) succeeded; another is still running.
    let mut tx = seed(
        &pool,
        "set local time zone 'Asia/Tokyo';
         insert into job (id, prompt, duration_s, quality_min, request_hash, status, created_at,
                          finished_at, waited_ms)
         select pg_temp.jid(n), 'fixture', 10, 0.5, 'h' || n, status::job_status,
                created::timestamptz, finished::timestamptz, waited
           from (values
             (1, 'succeeded', '2026-03-01 10:00:00Z',     '2026-03-01 10:01:00Z',     0),
             (2, 'succeeded', '2026-03-01 10:00:00Z',     '2026-03-01 10:02:00Z',     0),
             (3, 'succeeded', '2026-03-01 10:00:00Z',     '2026-03-01 10:10:00Z',     420000),
             (4, 'succeeded', '2026-03-01 10:00:00Z',     '2026-03-01 10:04:01.5Z',   1500),
             (5, 'succeeded', '2026-03-01 23:54:59.999Z', '2026-03-01 23:59:59.999Z', 0),
             (6, 'failed',    '2026-03-01 10:00:00Z',     '2026-03-01 12:00:00Z',     0),
             (7, 'succeeded', '2026-03-01 23:59:00Z',     '2026-03-02 00:00:30Z',     60000)
           ) v(n, status, created, finished, waited);
         insert into job_stage (job_id, stage, status, started_at, finished_at, duration_ms)
         select pg_temp.jid(n), stage::stage_name, status::stage_status,
                coalesce(finished::timestamptz - make_interval(secs => ms / 1000.0),
                         '2026-03-01 10:00:00Z'),
                finished::timestamptz, ms
           from (values
             (1, 'sanitize', 'succeeded', '2026-03-01 10:00:01Z',     1000),
             (2, 'sanitize', 'succeeded', '2026-03-01 10:00:02Z',     5000),
             (3, 'sanitize', 'succeeded', '2026-03-01 10:00:03Z',     3000),
             (4, 'sanitize', 'succeeded', '2026-03-01 10:00:04Z',     2000),
             (5, 'sanitize', 'succeeded', '2026-03-01 23:59:59.999Z', 4000),
             (6, 'sanitize', 'failed',    '2026-03-01 10:00:06Z',     99000),
             (7, 'sanitize', 'succeeded', '2026-03-02 00:00:00Z',     7000),
             (1, 'render',   'succeeded', '2026-03-01 10:00:50Z',     42000),
             (2, 'render',   'running',   null,                       null)
           ) v(n, stage, status, finished, ms);",
    )
    .await?;
    let rows: Vec<(String, String, i64, String, String, String)> = sqlx::query_as(
        "select day::text, stage, samples, p50_s::text, p95_s::text, p99_s::text
           from latency_by_day_stage order by day, stage",
    )
    .fetch_all(&mut *tx)
    .await?;
    let got: Vec<_> = rows
        .iter()
        .map(|(d, s, n, p50, p95, p99)| {
            (
                d.as_str(),
                s.as_str(),
                *n,
                p50.as_str(),
                p95.as_str(),
                p99.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("2026-03-01", "pipeline", 5, "180.000", "288.000", "297.600"),
            ("2026-03-01", "render", 1, "42.000", "42.000", "42.000"),
            ("2026-03-01", "sanitize", 5, "3.000", "4.800", "4.960"),
            ("2026-03-02", "pipeline", 1, "30.000", "30.000", "30.000"),
            ("2026-03-02", "sanitize", 1, "7.000", "7.000", "7.000"),
        ]
    );
    Ok(())
}
