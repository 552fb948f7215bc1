//! `cost_by_day_backend` and `backend_rates_hourly`: every try's cost and the runway savings per
//! budget day, and error, throttling and fallback rates per UTC hour.

use aiprod_testkit::TestDb;

use super::seed;

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
