//! The edge against hostile input: only `application/json` bodies, no NUL characters (in a
//! body, a path segment or a query parameter), path and query errors as problem+json, a
//! half-sent request dropped, shutdown within its deadline, load shed with a 503, CORS only for
//! configured origins.

use std::time::Duration;

use aiprod_domain::Scope;
use aiprod_platform::Settings;
use aiprod_platform::config::ApiSettings;
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{TestApp, assert_problem, client_with, make_key};

#[tokio::test]
async fn only_json_declared_as_json_is_read() -> anyhow::Result<()> {
    let app = TestApp::start().await?;
    let url = format!("{}/v1/jobs", app.base);
    for ct in [
        Some("text/plain; x=+json"),
        Some("application/vnd.evil+json"),
        None,
    ] {
        let mut req = app.http.post(&url).body(r#"{"prompt":"A fox."}"#);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        assert_problem(req.send().await?, 415, "body", "content_type").await?;
    }
    assert_eq!(app.count("job").await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_nul_character_is_a_422_naming_its_field_not_a_500() -> anyhow::Result<()> {
    let app = TestApp::start().await?;
    let url = format!("{}/v1/jobs", app.base);
    for (body, field) in [
        (json!({"prompt": "A fox\u{0}."}), "prompt"),
        (
            json!({"prompt": "A fox.", "metadata": {"note": "x\u{0}"}}),
            "metadata.note",
        ),
        (
            json!({"prompt": "A fox.", "metadata": {"k\u{0}": 1}}),
            "metadata.k\\u0000",
        ),
    ] {
        let r = app.http.post(&url).json(&body).send().await?;
        assert_problem(r, 422, field, "nul_character").await?;
    }
    let r = app.http.get(format!("{url}?limit=%FF")).send().await?;
    assert!(r.status().is_client_error());
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = app.http.get(format!("{url}/%FF%FE")).send().await?;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(app.count("job").await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_nul_in_a_path_segment_or_query_parameter_is_a_422_naming_it_not_a_500()
-> anyhow::Result<()> {
    // Found by the fuzz test: these strings went to PostgreSQL, which cannot hold a NUL.
    let app = TestApp::start().await?;
    let admin = client_with(&make_key(&app.pool, "ops", &[Scope::Admin]).await?)?;
    let calls = [
        ("GET", "/v1/keys?tenant=a%00b", "tenant"),
        ("GET", "/v1/keys?a%00b=1", "query"),
        ("POST", "/v1/keys/a%00b/revoke", "key"),
        ("POST", "/v1/tenants/a%00b/keys", "name"),
    ];
    for (method, path, field) in calls {
        let r = admin
            .request(method.parse()?, format!("{}{path}", app.base))
            .json(&json!({"scopes": ["jobs:read"]}))
            .send()
            .await?;
        assert_problem(r, 422, field, "nul_character").await?;
    }
    Ok(())
}

fn edge(api: ApiSettings) -> Settings {
    Settings {
        api,
        ..Settings::default()
    }
}

#[tokio::test]
async fn a_half_sent_request_is_dropped_and_shutdown_still_ends() -> anyhow::Result<()> {
    let app = TestApp::start_with(edge(ApiSettings {
        header_timeout: Duration::from_millis(300),
        shutdown_deadline: Duration::from_millis(500),
        ..ApiSettings::default()
    }))
    .await?;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut slow = TcpStream::connect(&addr).await?;
    slow.write_all(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-")
        .await?;
    // The server closes it (with a 408 or without a word) long before this bound.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the half-sent request still holds its connection"
    );
    // Another half-sent request is open when the stop comes: the server still returns.
    let mut held = TcpStream::connect(&addr).await?;
    held.write_all(b"GET /healthz HTTP/1.1\r\n").await?;
    app.stop.cancel();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), held.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "shutdown waited on a half-sent request");
    Ok(())
}

#[tokio::test]
async fn over_its_in_flight_limit_the_api_sheds_with_503_and_retry_after() -> anyhow::Result<()> {
    let app = TestApp::start_with(edge(ApiSettings {
        http_max_in_flight: 1,
        ..ApiSettings::default()
    }))
    .await?;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let key = super::make_key(&app.pool, "t1", &[aiprod_domain::Scope::JobsWrite]).await?;
    // One request holds the only slot while its body trickles in.
    let mut slow = TcpStream::connect(&addr).await?;
    let head = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    slow.write_all(head.as_bytes()).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = app.anon.get(format!("{}/healthz", app.base)).send().await?;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_problem(r, 503, "request", "overloaded").await?;
    drop(slow);
    Ok(())
}

#[tokio::test]
async fn cors_answers_only_the_configured_origins() -> anyhow::Result<()> {
    let closed = TestApp::start().await?;
    let open = TestApp::start_with(edge(ApiSettings {
        cors_origins: vec!["https://app.example".into()],
        ..ApiSettings::default()
    }))
    .await?;
    let preflight = |app: &TestApp, origin: &str| {
        app.anon
            .request(reqwest::Method::OPTIONS, format!("{}/v1/jobs", app.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let r = preflight(&open, "https://app.example").await?;
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let r = preflight(&open, "https://evil.example").await?;
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = preflight(&closed, "https://app.example").await?;
    assert!(r.headers().get("access-control-allow-origin").is_none());
    Ok(())
}
