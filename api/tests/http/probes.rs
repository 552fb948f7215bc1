//! The health and readiness probes and the Prometheus metrics.

use reqwest::StatusCode;
use serde_json::json;

use super::TestApp;

#[tokio::test]
async fn probes_and_metrics_answer() -> anyhow::Result<()> {
    let app = TestApp::start().await?;
    app.post_job(&json!({"prompt": "A fox."}), None).await?;
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            app.anon
                .get(format!("{}{path}", app.base))
                .send()
                .await?
                .status(),
            StatusCode::OK
        );
    }
    // Metrics name tenants' money: not on the public port, only on the ops one.
    let public = app.anon.get(format!("{}/metrics", app.base)).send().await?;
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    let metrics = app
        .anon
        .get(format!("{}/metrics", app.ops))
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
async fn every_answer_carries_a_request_id_the_clients_own_when_it_sent_one() -> anyhow::Result<()>
{
    let app = TestApp::start().await?;
    let fresh = app.http.get(format!("{}/v1/jobs", app.base)).send().await?;
    let id = fresh
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("an x-request-id")
        .to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let echoed = app
        .http
        .get(format!("{}/v1/jobs/not-a-uuid", app.base))
        .header("x-request-id", "trace-me-42")
        .send()
        .await?;
    assert_eq!(echoed.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        echoed
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("trace-me-42")
    );
    Ok(())
}
