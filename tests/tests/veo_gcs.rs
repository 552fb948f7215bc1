//! Veo writes its videos to Cloud Storage when a storage URI is set; the client reads them back
//! through the JSON API at `AIPROD_VEO_GCS_BASE_URL`. Here that is a real fake-gcs-server.

#![allow(missing_docs)]

use std::time::Duration;

use aiprod_backends::{Api, Backend, BackendError, Output, Veo3};
use aiprod_domain::BackendName;
use aiprod_platform::Settings;
use aiprod_testkit::emulator::gcs::{FakeGcs, fake_gcs};
use secrecy::SecretString;

fn veo(gcs: &FakeGcs) -> anyhow::Result<Veo3> {
    let mut s = Settings::default();
    s.vertex.vertex_project = Some("aiprod-test".into());
    s.vertex.vertex_access_token = Some(SecretString::from("ya29.test"));
    s.veo.veo_gcs_base_url = gcs.endpoint().to_owned();
    Veo3::new(
        Api::new(BackendName::Veo3, Duration::from_secs(30))?,
        &s.vertex,
        &s.veo,
        &s.backends.prices.veo3.model,
    )
}

#[tokio::test]
async fn a_gs_output_is_downloaded_from_cloud_storage() -> anyhow::Result<()> {
    let gcs = fake_gcs().await?;
    let bucket = FakeGcs::bucket_name("veo-out");
    gcs.create_bucket(&bucket).await?;
    // Where Veo puts a sample: a folder per operation under the storage URI.
    let object = "renders/1234567890/sample_0.mp4";
    let video: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    reqwest::Client::new()
        .post(format!("{}/upload/storage/v1/b/{bucket}/o", gcs.endpoint()))
        .query(&[("uploadType", "media"), ("name", object)])
        .header("content-type", "video/mp4")
        .body(video.clone())
        .send()
        .await?
        .error_for_status()?;
    let veo = veo(&gcs)?;

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("sample.mp4");
    let size = veo
        .download(
            &Output::Gcs(format!("gs://{bucket}/{object}")),
            &file,
            1 << 20,
        )
        .await?;
    assert_eq!(size, video.len() as u64);
    assert!(
        std::fs::read(&file)? == video,
        "the downloaded video differs from the object"
    );

    // A sample that is gone (lifecycle rule, wrong path) is an expired output, not a retry.
    let missing = veo
        .download(
            &Output::Gcs(format!("gs://{bucket}/renders/0/none.mp4")),
            &dir.path().join("none.mp4"),
            1 << 20,
        )
        .await;
    assert!(
        matches!(missing, Err(BackendError::Expired(_))),
        "{missing:?}"
    );
    gcs.delete_bucket(&bucket).await
}
