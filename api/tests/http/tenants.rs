//! Tenants and keys: every endpoint but the probes needs a key; a tenant sees, cancels and
//! replays only its own jobs; scopes and entitlements are enforced; keys are shown once,
//! revoked at once; the rate limit holds across API replicas; admin actions are audited.

use std::sync::Arc;

use aiprod_api::AppState;
use aiprod_domain::Scope;
use aiprod_platform::Settings;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{ADMIN_TOKEN, TestApp, assert_problem, client_with, make_key};

#[tokio::test]
async fn without_a_valid_key_nothing_but_the_probes_answers() -> anyhow::Result<()> {
    let app = TestApp::start().await?;
    let job = json!({"prompt": "A fox.", "backend": "runway", "duration_s": 15});
    let calls = [
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/0190b2a0-0000-7000-8000-000000000000"),
        (
            "POST",
            "/v1/jobs/0190b2a0-0000-7000-8000-000000000000/cancel",
        ),
        ("GET", "/v1/budget"),
        ("PUT", "/v1/budget"),
        ("GET", "/v1/alerts"),
        ("GET", "/v1/tenants"),
        ("GET", "/v1/keys"),
        ("GET", "/v1/audit"),
    ];
    let forged = format!("aiprod_{}_{}", "0".repeat(12), "0".repeat(64));
    for (method, path) in calls {
        for bearer in [None, Some("nonsense"), Some(forged.as_str()), Some("")] {
            let mut req = app
                .anon
                .request(method.parse()?, format!("{}{path}", app.base))
                .json(&job);
            if let Some(b) = bearer {
                req = req.bearer_auth(b);
            }
            let r = req.send().await?;
            assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"aiprod\"");
            assert_problem(r, 401, "Authorization", "api_key").await?;
        }
    }
    assert_eq!(
        app.count("job").await?,
        0,
        "an anonymous call spent nothing"
    );
    Ok(())
}

#[tokio::test]
async fn an_empty_admin_token_is_not_a_way_in() -> anyhow::Result<()> {
    // The loader refuses it at start (platform's tests); even built by hand, an empty token
    // matches no request without a bearer, and none with an empty one.
    let app = TestApp::start_with(Settings {
        admin_token: Some(String::new().into()),
        ..Settings::default()
    })
    .await?;
    let url = format!("{}/v1/budget", app.base);
    assert_eq!(app.anon.get(&url).send().await?.status(), 401);
    assert_eq!(
        app.anon.get(&url).bearer_auth("").send().await?.status(),
        401
    );
    Ok(())
}

#[tokio::test]
async fn two_tenants_cannot_see_cancel_or_replay_each_others_jobs() -> anyhow::Result<()> {
    let app = TestApp::start().await?;
    let other =
        client_with(&make_key(&app.pool, "t2", &[Scope::JobsWrite, Scope::JobsRead]).await?)?;
    let url = format!("{}/v1/jobs", app.base);
    let body = json!({"prompt": "A fox in snow."});
    let mine: Value = app
        .http
        .post(&url)
        .header("Idempotency-Key", "shared-key")
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    let id = mine["id"].as_str().expect("an id").to_owned();
    // Another tenant: not found (never "forbidden": it must not learn the job exists).
    assert_eq!(other.get(format!("{url}/{id}")).send().await?.status(), 404);
    let cancel = other.post(format!("{url}/{id}/cancel")).send().await?;
    assert_eq!(cancel.status(), StatusCode::NOT_FOUND);
    let listed: Value = other.get(&url).send().await?.json().await?;
    assert_eq!(listed["jobs"], json!([]));
    // The same idempotency key from the other tenant makes its own job, even with another
    // body: keys are per tenant, and no other tenant's job id leaks.
    let theirs = other
        .post(&url)
        .header("Idempotency-Key", "shared-key")
        .json(&json!({"prompt": "Something else."}))
        .send()
        .await?;
    assert_eq!(theirs.status(), StatusCode::ACCEPTED);
    assert!(theirs.headers().get("idempotent-replayed").is_none());
    let theirs: Value = theirs.json().await?;
    assert_ne!(theirs["id"], mine["id"]);
    // Within the first tenant, a different body under the key is a 409 that names no job.
    let clash = app
        .http
        .post(&url)
        .header("Idempotency-Key", "shared-key")
        .json(&json!({"prompt": "Different."}))
        .send()
        .await?;
    let p = assert_problem(clash, 409, "Idempotency-Key", "reused").await?;
    assert!(
        !p.to_string().contains(&id)
            && !p.to_string().contains(theirs["id"].as_str().unwrap_or("-"))
    );
    // The owner still sees and cancels its job.
    assert_eq!(
        app.http.get(format!("{url}/{id}")).send().await?.status(),
        200
    );
    assert_eq!(
        app.http
            .post(format!("{url}/{id}/cancel"))
            .send()
            .await?
            .status(),
        200
    );
    Ok(())
}

#[tokio::test]
async fn scopes_entitlements_and_revocation_are_enforced() -> anyhow::Result<()> {
    let app = TestApp::start_with(Settings {
        admin_token: Some(ADMIN_TOKEN.to_owned().into()),
        ..Settings::default()
    })
    .await?;
    let admin = client_with(ADMIN_TOKEN)?;
    // The admin creates a tenant that may use Replicate only, at normal priority, up to $1 a job.
    let t: Value = admin
        .post(format!("{}/v1/tenants", app.base))
        .json(&json!({"name": "acme", "allowed_backends": ["replicate"],
                      "allowed_priorities": ["normal"], "max_job_cost_usd": "1.00"}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(t["allowed_backends"], json!(["replicate"]));
    let made = admin
        .post(format!("{}/v1/tenants/acme/keys", app.base))
        .json(&json!({"scopes": ["jobs:read"]}))
        .send()
        .await?;
    assert_eq!(made.status(), StatusCode::CREATED);
    let made: Value = made.json().await?;
    let reader = client_with(made["key"].as_str().expect("the key, shown once"))?;
    let prefix = made["prefix"].as_str().unwrap_or("-").to_owned();
    // A wrong secret behind the key's prefix is refused and does not count as a use of the key.
    let forged = client_with(&format!("aiprod_{prefix}_{}", "0".repeat(64)))?;
    let r = forged.get(format!("{}/v1/jobs", app.base)).send().await?;
    assert_problem(r, 401, "Authorization", "api_key").await?;
    assert!(!key_used(&app.pool, &prefix).await?);
    let r = reader.get(format!("{}/v1/jobs", app.base)).send().await?;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        key_used(&app.pool, &prefix).await?,
        "a use of the key is recorded"
    );
    // Listings never show a key again.
    let keys: Value = admin
        .get(format!("{}/v1/keys?tenant=acme", app.base))
        .send()
        .await?
        .json()
        .await?;
    assert!(keys["keys"][0].get("key").is_none() && keys["keys"][0].get("hash").is_none());
    assert_eq!(keys["keys"][0]["prefix"], made["prefix"]);
    // A read-only key cannot submit.
    let url = format!("{}/v1/jobs", app.base);
    let r = reader
        .post(&url)
        .json(&json!({"prompt": "A fox."}))
        .send()
        .await?;
    assert_problem(r, 403, "Authorization", "scope").await?;
    // A tenant's key is no admin.
    let r = app
        .http
        .get(format!("{}/v1/tenants", app.base))
        .send()
        .await?;
    assert_problem(r, 403, "Authorization", "scope").await?;
    // Entitlements: a backend, a priority, a cost beyond them are 403s naming them.
    let writer = client_with(&make_key(&app.pool, "acme", &[Scope::JobsWrite]).await?)?;
    for (body, field) in [
        (json!({"prompt": "A fox.", "backend": "runway"}), "backend"),
        (json!({"prompt": "A fox.", "priority": "high"}), "priority"),
        (json!({"prompt": "A fox.", "duration_s": 60}), "duration_s"),
    ] {
        let r = writer.post(&url).json(&body).send().await?;
        assert_problem(r, 403, field, "entitlement").await?;
    }
    let ok = writer
        .post(&url)
        .json(&json!({"prompt": "A fox.", "duration_s": 4}))
        .send()
        .await?;
    assert_eq!(ok.status(), StatusCode::ACCEPTED);
    // Revoked: the same key is refused at once.
    let revoked = admin
        .post(format!("{}/v1/keys/{}/revoke", app.base, prefix))
        .send()
        .await?;
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(
        reader.get(&url).send().await?.status(),
        StatusCode::UNAUTHORIZED
    );
    // Every admin action and the job's use of money are in the audit log.
    let audit: Value = admin
        .get(format!("{}/v1/audit", app.base))
        .send()
        .await?
        .json()
        .await?;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        ["key.revoke", "job.create", "key.create", "tenant.create"]
    );
    assert_eq!(audit["entries"][1]["remote_addr"], "127.0.0.1");
    Ok(())
}

#[tokio::test]
async fn the_rate_limit_holds_across_two_api_processes() -> anyhow::Result<()> {
    let app = TestApp::start().await?;
    sqlx::query("update tenant set rate_per_minute = 5 where name = 't1'")
        .execute(&app.pool)
        .await?;
    // A second API replica on the same database.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let second = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let state = AppState::new(app.pool.clone(), Arc::new(Settings::default()), None);
    tokio::spawn(aiprod_api::serve(listener, state, stop.clone()));
    let mut accepted = 0;
    let mut refused = Vec::new();
    for i in 0..10 {
        let base = if i % 2 == 0 { &app.base } else { &second };
        let r = app
            .http
            .post(format!("{base}/v1/jobs"))
            .json(&json!({"prompt": format!("Fox {i}.")}))
            .send()
            .await?;
        match r.status().as_u16() {
            202 => {
                accepted += 1;
                assert_eq!(r.headers()["ratelimit-limit"], "5");
            }
            429 => refused.push(r),
            s => anyhow::bail!("unexpected status {s}"),
        }
    }
    stop.cancel();
    assert_eq!(accepted, 5, "five a minute, whichever replica takes them");
    assert_eq!(refused.len(), 5);
    let r = refused.remove(0);
    let retry: u64 = r.headers()["retry-after"].to_str()?.parse()?;
    assert!((1..=12).contains(&retry), "one more every 12 s: {retry}");
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    assert_problem(r, 429, "tenant", "rate_limit").await?;
    assert_eq!(app.count("job").await?, 5);
    Ok(())
}

/// Whether the key with `prefix` has a recorded use.
async fn key_used(pool: &sqlx::PgPool, prefix: &str) -> anyhow::Result<bool> {
    Ok(
        sqlx::query_scalar("select last_used_at is not null from api_key where prefix = $1")
            .bind(prefix)
            .fetch_one(pool)
            .await?,
    )
}
