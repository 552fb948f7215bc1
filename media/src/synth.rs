//! The simulated backends' clips: real, decodable H.264 that moves (ffmpeg's `testsrc2`), with
//! the shot's text drawn on it, at the length, size and frame rate the real backend returns.
//! A clip is cached by everything it shows, so a benchmark that renders the same shot again
//! copies a file instead of encoding one.
//!
//! The same module makes the flawed clips the tests serve from provider stubs (black, frozen,
//! no video), so a stub's output and the simulation's are one thing.

use std::path::{Path, PathBuf};

use aiprod_platform::config::MediaSettings;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::making::Making;
use crate::tool::{Media, MediaError};

/// What the picture shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Picture {
    /// A moving test pattern with the text on it.
    #[default]
    Moving,
    /// Black frames.
    Black,
    /// One still frame, repeated.
    Still,
    /// No video stream at all (sound only).
    None,
}

/// One clip to make.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClipSpec {
    /// Frames; the length is `frames / fps`.
    pub frames: u32,
    /// Frame rate.
    pub fps: u32,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Drawn on the picture.
    pub text: String,
    /// A sound track (a quiet tone), as Veo with audio returns.
    pub audio: bool,
    /// What the picture shows.
    pub picture: Picture,
}

impl ClipSpec {
    /// A moving clip of about `seconds` at `fps`.
    pub fn moving(seconds: f64, width: u32, height: u32, fps: u32, text: &str) -> ClipSpec {
        ClipSpec {
            frames: (seconds * f64::from(fps)).round().max(1.0) as u32,
            fps,
            width,
            height,
            text: text.to_owned(),
            audio: false,
            picture: Picture::Moving,
        }
    }

    /// The clip's length, seconds.
    pub fn seconds(&self) -> f64 {
        f64::from(self.frames) / f64::from(self.fps.max(1))
    }

    fn key(&self, settings: &MediaSettings) -> String {
        let mut h = Sha256::new();
        // The encoder's settings are part of what the file is.
        h.update(
            serde_json::to_vec(&(self, settings.output_bitrate_kbps, 1u8))
                .expect("a clip spec serialises"),
        );
        hex::encode(&h.finalize()[..12])
    }
}

/// The H.264 settings of everything we encode: constant bitrate (padded, so a still scene
/// keeps the bitrate QA asks for), BT.709 tagged, yuv420p, one thread (the pool bounds the
/// processes; one thread each bounds the cores).
pub(crate) fn video_encoder(settings: &MediaSettings) -> Vec<String> {
    let rate = format!("{}k", settings.output_bitrate_kbps);
    [
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-threads",
        "1",
        "-b:v",
        &rate,
        "-minrate",
        &rate,
        "-maxrate",
        &rate,
        "-bufsize",
        &rate,
        "-x264-params",
        "nal-hrd=cbr",
        "-pix_fmt",
        "yuv420p",
        "-colorspace",
        "bt709",
        "-color_primaries",
        "bt709",
        "-color_trc",
        "bt709",
        "-color_range",
        "tv",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// AAC stereo at 48 kHz: the final video's sound.
pub(crate) fn audio_encoder() -> Vec<String> {
    ["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "2"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// The text as drawn: wrapped, at most four lines.
fn wrap(text: &str) -> String {
    let mut lines: Vec<String> = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().expect("one line at least");
        if !last.is_empty() && last.chars().count() + 1 + word.chars().count() > 48 {
            lines.push(word.to_owned());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines.truncate(4);
    lines.join("\n")
}

/// The filter that draws the text in `text_file` at the foot of a picture `height` high.
fn drawtext(text_file: &str, height: u32) -> String {
    let fontsize = (height / 18).max(12);
    format!(
        "drawtext=textfile={text_file}:expansion=none:fontsize={fontsize}:fontcolor=white:\
         box=1:boxcolor=black@0.6:boxborderw=12:x=(w-tw)/2:y=h-th-{margin}",
        margin = height / 12
    )
}

/// ffmpeg's arguments for `spec`, written to `out`; `text_file` (relative to the working
/// directory) holds the text.
fn args(spec: &ClipSpec, settings: &MediaSettings, text_file: &str, out: &str) -> Vec<String> {
    let seconds = format!("{:.6}", spec.seconds());
    let size = format!("{}x{}", spec.width, spec.height);
    let mut a: Vec<String> = ["-nostdin", "-v", "error", "-y"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let text = drawtext(text_file, spec.height);
    let source = match spec.picture {
        Picture::Moving => Some(format!(
            "testsrc2=size={size}:rate={fps},{text}",
            fps = spec.fps
        )),
        Picture::Black => Some(format!("color=black:size={size}:rate={}", spec.fps)),
        Picture::Still => Some(format!(
            "color=0x336699:size={size}:rate={fps},{text}",
            fps = spec.fps
        )),
        Picture::None => None,
    };
    if let Some(src) = &source {
        a.extend(["-f".into(), "lavfi".into(), "-i".into(), src.clone()]);
    }
    if spec.audio || source.is_none() {
        a.extend([
            "-f".into(),
            "lavfi".into(),
            "-i".into(),
            "sine=frequency=220:sample_rate=48000,volume=0.1".into(),
        ]);
    }
    if source.is_some() {
        a.extend(["-frames:v".into(), spec.frames.to_string()]);
        a.extend(video_encoder(settings));
    }
    if spec.audio || source.is_none() {
        a.extend(["-t".into(), seconds]);
        a.extend(audio_encoder());
    }
    a.extend(["-movflags".into(), "+faststart".into(), out.into()]);
    a
}

fn cache_dir(root: &Path) -> PathBuf {
    root.join("aiprod-clips")
}

/// Where `spec`'s clip is cached, and whether it is there.
fn cached(root: &Path, spec: &ClipSpec, settings: &MediaSettings) -> (PathBuf, String, bool) {
    let key = spec.key(settings);
    let path = cache_dir(root).join(format!("{key}.mp4"));
    let there = path.is_file();
    (path, key, there)
}

impl Media {
    /// The clip for `spec`, made once and then served from the cache. Clips are written under
    /// a temporary name and renamed, so two makers of one clip never see half of it.
    pub async fn clip(&self, spec: &ClipSpec) -> Result<PathBuf, MediaError> {
        let root = self.scratch_root();
        let (path, key, there) = cached(&root, spec, &self.settings);
        if there {
            return Ok(path);
        }
        let what = format!("make a {:.2} s clip", spec.seconds());
        self.make_cached(&path, &key, "mp4", &spec.text, &what, |text_file, tmp| {
            args(spec, &self.settings, text_file, tmp)
        })
        .await?;
        Ok(path)
    }
}

impl Media {
    /// Makes the cached file `path` (`key`, `ext`): `text` written beside it for drawtext, then
    /// ffmpeg run with `args(text_file, tmp)` into a temporary name, renamed into place, so two
    /// makers of one file never see half of it. In one process it is made once: later askers
    /// wait for the first and find the file, where each used to run its own ffmpeg (64 jobs
    /// asking for one clip at once spent about two minutes of CPU on it).
    async fn make_cached(
        &self,
        path: &Path,
        key: &str,
        ext: &str,
        text: &str,
        what: &str,
        args: impl FnOnce(&str, &str) -> Vec<String>,
    ) -> Result<(), MediaError> {
        let _making = Making::start(path).await;
        if path.is_file() {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(path);
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| MediaError::io(dir, e))?;
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let text_file = format!(".{key}-{nonce}.txt");
        let tmp = format!(".{key}-{nonce}.{ext}");
        tokio::fs::write(dir.join(&text_file), wrap(text))
            .await
            .map_err(|e| MediaError::io(dir, e))?;
        let made = self
            .ffmpeg(what, args(&text_file, &tmp), Some(dir))
            .await
            .and_then(|r| r.ok("ffmpeg", what));
        let _ = tokio::fs::remove_file(dir.join(&text_file)).await;
        if let Err(e) = made {
            let _ = tokio::fs::remove_file(dir.join(&tmp)).await;
            return Err(e);
        }
        tokio::fs::rename(dir.join(&tmp), path)
            .await
            .map_err(|e| MediaError::io(path, e))
    }
}

/// Where the still of `text` at `width`×`height` is cached.
fn still_key(text: &str, width: u32, height: u32) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&("still", text, width, height, 1u8)).expect("a still serialises"));
    hex::encode(&h.finalize()[..12])
}

impl Media {
    /// A PNG of `text` drawn on a plain frame of `width`×`height`: the simulated keyframe.
    /// Made once per text and size, then served from the cache (written under a temporary
    /// name and renamed, as clips are).
    pub async fn still(&self, text: &str, width: u32, height: u32) -> Result<Vec<u8>, MediaError> {
        let dir = cache_dir(&self.scratch_root());
        let key = still_key(text, width, height);
        let path = dir.join(format!("{key}.png"));
        if let Ok(bytes) = tokio::fs::read(&path).await {
            return Ok(bytes);
        }
        let what = format!("draw a {width}x{height} still");
        self.make_cached(&path, &key, "png", text, &what, |text_file, tmp| {
            let source = format!(
                "color=0x336699:size={width}x{height}:rate=1,{}",
                drawtext(text_file, height)
            );
            let args: Vec<String> = [
                "-nostdin",
                "-v",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                &source,
                "-frames:v",
                "1",
                "-c:v",
                "png",
                "-f",
                "image2",
                tmp,
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            args
        })
        .await?;
        tokio::fs::read(&path)
            .await
            .map_err(|e| MediaError::io(&path, e))
    }
}

/// `Media::clip` for code that cannot await (an HTTP stub's responder): the same clip and
/// cache, made by a blocking call to ffmpeg outside the pool.
pub fn clip_blocking(settings: &MediaSettings, spec: &ClipSpec) -> Result<PathBuf, MediaError> {
    let root = settings
        .media_scratch_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let (path, key, there) = cached(&root, spec, settings);
    if there {
        return Ok(path);
    }
    let dir = cache_dir(&root);
    std::fs::create_dir_all(&dir).map_err(|e| MediaError::io(&dir, e))?;
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let text_file = format!(".{key}-{nonce}.txt");
    let tmp = format!(".{key}-{nonce}.mp4");
    std::fs::write(dir.join(&text_file), wrap(&spec.text)).map_err(|e| MediaError::io(&dir, e))?;
    let out = std::process::Command::new(&settings.ffmpeg)
        .args(args(spec, settings, &text_file, &tmp))
        .current_dir(&dir)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| MediaError::io(&settings.ffmpeg, e))?;
    let _ = std::fs::remove_file(dir.join(&text_file));
    if !out.status.success() {
        return Err(MediaError::Failed {
            tool: "ffmpeg",
            what: "make a clip".into(),
            detail: crate::tool::tail(&String::from_utf8_lossy(&out.stderr)),
        });
    }
    std::fs::rename(dir.join(&tmp), &path).map_err(|e| MediaError::io(&path, e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_wraps_into_at_most_four_lines() {
        let long = "word ".repeat(100);
        let w = wrap(&long);
        assert_eq!(w.lines().count(), 4);
        assert!(w.lines().all(|l| l.chars().count() <= 48));
    }

    #[test]
    fn the_cache_key_covers_what_the_clip_shows() {
        let s = MediaSettings::default();
        let a = ClipSpec::moving(5.0, 1280, 720, 24, "a fox");
        let mut b = a.clone();
        assert_eq!(a.key(&s), b.key(&s));
        b.text = "a hare".into();
        assert_ne!(a.key(&s), b.key(&s));
        b = a.clone();
        b.frames += 1;
        assert_ne!(a.key(&s), b.key(&s));
    }
}
