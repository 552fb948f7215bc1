//! The artifact store: where rendered shots and results live, named by URI. A local directory
//! (`file://…`) for one machine, or a Cloud Storage bucket (`gs://BUCKET/jobs/{job_id}/…`) for
//! many pods. Both keep an artifact under `jobs/{job_id}/{name}`, so the callers never know
//! which one they hold.

mod gcs;
mod local;

use std::time::Duration;

use crate::Settings;
use crate::config::StorageKind;
use aiprod_domain::JobId;

pub use gcs::RESUMABLE_UPLOAD_THRESHOLD;

/// Why an artifact could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The file system refused.
    #[error("artifact store I/O on {path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The URI does not belong to this store.
    #[error("artifact URI {0} is not in this store")]
    ForeignUri(String),
    /// The store's settings are incomplete.
    #[error("artifact store settings: {0}")]
    Config(String),
    /// The configured bucket is missing.
    #[error("bucket {bucket} does not exist (AIPROD_GCS_BUCKET)")]
    BucketNotFound {
        /// The bucket's name.
        bucket: String,
    },
    /// No artifact has this URI.
    #[error("no artifact at {uri}")]
    NotFound {
        /// The URI asked for.
        uri: String,
    },
    /// The bytes do not have the CRC32C they were written with: corrupted at rest or on the
    /// way.
    #[error("artifact {uri} is corrupt: CRC32C {actual:#010x}, expected {expected:#010x}")]
    ChecksumMismatch {
        /// The artifact.
        uri: String,
        /// The CRC32C recorded when it was written.
        expected: u32,
        /// The CRC32C of the bytes that came back (or that the service received).
        actual: u32,
    },
    /// Cloud Storage answered with an error (after the client's own retries of transient ones).
    #[error("Cloud Storage {action}: {detail}")]
    Gcs {
        /// What was being done, e.g. `write of gs://b/jobs/…`.
        action: String,
        /// What went wrong.
        detail: String,
    },
}

/// Stores artifacts under `jobs/{job_id}/{name}` and names them by URI. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ArtifactStore {
    inner: Inner,
}

#[derive(Clone, Debug)]
enum Inner {
    Local(local::LocalStore),
    /// Shared: the client's options are large, and every worker task holds a clone.
    Gcs(std::sync::Arc<gcs::GcsStore>),
}

impl ArtifactStore {
    /// A store rooted at `root`, created if missing and made absolute so URIs are stable.
    pub fn local(root: &std::path::Path) -> Result<ArtifactStore, StorageError> {
        Ok(ArtifactStore {
            inner: Inner::Local(local::LocalStore::open(root)?),
        })
    }

    /// The store `AIPROD_STORAGE` names: the local directory `AIPROD_ARTIFACT_DIR`, or the
    /// bucket `AIPROD_GCS_BUCKET`, which must already exist (checked here, at start-up).
    pub async fn from_settings(settings: &Settings) -> Result<ArtifactStore, StorageError> {
        let inner = match settings.storage.storage {
            StorageKind::Local => Inner::Local(local::LocalStore::open(&settings.artifact_dir)?),
            StorageKind::Gcs => Inner::Gcs(std::sync::Arc::new(
                gcs::GcsStore::connect(&settings.storage).await?,
            )),
        };
        Ok(ArtifactStore { inner })
    }

    /// Where artifacts go, for people: the directory, or `gs://BUCKET`.
    pub fn describe(&self) -> String {
        match &self.inner {
            Inner::Local(s) => s.root().display().to_string(),
            Inner::Gcs(s) => s.root_uri(),
        }
    }

    /// Writes `bytes` as `name` of `job` and returns its URI. A reader never sees a partial
    /// artifact: the local store renames a finished file into place, Cloud Storage makes an
    /// object visible only once complete (and refuses one whose CRC32C does not match).
    pub async fn put(&self, job: JobId, name: &str, bytes: &[u8]) -> Result<String, StorageError> {
        match &self.inner {
            Inner::Local(s) => s.put(job, name, bytes).await,
            Inner::Gcs(s) => s.put(job, name, bytes).await,
        }
    }

    /// Writes the file at `path` as `name` of `job` and returns its URI, streaming it: a video
    /// is never held whole in memory. The same all-or-nothing rule as `put`. The local store
    /// links the file where it can, so the file at `path` must not be written afterwards.
    pub async fn put_file(
        &self,
        job: JobId,
        name: &str,
        path: &std::path::Path,
    ) -> Result<String, StorageError> {
        match &self.inner {
            Inner::Local(s) => s.put_file(job, name, path).await,
            Inner::Gcs(s) => s.put_file(job, name, path).await,
        }
    }

    /// Copies an artifact into the file `dest`, streaming it; from Cloud Storage, checked
    /// against its CRC32C (a corrupt copy is removed). Returns its size in bytes. The local
    /// store links the artifact where it can, so `dest` must only be read.
    pub async fn get_to_file(
        &self,
        uri: &str,
        dest: &std::path::Path,
    ) -> Result<u64, StorageError> {
        match &self.inner {
            Inner::Local(s) => s.get_to_file(uri, dest).await,
            Inner::Gcs(s) => s.get_to_file(uri, dest).await,
        }
    }

    /// Reads an artifact back by its URI; from Cloud Storage, checked against its CRC32C.
    pub async fn get(&self, uri: &str) -> Result<Vec<u8>, StorageError> {
        match &self.inner {
            Inner::Local(s) => s.get(uri).await,
            Inner::Gcs(s) => s.get(uri).await,
        }
    }

    /// A URL that lets anyone holding it download the artifact for `ttl` (a V4 signed URL), or
    /// `None` where there is no such thing: the local store, an emulator, or credentials that
    /// cannot sign (a service account without `iam.serviceAccounts.signBlob` on itself).
    pub async fn signed_url(
        &self,
        uri: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StorageError> {
        match &self.inner {
            Inner::Local(_) => Ok(None),
            Inner::Gcs(s) => s.signed_url(uri, ttl).await,
        }
    }
}
