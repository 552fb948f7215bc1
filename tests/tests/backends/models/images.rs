//! The image models: Imagen on the Vertex stub, an official model on the Replicate stub, the
//! simulation with the real ffmpeg, and the settings that choose among them.

use std::time::Duration;

use aiprod_backends::models::{
    self, ImageModel, Imagen, ModelError, ReplicateImage, SimulatedImage,
};
use aiprod_domain::Money;
use aiprod_platform::Settings;
use aiprod_platform::config::KeyframeKind;
use aiprod_tests::stubs::{ImagenStep, Provider, Stub};
use serde_json::{Value, json};

use super::{TIMEOUT, keyframe, png_size};
use crate::settings_for;

fn imagen(stub: &Stub) -> Imagen {
    let s = settings_for(Provider::Veo, &stub.uri());
    Imagen::new(
        &s.vertex,
        &s.models.imagen_model,
        s.models.imagen_usd_per_image,
        TIMEOUT,
    )
    .expect("an Imagen client")
}

#[tokio::test]
async fn imagen_sends_the_documented_request_and_returns_a_png() {
    let stub = Stub::start(Provider::Veo).await;
    let m = imagen(&stub);
    assert_eq!(
        (m.provider(), m.model()),
        ("imagen", "imagen-4.0-fast-generate-001")
    );
    assert_eq!(m.price(), Money::from_micros(20_000));
    let started = m.start(&keyframe(42)).await.expect("an image");
    assert_eq!(started.id, None);
    let image = started.image.expect("answered at once");
    assert_eq!(image.mime, "image/png");
    assert_eq!(png_size(&image.data), (1280, 720));

    let sent = stub.bodies(":predict").await;
    assert_eq!(sent.len(), 1);
    let (auth, body) = &sent[0];
    assert_eq!(auth.as_deref(), Some("Bearer ya29.test"));
    assert_eq!(
        body["instances"],
        json!([{"prompt": "A fox in snow, golden hour."}])
    );
    assert_eq!(
        body["parameters"],
        json!({"sampleCount": 1, "aspectRatio": "16:9", "negativePrompt": "text, watermark",
               "seed": 42, "addWatermark": false, "personGeneration": "allow_adult",
               "safetySetting": "block_medium_and_above", "includeRaiReason": true})
    );
    assert_eq!(
        stub.count(
            "POST",
            "/v1/projects/proj/locations/us-central1/publishers/google/models/imagen-4.0-fast-generate-001:predict"
        )
        .await,
        1
    );
    // Imagen keeps no list: nothing to recover a lost call from.
    assert_eq!(m.find(chrono::Utc::now(), 42).await, Ok(None));
}

#[tokio::test]
async fn imagen_filtering_is_blocked_and_throttling_is_capacity() {
    let stub = Stub::start(Provider::Veo).await;
    stub.script_imagen([
        ImagenStep::Filtered("39322892: the prompt could not be submitted (child safety)"),
        ImagenStep::Http(
            429,
            Some(9),
            r#"{"error":{"code":429,"message":"Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model","status":"RESOURCE_EXHAUSTED"}}"#,
        ),
    ]);
    let m = imagen(&stub);
    let e = m.start(&keyframe(1)).await.expect_err("filtered");
    assert!(
        matches!(&e, ModelError::Blocked(m) if m.contains("39322892")),
        "{e:?}"
    );
    let e = m.start(&keyframe(1)).await.expect_err("throttled");
    assert!(
        matches!(e, ModelError::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(9)),
        "{e:?}"
    );
    // Then it draws again.
    assert!(
        m.start(&keyframe(1))
            .await
            .expect("an image")
            .image
            .is_some()
    );
}

fn replicate_image(stub: &Stub) -> ReplicateImage {
    let s = settings_for(Provider::Replicate, &stub.uri());
    ReplicateImage::new(
        &s.replicate,
        &s.models.replicate_image_model,
        s.models.replicate_image_usd_per_image,
        TIMEOUT,
    )
    .expect("a Replicate image client")
}

#[tokio::test]
async fn replicate_image_creates_by_model_name_and_downloads_the_output() {
    let stub = Stub::start(Provider::Replicate).await;
    let m = replicate_image(&stub);
    assert_eq!(m.price(), Money::from_micros(3_000));
    let started = m.start(&keyframe(7)).await.expect("created");
    let id = started.id.expect("Replicate has ids");
    let image = started.image.expect("done within Prefer: wait");
    assert_eq!(png_size(&image.data), (1280, 720));
    assert_eq!(image.mime, "image/png");

    let requests = stub.server.received_requests().await.unwrap_or_default();
    let create = requests
        .iter()
        .find(|r| r.url.path() == "/v1/models/black-forest-labs/flux-schnell/predictions")
        .expect("a create by model name");
    assert_eq!(
        create.headers.get("prefer").and_then(|v| v.to_str().ok()),
        Some("wait=5")
    );
    let body: Value = serde_json::from_slice(&create.body).expect("JSON");
    assert_eq!(
        body,
        json!({"input": {"prompt": "A fox in snow, golden hour.", "seed": 7,
                         "aspect_ratio": "16:9", "output_format": "png", "num_outputs": 1}})
    );
    // The output is fetched without our token: it is the provider's public link.
    let download = requests
        .iter()
        .find(|r| r.url.path() == format!("/files/{id}.png"))
        .expect("the output downloaded");
    assert!(download.headers.get("authorization").is_none());
}

#[tokio::test]
async fn replicate_image_is_found_by_seed_and_polled_to_its_end() {
    let stub = Stub::start(Provider::Replicate).await;
    let m = replicate_image(&stub);
    let since = chrono::Utc::now() - chrono::Duration::seconds(1);
    // A prediction still running: its id, no image yet.
    stub.hold();
    let first = m.start(&keyframe(7)).await.expect("created");
    let id = first.id.expect("an id");
    assert_eq!(first.image, None);
    assert_eq!(m.poll(&id).await, Ok(None));
    let other = m.start(&keyframe(8)).await.expect("created").id;

    // A crash lost the id: the list finds it by seed and model, without a second create.
    let creates = stub.count("POST", "/predictions").await;
    assert_eq!(m.find(since, 7).await, Ok(Some(id.clone())));
    assert_eq!(m.find(since, 8).await, Ok(other));
    assert_eq!(m.find(since, 9).await, Ok(None));
    let later = chrono::Utc::now() + chrono::Duration::seconds(60);
    assert_eq!(m.find(later, 7).await, Ok(None));
    assert_eq!(stub.count("POST", "/predictions").await, creates);

    stub.release();
    let image = m.poll(&id).await.expect("polled").expect("done");
    assert_eq!(png_size(&image.data), (1280, 720));
}

#[tokio::test]
async fn replicate_image_throttling_waits_as_long_as_replicate_says() {
    let stub = Stub::start(Provider::Replicate).await;
    stub.script_submits([aiprod_tests::stubs::Step::Http(
        429,
        None,
        r#"{"detail":"Request was throttled. Your rate limit resets in ~30s."}"#,
    )]);
    let e = replicate_image(&stub)
        .start(&keyframe(3))
        .await
        .expect_err("throttled");
    assert!(
        matches!(e, ModelError::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(30)),
        "{e:?}"
    );
}

#[tokio::test]
async fn the_simulated_keyframe_is_a_real_png_of_the_shot() {
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let mut s = Settings::default();
    s.media.media_scratch_dir = Some(scratch.path().to_owned());
    let m = SimulatedImage::new(aiprod_media::Media::new(&s.media));
    assert_eq!((m.provider(), m.price()), ("simulated", Money::ZERO));
    let started = m.start(&keyframe(1)).await.expect("drawn");
    let image = started.image.expect("at once");
    assert_eq!(image.mime, "image/png");
    assert_eq!(png_size(&image.data), (1280, 720));
    // Drawn once per text and size, then served from the cache.
    let again = m.start(&keyframe(2)).await.expect("drawn").image;
    assert_eq!(again.as_ref().map(|i| &i.data), Some(&image.data));
    let mut other = keyframe(1);
    other.prompt = "A hare.".into();
    let different = m
        .start(&other)
        .await
        .expect("drawn")
        .image
        .expect("at once");
    assert_ne!(different.data, image.data);
}

#[tokio::test]
async fn the_settings_choose_the_image_model_and_enable_gemini() {
    let mut s = Settings::default();
    assert_eq!(
        models::image_model(&s).expect("simulated").provider(),
        "simulated"
    );
    assert!(models::gemini(&s).expect("no error").is_none());
    s = settings_for(Provider::Veo, "http://127.0.0.1:9");
    s.models.keyframes = KeyframeKind::Imagen;
    let m = models::image_model(&s).expect("imagen");
    assert_eq!(
        (m.provider(), m.price()),
        ("imagen", s.models.imagen_usd_per_image)
    );
    let g = models::gemini(&s)
        .expect("no error")
        .expect("a project is set");
    assert_eq!(g.model(), "gemini-2.5-flash");
    s = settings_for(Provider::Replicate, "http://127.0.0.1:9");
    s.models.keyframes = KeyframeKind::Replicate;
    let m = models::image_model(&s).expect("replicate");
    assert_eq!(
        (m.provider(), m.model()),
        ("replicate", "black-forest-labs/flux-schnell")
    );
}
