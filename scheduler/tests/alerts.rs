//! The alert rules over a real PostgreSQL, at a time set by hand: each fires at its threshold
//! and not below it, an alert is not repeated while it stays open, it closes when the
//! condition clears, and delivery reaches a webhook, retried after a 500; a webhook that keeps
//! failing leaves its error on the alert without the webhook's secret URL.

#![allow(missing_docs)]

use std::time::Duration;

use aiprod_platform::Settings;
use aiprod_scheduler::{Notifier, run_alert_rules};
use aiprod_store::{list_alerts, open_budget_day};
use aiprod_testkit::TestDb;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sqlx::PgPool;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn now() -> DateTime<Utc> {
    "2026-11-23T12:00:00Z".parse().expect("time")
}

/// The open alerts, as `rule/subject`.
async fn open(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    let mut v: Vec<String> = list_alerts(pool, true, 100)
        .await?
        .into_iter()
        .map(|a| format!("{}/{}", a.rule.as_str(), a.subject))
        .collect();
    v.sort();
    Ok(v)
}

/// A job that succeeded `ago` before `now()`, after `latency_s`, with a quality score.
async fn finished_job(pool: &PgPool, latency_s: i64, score: f64) -> anyhow::Result<()> {
    let end = now() - chrono::Duration::minutes(10);
    sqlx::query(
        "insert into job (id, status, stage, prompt, duration_s, quality_min, request_hash,
                          quality_score, created_at, finished_at)
         values ($1, 'succeeded', null, 'p', 5, 0, 'h', $2, $3, $4)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(score)
    .bind(end - chrono::Duration::seconds(latency_s))
    .bind(end)
    .execute(pool)
    .await?;
    Ok(())
}

async fn failed_try(pool: &PgPool, backend: &str, class: &str) -> anyhow::Result<()> {
    let job = uuid::Uuid::now_v7();
    sqlx::query(
        "insert into job (id, prompt, duration_s, quality_min, request_hash) values ($1, 'p', 5, 0, 'h')",
    )
    .bind(job)
    .execute(pool)
    .await?;
    sqlx::query(
        "insert into render_task (id, job_id, shot, attempt, backend, state, seed, duration_s,
                                  estimated_cost_micros, failure_class, created_at, finished_at)
         values ($1, $2, 0, 1, $3::backend_name, 'failed', 1, 5, 0, $4, $5, $5)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(job)
    .bind(backend)
    .bind(class)
    .bind(now() - chrono::Duration::minutes(5))
    .execute(pool)
    .await?;
    Ok(())
}

#[tokio::test]
async fn budget_rules_fire_at_their_thresholds_once_per_day_and_close() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let settings = Settings::default();
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).expect("date");
    open_budget_day(&pool, day, "UTC", "100".parse()?).await?;
    let commit = |micros: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "update budget_day set reserved_micros = $1 / 2, spent_micros = $1 - $1 / 2",
            )
            .bind(micros)
            .execute(&pool)
            .await
        }
    };
    let steps: [(i64, &[&str]); 6] = [
        (69_999_999, &[]),
        (70_000_000, &["budget_warning/2026-11-23"]),
        (89_999_999, &["budget_warning/2026-11-23"]),
        (
            90_000_000,
            &["budget_critical/2026-11-23", "budget_warning/2026-11-23"],
        ),
        (
            99_999_999,
            &["budget_critical/2026-11-23", "budget_warning/2026-11-23"],
        ),
        (
            100_000_000,
            &[
                "budget_critical/2026-11-23",
                "budget_exhausted/2026-11-23",
                "budget_warning/2026-11-23",
            ],
        ),
    ];
    for (micros, expected) in steps {
        commit(micros).await?;
        run_alert_rules(&pool, &settings, now()).await?;
        assert_eq!(open(&pool).await?, expected, "committed {micros} µ$");
    }
    // Evaluated every minute for an hour: still one row per rule.
    for m in 1..=60 {
        run_alert_rules(&pool, &settings, now() + chrono::Duration::minutes(m)).await?;
    }
    let rows: i64 = sqlx::query_scalar("select count(*) from alert")
        .fetch_one(&pool)
        .await?;
    assert_eq!(rows, 3);
    // An admin raises the limit: all three close, and stay closed.
    sqlx::query("update budget_day set limit_micros = 1000000000")
        .execute(&pool)
        .await?;
    let changes = run_alert_rules(&pool, &settings, now() + chrono::Duration::minutes(61)).await?;
    assert_eq!(changes.resolved.len(), 3);
    run_alert_rules(&pool, &settings, now() + chrono::Duration::minutes(62)).await?;
    assert!(open(&pool).await?.is_empty());
    let unresolved: i64 =
        sqlx::query_scalar("select count(*) from alert where resolved_at is null")
            .fetch_one(&pool)
            .await?;
    assert_eq!(unresolved, 0);
    Ok(())
}

#[tokio::test]
async fn quality_latency_error_and_stuck_rules_fire_above_their_thresholds_only()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let settings = Settings::default();
    // Quality averaging exactly 0.6 and a p95 of exactly 900 s are not breaches.
    for _ in 0..10 {
        finished_job(&pool, 900, 0.6).await?;
    }
    // Five errors are allowed; throttling and refused inputs are not errors at all.
    for _ in 0..5 {
        failed_try(&pool, "runway", "internal").await?;
    }
    failed_try(&pool, "runway", "throttled").await?;
    failed_try(&pool, "runway", "input_safety").await?;
    // Reaped twice is allowed.
    sqlx::query(
        "insert into job (id, status, stage, prompt, duration_s, quality_min, request_hash, reap_count)
         values ($1, 'running', 'render', 'p', 5, 0, 'h', 2)",
    )
    .bind(uuid::Uuid::now_v7())
    .execute(&pool)
    .await?;
    run_alert_rules(&pool, &settings, now()).await?;
    assert!(open(&pool).await?.is_empty(), "{:?}", open(&pool).await?);

    // One more of each crosses every threshold.
    finished_job(&pool, 2000, 0.1).await?;
    failed_try(&pool, "runway", "output_safety").await?;
    let stuck = uuid::Uuid::now_v7();
    sqlx::query(
        "insert into job (id, status, stage, prompt, duration_s, quality_min, request_hash, reap_count)
         values ($1, 'running', 'render', 'p', 5, 0, 'h', 3)",
    )
    .bind(stuck)
    .execute(&pool)
    .await?;
    run_alert_rules(&pool, &settings, now()).await?;
    assert_eq!(
        open(&pool).await?,
        [
            "backend_errors/runway".to_owned(),
            format!("job_stuck/{stuck}"),
            "latency_high/fleet".into(),
            "quality_low/fleet".into(),
        ]
    );
    // Two hours on, the window holds none of it; only the stuck job still fires.
    run_alert_rules(&pool, &settings, now() + chrono::Duration::hours(2)).await?;
    assert_eq!(open(&pool).await?, [format!("job_stuck/{stuck}")]);
    Ok(())
}

#[tokio::test]
async fn an_alert_reaches_the_webhook_retried_after_a_500() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&hook)
        .await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&hook)
        .await;
    let mut settings = Settings::default();
    settings.alerts.alert_webhook_url = Some(SecretString::from(format!("{}/hook", hook.uri())));
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).expect("date");
    open_budget_day(&pool, day, "UTC", "10".parse()?).await?;
    sqlx::query("update budget_day set spent_micros = 7500000")
        .execute(&pool)
        .await?;
    run_alert_rules(&pool, &settings, now()).await?;
    let notifier = Notifier::from_settings(&settings)
        .expect("a webhook is set")
        .with_first_delay(Duration::from_millis(10));
    assert_eq!(notifier.deliver_pending(&pool).await?, 1);
    let got = hook.received_requests().await.expect("recorded");
    assert_eq!(got.len(), 2, "one 500, then the retry");
    let body: serde_json::Value = serde_json::from_slice(&got[1].body)?;
    let text = body["text"].as_str().expect("text");
    assert!(
        text.contains("[WARNING] budget_warning") && text.contains("75.0 %"),
        "{text}"
    );
    let a = &list_alerts(&pool, true, 10).await?[0];
    assert!(a.notified_open_at.is_some());
    // Nothing left to deliver until the alert resolves; then its resolution goes out.
    assert_eq!(notifier.deliver_pending(&pool).await?, 0);
    sqlx::query("update budget_day set spent_micros = 0")
        .execute(&pool)
        .await?;
    run_alert_rules(&pool, &settings, now()).await?;
    assert_eq!(notifier.deliver_pending(&pool).await?, 1);
    let got = hook.received_requests().await.expect("recorded");
    let body: serde_json::Value = serde_json::from_slice(&got[2].body)?;
    assert!(body["text"].as_str().expect("text").contains("[RESOLVED]"));
    Ok(())
}

#[tokio::test]
async fn a_failing_webhook_is_recorded_without_its_secret_url() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let hook = MockServer::start().await;
    // A Slack webhook's path is its credential.
    let secret_path = "/services/T0AIPROD/B0AIPROD/s3cretWebhookToken";
    Mock::given(method("POST"))
        .and(path(secret_path))
        .respond_with(ResponseTemplate::new(500).set_body_string(format!("no {secret_path}")))
        .mount(&hook)
        .await;
    let mut settings = Settings::default();
    settings.alerts.alert_webhook_url =
        Some(SecretString::from(format!("{}{secret_path}", hook.uri())));
    settings.alerts.alert_webhook_attempts = 2;
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).expect("date");
    open_budget_day(&pool, day, "UTC", "10".parse()?).await?;
    sqlx::query("update budget_day set spent_micros = 7500000")
        .execute(&pool)
        .await?;
    run_alert_rules(&pool, &settings, now()).await?;
    let notifier = Notifier::from_settings(&settings)
        .expect("a webhook is set")
        .with_first_delay(Duration::from_millis(10));
    assert_eq!(notifier.deliver_pending(&pool).await?, 0);
    assert_eq!(hook.received_requests().await.expect("recorded").len(), 2);
    let (tries, error): (i32, Option<String>) =
        sqlx::query_as("select delivery_attempts, last_delivery_error from alert")
            .fetch_one(&pool)
            .await?;
    let error = error.expect("the failure is recorded");
    assert_eq!(tries, 2);
    assert!(error.contains("500"), "{error}");
    assert!(!error.contains("s3cretWebhookToken"), "{error}");
    // Nor is the URL shown when settings are printed.
    assert!(!format!("{settings:?}").contains("s3cretWebhookToken"));
    Ok(())
}
