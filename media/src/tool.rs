//! Running ffmpeg and ffprobe: one bounded pool per process, and errors that say which tool
//! failed and why in one line.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};

use aiprod_platform::config::MediaSettings;
use aiprod_platform::metrics::Metrics;
use tokio::sync::Semaphore;

/// Why media work failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The binary is not installed.
    #[error(
        "{tool} not found at {path}: install Debian's ffmpeg package (scripts/setup does), or set \
         AIPROD_FFMPEG and AIPROD_FFPROBE"
    )]
    Missing {
        /// `ffmpeg` or `ffprobe`.
        tool: &'static str,
        /// What was run.
        path: String,
    },
    /// The tool ran and failed.
    #[error("{tool} failed to {what}: {detail}")]
    Failed {
        /// `ffmpeg` or `ffprobe`.
        tool: &'static str,
        /// What it was asked to do.
        what: String,
        /// The last lines it printed.
        detail: String,
    },
    /// Our own file handling failed.
    #[error("media I/O on {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl MediaError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> MediaError {
        MediaError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// The process-wide pool: every `Media` of a process shares it, so the bound holds whatever
/// number of jobs, stages and simulated backends run at once.
static POOL: OnceLock<Arc<Semaphore>> = OnceLock::new();

/// The media tools and their settings. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Media {
    pool: Arc<Semaphore>,
    pub(crate) settings: Arc<MediaSettings>,
    /// Readings remembered by what was read (`Media::remembering`); `None` reads every time.
    pub(crate) memo: Option<Arc<crate::memo::Memo>>,
}

/// Which tool to run.
#[derive(Clone, Copy)]
enum Tool {
    Ffmpeg,
    Ffprobe,
}

/// What a finished tool printed.
pub(crate) struct Ran {
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub success: bool,
}

impl Media {
    /// The tools as the settings name them, on the process's pool (sized by the first caller's
    /// `AIPROD_MEDIA_SLOTS`, by default one slot per core).
    pub fn new(settings: &MediaSettings) -> Media {
        let pool = POOL
            .get_or_init(|| Arc::new(Semaphore::new(settings.slots())))
            .clone();
        Media {
            pool,
            settings: Arc::new(settings.clone()),
            memo: None,
        }
    }

    /// The same tools, remembering every probe, scan, frame sample and assembly by the bytes
    /// it read, so each distinct file goes through them once. For benchmarks only: a
    /// remembered assembly keeps the tags of the job that made it (`memo`).
    pub fn remembering(settings: &MediaSettings) -> Result<Media, MediaError> {
        let mut media = Media::new(settings);
        media.memo = Some(Arc::new(crate::memo::Memo::new(&media.scratch_root())?));
        Ok(media)
    }

    /// The settings in use.
    pub fn settings(&self) -> &MediaSettings {
        &self.settings
    }

    /// Where scratch files go: `AIPROD_MEDIA_SCRATCH_DIR`, else the system temp directory.
    pub fn scratch_root(&self) -> PathBuf {
        self.settings
            .media_scratch_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
    }

    /// Checks that both tools run, for a start-up message that says what is missing.
    pub async fn check(&self) -> Result<(), MediaError> {
        self.ffprobe("report its version", ["-version"], None)
            .await?;
        self.ffmpeg("report its version", ["-version"], None)
            .await?;
        Ok(())
    }

    pub(crate) async fn ffmpeg<I, S>(
        &self,
        what: &str,
        args: I,
        dir: Option<&Path>,
    ) -> Result<Ran, MediaError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run(Tool::Ffmpeg, what, args, dir).await
    }

    pub(crate) async fn ffprobe<I, S>(
        &self,
        what: &str,
        args: I,
        dir: Option<&Path>,
    ) -> Result<Ran, MediaError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run(Tool::Ffprobe, what, args, dir).await
    }

    async fn run<I, S>(
        &self,
        which: Tool,
        what: &str,
        args: I,
        dir: Option<&Path>,
    ) -> Result<Ran, MediaError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let _slot = self
            .pool
            .acquire()
            .await
            .expect("the media pool is never closed");
        let _busy = Busy::enter();
        let (tool, program) = match which {
            Tool::Ffmpeg => ("ffmpeg", &self.settings.ffmpeg),
            Tool::Ffprobe => ("ffprobe", &self.settings.ffprobe),
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A job that stops (lease lost, shutdown) takes its ffmpeg with it.
            .kill_on_drop(true);
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        let out = cmd.output().await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                MediaError::Missing {
                    tool,
                    path: program.display().to_string(),
                }
            } else {
                MediaError::Failed {
                    tool,
                    what: what.to_owned(),
                    detail: e.to_string(),
                }
            }
        })?;
        Ok(Ran {
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            success: out.status.success(),
        })
    }
}

/// Counts a running tool in `aiprod_media_processes` for as long as it lives.
struct Busy;

impl Busy {
    fn enter() -> Busy {
        Metrics::global().media_busy.inc();
        Busy
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        Metrics::global().media_busy.dec();
    }
}

impl Ran {
    /// Fails with the tool's last lines unless it succeeded.
    pub(crate) fn ok(self, tool: &'static str, what: &str) -> Result<Ran, MediaError> {
        if self.success {
            Ok(self)
        } else {
            Err(MediaError::Failed {
                tool,
                what: what.to_owned(),
                detail: tail(&self.stderr),
            })
        }
    }
}

/// The last three lines of a tool's output, on one line.
pub(crate) fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines.len().saturating_sub(3);
    let t = lines[from..].join(" | ");
    if t.is_empty() {
        "no output".into()
    } else {
        t.chars().take(500).collect()
    }
}

impl Media {
    /// A fresh scratch directory under `scratch_root`, removed with everything in it when
    /// dropped.
    pub fn scratch_dir(&self) -> Result<tempfile::TempDir, MediaError> {
        let root = self.scratch_root();
        std::fs::create_dir_all(&root).map_err(|e| MediaError::io(&root, e))?;
        tempfile::Builder::new()
            .prefix("aiprod-media-")
            .tempdir_in(&root)
            .map_err(|e| MediaError::io(&root, e))
    }
}
