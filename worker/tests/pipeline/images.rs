//! A client's `image_url`: fetched once into the artifact store under the size cap, with no
//! redirect followed and nothing of the server's answer in the job's error.

use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

use aiprod_worker::{JobOutcome, Outcome};
use serde_json::json;

use super::{Rig, test_settings};

/// A small real PNG (the planner's own keyframe format is not needed: any PNG will do).
fn png() -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, 4, 4);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().expect("a header");
    w.write_image_data(&[200u8; 48]).expect("pixels");
    w.finish().expect("finished");
    out
}

#[tokio::test]
async fn a_client_image_is_copied_in_once_and_every_shot_starts_from_our_copy() -> anyhow::Result<()>
{
    let server = MockServer::start().await;
    Mock::given(path("/fox.png"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(png(), "image/png"))
        .expect(1)
        .mount(&server)
        .await;
    let rig = Rig::new(test_settings()).await?;
    let id = rig
        .submit(json!({"prompt": "A fox runs. It jumps.", "duration_s": 6,
                       "image_url": format!("{}/fox.png", server.uri())}))
        .await?;
    assert_eq!(
        rig.drain().await?,
        vec![Outcome::Worked(Some(JobOutcome::Succeeded))]
    );
    let visual: serde_json::Value =
        sqlx::query_scalar("select output from job_stage where job_id = $1 and stage = 'visual'")
            .bind(id)
            .fetch_one(&rig.pool)
            .await?;
    let shots = visual["shots"].as_array().expect("shots");
    assert!(shots.len() >= 2);
    for s in shots {
        let uri = s["keyframe_uri"].as_str().expect("a keyframe");
        assert!(
            uri.starts_with("file://") && uri.ends_with("/client-image.png"),
            "{uri}"
        );
        assert_eq!(std::fs::read(super::path_of(uri))?, png());
    }
    Ok(())
}

#[tokio::test]
async fn a_client_image_too_large_a_redirect_or_an_error_fails_the_job_with_a_clear_reason()
-> anyhow::Result<()> {
    let server = MockServer::start().await;
    Mock::given(path("/huge.png"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(vec![0u8; 2048], "image/png"))
        .mount(&server)
        .await;
    Mock::given(path("/moved.png"))
        .respond_with(
            ResponseTemplate::new(302).insert_header("location", "http://169.254.169.254/"),
        )
        .mount(&server)
        .await;
    Mock::given(path("/secret.png"))
        .respond_with(ResponseTemplate::new(500).set_body_string("internal token abc123"))
        .mount(&server)
        .await;
    let mut settings = test_settings();
    settings.media.max_image_bytes = 1024;
    let rig = Rig::new(settings).await?;
    for (name, want) in [
        ("huge.png", "larger than 1024 bytes"),
        ("moved.png", "answered HTTP 302"),
        ("secret.png", "answered HTTP 500"),
    ] {
        let id = rig
            .submit(json!({"prompt": "A fox.", "image_url": format!("{}/{name}", server.uri())}))
            .await?;
        rig.drain().await?;
        let (status, error): (String, Option<String>) =
            sqlx::query_as("select status::text, error from job where id = $1")
                .bind(id)
                .fetch_one(&rig.pool)
                .await?;
        let error = error.unwrap_or_default();
        assert_eq!(status, "failed", "{name}");
        assert!(
            error.contains("stage visual") && error.contains(want),
            "{name}: {error}"
        );
        assert!(
            !error.contains("abc123"),
            "the server's answer leaked: {error}"
        );
    }
    Ok(())
}
