//! The HTTP API on a real server (port 0) over a real database.

#![allow(missing_docs)]

mod budget;
mod edge;
mod errors;
mod jobs;
mod openapi;
mod probes;
mod tenants;

use std::sync::Arc;

use aiprod_api::AppState;
use aiprod_platform::Settings;
use aiprod_testkit::TestDb;
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// One API server (and its ops port) on its own database, with tenant `t1` and a client
/// that sends a `jobs:write` + `jobs:read` key of it.
struct TestApp {
    base: String,
    ops: String,
    pool: PgPool,
    /// Sends tenant `t1`'s key.
    http: reqwest::Client,
    /// Sends no key.
    anon: reqwest::Client,
    stop: CancellationToken,
    _db: TestDb,
}

/// An admin token long enough for the start-up check.
const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789abcdef";

/// A client that sends `key` as its bearer.
fn client_with(key: &str) -> anyhow::Result<reqwest::Client> {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse()?,
    );
    Ok(reqwest::Client::builder().default_headers(h).build()?)
}

/// Makes tenant `name` (if missing) and a key of it with `scopes`; returns the key.
async fn make_key(
    pool: &PgPool,
    name: &str,
    scopes: &[aiprod_domain::Scope],
) -> anyhow::Result<String> {
    use secrecy::ExposeSecret;
    let tenant = match aiprod_store::tenant_by_name(pool, name).await? {
        Some(t) => t,
        None => aiprod_store::create_tenant(pool, name, &aiprod_store::TenantLimits::default())
            .await?
            .expect("a new tenant"),
    };
    let k = aiprod_store::keys::NewKey::generate();
    aiprod_store::insert_api_key(pool, tenant.id, &k.prefix, &k.hash, "test", scopes).await?;
    Ok(k.secret.expose_secret().to_owned())
}

impl TestApp {
    async fn start() -> anyhow::Result<TestApp> {
        TestApp::start_with(Settings::default()).await
    }

    async fn start_with(settings: Settings) -> anyhow::Result<TestApp> {
        let db = TestDb::new().await?;
        let pool = db.pool().await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let ops = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let ops_base = format!("http://{}", ops.local_addr()?);
        let stop = CancellationToken::new();
        let state = AppState::new(pool.clone(), Arc::new(settings), None);
        tokio::spawn(aiprod_api::serve_ops(ops, state.clone(), stop.clone()));
        tokio::spawn(aiprod_api::serve(listener, state, stop.clone()));
        let key = make_key(
            &pool,
            "t1",
            &[
                aiprod_domain::Scope::JobsWrite,
                aiprod_domain::Scope::JobsRead,
            ],
        )
        .await?;
        Ok(TestApp {
            base,
            ops: ops_base,
            pool,
            http: client_with(&key)?,
            anon: reqwest::Client::new(),
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
