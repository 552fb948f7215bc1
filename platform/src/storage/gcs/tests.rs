//! The Cloud Storage store against fake-gcs-server, its signing with a throwaway key, and
//! how it maps URIs to objects.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::*;
use aiprod_testkit::emulator::gcs::{FakeGcs, fake_gcs};

/// fake-gcs-server stores whatever arrives and reports the CRC32C of it; the client compares
/// that with the one we declared, as Cloud Storage itself would before refusing the upload.
#[tokio::test]
async fn a_write_declaring_the_wrong_crc32c_is_refused() -> anyhow::Result<()> {
    let gcs = fake_gcs().await?;
    let bucket = FakeGcs::bucket_name("crc-write");
    gcs.create_bucket(&bucket).await?;
    // Built here, not with `gcs.settings()`: the test kit links its own copy of this crate.
    let settings = StorageSettings {
        storage: crate::config::StorageKind::Gcs,
        gcs_bucket: Some(bucket.clone()),
        gcs_endpoint: Some(gcs.endpoint().to_owned()),
        ..StorageSettings::default()
    };
    let store = GcsStore::connect(&settings).await?;
    let bytes = b"what we meant to send";
    let right = crc32c::crc32c(bytes);
    let err = store
        .write("jobs/x/shot.mp4", bytes, right ^ 1)
        .await
        .expect_err("a wrong CRC32C must not pass");
    match err {
        StorageError::ChecksumMismatch {
            uri,
            expected,
            actual,
        } => {
            assert_eq!(uri, format!("gs://{bucket}/jobs/x/shot.mp4"));
            assert_eq!(expected, right ^ 1);
            assert_eq!(actual, right);
        }
        other => panic!("expected a checksum mismatch, got {other}"),
    }
    gcs.delete_bucket(&bucket).await
}

/// A throwaway service-account key signs locally, as a key file or Workload Identity's IAM
/// signer would remotely.
#[tokio::test]
async fn a_service_account_signs_a_v4_url_for_the_artifact() -> anyhow::Result<()> {
    let out = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        .output()
        .map_err(|e| {
            anyhow::anyhow!("this test makes a throwaway RSA key with openssl, which does not run ({e}): apt-get install openssl")
        })?;
    anyhow::ensure!(out.status.success(), "openssl genpkey failed");
    let key = serde_json::json!({
        "type": "service_account",
        "project_id": "aiprod-test",
        "client_email": "artifacts@aiprod-test.iam.gserviceaccount.com",
        "private_key_id": "test-key",
        "private_key": String::from_utf8(out.stdout)?,
    });
    let signer =
        google_cloud_auth::credentials::service_account::Builder::new(key).build_signer()?;
    let store = GcsStore {
        client: Storage::builder()
            .with_credentials(anonymous::Builder::new().build())
            .build()
            .await?,
        bucket: "aiprod-results".into(),
        signing: Signing::Signer {
            signer,
            warned: Arc::new(AtomicBool::new(false)),
        },
    };
    let url = store
        .signed_url(
            "gs://aiprod-results/jobs/x/final.mp4",
            Duration::from_secs(900),
        )
        .await?
        .expect("a service account key can sign");
    assert!(
        url.starts_with("https://storage.googleapis.com/aiprod-results/jobs/x/final.mp4?"),
        "{url}"
    );
    for part in [
        "X-Goog-Algorithm=GOOG4-RSA-SHA256",
        "X-Goog-Credential=artifacts%40aiprod-test.iam.gserviceaccount.com",
        "X-Goog-Expires=900",
        "X-Goog-Signature=",
    ] {
        assert!(url.contains(part), "{part} missing from {url}");
    }
    let foreign = store
        .signed_url("gs://elsewhere/jobs/x/final.mp4", Duration::from_secs(900))
        .await;
    assert!(
        matches!(foreign, Err(StorageError::ForeignUri(_))),
        "{foreign:?}"
    );
    Ok(())
}

#[test]
fn only_uris_of_the_bucket_name_an_object() {
    assert_eq!(
        object_of("b1", "gs://b1/jobs/x/a.mp4"),
        Some("jobs/x/a.mp4")
    );
    assert_eq!(object_of("b1", "gs://b12/jobs/x/a.mp4"), None);
    assert_eq!(object_of("b1", "gs://b1/"), None);
    assert_eq!(object_of("b1", "file:///b1/jobs/x/a.mp4"), None);
    assert_eq!(content_type("jobs/x/final.MP4"), "video/mp4");
    assert_eq!(content_type("jobs/x/noext"), "application/octet-stream");
}
