//! Readings remembered by what was read: for `aiprod bench --media once`, which gives every job
//! the same simulated clips, so that ffprobe and ffmpeg run once per distinct file and the
//! figure is the orchestration's (README, "Performance").
//!
//! A probe, a scan and a set of sampled frames are functions of the file's bytes, so a reading
//! of the same bytes is the reading. The assembly is keyed by its shots' bytes and plans alone:
//! a remembered `final.mp4` carries the title and comment of the job that made it. That is the
//! one thing this mode gives up, and why it is for benchmarks and never a setting.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;
use xxhash_rust::xxh3::Xxh3Default;

use crate::assemble::{Assembly, Repair, ShotInput};
use crate::probe::{Probe, Scan};
use crate::tool::MediaError;

/// The 128-bit XXH3 of a file's bytes. Not a cryptographic digest: the memo only tells the
/// bench's own files apart, and SHA-256 of every clip read was a third of the bench worker's CPU.
pub(crate) type Digest = u128;

/// A file as the file system knows it: device, inode, size and modification time. Two names
/// with one identity are one file, so they hold the same bytes; a file written anew gets a new
/// modification time, and an inode reused for another file does too.
type FileId = (u64, u64, u64, i64, i64);

/// One reading per key, filled once by whichever reader comes first.
type Slots<K, V> = Mutex<HashMap<K, Arc<OnceCell<V>>>>;

/// What the tools have read, by what they read.
pub(crate) struct Memo {
    probes: Slots<Digest, Probe>,
    /// By bytes and the length that closes an open stretch (as `f64` bits).
    scans: Slots<(Digest, u64), Scan>,
    /// By bytes, the clip's length (as `f64` bits) and the count.
    frames: Slots<(Digest, u64, u32), Vec<Vec<u8>>>,
    /// By each shot's bytes and planned length (as `f64` bits), in order.
    assemblies: Slots<Vec<(Digest, u64)>, Kept>,
    /// Digests already taken, by the file they were taken of. Every job's copy of a bench clip
    /// is a link of one file (`aiprod_platform::files`), so the clip is read once, not once per
    /// reading of every job.
    digests: Mutex<HashMap<FileId, Digest>>,
    /// Where remembered assemblies' files are kept; removed with the memo.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

/// A remembered assembly: links to its files, and what it said about them.
#[derive(Clone)]
struct Kept {
    video: PathBuf,
    poster: PathBuf,
    copied: bool,
    repairs: Vec<Repair>,
}

impl Memo {
    /// An empty memo keeping its files under `root`.
    pub(crate) fn new(root: &Path) -> Result<Memo, MediaError> {
        std::fs::create_dir_all(root).map_err(|e| MediaError::io(root, e))?;
        let dir = tempfile::Builder::new()
            .prefix("aiprod-memo-")
            .tempdir_in(root)
            .map_err(|e| MediaError::io(root, e))?;
        Ok(Memo {
            probes: Mutex::default(),
            scans: Mutex::default(),
            frames: Mutex::default(),
            assemblies: Mutex::default(),
            digests: Mutex::default(),
            dir,
        })
    }

    /// `path`'s probe, read once per distinct bytes.
    pub(crate) async fn probe<F>(&self, path: &Path, read: F) -> Result<Probe, MediaError>
    where
        F: Future<Output = Result<Probe, MediaError>>,
    {
        remember(&self.probes, self.digest(path).await?, read).await
    }

    /// `path`'s scan, decoded once per distinct bytes and length.
    pub(crate) async fn scan<F>(
        &self,
        path: &Path,
        length_s: f64,
        read: F,
    ) -> Result<Scan, MediaError>
    where
        F: Future<Output = Result<Scan, MediaError>>,
    {
        let key = (self.digest(path).await?, length_s.to_bits());
        remember(&self.scans, key, read).await
    }

    /// `count` frames of `path`, sampled once per distinct bytes, length and count.
    pub(crate) async fn frames<F>(
        &self,
        path: &Path,
        seconds: f64,
        count: u32,
        read: F,
    ) -> Result<Vec<Vec<u8>>, MediaError>
    where
        F: Future<Output = Result<Vec<Vec<u8>>, MediaError>>,
    {
        let key = (self.digest(path).await?, seconds.to_bits(), count);
        remember(&self.frames, key, read).await
    }

    /// The assembly of `shots` into `dir`: made once per distinct shots and plans, then linked
    /// into `dir` from the kept files.
    pub(crate) async fn assemble<F>(
        &self,
        shots: &[ShotInput],
        dir: &Path,
        make: F,
    ) -> Result<Assembly, MediaError>
    where
        F: Future<Output = Result<Assembly, MediaError>>,
    {
        let mut key = Vec::with_capacity(shots.len());
        for s in shots {
            key.push((self.digest(&s.path).await?, s.planned_s.to_bits()));
        }
        let made = std::sync::Mutex::new(None);
        let kept = remember(&self.assemblies, key, async {
            let a = make.await?;
            let n = uuid::Uuid::new_v4().simple();
            let k = Kept {
                video: self.dir.path().join(format!("{n}-final.mp4")),
                poster: self.dir.path().join(format!("{n}-poster.jpg")),
                copied: a.copied,
                repairs: a.repairs.clone(),
            };
            link(&a.video, &k.video).await?;
            link(&a.poster, &k.poster).await?;
            *made.lock().expect("never poisoned") = Some(a);
            Ok(k)
        })
        .await?;
        // The assembly that made the kept files is already in `dir`.
        if let Some(a) = made.into_inner().expect("never poisoned") {
            return Ok(a);
        }
        let video = dir.join("final.mp4");
        let poster = dir.join("poster.jpg");
        link(&kept.video, &video).await?;
        link(&kept.poster, &poster).await?;
        Ok(Assembly {
            video,
            poster,
            copied: kept.copied,
            repairs: kept.repairs,
        })
    }
}

/// The value under `key`, or what `read` gives (kept when it succeeds). Readers of one key
/// wait for the first: jobs that start together would otherwise each run the tools, and on a
/// small machine that burst is the bench's whole tail.
async fn remember<K, V, F>(map: &Slots<K, V>, key: K, read: F) -> Result<V, MediaError>
where
    K: Hash + Eq,
    V: Clone,
    F: Future<Output = Result<V, MediaError>>,
{
    let slot = map
        .lock()
        .expect("the memo's lock is never poisoned")
        .entry(key)
        .or_default()
        .clone();
    slot.get_or_try_init(|| read).await.cloned()
}

impl Memo {
    /// The XXH3-128 of the file at `path`, taken once per file (`FileId`).
    async fn digest(&self, path: &Path) -> Result<Digest, MediaError> {
        use std::os::unix::fs::MetadataExt as _;
        let m = tokio::fs::metadata(path)
            .await
            .map_err(|e| MediaError::io(path, e))?;
        let id = (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec());
        if let Some(d) = self.digests.lock().expect("never poisoned").get(&id) {
            return Ok(*d);
        }
        let d = digest(path).await?;
        self.digests.lock().expect("never poisoned").insert(id, d);
        Ok(d)
    }
}

/// The XXH3-128 of the file at `path`, read through one small buffer: reading a clip whole
/// allocated (and faulted in) megabytes per reading.
async fn digest(path: &Path) -> Result<Digest, MediaError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let mut file = std::fs::File::open(&owned)?;
        let mut hasher = Xxh3Default::new();
        let mut buf = vec![0u8; 128 * 1024];
        loop {
            match file.read(&mut buf)? {
                0 => return Ok(hasher.digest128()),
                n => hasher.update(&buf[..n]),
            }
        }
    })
    .await
    .map_err(|e| MediaError::io(path, std::io::Error::other(e)))?
    .map_err(|e| MediaError::io(path, e))
}

/// `aiprod_platform::files::link_or_copy`: the kept files are never written again.
async fn link(from: &Path, to: &Path) -> Result<(), MediaError> {
    aiprod_platform::files::link_or_copy(from, to)
        .await
        .map(drop)
        .map_err(|e| MediaError::io(to, e))
}
