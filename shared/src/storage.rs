//! The artifact store: where rendered shots and results live. Today a local directory; the
//! trait leaves room for Cloud Storage.

use std::path::{Path, PathBuf};

use crate::domain::JobId;

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
}

/// Stores artifacts under `jobs/{job_id}/{name}` and names them by URI.
#[derive(Clone, Debug)]
pub struct ArtifactStore {
    root: PathBuf,
}

impl ArtifactStore {
    /// A store rooted at `root`, created if missing and made absolute so URIs are stable.
    pub fn local(root: &Path) -> Result<ArtifactStore, StorageError> {
        std::fs::create_dir_all(root).map_err(|e| io_err(root, e))?;
        let root = root.canonicalize().map_err(|e| io_err(root, e))?;
        Ok(ArtifactStore { root })
    }

    /// Writes `bytes` as `name` of `job` (atomically, through a rename) and returns its URI.
    pub async fn put(&self, job: JobId, name: &str, bytes: &[u8]) -> Result<String, StorageError> {
        let dir = self.root.join("jobs").join(job.to_string());
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io_err(&dir, e))?;
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(|e| io_err(&tmp, e))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| io_err(&path, e))?;
        Ok(format!("file://{}", path.display()))
    }

    /// Reads an artifact back by its URI.
    pub async fn get(&self, uri: &str) -> Result<Vec<u8>, StorageError> {
        let path = uri
            .strip_prefix("file://")
            .map(PathBuf::from)
            .filter(|p| p.starts_with(&self.root))
            .ok_or_else(|| StorageError::ForeignUri(uri.to_owned()))?;
        tokio::fs::read(&path).await.map_err(|e| io_err(&path, e))
    }
}

fn io_err(path: &Path, source: std::io::Error) -> StorageError {
    StorageError::Io {
        path: path.display().to_string(),
        source,
    }
}
