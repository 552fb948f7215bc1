//! The artifact store on Cloud Storage, against a real fake-gcs-server (started by the
//! harness, or reused when one answers on port 80). Each test has a bucket of its own.

#![allow(missing_docs)]

use std::time::Duration;

use aiprod_domain::JobId;
use aiprod_platform::Settings;
use aiprod_platform::storage::{ArtifactStore, RESUMABLE_UPLOAD_THRESHOLD, StorageError};
use aiprod_testkit::emulator::gcs::{FakeGcs, fake_gcs};
use uuid::Uuid;

/// A store on a fresh bucket of fake-gcs-server's, built the way the processes build theirs.
async fn store(tag: &str) -> anyhow::Result<(FakeGcs, String, ArtifactStore)> {
    let gcs = fake_gcs().await?;
    let bucket = FakeGcs::bucket_name(tag);
    gcs.create_bucket(&bucket).await?;
    let settings = Settings {
        storage: gcs.settings(&bucket),
        ..Settings::default()
    };
    let store = ArtifactStore::from_settings(&settings).await?;
    Ok((gcs, bucket, store))
}

/// Bytes that no compression or dedup could make look right by accident.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn an_artifact_reads_back_from_its_gs_uri() -> anyhow::Result<()> {
    let (gcs, bucket, store) = store("roundtrip").await?;
    let job = JobId::new();
    let bytes = noise(64 * 1024, 1);
    let uri = store.put(job, "shot-01-try1.mp4", &bytes).await?;
    assert_eq!(uri, format!("gs://{bucket}/jobs/{job}/shot-01-try1.mp4"));
    assert_eq!(store.get(&uri).await?, bytes);
    // Written again (a retried stage), the artifact is simply replaced.
    let again = noise(1000, 2);
    assert_eq!(store.put(job, "shot-01-try1.mp4", &again).await?, uri);
    assert_eq!(store.get(&uri).await?, again);
    // An emulator cannot check a signature, so there is no signed URL to give.
    assert_eq!(store.signed_url(&uri, Duration::from_secs(60)).await?, None);
    gcs.delete_bucket(&bucket).await
}

#[tokio::test]
async fn an_artifact_above_the_resumable_threshold_reads_back() -> anyhow::Result<()> {
    let (gcs, bucket, store) = store("resumable").await?;
    let job = JobId::new();
    // More than one 8 MiB chunk, and not a whole number of them.
    let bytes = noise(RESUMABLE_UPLOAD_THRESHOLD + 1024 * 1024 + 3, 3);
    let uri = store.put(job, "final.mp4", &bytes).await?;
    let back = store.get(&uri).await?;
    assert_eq!(back.len(), bytes.len());
    assert!(back == bytes, "the large artifact came back different");
    gcs.delete_bucket(&bucket).await
}

#[tokio::test]
async fn an_artifact_corrupted_at_rest_is_refused_on_read() -> anyhow::Result<()> {
    let (gcs, bucket, store) = store("corrupt").await?;
    let job = JobId::new();
    let bytes = noise(4096, 4);
    let uri = store.put(job, "final.mp4", &bytes).await?;
    // One bit flips on disk; the server still reports the CRC32C it stored with the object.
    let mut rotten = bytes.clone();
    rotten[2048] ^= 0x10;
    std::fs::write(
        gcs.object_file(&bucket, &format!("jobs/{job}/final.mp4"))?,
        &rotten,
    )?;
    match store.get(&uri).await {
        Err(StorageError::ChecksumMismatch {
            uri: bad,
            expected,
            actual,
        }) => {
            assert_eq!(bad, uri);
            assert_eq!(expected, crc32c::crc32c(&bytes));
            assert_eq!(actual, crc32c::crc32c(&rotten));
        }
        Err(other) => panic!("expected a checksum mismatch, got: {other}"),
        Ok(_) => panic!("corrupted bytes were returned as the artifact"),
    }
    gcs.delete_bucket(&bucket).await
}

#[tokio::test]
async fn a_missing_bucket_stops_the_start_with_its_name() -> anyhow::Result<()> {
    let gcs = fake_gcs().await?;
    let bucket = FakeGcs::bucket_name("never-created");
    let settings = Settings {
        storage: gcs.settings(&bucket),
        ..Settings::default()
    };
    let err = ArtifactStore::from_settings(&settings)
        .await
        .expect_err("a store on a missing bucket must not start");
    assert!(
        matches!(&err, StorageError::BucketNotFound { bucket: b } if *b == bucket),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("bucket {bucket} does not exist (AIPROD_GCS_BUCKET)")
    );
    Ok(())
}

#[tokio::test]
async fn a_missing_artifact_and_a_foreign_uri_are_told_apart() -> anyhow::Result<()> {
    let (gcs, bucket, store) = store("missing").await?;
    let uri = format!("gs://{bucket}/jobs/{}/nothing.mp4", Uuid::now_v7());
    let err = store.get(&uri).await.expect_err("nothing was written");
    assert!(
        matches!(&err, StorageError::NotFound { uri: u } if *u == uri),
        "{err:?}"
    );
    let foreign = format!("gs://{bucket}-other/jobs/x/a.mp4");
    let err = store.get(&foreign).await.expect_err("another bucket");
    assert!(matches!(err, StorageError::ForeignUri(_)), "{err:?}");
    gcs.delete_bucket(&bucket).await
}

#[tokio::test]
async fn the_local_store_still_comes_from_the_settings() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("aiprod-local-store-{}", Uuid::new_v4()));
    let settings = Settings {
        artifact_dir: dir.clone(),
        ..Settings::default()
    };
    let store = ArtifactStore::from_settings(&settings).await?;
    let job = JobId::new();
    let uri = store.put(job, "final.mp4", b"local bytes").await?;
    assert!(uri.starts_with("file://"), "{uri}");
    assert!(uri.ends_with(&format!("jobs/{job}/final.mp4")), "{uri}");
    assert_eq!(store.get(&uri).await?, b"local bytes");
    assert_eq!(store.signed_url(&uri, Duration::from_secs(60)).await?, None);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn a_file_streams_up_and_back_down_small_and_above_the_resumable_threshold()
-> anyhow::Result<()> {
    let (gcs, bucket, store) = store("files").await?;
    let job = JobId::new();
    let dir = tempfile::tempdir()?;
    for (name, len) in [
        ("poster.jpg", 70 * 1024),
        ("final.mp4", RESUMABLE_UPLOAD_THRESHOLD + 123_457),
    ] {
        let bytes = noise(len, len as u64);
        let src = dir.path().join(name);
        std::fs::write(&src, &bytes)?;
        let uri = store.put_file(job, name, &src).await?;
        assert_eq!(uri, format!("gs://{bucket}/jobs/{job}/{name}"));
        let back = dir.path().join(format!("back-{name}"));
        assert_eq!(store.get_to_file(&uri, &back).await?, len as u64);
        assert!(std::fs::read(&back)? == bytes, "{name} came back different");
    }
    let missing = store
        .get_to_file(
            &format!("gs://{bucket}/jobs/{job}/none.mp4"),
            &dir.path().join("none.mp4"),
        )
        .await;
    assert!(
        matches!(missing, Err(StorageError::NotFound { .. })),
        "{missing:?}"
    );
    gcs.delete_bucket(&bucket).await
}
