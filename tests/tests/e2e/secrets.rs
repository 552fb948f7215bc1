//! No configured secret ever reaches a log line or the database. The fleet runs as deployed
//! (migrate, api, scheduler, worker), with every credential set: provider keys and tokens on
//! stub providers, the admin token, a tenant's API key, the database password, and an alert
//! webhook whose URL (a Slack webhook's path is its secret) answers 500. Jobs succeed, fail at a provider, are refused
//! a client image; an alert fires and its delivery fails. Then everything the run left is
//! searched for each secret: every process's log (at debug level) and the text of the alert,
//! backend_health, render_task, job_stage and job rows.

use std::time::{Duration, Instant};

use aiprod_testkit::TestDb;
use aiprod_testkit::counting::CountingServer;
use aiprod_tests::stubs::{Provider, Stub};
use aiprod_tests::{Proc, Scratch, free_port, keyed, tenant_key, wait_ready};
use serde_json::json;
use sqlx::{Connection, PgPool};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{base_env, wait_all_terminal};

/// `url` with `password` as its user's password, when the server accepts it (a server that
/// trusts its clients ignores it, one that checks passwords already has one in the URL).
async fn with_password(url: &str, password: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let (userinfo, host) = rest.split_once('@')?;
    if userinfo.contains(':') {
        return None;
    }
    let candidate = format!("{scheme}://{userinfo}:{password}@{host}");
    let c = sqlx::PgConnection::connect(&candidate).await.ok()?;
    let _ = c.close().await;
    Some(candidate)
}

/// The password in a `postgres://user:password@…` URL.
fn password_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    userinfo.split_once(':').map(|(_, p)| p.to_owned())
}

/// Every text the run left in the database's tables that can hold an error or a message.
async fn database_text(pool: &PgPool) -> anyhow::Result<String> {
    let mut all = String::new();
    for q in [
        "select coalesce(string_agg(t::text, E'\\n'), '') from alert t",
        "select coalesce(string_agg(t::text, E'\\n'), '') from backend_health t",
        "select coalesce(string_agg(t::text, E'\\n'), '') from render_task t",
        "select coalesce(string_agg(t::text, E'\\n'), '') from job_stage t",
        "select coalesce(string_agg(t::text, E'\\n'), '') from budget_entry t",
        // The job row minus the client's own link (its `image_url` carries the client's token
        // by design); every other column.
        "select coalesce(string_agg((to_jsonb(t) - 'image_url')::text, E'\\n'), '') from job t",
    ] {
        let text: String = sqlx::query_scalar(q).fetch_one(pool).await?;
        all.push_str(&text);
        all.push('\n');
    }
    Ok(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_configured_secret_reaches_a_log_line_or_the_database() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let dir = Scratch::new("secrets")?;
    let runway = Stub::start(Provider::Runway).await;
    let veo = Stub::start(Provider::Veo).await;
    let replicate = Stub::start(Provider::Replicate).await;
    // Every Veo render fails: a provider error lands in render_task, backend_health and the job.
    veo.fail_all(true);
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("webhook is down"))
        .mount(&hook)
        .await;
    let hook_secret = "hookS3CRETz9y8x7";
    let image_token = "imgT0KENq1w2e3";
    let target = CountingServer::start("127.0.0.1").await?;

    let mut secrets = vec![
        ("runway key", "key_S3CRETrunway4f8a2c".to_owned()),
        ("veo token", "ya29.S3CRETveo7d1e9b".to_owned()),
        ("replicate token", "r8_S3CRETreplicate5c3b".to_owned()),
        (
            "admin token",
            "admS3CRET0e6f1a2b3c4d5e6f7a8b9c0d1e2f3a4b".to_owned(),
        ),
        ("webhook path", hook_secret.to_owned()),
    ];
    let db_url = match with_password(&db.url, "pgS3CRETpw71c0").await {
        Some(u) => u,
        None => db.url.clone(),
    };
    if let Some(pw) = password_of(&db_url) {
        secrets.push(("database password", pw));
    }
    let secret = |what: &str| {
        secrets
            .iter()
            .find(|(w, _)| *w == what)
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    };

    let port = free_port();
    let mut env = base_env(&db, &dir);
    env.retain(|(k, _)| {
        *k != "DATABASE_URL" && *k != "AIPROD_SIMULATE_BACKENDS" && *k != "RUST_LOG"
    });
    env.extend([
        ("DATABASE_URL", db_url.clone()),
        ("RUST_LOG", "debug".to_owned()),
        ("AIPROD_SIMULATE_BACKENDS", "false".to_owned()),
        ("AIPROD_RUNWAY_API_KEY", secret("runway key")),
        ("AIPROD_RUNWAY_BASE_URL", runway.uri()),
        ("AIPROD_RUNWAY_POLL_MS", "100".to_owned()),
        ("AIPROD_VEO_PROJECT", "aiprod-test".to_owned()),
        ("AIPROD_VEO_BASE_URL", veo.uri()),
        ("AIPROD_VEO_ACCESS_TOKEN", secret("veo token")),
        ("AIPROD_VEO_POLL_MS", "100".to_owned()),
        ("AIPROD_REPLICATE_API_TOKEN", secret("replicate token")),
        ("AIPROD_REPLICATE_BASE_URL", replicate.uri()),
        ("AIPROD_REPLICATE_POLL_MS", "100".to_owned()),
        ("AIPROD_ADMIN_TOKEN", secret("admin token")),
        (
            "AIPROD_ALERT_WEBHOOK_URL",
            format!("{}/services/T0AIPROD/B0AIPROD/{hook_secret}", hook.uri()),
        ),
        ("AIPROD_ALERT_WEBHOOK_ATTEMPTS", "2".to_owned()),
        ("AIPROD_ALERT_INTERVAL_MS", "200".to_owned()),
        ("AIPROD_ALERT_BACKEND_ERRORS_MAX", "0".to_owned()),
        ("AIPROD_DAILY_BUDGET_USD", "1000".to_owned()),
        ("AIPROD_RETRY__MAX_ATTEMPTS", "2".to_owned()),
        ("AIPROD_RETRY__INITIAL_MS", "50".to_owned()),
        ("AIPROD_IMAGE_FETCH_ALLOW_HTTP", "true".to_owned()),
    ]);
    let mut migrate = Proc::start("migrate", &["migrate"], &env, &dir.0)?;
    assert_eq!(
        migrate.wait_exit(Duration::from_secs(60))?,
        Some(0),
        "{}",
        migrate.tail()
    );
    let mut procs = vec![
        Proc::start(
            "api",
            &[
                "api",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--ops-listen",
                "127.0.0.1:0",
            ],
            &env,
            &dir.0,
        )?,
        Proc::start(
            "scheduler",
            &["scheduler", "--listen", "127.0.0.1:0"],
            &env,
            &dir.0,
        )?,
        Proc::start(
            "worker",
            &["worker", "--listen", "127.0.0.1:0"],
            &env,
            &dir.0,
        )?,
    ];
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &format!("{base}/readyz"), Duration::from_secs(60)).await?;

    // The admin token in use, once wrong and once right.
    for token in ["not-the-token".to_owned(), secret("admin token")] {
        http.put(format!("{base}/v1/budget"))
            .bearer_auth(token)
            .json(&json!({"limit_usd": "1000.00"}))
            .send()
            .await?;
    }
    let jobs = [
        json!({"prompt": "A fox runs through snow.", "duration_s": 4, "backend": "runway", "quality_min": 0}),
        json!({"prompt": "A heron lands on a pond.", "duration_s": 4, "backend": "veo3", "quality_min": 0}),
        json!({"prompt": "A kite over a beach.", "duration_s": 4, "backend": "replicate", "quality_min": 0}),
        json!({"prompt": "A cat on a wall.", "duration_s": 4, "quality_min": 0,
               "image_url": format!("http://{}/cat.png?token={image_token}", target.addr)}),
    ];
    let key = tenant_key(&pool, "e2e").await?;
    secrets.push(("tenant's API key", key.clone()));
    let keyed = keyed(&key)?;
    for body in &jobs {
        let r = keyed
            .post(format!("{base}/v1/jobs"))
            .json(body)
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 202, "{}", r.text().await?);
    }
    wait_all_terminal(&pool, jobs.len() as i64, Duration::from_secs(300)).await?;
    // The backend-errors alert fires on Veo's failures; its delivery fails twice.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let failed: i64 = sqlx::query_scalar(
            "select count(*) from alert where delivery_attempts >= 2 and last_delivery_error is not null",
        )
        .fetch_one(&pool)
        .await?;
        if failed > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no alert delivery failed: {}",
            procs[1].tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for p in &mut procs {
        p.signal("TERM")?;
        p.wait_exit(Duration::from_secs(60))?;
    }

    // The run did what it should, so that there was something to leak.
    let outcomes: Vec<(String, String, Option<String>)> =
        sqlx::query_as("select prompt, status::text, error from job order by created_at")
            .fetch_all(&pool)
            .await?;
    let status_of = |prompt: &str| {
        outcomes
            .iter()
            .find(|(p, _, _)| p.starts_with(prompt))
            .map(|(_, s, e)| (s.clone(), e.clone().unwrap_or_default()))
            .unwrap_or_default()
    };
    assert_eq!(status_of("A fox").0, "succeeded", "{outcomes:?}");
    assert_eq!(status_of("A kite").0, "succeeded", "{outcomes:?}");
    assert_eq!(status_of("A heron").0, "failed", "{outcomes:?}");
    let (cat, cat_error) = status_of("A cat");
    assert_eq!(cat, "failed");
    assert!(cat_error.contains("invalid_asset"), "{cat_error}");
    assert_eq!(target.accepted(), 0);
    let veo_error: Option<String> =
        sqlx::query_scalar("select last_error from backend_health where backend = 'veo3'")
            .fetch_one(&pool)
            .await?;
    assert!(veo_error.is_some(), "Veo's failures are on record");
    assert!(
        !hook
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    );

    let mut logs = String::new();
    for p in procs.iter().chain([&migrate]) {
        logs.push_str(&std::fs::read_to_string(&p.log)?);
    }
    assert!(
        logs.contains("alert webhook failed"),
        "the delivery failure is logged"
    );
    let stored = database_text(&pool).await?;
    secrets.push(("client image token", image_token.to_owned()));
    for (what, value) in &secrets {
        for (place, text) in [("the logs", &logs), ("the database", &stored)] {
            if let Some(at) = text.find(value.as_str()) {
                let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
                panic!("the {what} is in {place}: {}", &text[start..end]);
            }
        }
    }
    Ok(())
}
