//! The HTTP API on a real server (port 0) over a real database.

#![allow(missing_docs)]

mod budget;
mod errors;
mod jobs;
mod probes;

use std::sync::Arc;

use aiprod_api::AppState;
use aiprod_platform::Settings;
use aiprod_testkit::TestDb;
use serde_json::Value;
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
