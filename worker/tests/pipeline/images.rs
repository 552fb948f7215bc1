//! A client's `image_url`: fetched once into the artifact store through the hardened fetcher, or
//! refused, the job failing `invalid_asset` with a fixed reason: a link to an internal address
//! (no connection is even opened), a redirect to one, plain http, too many bytes, the wrong
//! type, a server error (whose body never reaches the job's error); and a keyframe link that an
//! older release left in a checkpoint, fetched under the same rules before any backend.

use aiprod_domain::Stage;
use aiprod_platform::Settings;
use aiprod_platform::queue::Queue;
use aiprod_store::{claim_job, release_lease, save_checkpoint};
use aiprod_testkit::counting::CountingServer;
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

/// Test settings that let the fetcher reach a stub: plain http, and 127.0.0.1 only.
fn stub_settings() -> Settings {
    let mut s = test_settings();
    s.media.image_fetch_allow_http = true;
    s.media.image_fetch_allow_private = vec!["127.0.0.1".parse().expect("an address")];
    s
}

/// Runs a job with `image_url` to its end; its status and error.
async fn run_with_image(rig: &Rig, url: &str) -> anyhow::Result<(String, String)> {
    let id = rig
        .submit(json!({"prompt": "A fox.", "image_url": url}))
        .await?;
    rig.drain().await?;
    let (status, error): (String, Option<String>) =
        sqlx::query_as("select status::text, error from job where id = $1")
            .bind(id)
            .fetch_one(&rig.pool)
            .await?;
    Ok((status, error.unwrap_or_default()))
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
    // A redirect on the same (allowed) host is followed, by hand.
    Mock::given(path("/moved.png"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", "/fox.png"))
        .expect(1)
        .mount(&server)
        .await;
    let rig = Rig::new(stub_settings()).await?;
    let id = rig
        .submit(json!({"prompt": "A fox runs. It jumps.", "duration_s": 6,
                       "image_url": format!("{}/moved.png", server.uri())}))
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
    // The client's image is the first shot's keyframe; the others are drawn for their shots.
    let first = shots[0]["keyframe_uri"].as_str().expect("a keyframe");
    assert!(
        first.starts_with("file://") && first.ends_with("/client-image.png"),
        "{first}"
    );
    assert_eq!(std::fs::read(super::path_of(first))?, png());
    assert_eq!(shots[0]["keyframe_source"], "client");
    for s in &shots[1..] {
        let uri = s["keyframe_uri"].as_str().expect("a keyframe");
        assert!(uri.contains("/keyframe-"), "{uri}");
        assert_eq!(s["keyframe_source"], "simulated");
    }
    Ok(())
}

#[tokio::test]
async fn a_link_to_an_internal_address_fails_invalid_asset_without_a_connection()
-> anyhow::Result<()> {
    let target = CountingServer::start("127.0.0.1").await?;
    // Plain http is allowed here, so that only the address rule stands in the way.
    let mut settings = test_settings();
    settings.media.image_fetch_allow_http = true;
    let rig = Rig::new(settings).await?;
    let (status, error) = run_with_image(&rig, &format!("http://{}/cat.png", target.addr)).await?;
    assert_eq!(status, "failed");
    assert_eq!(
        error,
        "stage visual failed: invalid_asset: image_url: its host is a loopback address, which \
         is never fetched"
    );
    let (status, error) = run_with_image(&rig, "http://169.254.169.254/latest/meta-data").await?;
    assert_eq!(status, "failed");
    assert!(
        error.contains("invalid_asset") && error.contains("the cloud metadata server"),
        "{error}"
    );
    assert_eq!(target.accepted(), 0, "the loopback server was connected to");
    let renders: i64 = sqlx::query_scalar("select count(*) from render_task")
        .fetch_one(&rig.pool)
        .await?;
    assert_eq!(renders, 0, "no backend was called");
    Ok(())
}

#[tokio::test]
async fn a_redirect_to_an_internal_address_is_refused_at_that_hop() -> anyhow::Result<()> {
    let hidden = CountingServer::start("127.0.0.2").await?;
    let server = MockServer::start().await;
    let hops = [
        ("to-loopback.png", format!("http://{}/x.png", hidden.addr)),
        (
            "to-metadata.png",
            "http://169.254.169.254/computeMetadata/v1/".into(),
        ),
        (
            "to-metadata-name.png",
            "http://metadata.google.internal/".into(),
        ),
        (
            "to-mapped.png",
            format!("http://[::ffff:127.0.0.2]:{}/x.png", hidden.addr.port()),
        ),
    ];
    for (name, location) in &hops {
        Mock::given(path(format!("/{name}")))
            .respond_with(ResponseTemplate::new(302).insert_header("location", location.as_str()))
            .mount(&server)
            .await;
    }
    // 127.0.0.1 (the stub) is allowed; 127.0.0.2 is not.
    let rig = Rig::new(stub_settings()).await?;
    for ((name, _), want) in hops.iter().zip([
        "a loopback address",
        "the cloud metadata server",
        "the cloud metadata server",
        "a loopback address",
    ]) {
        let (status, error) = run_with_image(&rig, &format!("{}/{name}", server.uri())).await?;
        assert_eq!(status, "failed", "{name}");
        assert!(
            error.contains("invalid_asset: image_url: its host is") && error.contains(want),
            "{name}: {error}"
        );
    }
    assert_eq!(hidden.accepted(), 0, "a redirect reached 127.0.0.2");
    Ok(())
}

#[tokio::test]
async fn plain_http_is_refused_unless_allowed() -> anyhow::Result<()> {
    let server = MockServer::start().await;
    Mock::given(path("/fox.png"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(png(), "image/png"))
        .expect(0)
        .mount(&server)
        .await;
    let mut settings = stub_settings();
    settings.media.image_fetch_allow_http = false;
    let rig = Rig::new(settings).await?;
    let (status, error) = run_with_image(&rig, &format!("{}/fox.png", server.uri())).await?;
    assert_eq!(status, "failed");
    assert_eq!(
        error,
        "stage visual failed: invalid_asset: image_url: must be an https URL (plain http is \
         refused)"
    );
    Ok(())
}

#[tokio::test]
async fn a_client_image_too_large_of_the_wrong_type_or_an_error_fails_invalid_asset()
-> anyhow::Result<()> {
    let server = MockServer::start().await;
    let mut big = png();
    big.resize(2048, 0);
    Mock::given(path("/huge.png"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(big, "image/png"))
        .mount(&server)
        .await;
    Mock::given(path("/page.png"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(b"<html></html>".to_vec(), "text/html"),
        )
        .mount(&server)
        .await;
    Mock::given(path("/liar.png"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(b"<html>secret</html>".to_vec(), "image/png"),
        )
        .mount(&server)
        .await;
    Mock::given(path("/secret.png"))
        .respond_with(ResponseTemplate::new(500).set_body_string("internal token abc123"))
        .mount(&server)
        .await;
    let mut settings = stub_settings();
    settings.media.max_image_bytes = 1024;
    let rig = Rig::new(settings).await?;
    for (name, want) in [
        (
            "huge.png",
            "larger than 1024 bytes (AIPROD_MAX_IMAGE_BYTES)",
        ),
        (
            "page.png",
            "must be a PNG, JPEG or WebP image, got content type text/html",
        ),
        ("liar.png", "its bytes are not a PNG image"),
        ("secret.png", "its server answered HTTP 500"),
    ] {
        let (status, error) = run_with_image(&rig, &format!("{}/{name}", server.uri())).await?;
        assert_eq!(status, "failed", "{name}");
        assert!(
            error.starts_with("stage visual failed: invalid_asset: image_url: ")
                && error.contains(want),
            "{name}: {error}"
        );
        assert!(
            !error.contains("abc123") && !error.contains("secret<"),
            "the server's answer leaked: {error}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_keyframe_link_left_by_an_older_checkpoint_is_fetched_under_the_same_rules()
-> anyhow::Result<()> {
    let target = CountingServer::start("127.0.0.1").await?;
    let mut settings = test_settings();
    settings.media.image_fetch_allow_http = true;
    let rig = Rig::new(settings).await?;
    let prompt = json!({"prompt": "A fox runs. It jumps.", "duration_s": 6});
    // A reference job supplies the outputs of the stages before `financial`.
    let reference = rig.submit(prompt.clone()).await?;
    assert_eq!(
        rig.drain().await?,
        vec![Outcome::Worked(Some(JobOutcome::Succeeded))]
    );
    let outputs: Vec<(Stage, serde_json::Value)> = sqlx::query_as(
        "select stage, output from job_stage where job_id = $1 and stage <= 'visual' order by stage",
    )
    .bind(reference)
    .fetch_all(&rig.pool)
    .await?;
    assert_eq!(outputs.len(), 4);
    let renders_before: i64 = sqlx::query_scalar("select count(*) from render_task")
        .fetch_one(&rig.pool)
        .await?;

    // A job whose `visual` ran under a release that passed the client's link on as the
    // keyframe: its checkpoint holds the link itself.
    let id = rig.submit(prompt).await?;
    let delivery = rig.queue.receive(1).await?.pop().expect("the dispatch");
    let ttl = rig.ctx.settings.worker.lease_ttl;
    let claim = claim_job(&rig.pool, id, "old-worker", ttl)
        .await?
        .expect("the job is free");
    rig.queue.ack(&[delivery.ack_id]).await?;
    let link = format!("http://{}/fox.png", target.addr);
    for (stage, output) in &outputs {
        let mut output = output.clone();
        if *stage == Stage::Visual {
            for shot in output["shots"].as_array_mut().expect("shots") {
                shot["keyframe_uri"] = json!(link);
            }
        }
        save_checkpoint(
            &rig.pool,
            &super::checkpoint(id, claim.lease_epoch, "old-worker", *stage, &output),
        )
        .await?;
    }
    assert!(release_lease(&rig.pool, id, claim.lease_epoch, "old-worker").await?);
    assert_eq!(rig.relay().await?, 1);

    // This release resumes it at `financial`; `render` fetches the link before any backend.
    rig.drain().await?;
    let (status, error): (String, Option<String>) =
        sqlx::query_as("select status::text, error from job where id = $1")
            .bind(id)
            .fetch_one(&rig.pool)
            .await?;
    assert_eq!(status, "failed");
    assert_eq!(
        error.as_deref(),
        Some(
            "stage render failed: invalid_asset: image_url: its host is a loopback address, \
             which is never fetched"
        )
    );
    assert_eq!(target.accepted(), 0, "the link was fetched");
    let renders_after: i64 = sqlx::query_scalar("select count(*) from render_task")
        .fetch_one(&rig.pool)
        .await?;
    assert_eq!(renders_after, renders_before, "no backend was called");
    Ok(())
}
