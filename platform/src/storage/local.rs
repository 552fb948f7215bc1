//! The local-directory store: `aiprod dev` and tests, one machine.

use std::path::{Path, PathBuf};

use super::StorageError;
use aiprod_domain::JobId;

/// Artifacts as files under `root/jobs/{job_id}/`, named `file://` URIs.
#[derive(Clone, Debug)]
pub(super) struct LocalStore {
    /// Absolute, so that URIs stay valid whatever the working directory.
    root: PathBuf,
}

impl LocalStore {
    pub(super) fn open(root: &Path) -> Result<LocalStore, StorageError> {
        std::fs::create_dir_all(root).map_err(|e| io_err(root, e))?;
        let root = root.canonicalize().map_err(|e| io_err(root, e))?;
        Ok(LocalStore { root })
    }

    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    /// Writes through a temporary file and a rename, so a reader never sees half a file.
    pub(super) async fn put(
        &self,
        job: JobId,
        name: &str,
        bytes: &[u8],
    ) -> Result<String, StorageError> {
        self.place(job, name, |tmp| async move {
            tokio::fs::write(&tmp, bytes)
                .await
                .map_err(|e| io_err(&tmp, e))
        })
        .await
    }

    /// Links or copies through a temporary file and a rename, like `put`, in one blocking task
    /// (each `tokio::fs` call is a hand-off to another thread, several per stored file).
    pub(super) async fn put_file(
        &self,
        job: JobId,
        name: &str,
        src: &Path,
    ) -> Result<String, StorageError> {
        let dir = self.root.join("jobs").join(job.to_string());
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let (src, at) = (src.to_path_buf(), path.clone());
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
            crate::files::link_or_copy_blocking(&src, &tmp).map_err(|e| io_err(&tmp, e))?;
            std::fs::rename(&tmp, &at).map_err(|e| io_err(&at, e))
        })
        .await
        .map_err(|e| io_err(&path, std::io::Error::other(e)))??;
        Ok(format!("file://{}", path.display()))
    }

    /// Has `write` fill a temporary file beside `name`, then renames it into place.
    async fn place<F, Fut>(&self, job: JobId, name: &str, write: F) -> Result<String, StorageError>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: std::future::Future<Output = Result<(), StorageError>>,
    {
        let dir = self.root.join("jobs").join(job.to_string());
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io_err(&dir, e))?;
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        write(tmp.clone()).await?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| io_err(&path, e))?;
        Ok(format!("file://{}", path.display()))
    }

    pub(super) async fn get_to_file(&self, uri: &str, dest: &Path) -> Result<u64, StorageError> {
        let path = self.path_of(uri)?;
        link_or_copy(&path, dest).await
    }

    fn path_of(&self, uri: &str) -> Result<PathBuf, StorageError> {
        uri.strip_prefix("file://")
            .map(PathBuf::from)
            .filter(|p| p.starts_with(&self.root))
            .ok_or_else(|| StorageError::ForeignUri(uri.to_owned()))
    }

    pub(super) async fn get(&self, uri: &str) -> Result<Vec<u8>, StorageError> {
        let path = self.path_of(uri)?;
        tokio::fs::read(&path).await.map_err(|e| io_err(&path, e))
    }
}

fn io_err(path: &Path, source: std::io::Error) -> StorageError {
    StorageError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `files::link_or_copy`, with the path named in the error.
async fn link_or_copy(from: &Path, to: &Path) -> Result<u64, StorageError> {
    crate::files::link_or_copy(from, to)
        .await
        .map_err(|e| io_err(to, e))
}
