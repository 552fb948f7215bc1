//! `open_alerts`, `slo_report` and `slo_attainment`: unresolved alerts critical first, and SLO
//! attainment with inclusive bounds over a half-open window.

use aiprod_testkit::TestDb;
use sqlx::{Postgres, Transaction};

use super::seed;

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
