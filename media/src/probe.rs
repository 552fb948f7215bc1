//! What a file holds, read from ffprobe's JSON (`-show_format -show_streams -of json`), and
//! what a full decode finds in it (black and frozen stretches, decode errors).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::qa::{Expect, Report, judge};
use crate::tool::{Media, MediaError};

/// ffprobe's answer, as far as we read it.
#[derive(Debug, Deserialize)]
struct Raw {
    #[serde(default)]
    streams: Vec<RawStream>,
    format: Option<RawFormat>,
}

#[derive(Debug, Deserialize)]
struct RawStream {
    codec_type: Option<String>,
    codec_name: Option<String>,
    profile: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    pix_fmt: Option<String>,
    color_space: Option<String>,
    r_frame_rate: Option<String>,
    avg_frame_rate: Option<String>,
    bit_rate: Option<String>,
    duration: Option<String>,
    start_time: Option<String>,
    sample_rate: Option<String>,
    channels: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct RawFormat {
    format_name: Option<String>,
    duration: Option<String>,
    size: Option<String>,
    bit_rate: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// The video stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Video {
    /// `h264`, `hevc`, `vp9`, `av1`…
    pub codec: String,
    /// The codec profile (`High`…), which a copy-join needs to be the same for every shot.
    pub profile: Option<String>,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// `yuv420p`…
    pub pix_fmt: Option<String>,
    /// `bt709`… (absent when untagged).
    pub color_space: Option<String>,
    /// The average frame rate.
    pub fps: f64,
    /// Whether the frame rate varies (the stream's base rate differs from its average).
    pub variable_fps: bool,
    /// Bits per second of the stream (else of the whole file).
    pub bit_rate: Option<u64>,
    /// Seconds.
    pub duration_s: Option<f64>,
    /// Seconds.
    pub start_s: f64,
}

/// The first audio stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Audio {
    /// `aac`, `opus`…
    pub codec: String,
    /// Hz.
    pub sample_rate: Option<u32>,
    /// Channels.
    pub channels: Option<u32>,
    /// Seconds.
    pub duration_s: Option<f64>,
    /// Seconds.
    pub start_s: f64,
}

/// What ffprobe found in a file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// The demuxer's names (`mov,mp4,m4a,3gp,3g2,mj2`, `matroska,webm`).
    pub container: String,
    /// The container's length, seconds.
    pub duration_s: Option<f64>,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// The container's tags (`major_brand`, `encoder`, `title`…).
    pub tags: BTreeMap<String, String>,
    /// The first video stream.
    pub video: Option<Video>,
    /// The first audio stream.
    pub audio: Option<Audio>,
}

impl Probe {
    /// The length that counts: the video stream's, else the container's.
    pub fn length_s(&self) -> Option<f64> {
        self.video
            .as_ref()
            .and_then(|v| v.duration_s)
            .or(self.duration_s)
    }
}

/// What a full decode found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scan {
    /// Seconds of black picture.
    pub black_s: f64,
    /// Seconds of frozen picture.
    pub frozen_s: f64,
    /// The decoder's error lines (the first few).
    pub errors: Vec<String>,
}

fn num<T: std::str::FromStr>(s: &Option<String>) -> Option<T> {
    s.as_deref().and_then(|v| v.trim().parse().ok())
}

/// `24/1` or `30000/1001` as a number; `0/0` is none.
fn rate(s: &Option<String>) -> Option<f64> {
    let s = s.as_deref()?;
    let (n, d) = s.split_once('/').unwrap_or((s, "1"));
    let (n, d): (f64, f64) = (n.parse().ok()?, d.parse().ok()?);
    (d > 0.0 && n > 0.0).then(|| n / d)
}

impl Media {
    /// Probes `path`. A file ffprobe cannot read at all (no container, truncated before its
    /// index) is an error carrying ffprobe's reason.
    pub async fn probe(&self, path: &Path) -> Result<Probe, MediaError> {
        match &self.memo {
            Some(memo) => memo.probe(path, self.probe_now(path)).await,
            None => self.probe_now(path).await,
        }
    }

    async fn probe_now(&self, path: &Path) -> Result<Probe, MediaError> {
        let what = format!("read {}", path.display());
        let ran = self
            .ffprobe(
                &what,
                [
                    "-v".as_ref(),
                    "error".as_ref(),
                    "-show_format".as_ref(),
                    "-show_streams".as_ref(),
                    "-of".as_ref(),
                    "json".as_ref(),
                    path.as_os_str(),
                ],
                None,
            )
            .await?
            .ok("ffprobe", &what)?;
        let raw: Raw = serde_json::from_slice(&ran.stdout).map_err(|e| MediaError::Failed {
            tool: "ffprobe",
            what: what.clone(),
            detail: format!("unreadable JSON: {e}"),
        })?;
        let size_bytes = match raw.format.as_ref().and_then(|f| num(&f.size)) {
            Some(n) => n,
            None => tokio::fs::metadata(path)
                .await
                .map_err(|e| MediaError::io(path, e))?
                .len(),
        };
        let format_rate = raw.format.as_ref().and_then(|f| num::<u64>(&f.bit_rate));
        let video = raw
            .streams
            .iter()
            .find(|s| s.codec_type.as_deref() == Some("video"))
            .map(|s| {
                let avg = rate(&s.avg_frame_rate);
                let base = rate(&s.r_frame_rate);
                Video {
                    codec: s.codec_name.clone().unwrap_or_default(),
                    profile: s.profile.clone(),
                    width: s.width.unwrap_or(0),
                    height: s.height.unwrap_or(0),
                    pix_fmt: s.pix_fmt.clone(),
                    color_space: s.color_space.clone(),
                    fps: avg.or(base).unwrap_or(0.0),
                    variable_fps: matches!((avg, base), (Some(a), Some(b)) if (a - b).abs() > 0.01),
                    bit_rate: num(&s.bit_rate).or(format_rate),
                    duration_s: num(&s.duration),
                    start_s: num(&s.start_time).unwrap_or(0.0),
                }
            });
        let audio = raw
            .streams
            .iter()
            .find(|s| s.codec_type.as_deref() == Some("audio"))
            .map(|s| Audio {
                codec: s.codec_name.clone().unwrap_or_default(),
                sample_rate: num(&s.sample_rate),
                channels: s.channels,
                duration_s: num(&s.duration),
                start_s: num(&s.start_time).unwrap_or(0.0),
            });
        let format = raw.format;
        Ok(Probe {
            container: format
                .as_ref()
                .and_then(|f| f.format_name.clone())
                .unwrap_or_default(),
            duration_s: format.as_ref().and_then(|f| num(&f.duration)),
            size_bytes,
            tags: format.map(|f| f.tags).unwrap_or_default(),
            video,
            audio,
        })
    }

    /// Decodes every frame of `path` once: black stretches (`blackdetect`), frozen stretches
    /// (`freezedetect`), and any decode error, which is how a truncated or corrupt file shows.
    /// `length_s` closes a stretch that runs to the end.
    pub async fn scan(&self, path: &Path, length_s: f64) -> Result<Scan, MediaError> {
        match &self.memo {
            Some(memo) => {
                memo.scan(path, length_s, self.scan_now(path, length_s))
                    .await
            }
            None => self.scan_now(path, length_s).await,
        }
    }

    async fn scan_now(&self, path: &Path, length_s: f64) -> Result<Scan, MediaError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        // The filter's file option is parsed by the filter-graph syntax; a plain relative
        // name in the file's own directory needs no escaping.
        let meta = format!(".scan-{}.txt", uuid::Uuid::new_v4().simple());
        let filters = format!(
            "blackdetect=d=0.1:pix_th=0.10,freezedetect=n=-60dB:d=0.5,metadata=mode=print:file={meta}"
        );
        let what = format!("decode {}", path.display());
        let ran = self
            .ffmpeg(
                &what,
                [
                    "-nostdin".as_ref(),
                    "-v".as_ref(),
                    "error".as_ref(),
                    "-threads".as_ref(),
                    "1".as_ref(),
                    "-i".as_ref(),
                    path.as_os_str(),
                    "-map".as_ref(),
                    "0:v:0".as_ref(),
                    "-map".as_ref(),
                    "0:a?".as_ref(),
                    "-vf".as_ref(),
                    filters.as_ref(),
                    "-f".as_ref(),
                    "null".as_ref(),
                    "-".as_ref(),
                ],
                Some(dir),
            )
            .await?;
        let meta_path = dir.join(&meta);
        let printed = tokio::fs::read_to_string(&meta_path)
            .await
            .unwrap_or_default();
        let _ = tokio::fs::remove_file(&meta_path).await;
        let mut scan = read_detections(&printed, length_s);
        scan.errors = ran
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(5)
            .map(|l| l.chars().take(200).collect())
            .collect();
        if !ran.success && scan.errors.is_empty() {
            scan.errors.push("ffmpeg could not decode the file".into());
        }
        Ok(scan)
    }
}

/// A probed and checked file.
#[derive(Clone, Debug)]
pub struct Inspection {
    /// What ffprobe found (`None`: unreadable).
    pub probe: Option<Probe>,
    /// The checks.
    pub report: Report,
}

impl Media {
    /// Probes, decodes and judges the file at `path`. A file the tools cannot read is a failed
    /// report, not an error; an error means the tools themselves could not run.
    pub async fn inspect(&self, path: &Path, expect: &Expect) -> Result<Inspection, MediaError> {
        let probe = match self.probe(path).await {
            Ok(p) => p,
            Err(MediaError::Failed { detail, .. }) => {
                let report = judge(Err(&detail), expect, &self.settings);
                return Ok(Inspection {
                    probe: None,
                    report,
                });
            }
            Err(e) => return Err(e),
        };
        let scan = if probe.video.is_some() {
            self.scan(path, probe.length_s().unwrap_or(0.0)).await?
        } else {
            Scan::default()
        };
        let report = judge(Ok((&probe, &scan)), expect, &self.settings);
        Ok(Inspection {
            probe: Some(probe),
            report,
        })
    }
}

/// Adds up the stretches in the `metadata` filter's print-out: `key=value` lines after each
/// frame's header line.
fn read_detections(printed: &str, length_s: f64) -> Scan {
    let mut scan = Scan::default();
    let (mut black_from, mut frozen_from) = (None::<f64>, None::<f64>);
    for line in printed.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let Ok(t) = value.trim().parse::<f64>() else {
            continue;
        };
        match key {
            "lavfi.black_start" => black_from = Some(t),
            "lavfi.black_end" => {
                if let Some(from) = black_from.take() {
                    scan.black_s += (t - from).max(0.0);
                }
            }
            "lavfi.freezedetect.freeze_start" => frozen_from = Some(t),
            "lavfi.freezedetect.freeze_end" => {
                if let Some(from) = frozen_from.take() {
                    scan.frozen_s += (t - from).max(0.0);
                }
            }
            _ => {}
        }
    }
    if let Some(from) = black_from {
        scan.black_s += (length_s - from).max(0.0);
    }
    if let Some(from) = frozen_from {
        scan.frozen_s += (length_s - from).max(0.0);
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stretches_add_up_and_open_ones_run_to_the_end() {
        let printed = "frame:0 pts:0 pts_time:0\nlavfi.black_start=0\n\
                       frame:12 pts:1 pts_time:0.5\nlavfi.black_end=0.5\n\
                       frame:48 pts:2 pts_time:2\nlavfi.freezedetect.freeze_start=1.5\n";
        let s = read_detections(printed, 4.0);
        assert!((s.black_s - 0.5).abs() < 1e-9);
        assert!((s.frozen_s - 2.5).abs() < 1e-9);
    }

    #[test]
    fn rates_read_as_numbers() {
        assert_eq!(rate(&Some("24/1".into())), Some(24.0));
        assert_eq!(rate(&Some("0/0".into())), None);
        let ntsc = rate(&Some("30000/1001".into())).expect("a rate");
        assert!((ntsc - 29.97).abs() < 0.01);
    }
}
