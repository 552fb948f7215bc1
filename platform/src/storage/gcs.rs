//! The Cloud Storage store: artifacts are objects `jobs/{job_id}/{name}` of one bucket, named
//! `gs://BUCKET/jobs/{job_id}/{name}`.
//!
//! Every write carries the CRC32C of its bytes, computed before the upload starts, so Cloud
//! Storage refuses an upload that arrives different; every read is checked against the CRC32C
//! the object was stored with. Objects from [`RESUMABLE_UPLOAD_THRESHOLD`] up go through a
//! resumable upload. Transient errors are retried by the client library's own policy (a write
//! is safe to repeat: same name, same bytes).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use google_cloud_auth::credentials::{
    AccessTokenCredentials, Builder as CredentialsBuilder, anonymous,
};
use google_cloud_auth::signer::Signer;
use google_cloud_storage::builder::storage::SignedUrlBuilder;
use google_cloud_storage::client::Storage;
use google_cloud_storage::error::{ChecksumMismatch, WriteError};

use super::StorageError;
use crate::config::StorageSettings;
use aiprod_domain::JobId;

/// Objects of this size and larger are written with a resumable upload (in 8 MiB chunks), so
/// a dropped connection costs one chunk rather than the whole render.
pub const RESUMABLE_UPLOAD_THRESHOLD: usize = 8 * 1024 * 1024;

/// Cloud Storage itself.
const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";
/// Objects only: read, write, list.
const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";

/// One bucket through the official client. Cheap to clone.
#[derive(Clone, Debug)]
pub(super) struct GcsStore {
    client: Storage,
    bucket: String,
    signing: Signing,
}

/// Whether the store can hand out signed URLs.
#[derive(Clone, Debug)]
enum Signing {
    /// An emulator: nothing there would check a signature.
    Emulator,
    /// The credentials give no signer; why.
    Unavailable(Arc<str>),
    /// Signs with a service account key, or through IAM `signBlob` on GKE; `warned` keeps a
    /// refused signature from warning on every request.
    Signer {
        signer: Signer,
        warned: Arc<AtomicBool>,
    },
}

impl GcsStore {
    /// A client for `AIPROD_GCS_BUCKET`: anonymous against `AIPROD_GCS_ENDPOINT` (an emulator),
    /// else with Application Default Credentials. Fails with a one-line reason when the bucket
    /// does not exist or cannot be listed.
    pub(super) async fn connect(s: &StorageSettings) -> Result<GcsStore, StorageError> {
        let bucket = s.gcs_bucket.clone().ok_or_else(|| {
            StorageError::Config("AIPROD_GCS_BUCKET must be set when AIPROD_STORAGE=gcs".into())
        })?;
        let builder =
            Storage::builder().with_resumable_upload_threshold(RESUMABLE_UPLOAD_THRESHOLD);
        let (builder, endpoint, token, signing) = match &s.gcs_endpoint {
            Some(endpoint) => (
                builder
                    .with_endpoint(endpoint.clone())
                    .with_credentials(anonymous::Builder::new().build()),
                endpoint.clone(),
                None,
                Signing::Emulator,
            ),
            None => {
                let creds = CredentialsBuilder::default()
                    .with_scopes([SCOPE])
                    .build_access_token_credentials()
                    .map_err(|e| {
                        StorageError::Config(format!(
                            "no Google credentials for Cloud Storage: {e}"
                        ))
                    })?;
                let signing = match CredentialsBuilder::default().build_signer() {
                    Ok(signer) => Signing::Signer {
                        signer,
                        warned: Arc::new(AtomicBool::new(false)),
                    },
                    Err(e) => Signing::Unavailable(e.to_string().into()),
                };
                (
                    builder.with_credentials(creds.clone()),
                    DEFAULT_ENDPOINT.to_owned(),
                    Some(creds),
                    signing,
                )
            }
        };
        let client = builder.build().await.map_err(|e| {
            StorageError::Config(format!("cannot build the Cloud Storage client: {e}"))
        })?;
        check_bucket(&endpoint, &bucket, token.as_ref()).await?;
        Ok(GcsStore {
            client,
            bucket,
            signing,
        })
    }

    pub(super) async fn put(
        &self,
        job: JobId,
        name: &str,
        bytes: &[u8],
    ) -> Result<String, StorageError> {
        let object = format!("jobs/{job}/{name}");
        self.write(&object, bytes, crc32c::crc32c(bytes)).await
    }

    /// Uploads `bytes` declaring `crc32c`, which the service (and the client, against what the
    /// service reports) checks.
    async fn write(&self, object: &str, bytes: &[u8], crc32c: u32) -> Result<String, StorageError> {
        let uri = self.uri(object);
        self.client
            .write_object(self.bucket_path(), object, Bytes::copy_from_slice(bytes))
            .with_known_crc32c(crc32c)
            .set_content_type(content_type(object))
            // The same bytes under the same name: a repeated write changes nothing, so the
            // client may retry it.
            .with_idempotency(true)
            .send_unbuffered()
            .await
            .map_err(|e| self.write_error(&uri, e))?;
        Ok(uri)
    }

    pub(super) async fn get(&self, uri: &str) -> Result<Vec<u8>, StorageError> {
        let object = self.object_of(uri)?;
        // The library's own check would fail the last chunk with an opaque error; we check the
        // whole artifact ourselves and say which one is corrupt.
        let mut resp = self
            .client
            .read_object(self.bucket_path(), object)
            .compute_crc32c(false)
            .send()
            .await
            .map_err(|e| read_error(uri, e))?;
        let meta = resp.object();
        let expected = meta.checksums.as_ref().and_then(|c| c.crc32c);
        let mut bytes = Vec::with_capacity(usize::try_from(meta.size).unwrap_or(0));
        while let Some(chunk) = resp
            .next()
            .await
            .transpose()
            .map_err(|e| read_error(uri, e))?
        {
            bytes.extend_from_slice(&chunk);
        }
        let actual = crc32c::crc32c(&bytes);
        match expected {
            Some(expected) if expected != actual => Err(StorageError::ChecksumMismatch {
                uri: uri.to_owned(),
                expected,
                actual,
            }),
            Some(_) => Ok(bytes),
            None => {
                tracing::debug!(uri, "the object has no CRC32C; read unchecked");
                Ok(bytes)
            }
        }
    }

    pub(super) async fn signed_url(
        &self,
        uri: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StorageError> {
        let object = self.object_of(uri)?;
        let (signer, warned) = match &self.signing {
            Signing::Emulator => {
                tracing::debug!(uri, "no signed URL: AIPROD_GCS_ENDPOINT is an emulator");
                return Ok(None);
            }
            Signing::Unavailable(why) => {
                tracing::debug!(uri, %why, "no signed URL: the credentials cannot sign");
                return Ok(None);
            }
            Signing::Signer { signer, warned } => (signer, warned),
        };
        let signed = SignedUrlBuilder::for_object(self.bucket_path(), object)
            .with_method(google_cloud_storage::http::Method::GET)
            .with_expiration(ttl)
            .sign_with(signer)
            .await;
        match signed {
            Ok(url) => Ok(Some(url)),
            Err(e) => {
                if warned.swap(true, Ordering::Relaxed) {
                    tracing::debug!(uri, error = %e, "no signed URL");
                } else {
                    tracing::warn!(
                        error = %e,
                        "cannot sign artifact URLs (a service account needs \
                         iam.serviceAccounts.signBlob on itself): job views carry no result_url"
                    );
                }
                Ok(None)
            }
        }
    }

    pub(super) fn root_uri(&self) -> String {
        format!("gs://{}", self.bucket)
    }

    /// The bucket as the client names it.
    fn bucket_path(&self) -> String {
        format!("projects/_/buckets/{}", self.bucket)
    }

    fn uri(&self, object: &str) -> String {
        format!("gs://{}/{object}", self.bucket)
    }

    fn object_of<'u>(&self, uri: &'u str) -> Result<&'u str, StorageError> {
        object_of(&self.bucket, uri).ok_or_else(|| StorageError::ForeignUri(uri.to_owned()))
    }

    fn write_error(&self, uri: &str, e: google_cloud_storage::Error) -> StorageError {
        let source = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<WriteError>());
        if let Some(WriteError::ChecksumMismatch { mismatch, .. }) = source {
            // `want` is what we declared, `got` what the service computed from what it received.
            let pair = match mismatch {
                ChecksumMismatch::Crc32c { got, want } => Some((*want, *got)),
                ChecksumMismatch::Both { got, want } => want.crc32c.zip(got.crc32c),
                _ => None,
            };
            if let Some((expected, actual)) = pair {
                return StorageError::ChecksumMismatch {
                    uri: uri.to_owned(),
                    expected,
                    actual,
                };
            }
        }
        // A new object's only missing parent is its bucket.
        if e.http_status_code() == Some(404) {
            return StorageError::BucketNotFound {
                bucket: self.bucket.clone(),
            };
        }
        StorageError::Gcs {
            action: format!("write of {uri}"),
            detail: e.to_string(),
        }
    }
}

/// The object that `uri` names in `bucket`, if it is one of its.
fn object_of<'u>(bucket: &str, uri: &'u str) -> Option<&'u str> {
    uri.strip_prefix("gs://")
        .and_then(|rest| rest.strip_prefix(bucket))
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|object| !object.is_empty())
}

fn read_error(uri: &str, e: google_cloud_storage::Error) -> StorageError {
    if e.http_status_code() == Some(404) {
        return StorageError::NotFound {
            uri: uri.to_owned(),
        };
    }
    StorageError::Gcs {
        action: format!("read of {uri}"),
        detail: e.to_string(),
    }
}

/// Lists at most one object of the bucket through the JSON API: the data-plane client has no
/// bucket call, and listing needs only the object permissions the store needs anyway (getting
/// the bucket itself would need `storage.buckets.get`, which an object-admin role lacks).
async fn check_bucket(
    endpoint: &str,
    bucket: &str,
    creds: Option<&AccessTokenCredentials>,
) -> Result<(), StorageError> {
    let failed = |detail: String| StorageError::Gcs {
        action: format!("check of bucket {bucket} at {endpoint}"),
        detail,
    };
    let mut url = reqwest::Url::parse(endpoint)
        .map_err(|e| StorageError::Config(format!("AIPROD_GCS_ENDPOINT {endpoint}: {e}")))?;
    url.path_segments_mut()
        .map_err(|()| {
            StorageError::Config(format!("AIPROD_GCS_ENDPOINT {endpoint} is not a base URL"))
        })?
        .pop_if_empty()
        .extend(["storage", "v1", "b", bucket, "o"]);
    url.query_pairs_mut()
        .append_pair("maxResults", "1")
        .append_pair("prefix", "jobs/")
        .append_pair("fields", "kind");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let mut req = http.get(url);
    if let Some(creds) = creds {
        let token = creds
            .access_token()
            .await
            .map_err(|e| failed(format!("cannot get an access token: {e}")))?;
        req = req.bearer_auth(token.token);
    }
    let resp = req.send().await.map_err(|e| failed(e.to_string()))?;
    let status = resp.status();
    match status.as_u16() {
        200..=299 => Ok(()),
        404 => Err(StorageError::BucketNotFound {
            bucket: bucket.to_owned(),
        }),
        401 | 403 => Err(failed(format!(
            "{status}: the credentials may not list its objects (grant roles/storage.objectAdmin \
             on the bucket)"
        ))),
        _ => Err(failed(format!(
            "{status} {}",
            resp.text().await.unwrap_or_default().trim()
        ))),
    }
}

/// The Content-Type a browser needs to play or show an artifact from a signed URL.
fn content_type(object: &str) -> &'static str {
    let ext = object.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("mp4") => "video/mp4",
        Some("webm") => "video/webm",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
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
}
