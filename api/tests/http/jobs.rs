//! Jobs over HTTP: accepting one with its outbox row, idempotent resubmits, paging through the
//! list, and canceling.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{TestApp, assert_problem};

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
    // The answer names no job: a reused key must not hand out another request's job.
    assert!(
        !problem
            .to_string()
            .contains(first["id"].as_str().expect("id"))
    );
    assert_eq!(app.count("job").await?, 1);
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
    // The allowed statuses come from the status type itself: none is left out.
    let r = app
        .http
        .get(format!("{}/v1/jobs?status=done", app.base))
        .send()
        .await?;
    let problem: Value = r.json().await?;
    assert!(
        problem["detail"].as_str().is_some_and(
            |d| d.contains("queued, running, waiting_budget, succeeded, failed, canceled")
        ),
        "{problem}"
    );
    let waiting = app
        .http
        .get(format!("{}/v1/jobs?status=waiting_budget", app.base))
        .send()
        .await?;
    assert_eq!(waiting.status(), StatusCode::OK);
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
