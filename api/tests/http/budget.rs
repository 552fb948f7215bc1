//! The budget endpoint: today's figures and a change of limit, for admins only.

use aiprod_platform::Settings;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::TestApp;

#[tokio::test]
async fn the_budget_shows_today_and_only_an_admin_changes_its_limit() -> anyhow::Result<()> {
    let settings = Settings {
        admin_token: Some(super::ADMIN_TOKEN.to_owned().into()),
        ..Settings::default()
    };
    let app = TestApp::start_with(settings).await?;
    let url = format!("{}/v1/budget", app.base);
    // A tenant's key without `admin` may not see the fleet's money.
    let r = app.http.get(&url).send().await?;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let b: Value = app
        .anon
        .get(&url)
        .bearer_auth(super::ADMIN_TOKEN)
        .send()
        .await?
        .json()
        .await?;
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
            "api_key",
        ),
        (
            Some("nope"),
            json!({"limit_usd": "150"}),
            401,
            "Authorization",
            "api_key",
        ),
        (
            Some(super::ADMIN_TOKEN),
            json!({"limit_usd": "-1"}),
            422,
            "limit_usd",
            "range",
        ),
        (
            Some(super::ADMIN_TOKEN),
            json!({"limit_usd": "1.0000001"}),
            422,
            "limit_usd",
            "format",
        ),
        (
            Some(super::ADMIN_TOKEN),
            json!({"limit": "5"}),
            422,
            "limit",
            "unknown",
        ),
    ];
    for (token, body, status, field, rule) in cases {
        let mut req = app.anon.put(&url).json(&body);
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
        app.count("budget_entry where kind = 'limit' and actor = 'admin-token'")
            .await?,
        0
    );
    let r = app
        .anon
        .put(&url)
        .bearer_auth(super::ADMIN_TOKEN)
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
        app.count("budget_entry where kind = 'limit' and actor = 'admin-token'")
            .await?,
        1
    );
    // The change is in the audit log: who, what and on which day.
    assert_eq!(
        app.count("audit_log where action = 'budget.set_limit' and actor = 'admin-token'")
            .await?,
        1
    );
    // Without a configured token, only a key with `admin` reaches it; `t1`'s has not.
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
