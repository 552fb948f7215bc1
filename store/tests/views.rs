//! The SQL dashboards of `migrations/20261123000003_dashboards.sql` on a real database: each
//! view (and `slo_report` at a fixed time) returns, on a small fixture seeded with explicit
//! timestamps and amounts, exactly the figures worked out by hand in the comments — UTC days
//! whatever the session's time zone, exact percentiles, every try's cost and the runway savings,
//! error and fallback rates, quality bands, today's budget in its own zone, the books' audit,
//! open alerts critical first, and SLO attainment with inclusive bounds and a half-open window.
//!
//! Each test seeds and reads inside one transaction, so `now()` is a single instant throughout
//! and the views that depend on it give exact answers. Money is compared as text rounded to
//! micro-dollars (the views' own scale varies with the division), rates and percentiles as the
//! text Postgres prints.

#![allow(missing_docs)]

use aiprod_testkit::TestDb;
use sqlx::{PgPool, Postgres, Transaction};

/// `pg_temp.jid(n)`: the fixtures' job ids, `00000000-0000-0000-0000-00000000000n`.
const JID: &str = "
create function pg_temp.jid(n int) returns uuid language sql immutable as
$$ select ('00000000-0000-0000-0000-' || lpad(to_hex(n), 12, '0'))::uuid $$;
";

/// Opens a transaction on the test's database and runs the fixture script in it.
async fn seed(pool: &PgPool, fixture: &str) -> anyhow::Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::raw_sql(JID).execute(&mut *tx).await?;
    sqlx::raw_sql(fixture).execute(&mut *tx).await?;
    Ok(tx)
}

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

#[tokio::test]
async fn cost_by_day_backend_counts_every_try_and_the_runway_savings() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    // Budget day 1 March: job 1 (a charged runway failure, then two veo3 shots) and job 2 (a
    // runway shot whose try began after UTC midnight: it still books to its budget day).
    //   runway: 2 tries, 1 shot, 10 s; cost 0.5 + 5.0 = 5.5; per minute 5.5 * 60 / 10 = 33;
    //           baseline 5.0 (downloaded only); savings 5.0 - 5.5 = -0.5.
    //   veo3:   2 tries, 2 shots, 16 s; cost 4.0; per minute 4 * 60 / 16 = 15; baseline 8.0;
    //           savings 4.0.
    // Job 3 has no budget day: its tries count on their UTC creation day, 3 March (the evening
    // of 2 March in New York). An uncharged failure adds a try and no cost.
    //   replicate: 2 tries, 1 shot, 5 s; cost 0.3; per minute 0.3 * 60 / 5 = 3.6; baseline 2.5;
    //              savings 2.2.
    // Job 4 (4 March) has one try in flight: no shot, no cost, no cost per minute.
    let mut tx = seed(
        &pool,
        "set local time zone 'America/New_York';
         insert into job (id, prompt, duration_s, quality_min, request_hash, budget_day, created_at)
         select pg_temp.jid(n), 'fixture', 16, 0.5, 'h' || n, day::date, '2026-03-01 09:00:00Z'
           from (values (1, '2026-03-01'), (2, '2026-03-01'), (3, null), (4, '2026-03-04')) v(n, day);
         insert into render_task (id, job_id, shot, attempt, backend, state, remote_id, seed,
                                  duration_s, estimated_cost_micros, cost_micros, baseline_micros,
                                  failure_class, created_at)
         select gen_random_uuid(), pg_temp.jid(n), shot, attempt, backend::backend_name,
                state::render_state, 'remote', 1, secs, 1, cost, baseline, class,
                created::timestamptz
           from (values
             (1, 1, 1, 'runway',    'failed',     8,  500000,  4000000, 'internal', '2026-03-01 10:00:00Z'),
             (1, 1, 2, 'veo3',      'downloaded', 8,  2000000, 4000000, null,             '2026-03-01 10:05:00Z'),
             (1, 2, 1, 'veo3',      'downloaded', 8,  2000000, 4000000, null,             '2026-03-01 10:06:00Z'),
             (2, 1, 1, 'runway',    'downloaded', 10, 5000000, 5000000, null,             '2026-03-02 01:00:00Z'),
             (3, 1, 1, 'replicate', 'failed',     5,  null,    2500000, 'internal', '2026-03-02 23:00:00-05'),
             (3, 1, 2, 'replicate', 'downloaded', 5,  300000,  2500000, null,             '2026-03-02 23:30:00-05'),
             (4, 1, 1, 'veo3',      'submitted',  8,  null,    4000000, null,             '2026-03-04 10:00:00Z')
           ) v(n, shot, attempt, backend, state, secs, cost, baseline, class, created);",
    )
    .await?;
    type Row = (
        String,
        String,
        i64,
        i64,
        i64,
        String,
        Option<String>,
        String,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select day::text, backend::text, tries, shots, video_seconds, round(cost_usd, 6)::text,
                cost_per_video_minute_usd::text, round(runway_baseline_usd, 6)::text,
                round(savings_usd, 6)::text
           from cost_by_day_backend order by day, backend::text",
    )
    .fetch_all(&mut *tx)
    .await?;
    let got: Vec<_> = rows
        .iter()
        .map(|(d, b, tries, shots, secs, cost, per_min, base, save)| {
            (
                d.as_str(),
                b.as_str(),
                *tries,
                *shots,
                *secs,
                cost.as_str(),
                per_min.as_deref(),
                base.as_str(),
                save.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "2026-03-01",
                "runway",
                2,
                1,
                10,
                "5.500000",
                Some("33.000000"),
                "5.000000",
                "-0.500000"
            ),
            (
                "2026-03-01",
                "veo3",
                2,
                2,
                16,
                "4.000000",
                Some("15.000000"),
                "8.000000",
                "4.000000"
            ),
            (
                "2026-03-03",
                "replicate",
                2,
                1,
                5,
                "0.300000",
                Some("3.600000"),
                "2.500000",
                "2.200000"
            ),
            (
                "2026-03-04",
                "veo3",
                1,
                0,
                0,
                "0.000000",
                None,
                "0.000000",
                "0.000000"
            ),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn backend_rates_hourly_separates_errors_from_throttling_and_counts_fallbacks()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    // 10:00 UTC, runway: 7 tries. Succeeded: j1 s2 a2. Errors: j1 s1 a1 (internal) and
    // j2 s1 a1 (orphaned, no class); throttled, deadline and input_safety are not errors.
    // Fallbacks: j1 s1 a1 (then veo3), j2 s1 a1 (then replicate, an hour later), j2 s2 a1
    // (canceled, then veo3); j1 s2 a1 was retried on runway itself, j3 s1 a1 never retried.
    // 10:00, veo3: 3 tries, 2 succeeded, 1 error (j4 s1 a2, retried on veo3: no fallback).
    // 10:00, replicate: j4 s1 a1 failed, then veo3: an error and a fallback.
    // 11:00: replicate j2 s1 a2 and veo3 j4 s1 a3 (at 11:00:00 sharp) succeeded.
    let mut tx = seed(
        &pool,
        "insert into job (id, prompt, duration_s, quality_min, request_hash)
         select pg_temp.jid(n), 'fixture', 10, 0.5, 'h' || n from generate_series(1, 4) n;
         insert into render_task (id, job_id, shot, attempt, backend, state, remote_id, seed,
                                  duration_s, estimated_cost_micros, failure_class, created_at)
         select gen_random_uuid(), pg_temp.jid(n), shot, attempt, backend::backend_name,
                state::render_state, 'remote', 1, 5, 1, class, created::timestamptz
           from (values
             (1, 1, 1, 'runway',    'failed',     'internal', '2026-03-01 10:05:00Z'),
             (1, 1, 2, 'veo3',      'downloaded', null,             '2026-03-01 10:15:00Z'),
             (1, 2, 1, 'runway',    'failed',     'throttled',      '2026-03-01 10:10:00Z'),
             (1, 2, 2, 'runway',    'downloaded', null,             '2026-03-01 10:20:00Z'),
             (2, 1, 1, 'runway',    'orphaned',   null,             '2026-03-01 10:30:00Z'),
             (2, 1, 2, 'replicate', 'downloaded', null,             '2026-03-01 11:05:00Z'),
             (2, 2, 1, 'runway',    'canceled',   'deadline',       '2026-03-01 10:40:00Z'),
             (2, 2, 2, 'veo3',      'downloaded', null,             '2026-03-01 10:45:00Z'),
             (3, 1, 1, 'runway',    'failed',     'input_safety',   '2026-03-01 10:50:00Z'),
             (3, 2, 1, 'runway',    'submitted',  null,             '2026-03-01 10:59:59.999Z'),
             (4, 1, 1, 'replicate', 'failed',     'internal', '2026-03-01 10:00:00Z'),
             (4, 1, 2, 'veo3',      'failed',     'internal', '2026-03-01 10:20:00Z'),
             (4, 1, 3, 'veo3',      'downloaded', null,             '2026-03-01 11:00:00Z')
           ) v(n, shot, attempt, backend, state, class, created);",
    )
    .await?;
    type Row = (String, String, i64, i64, i64, i64, String, String, String);
    let rows: Vec<Row> = sqlx::query_as(
        "select (hour at time zone 'UTC')::text, backend::text, tries, succeeded, errors, fallbacks,
                success_rate::text, error_rate::text, fallback_rate::text
           from backend_rates_hourly order by hour, backend::text",
    )
    .fetch_all(&mut *tx)
    .await?;
    let got: Vec<_> = rows
        .iter()
        .map(|(h, b, t, s, e, f, sr, er, fr)| {
            (
                h.as_str(),
                b.as_str(),
                *t,
                *s,
                *e,
                *f,
                sr.as_str(),
                er.as_str(),
                fr.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "2026-03-01 10:00:00",
                "replicate",
                1,
                0,
                1,
                1,
                "0.0000",
                "1.0000",
                "1.0000"
            ),
            (
                "2026-03-01 10:00:00",
                "runway",
                7,
                1,
                2,
                3,
                "0.1429",
                "0.2857",
                "0.4286"
            ),
            (
                "2026-03-01 10:00:00",
                "veo3",
                3,
                2,
                1,
                0,
                "0.6667",
                "0.3333",
                "0.0000"
            ),
            (
                "2026-03-01 11:00:00",
                "replicate",
                1,
                1,
                0,
                0,
                "1.0000",
                "0.0000",
                "0.0000"
            ),
            (
                "2026-03-01 11:00:00",
                "veo3",
                1,
                1,
                0,
                0,
                "1.0000",
                "0.0000",
                "0.0000"
            ),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn backend_rates_hourly_buckets_by_utc_hour_whatever_the_session_time_zone()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    // Two runway tries at 10:05 and 10:40 UTC fall in the UTC hour 10:00, as every other
    // dashboard cuts time in UTC. Read from a session in India (UTC+05:30), a view that
    // truncates in the session's zone would split them into the hours starting 09:30 and
    // 10:30 UTC.
    let mut tx = seed(
        &pool,
        "insert into job (id, prompt, duration_s, quality_min, request_hash)
         values (pg_temp.jid(1), 'fixture', 10, 0.5, 'h');
         insert into render_task (id, job_id, shot, attempt, backend, state, remote_id, seed,
                                  duration_s, estimated_cost_micros, created_at)
         values (gen_random_uuid(), pg_temp.jid(1), 1, 1, 'runway', 'downloaded', 'r', 1, 5, 1,
                 '2026-03-01 10:05:00Z'),
                (gen_random_uuid(), pg_temp.jid(1), 2, 1, 'runway', 'downloaded', 'r', 1, 5, 1,
                 '2026-03-01 10:40:00Z');
         set local time zone 'Asia/Kolkata';",
    )
    .await?;
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "select (hour at time zone 'UTC')::text, backend::text, tries, succeeded
           from backend_rates_hourly order by hour, backend::text",
    )
    .fetch_all(&mut *tx)
    .await?;
    let got: Vec<_> = rows
        .iter()
        .map(|(h, b, t, s)| (h.as_str(), b.as_str(), *t, *s))
        .collect();
    assert_eq!(
        got,
        [("2026-03-01 10:00:00", "runway", 2, 2)],
        "backend_rates_hourly must bucket by UTC hour, not by the session's time zone"
    );
    Ok(())
}

#[tokio::test]
async fn quality_distribution_bands_the_last_weeks_succeeded_scores_with_one_in_the_top_band()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    // Eight succeeded jobs scored within the last 7 days: 1.0, 0.95, 0.9 (top band, 3/8),
    // 0.85 (1/8), 0.72 (1/8), 0.65 and 0.6 (2/8), 0.0 (1/8). Not counted: jobs finished 7 days
    // ago exactly and 8 days ago, a failed job, a succeeded job with no score, a running job.
    let mut tx = seed(
        &pool,
        "insert into job (id, prompt, duration_s, quality_min, request_hash, status, created_at,
                          finished_at, quality_score)
         select gen_random_uuid(), 'fixture', 10, 0.5, 'h', status::job_status,
                coalesce(finished, now()) - interval '5 minutes', finished, score
           from (values
             ('succeeded', now() - interval '1 hour',           1.0),
             ('succeeded', now() - interval '2 hours',          0.95),
             ('succeeded', now() - interval '3 hours',          0.9),
             ('succeeded', now() - interval '1 day',            0.85),
             ('succeeded', now() - interval '2 days',           0.72),
             ('succeeded', now() - interval '3 days',           0.65),
             ('succeeded', now() - interval '4 days',           0.6),
             ('succeeded', now() - interval '6 days 23 hours',  0.0),
             ('succeeded', now() - interval '7 days',           0.5),
             ('succeeded', now() - interval '8 days',           0.5),
             ('failed',    now() - interval '1 hour',           0.3),
             ('succeeded', now() - interval '1 hour',           null),
             ('running',   null,                                0.2)
           ) v(status, finished, score);",
    )
    .await?;
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
        "select round(score_from, 1)::text, round(score_to, 1)::text, jobs, share::text
           from quality_distribution order by score_from",
    )
    .fetch_all(&mut *tx)
    .await?;
    let got: Vec<_> = rows
        .iter()
        .map(|(f, t, n, s)| (f.as_str(), t.as_str(), *n, s.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("0.0", "0.1", 1, "0.1250"),
            ("0.6", "0.7", 2, "0.2500"),
            ("0.7", "0.8", 1, "0.1250"),
            ("0.8", "0.9", 1, "0.1250"),
            ("0.9", "1.0", 3, "0.3750"),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn budget_today_shows_only_todays_row_in_its_own_time_zone_and_the_waiting_jobs()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    // The budget runs on Kiritimati time (UTC+14); the session is in Los Angeles, most of a day
    // behind. Today there: limit 10, reserved 1.5, spent 5.5, so 3 remain and 70 % is
    // committed. Yesterday's and tomorrow's rows must not show. Two jobs wait for money.
    let mut tx = seed(
        &pool,
        "set local time zone 'America/Los_Angeles';
         insert into budget_day (day, time_zone, limit_micros, reserved_micros, spent_micros)
         select (now() at time zone 'Pacific/Kiritimati')::date + delta, 'Pacific/Kiritimati',
                lim, reserved, spent
           from (values (0, 10000000, 1500000, 5500000),
                        (-1, 8000000, 0, 8000000),
                        (1, 9000000, 0, 0)) v(delta, lim, reserved, spent);
         insert into job (id, prompt, duration_s, quality_min, request_hash, status)
         select gen_random_uuid(), 'fixture', 10, 0.5, 'h', s::job_status
           from unnest(array['waiting_budget', 'waiting_budget', 'queued', 'running',
                             'succeeded']) s;",
    )
    .await?;
    type Row = (bool, String, String, String, String, String, String, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "select day = (now() at time zone 'Pacific/Kiritimati')::date, time_zone,
                round(limit_usd, 6)::text, round(reserved_usd, 6)::text, round(spent_usd, 6)::text,
                round(remaining_usd, 6)::text, committed_pct::text, waiting_jobs
           from budget_today",
    )
    .fetch_all(&mut *tx)
    .await?;
    let got: Vec<_> = rows
        .iter()
        .map(|(today, tz, l, r, s, rem, pct, w)| {
            (
                *today,
                tz.as_str(),
                l.as_str(),
                r.as_str(),
                s.as_str(),
                rem.as_str(),
                pct.as_str(),
                *w,
            )
        })
        .collect();
    assert_eq!(
        got,
        [(
            true,
            "Pacific/Kiritimati",
            "10.000000",
            "1.500000",
            "5.500000",
            "3.000000",
            "70.00",
            2
        )]
    );
    Ok(())
}

#[tokio::test]
async fn budget_audit_balances_a_consistent_day_and_flags_a_day_that_disagrees()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    // 1 March balances: the ledger reserves 4.5 for job 1, settles 2.0 and 1.5 of it into spent
    // (reserved 1.0, spent 3.5), and job 1's tries cost 2.0 + 1.5 (a third is in flight).
    // Job 3 has no budget day: its cost counts for no day.
    // 2 March: the day row says 1.0 spent, the ledger and the tries 1.2 — unbalanced.
    // 3 March: nothing happened — balanced at zero.
    // 4 March: the row and the ledger agree on 0.7, but the try cost 0.8 — unbalanced.
    // 5 March: kept by the triggers: a 2.5 reservation (0.5 held by job 5, 2.0 by its try), the
    // try settles at 1.8 then is corrected to 1.9, and the job's end releases its 0.5 hold.
    let mut tx = seed(
        &pool,
        "insert into budget_day (day, time_zone, limit_micros, reserved_micros, spent_micros) values
           ('2026-03-01', 'UTC', 20000000, 1000000, 3500000),
           ('2026-03-02', 'UTC', 20000000, 0, 1000000),
           ('2026-03-03', 'UTC', 20000000, 0, 0),
           ('2026-03-04', 'UTC', 20000000, 0, 700000),
           ('2026-03-05', 'UTC', 20000000, 2500000, 0);
         insert into job (id, prompt, duration_s, quality_min, request_hash, status, budget_day,
                          budget_held_micros)
         select pg_temp.jid(n), 'fixture', 10, 0.5, 'h' || n, status::job_status, day::date, held
           from (values (1, 'running', '2026-03-01', 0),
                        (2, 'succeeded', '2026-03-02', 0),
                        (3, 'succeeded', null, 0),
                        (4, 'succeeded', '2026-03-04', 0),
                        (5, 'running', '2026-03-05', 500000)) v(n, status, day, held);
         insert into budget_entry (day, kind, job_id, reserved_delta_micros, spent_delta_micros,
                                   limit_micros) values
           ('2026-03-01', 'limit', null, 0, 0, 20000000),
           ('2026-03-01', 'reserve', pg_temp.jid(1), 4500000, 0, null),
           ('2026-03-01', 'settle', pg_temp.jid(1), -2000000, 2000000, null),
           ('2026-03-01', 'settle', pg_temp.jid(1), -1500000, 1500000, null),
           ('2026-03-02', 'reserve', pg_temp.jid(2), 1200000, 0, null),
           ('2026-03-02', 'settle', pg_temp.jid(2), -1200000, 1200000, null),
           ('2026-03-04', 'reserve', pg_temp.jid(4), 700000, 0, null),
           ('2026-03-04', 'settle', pg_temp.jid(4), -700000, 700000, null),
           ('2026-03-05', 'reserve', pg_temp.jid(5), 2500000, 0, null);
         insert into render_task (id, job_id, shot, attempt, backend, state, remote_id, seed,
                                  duration_s, estimated_cost_micros, reserved_micros, cost_micros)
         select pg_temp.jid(100 + t), pg_temp.jid(n), shot, 1, 'veo3', state::render_state,
                'remote', 1, 8, 1, reserved, cost
           from (values
             (1, 1, 1, 'downloaded', 0,       2000000),
             (2, 1, 2, 'failed',     0,       1500000),
             (3, 1, 3, 'submitted',  1000000, null),
             (4, 2, 1, 'downloaded', 0,       1200000),
             (5, 3, 1, 'downloaded', 0,       9999999),
             (6, 4, 1, 'downloaded', 0,       800000),
             (7, 5, 1, 'submitted',  2000000, null)
           ) v(t, n, shot, state, reserved, cost);
         update render_task set state = 'downloaded', cost_micros = 1800000
          where id = pg_temp.jid(107);
         update render_task set cost_micros = 1900000 where id = pg_temp.jid(107);
         update job set status = 'succeeded' where id = pg_temp.jid(5);",
    )
    .await?;
    type Row = (String, i64, i64, i64, i64, i64, bool);
    let rows: Vec<Row> = sqlx::query_as(
        "select day::text, reserved_micros, ledger_reserved_micros::bigint, spent_micros,
                ledger_spent_micros::bigint, render_cost_micros::bigint, balanced
           from budget_audit order by day",
    )
    .fetch_all(&mut *tx)
    .await?;
    let got: Vec<_> = rows
        .iter()
        .map(|(d, r, lr, s, ls, c, b)| (d.as_str(), *r, *lr, *s, *ls, *c, *b))
        .collect();
    assert_eq!(
        got,
        [
            (
                "2026-03-01",
                1000000,
                1000000,
                3500000,
                3500000,
                3500000,
                true
            ),
            ("2026-03-02", 0, 0, 1000000, 1200000, 1200000, false),
            ("2026-03-03", 0, 0, 0, 0, 0, true),
            ("2026-03-04", 0, 0, 700000, 700000, 800000, false),
            ("2026-03-05", 0, 0, 1900000, 1900000, 1900000, true),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn open_alerts_lists_unresolved_alerts_critical_first_then_oldest() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    // Critical: 3 (open 2 h), 2 (open 1 h); then warning: 1 (open 3 h), 5 (open 30 min).
    // Alert 4 was resolved and must not show.
    let mut tx = seed(
        &pool,
        "insert into alert (id, rule, subject, severity, summary, value, threshold, opened_at,
                            last_seen_at, resolved_at) values
           (1, 'budget_warning', '2026-03-01', 'warning', 'budget 72 %', '72.00', '70',
            now() - interval '3 hours', now(), null),
           (2, 'backend_errors', 'runway', 'critical', 'runway errors', '0.5', '0.2',
            now() - interval '1 hour', now(), null),
           (3, 'budget_critical', '2026-03-01', 'critical', 'budget 91 %', '91.00', '90',
            now() - interval '2 hours', now(), null),
           (4, 'latency_high', 'pipeline', 'critical', 'slow', '1000', '900',
            now() - interval '5 hours', now() - interval '4 hours', now() - interval '4 hours'),
           (5, 'job_stuck', 'job-x', 'warning', 'stuck', '3600', '1800',
            now() - interval '30 minutes', now(), null);",
    )
    .await?;
    type Row = (i64, String, String, String, String, String, String);
    let rows: Vec<Row> = sqlx::query_as(
        "select id, rule::text, subject, severity::text, value, threshold, open_for::text
           from open_alerts",
    )
    .fetch_all(&mut *tx)
    .await?;
    let got: Vec<_> = rows
        .iter()
        .map(|(id, r, s, sev, v, t, open)| {
            (
                *id,
                r.as_str(),
                s.as_str(),
                sev.as_str(),
                v.as_str(),
                t.as_str(),
                open.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                3,
                "budget_critical",
                "2026-03-01",
                "critical",
                "91.00",
                "90",
                "02:00:00"
            ),
            (
                2,
                "backend_errors",
                "runway",
                "critical",
                "0.5",
                "0.2",
                "01:00:00"
            ),
            (
                1,
                "budget_warning",
                "2026-03-01",
                "warning",
                "72.00",
                "70",
                "03:00:00"
            ),
            (
                5,
                "job_stuck",
                "job-x",
                "warning",
                "3600",
                "1800",
                "00:30:00"
            ),
        ]
    );
    Ok(())
}

type SloRow = (String, String, i64, i64, Option<String>, Option<bool>);

/// The SLO rows `source` (the view, or a call of `slo_report`) gives, by SLO name.
async fn slo_rows(
    tx: &mut Transaction<'static, Postgres>,
    source: &str,
) -> anyhow::Result<Vec<SloRow>> {
    let sql = format!(
        "select slo, objective::text, good, total, attainment::text, met from {source} order by slo"
    );
    Ok(sqlx::query_as(&sql).fetch_all(&mut **tx).await?)
}

/// A row of `slo_report` borrowed for comparison with literals.
type SloView<'a> = (&'a str, &'a str, i64, i64, Option<&'a str>, Option<bool>);

fn slo_view(rows: &[SloRow]) -> Vec<SloView<'_>> {
    rows.iter()
        .map(|(s, o, g, t, a, m)| (s.as_str(), o.as_str(), *g, *t, a.as_deref(), *m))
        .collect()
}

#[tokio::test]
async fn slo_report_counts_the_window_ending_at_its_at_time_with_inclusive_bounds()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    // Window (2026-03-07 12:00, 2026-03-08 12:00] UTC; latency at most 600 s, quality at least
    // 0.7. In the window: a job finished at `at` exactly (600 s, 0.7: both good, on the
    // bounds), one at 600.5 s and 0.69 (both bad), one of 1000 s less 400 s waiting for budget
    // (600 s, good; 0.9 good), one 1 ms inside the window's start (30 s, no score). Outside:
    // a job finished at `at - span` exactly, one 1 ms after `at`, and a failed job.
    // Latency: 3 good of 4 = 0.75, meets 0.75. Quality: 2 of 3 scored = 0.6667, misses 0.8.
    let mut tx = seed(
        &pool,
        "insert into job (id, prompt, duration_s, quality_min, request_hash, status, created_at,
                          finished_at, waited_ms, quality_score)
         select gen_random_uuid(), 'fixture', 10, 0.5, 'h', status::job_status,
                finished::timestamptz - make_interval(secs => secs), finished::timestamptz,
                waited, score
           from (values
             ('succeeded', '2026-03-08 12:00:00Z',     600,   0,      0.7),
             ('succeeded', '2026-03-08 11:00:00Z',     600.5, 0,      0.69),
             ('succeeded', '2026-03-08 10:00:00Z',     1000,  400000, 0.9),
             ('succeeded', '2026-03-07 12:00:00.001Z', 30,    0,      null),
             ('succeeded', '2026-03-07 12:00:00Z',     5000,  0,      0.1),
             ('succeeded', '2026-03-08 12:00:00.001Z', 5000,  0,      0.1),
             ('failed',    '2026-03-08 11:30:00Z',     5000,  0,      0.1)
           ) v(status, finished, secs, waited, score);",
    )
    .await?;
    let day = slo_rows(
        &mut tx,
        "slo_report('2026-03-08 12:00:00Z', interval '1 day', 600, 0.75, 0.7, 0.8)",
    )
    .await?;
    assert_eq!(
        slo_view(&day),
        [
            ("latency", "0.75", 3, 4, Some("0.7500"), Some(true)),
            ("quality", "0.8", 2, 3, Some("0.6667"), Some(false)),
        ]
    );
    // An hour's window (11:00, 12:00]: the job finished at 11:00 sits on the excluded start.
    let hour = slo_rows(
        &mut tx,
        "slo_report('2026-03-08 12:00:00Z', interval '1 hour', 600, 0.75, 0.7, 0.8)",
    )
    .await?;
    assert_eq!(
        slo_view(&hour),
        [
            ("latency", "0.75", 1, 1, Some("1.0000"), Some(true)),
            ("quality", "0.8", 1, 1, Some("1.0000"), Some(true)),
        ]
    );
    // No jobs: no attainment, and no verdict.
    let empty = slo_rows(
        &mut tx,
        "slo_report('2020-01-01 00:00:00Z', interval '7 days', 600, 0.75, 0.7, 0.8)",
    )
    .await?;
    assert_eq!(
        slo_view(&empty),
        [
            ("latency", "0.75", 0, 0, None, None),
            ("quality", "0.8", 0, 0, None, None),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn slo_attainment_reports_the_last_seven_days_against_the_design_objectives()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    // 18 jobs of exactly 900 s scoring exactly 0.6; one of 1000 s less 100 s of budget wait,
    // unscored; one of 901 s scoring 0.59, finished 6 days 23 hours ago. Latency: 19 of 20 =
    // 0.95, meets 0.95. Quality: 18 of 19 scored = 0.9474, meets 0.90. Not counted: jobs
    // finished 7 days ago exactly and in the future, and a failed job.
    let mut tx = seed(
        &pool,
        "insert into job (id, prompt, duration_s, quality_min, request_hash, status, created_at,
                          finished_at, quality_score)
         select gen_random_uuid(), 'fixture', 10, 0.5, 'h', 'succeeded',
                now() - make_interval(mins => g) - interval '900 seconds',
                now() - make_interval(mins => g), 0.6
           from generate_series(1, 18) g;
         insert into job (id, prompt, duration_s, quality_min, request_hash, status, created_at,
                          finished_at, waited_ms, quality_score)
         select gen_random_uuid(), 'fixture', 10, 0.5, 'h', status::job_status,
                finished - make_interval(secs => secs), finished, waited, score
           from (values
             ('succeeded', now() - interval '1 day',            1000, 100000, null),
             ('succeeded', now() - interval '6 days 23 hours',  901,  0,      0.59),
             ('succeeded', now() - interval '7 days',           5000, 0,      0.1),
             ('succeeded', now() + interval '1 minute',         5000, 0,      0.1),
             ('failed',    now() - interval '1 hour',           5000, 0,      0.1)
           ) v(status, finished, secs, waited, score);",
    )
    .await?;
    let rows = slo_rows(&mut tx, "slo_attainment").await?;
    assert_eq!(
        slo_view(&rows),
        [
            ("latency", "0.95", 19, 20, Some("0.9500"), Some(true)),
            ("quality", "0.90", 18, 19, Some("0.9474"), Some(true)),
        ]
    );
    Ok(())
}
