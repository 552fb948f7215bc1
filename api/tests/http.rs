//! The HTTP API on a real server (port 0) over a real database.

#![allow(missing_docs)]

use std::sync::Arc;

use aiprod_api::AppState;
use aiprod_platform::Settings;
use aiprod_testkit::TestDb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// One API server on its own database.
struct TestApp {
    base: String,
    pool: PgPool,
    http: reqwest::Client,
    stop: CancellationToken,
    _db: TestDb,
}

impl TestApp {
    async fn start() -> anyhow::Result<TestApp> {
        TestApp::start_with(Settings::default()).await
    }

    async fn start_with(settings: Settings) -> anyhow::Result<TestApp> {
        let db = TestDb::new().await?;
        let pool = db.pool().await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        let state = AppState {
            pool: pool.clone(),
            settings: Arc::new(settings),
            store: None,
        };
        tokio::spawn(aiprod_api::serve(listener, state, stop.clone()));
        Ok(TestApp {
            base,
            pool,
            http: reqwest::Client::new(),
            stop,
            _db: db,
        })
    }

    async fn post_job(&self, body: &Value, key: Option<&str>) -> anyhow::Result<reqwest::Response> {
        let mut req = self.http.post(format!("{}/v1/jobs", self.base)).json(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        Ok(req.send().await?)
    }

    async fn count(&self, table: &str) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(&self.pool)
            .await?)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Asserts a problem+json answer naming `field` and `rule`.
async fn assert_problem(
    resp: reqwest::Response,
    status: u16,
    field: &str,
    rule: &str,
) -> anyhow::Result<Value> {
    assert_eq!(resp.status().as_u16(), status);
    let ct = resp.headers()["content-type"].to_str()?.to_owned();
    assert_eq!(ct, "application/problem+json");
    let body: Value = resp.json().await?;
    assert_eq!(body["status"], status);
    assert_eq!(body["field"], field, "{body}");
    assert_eq!(body["rule"], rule, "{body}");
    Ok(body)
}

#[tokio::test]
async fn a_valid_job_is_accepted_with_its_outbox_row() -> anyhow::Result<()> {
    let app = TestApp::start().await?;
    let resp = app
        .post_job(
            &json!({"prompt": "A fox runs.", "duration_s": 8, "metadata": {"team": "ads"}}),
            None,
        )
        .await?;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = resp.headers()["location"].to_str()?.to_owned();
    let job: Value = resp.json().await?;
    assert_eq!(
        location,
        format!("/v1/jobs/{}", job["id"].as_str().expect("id"))
    );
    assert_eq!(job["status"], "queued");
    assert_eq!(job["stage"], "sanitize");
    assert_eq!(job["estimated_cost_usd"], Value::Null);
    assert_eq!(job["metadata"], json!({"team": "ads"}));
    let stages = job["stages"].as_array().expect("stages");
    assert_eq!(stages.len(), 9);
    assert!(
        stages
            .iter()
            .all(|s| s["status"] == "pending" && s["attempts"] == 0)
    );
    assert_eq!(
        (app.count("job").await?, app.count("outbox").await?),
        (1, 1)
    );

    let got: Value = app
        .http
        .get(format!("{}{location}", app.base))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(got["id"], job["id"]);
    Ok(())
}

#[tokio::test]
async fn bad_bodies_get_problem_json_and_write_nothing() -> anyhow::Result<()> {
    let app = TestApp::start().await?;
    let url = format!("{}/v1/jobs", app.base);
    let malformed = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"prompt\":")
        .send()
        .await?;
    assert_problem(malformed, 400, "body", "json").await?;
    let wrong_type = app
        .http
        .post(&url)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await?;
    assert_problem(wrong_type, 415, "body", "content_type").await?;
    // One byte over the limit is refused for its size; at the limit the body is read (and then
    // refused for its over-long prompt).
    let limit = Settings::default().max_body_bytes;
    let body_of = |len: usize| {
        format!(
            r#"{{"prompt":"{}"}}"#,
            "x".repeat(len - r#"{"prompt":""}"#.len())
        )
    };
    let post_raw = |body: String| {
        app.http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_problem(post_raw(body_of(limit + 1)).await?, 413, "body", "size").await?;
    assert_problem(post_raw(body_of(limit)).await?, 422, "prompt", "length").await?;
    let cases = [
        (json!({}), "prompt", "required"),
        (
            json!({"prompt": "a", "duration_s": 61}),
            "duration_s",
            "range",
        ),
        (
            json!({"prompt": "a", "quality_min": -0.1}),
            "quality_min",
            "range",
        ),
        (
            json!({"prompt": "a", "priority": "urgent"}),
            "priority",
            "enum",
        ),
        (json!({"prompt": "a", "backend": "sora"}), "backend", "enum"),
        (json!({"prompt": "a", "colour": "red"}), "colour", "unknown"),
        (json!("just a string"), "body", "type"),
    ];
    for (body, field, rule) in cases {
        let problem = assert_problem(app.post_job(&body, None).await?, 422, field, rule).await?;
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains(field) || field == "body"),
            "{problem}"
        );
    }
    let bad_key = app
        .post_job(&json!({"prompt": "a"}), Some(&"k".repeat(300)))
        .await?;
    assert_problem(bad_key, 422, "Idempotency-Key", "length").await?;
    assert_eq!(
        (app.count("job").await?, app.count("outbox").await?),
        (0, 0)
    );
    Ok(())
}

#[tokio::test]
async fn an_idempotent_resubmit_returns_the_same_job() -> anyhow::Result<()> {
    let app = TestApp::start().await?;
    let body = json!({"prompt": "A fox runs.", "duration_s": 5});
    let first: Value = app.post_job(&body, Some("key-1")).await?.json().await?;
    // The same request with a default spelled out is the same request.
    let same = json!({"prompt": "A fox runs.", "duration_s": 5, "backend": "auto"});
    let again = app.post_job(&same, Some("key-1")).await?;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let second: Value = again.json().await?;
    assert_eq!(first["id"], second["id"]);
    assert_eq!(
        (app.count("job").await?, app.count("outbox").await?),
        (1, 1)
    );

    let other = app
        .post_job(&json!({"prompt": "A cat sleeps."}), Some("key-1"))
        .await?;
    let problem = assert_problem(other, 409, "Idempotency-Key", "reused").await?;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains(first["id"].as_str().expect("id")))
    );
    assert_eq!(app.count("job").await?, 1);
    Ok(())
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_told_apart() -> anyhow::Result<()> {
    let app = TestApp::start().await?;
    let unknown = app
        .http
        .get(format!("{}/v1/jobs/{}", app.base, uuid::Uuid::now_v7()))
        .send()
        .await?;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        unknown.headers()["content-type"],
        "application/problem+json"
    );
    let malformed = app
        .http
        .get(format!("{}/v1/jobs/not-a-uuid", app.base))
        .send()
        .await?;
    assert_problem(malformed, 422, "id", "format").await?;
    let route = app
        .http
        .get(format!("{}/v2/nothing", app.base))
        .send()
        .await?;
    assert_eq!(route.status(), StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn listing_pages_through_every_job_once_newest_first() -> anyhow::Result<()> {
    let app = TestApp::start().await?;
    let mut ids = Vec::new();
    for i in 0..5 {
        let job: Value = app
            .post_job(&json!({"prompt": format!("job {i}")}), None)
            .await?
            .json()
            .await?;
        ids.push(job["id"].as_str().expect("id").to_owned());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/jobs?limit=2", app.base);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = app.http.get(url).send().await?.json().await?;
        let jobs = page["jobs"].as_array().expect("jobs");
        assert!(jobs.len() <= 2);
        seen.extend(
            jobs.iter()
                .map(|j| j["id"].as_str().expect("id").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);

    let canceled = &ids[0];
    app.http
        .post(format!("{}/v1/jobs/{canceled}/cancel", app.base))
        .send()
        .await?;
    let page: Value = app
        .http
        .get(format!("{}/v1/jobs?status=canceled", app.base))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["jobs"][0]["id"], canceled.as_str());
    for (query, field, rule) in [
        ("limit=0", "limit", "range"),
        ("status=done", "status", "enum"),
        ("cursor=x", "cursor", "format"),
        ("page=2", "page", "unknown"),
    ] {
        let r = app
            .http
            .get(format!("{}/v1/jobs?{query}", app.base))
            .send()
            .await?;
        assert_problem(r, 422, field, rule).await?;
    }
    Ok(())
}

#[tokio::test]
async fn canceling_a_queued_job_ends_it_and_a_second_cancel_conflicts() -> anyhow::Result<()> {
    let app = TestApp::start().await?;
    let job: Value = app
        .post_job(&json!({"prompt": "A fox."}), None)
        .await?
        .json()
        .await?;
    let id = job["id"].as_str().expect("id");
    let first = app
        .http
        .post(format!("{}/v1/jobs/{id}/cancel", app.base))
        .send()
        .await?;
    assert_eq!(first.status(), StatusCode::OK);
    let body: Value = first.json().await?;
    assert_eq!(body["status"], "canceled");
    assert!(body["finished_at"].is_string());
    let second = app
        .http
        .post(format!("{}/v1/jobs/{id}/cancel", app.base))
        .send()
        .await?;
    assert_problem(second, 409, "status", "terminal").await?;
    Ok(())
}

#[tokio::test]
async fn probes_and_metrics_answer() -> anyhow::Result<()> {
    let app = TestApp::start().await?;
    app.post_job(&json!({"prompt": "A fox."}), None).await?;
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            app.http
                .get(format!("{}{path}", app.base))
                .send()
                .await?
                .status(),
            StatusCode::OK
        );
    }
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base))
        .send()
        .await?
        .text()
        .await?;
    let created = metrics
        .lines()
        .find(|l| l.starts_with("aiprod_jobs_created_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("aiprod_jobs_created_total is exported");
    assert!(created >= 1.0);
    assert!(metrics.contains("aiprod_jobs_in_flight"));
    Ok(())
}

#[tokio::test]
async fn the_budget_shows_today_and_only_an_admin_changes_its_limit() -> anyhow::Result<()> {
    let settings = Settings {
        admin_token: Some("s3cret".to_owned().into()),
        ..Settings::default()
    };
    let app = TestApp::start_with(settings).await?;
    let url = format!("{}/v1/budget", app.base);
    let b: Value = app.http.get(&url).send().await?.json().await?;
    assert_eq!(b["limit_usd"], "100.00");
    assert_eq!(b["remaining_usd"], "100.00");
    assert_eq!(b["time_zone"], "UTC");
    assert_eq!(
        b["estimate_5s_shot_usd"],
        json!({"runway": "30.00", "veo3": "3.10", "replicate": "0.26"})
    );
    // No token, a wrong token, bad limits: problem+json naming the field and the rule.
    let cases: [(Option<&str>, Value, u16, &str, &str); 5] = [
        (
            None,
            json!({"limit_usd": "150"}),
            401,
            "Authorization",
            "admin_token",
        ),
        (
            Some("nope"),
            json!({"limit_usd": "150"}),
            401,
            "Authorization",
            "admin_token",
        ),
        (
            Some("s3cret"),
            json!({"limit_usd": "-1"}),
            422,
            "limit_usd",
            "range",
        ),
        (
            Some("s3cret"),
            json!({"limit_usd": "1.0000001"}),
            422,
            "limit_usd",
            "format",
        ),
        (
            Some("s3cret"),
            json!({"limit": "5"}),
            422,
            "limit",
            "unknown",
        ),
    ];
    for (token, body, status, field, rule) in cases {
        let mut req = app.http.put(&url).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await?;
        assert_eq!(r.status().as_u16(), status, "{body}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let p: Value = r.json().await?;
        assert_eq!(
            (p["field"].as_str(), p["rule"].as_str()),
            (Some(field), Some(rule)),
            "{p}"
        );
    }
    assert_eq!(
        app.count("budget_entry where kind = 'limit' and actor = 'api'")
            .await?,
        0
    );
    let r = app
        .http
        .put(&url)
        .bearer_auth("s3cret")
        .json(&json!({"limit_usd": "150.25"}))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    let b: Value = r.json().await?;
    assert_eq!(
        (b["limit_usd"].as_str(), b["opened"].as_bool()),
        (Some("150.25"), Some(true))
    );
    assert_eq!(
        app.count("budget_entry where kind = 'limit' and actor = 'api'")
            .await?,
        1
    );
    // Without a configured token, the admin endpoint is off.
    let off = TestApp::start().await?;
    let r = off
        .http
        .put(format!("{}/v1/budget", off.base))
        .json(&json!({"limit_usd": "1"}))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    Ok(())
}
