//! The Cloud Storage store: artifacts are objects `jobs/{job_id}/{name}` of one bucket, named
//! `gs://BUCKET/jobs/{job_id}/{name}`.
//!
//! Every write carries the CRC32C of its bytes, computed before the upload starts, so Cloud
//! Storage refuses an upload that arrives different; every read is checked against the CRC32C
//! the object was stored with. Objects from [`RESUMABLE_UPLOAD_THRESHOLD`] up go through a
//! resumable upload. Transient errors are retried by the client library's own policy (a write
//! is safe to repeat: same name, same bytes).

use std::time::Duration;

use bytes::Bytes;
use google_cloud_auth::credentials::{
    AccessTokenCredentials, Builder as CredentialsBuilder, anonymous,
};
use google_cloud_storage::client::Storage;
use google_cloud_storage::error::{ChecksumMismatch, WriteError};

use super::StorageError;
use crate::config::StorageSettings;
use aiprod_domain::JobId;

mod signing;
#[cfg(test)]
mod tests;

use signing::Signing;

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
                let signing = Signing::from_default_credentials();
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

    /// Streams the file up in the client's chunks, declaring the CRC32C computed by one read of
    /// the file before the upload starts.
    pub(super) async fn put_file(
        &self,
        job: JobId,
        name: &str,
        path: &std::path::Path,
    ) -> Result<String, StorageError> {
        use tokio::io::AsyncReadExt;
        let io = |source| StorageError::Io {
            path: path.display().to_string(),
            source,
        };
        let object = format!("jobs/{job}/{name}");
        let uri = self.uri(&object);
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let mut crc = 0u32;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                break;
            }
            crc = crc32c::crc32c_append(crc, &buf[..n]);
        }
        let file = tokio::fs::File::open(path).await.map_err(io)?;
        self.client
            .write_object(self.bucket_path(), &object, file)
            .with_known_crc32c(crc)
            .set_content_type(content_type(&object))
            .with_idempotency(true)
            .send_unbuffered()
            .await
            .map_err(|e| self.write_error(&uri, e))?;
        Ok(uri)
    }

    /// Streams an object into `dest`, checking the whole against its CRC32C.
    pub(super) async fn get_to_file(
        &self,
        uri: &str,
        dest: &std::path::Path,
    ) -> Result<u64, StorageError> {
        use tokio::io::AsyncWriteExt;
        let io = |source| StorageError::Io {
            path: dest.display().to_string(),
            source,
        };
        let object = self.object_of(uri)?;
        let mut resp = self
            .client
            .read_object(self.bucket_path(), object)
            .compute_crc32c(false)
            .send()
            .await
            .map_err(|e| read_error(uri, e))?;
        let expected = resp.object().checksums.as_ref().and_then(|c| c.crc32c);
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let (mut crc, mut size) = (0u32, 0u64);
        while let Some(chunk) = resp
            .next()
            .await
            .transpose()
            .map_err(|e| read_error(uri, e))?
        {
            crc = crc32c::crc32c_append(crc, &chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        match expected {
            Some(expected) if expected != crc => {
                drop(file);
                let _ = tokio::fs::remove_file(dest).await;
                Err(StorageError::ChecksumMismatch {
                    uri: uri.to_owned(),
                    expected,
                    actual: crc,
                })
            }
            _ => Ok(size),
        }
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
