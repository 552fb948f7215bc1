//! `quality_distribution`: the last week's succeeded scores in bands, 1.0 in the top band.

use aiprod_testkit::TestDb;

use super::seed;

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
