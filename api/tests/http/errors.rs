//! Bad input: malformed, mistyped, oversized and invalid bodies, and unknown or malformed ids,
//! each answered with problem+json and writing nothing.

use aiprod_platform::Settings;
use reqwest::StatusCode;
use serde_json::json;

use super::{TestApp, assert_problem};

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
