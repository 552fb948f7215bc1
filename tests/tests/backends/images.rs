//! A client image that the fetcher refuses is the client's fault and nobody else's: the job
//! fails `invalid_asset` before any provider is called, and no backend's health hears of it
//! (before, Veo fetched a client's link itself, and a failing link counted against Veo).

use aiprod_testkit::counting::CountingServer;
use aiprod_tests::stubs::{Provider, Stub};
use serde_json::json;

use crate::protocol::Rig;
use crate::settings_for;

#[tokio::test]
async fn a_refused_client_image_fails_the_job_and_never_touches_a_backends_health()
-> anyhow::Result<()> {
    let veo = Stub::start(Provider::Veo).await;
    let target = CountingServer::start("127.0.0.1").await?;
    let mut settings = settings_for(Provider::Veo, &veo.uri());
    // Plain http allowed, so that only the address rule stands in the way.
    settings.media.image_fetch_allow_http = true;
    let rig = Rig::new(settings).await?;
    let (_, status, error) = rig
        .run(
            json!({"prompt": "A fox.", "duration_s": 4, "quality_min": 0, "backend": "veo3",
                    "image_url": format!("http://{}/fox.png", target.addr)}),
        )
        .await?;
    assert_eq!(status, "failed");
    let error = error.unwrap_or_default();
    assert!(
        error.contains("invalid_asset") && error.contains("a loopback address"),
        "{error}"
    );
    assert_eq!(target.accepted(), 0, "the client's link was fetched");
    assert_eq!(
        veo.server
            .received_requests()
            .await
            .unwrap_or_default()
            .len(),
        0
    );
    let health: Vec<(String, i32, Option<String>)> = sqlx::query_as(
        "select backend::text, consecutive_failures, last_error from backend_health order by backend",
    )
    .fetch_all(&rig.pool)
    .await?;
    for (backend, failures, last_error) in health {
        assert_eq!(
            (failures, last_error),
            (0, None),
            "{backend}'s health was touched"
        );
    }
    Ok(())
}
