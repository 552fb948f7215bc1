//! One maker per cached file in a process: whoever asks for a file that is being made waits for
//! its maker and then finds the file, instead of running ffmpeg for it again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::OwnedMutexGuard;

/// The files being made in this process, each behind the lock its maker holds.
type Makers = Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>;

/// Process-wide, like the tools' pool: every `Media` of a process shares the cache directory.
static MAKING: OnceLock<Makers> = OnceLock::new();

fn makers() -> std::sync::MutexGuard<'static, HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>> {
    MAKING
        .get_or_init(Makers::default)
        .lock()
        .expect("the makers' lock is never poisoned")
}

/// The right to make one file; held until dropped.
pub(crate) struct Making {
    path: PathBuf,
    held: OwnedMutexGuard<()>,
}

impl Making {
    /// Waits until no one else in this process is making `path`. The caller then looks for the
    /// file before making it: whoever held it may have made it.
    pub(crate) async fn start(path: &Path) -> Making {
        let gate = makers().entry(path.to_path_buf()).or_default().clone();
        Making {
            path: path.to_path_buf(),
            held: gate.lock_owned().await,
        }
    }
}

impl Drop for Making {
    /// Forgets the file's lock once no one else waits for it, so the map keeps only files being
    /// made. Clones are taken under the map's lock, so the count cannot change meanwhile; one
    /// who comes after finds the file. The lock itself is released after this, with the field.
    fn drop(&mut self) {
        let mut makers = makers();
        // The map's and ours.
        if Arc::strong_count(OwnedMutexGuard::mutex(&self.held)) <= 2 {
            makers.remove(&self.path);
        }
    }
}
