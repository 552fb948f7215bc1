//! Media work: where ffmpeg and ffprobe are, how many run at once, the output profile every final
//! video is made to, and the limits of technical QA (README, "Media: clips, technical QA and the
//! final video").

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::check::within;

/// The media settings (flat `AIPROD_*` names).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct MediaSettings {
    /// `AIPROD_FFMPEG`: the ffmpeg binary (looked up on `PATH` when bare).
    pub ffmpeg: PathBuf,
    /// `AIPROD_FFPROBE`: the ffprobe binary.
    pub ffprobe: PathBuf,
    /// `AIPROD_MEDIA_SLOTS`: ffmpeg processes one worker runs at once (0: one per core).
    pub media_slots: usize,
    /// `AIPROD_MEDIA_SCRATCH_DIR`: where shots are probed and assembled (default: the system
    /// temp directory).
    pub media_scratch_dir: Option<PathBuf>,
    /// `AIPROD_MAX_DOWNLOAD_BYTES`: the largest provider output or client image copied in.
    pub max_download_bytes: u64,
    /// `AIPROD_MAX_IMAGE_BYTES`: the largest client image (`image_url`) copied in. Every
    /// backend must take it inline, and Runway takes data URIs of up to 5 MB, which base64
    /// makes of about 3.7 MB.
    pub max_image_bytes: u64,
    /// `AIPROD_IMAGE_FETCH_ALLOW_HTTP`: client images may also be fetched over plain http.
    /// For tests and local development only (a stub on a loopback port): off, every
    /// `image_url` must be https.
    pub image_fetch_allow_http: bool,
    /// `AIPROD_IMAGE_FETCH_ALLOW_PRIVATE`: addresses (comma-separated in env) a client image
    /// may be fetched from although they are loopback or private. For tests and local
    /// development only: empty, every such address is refused. The metadata server and the
    /// addresses no server can have (unspecified, multicast, broadcast) are refused whatever
    /// this says.
    #[serde(deserialize_with = "ip_list")]
    pub image_fetch_allow_private: Vec<IpAddr>,
    /// `AIPROD_OUTPUT_WIDTH`, `AIPROD_OUTPUT_HEIGHT`: the final video's frame size.
    pub output_width: u32,
    /// See `output_width`.
    pub output_height: u32,
    /// `AIPROD_OUTPUT_FPS`: the final video's frame rate (24, 30 or 60).
    pub output_fps: u32,
    /// `AIPROD_OUTPUT_BITRATE_KBPS`: the constant video bitrate of what we encode.
    pub output_bitrate_kbps: u32,
    /// `AIPROD_QA_MIN_HEIGHT`: the least frame height (720 for 720p).
    pub qa_min_height: u32,
    /// `AIPROD_QA_MIN_BITRATE_KBPS`, `AIPROD_QA_MAX_BITRATE_KBPS`: the video bitrate's range.
    pub qa_min_bitrate_kbps: u32,
    /// See `qa_min_bitrate_kbps`.
    pub qa_max_bitrate_kbps: u32,
    /// `AIPROD_QA_FRAME_RATES`: the frame rates allowed (comma-separated in env).
    #[serde(deserialize_with = "u32_list")]
    pub qa_frame_rates: Vec<u32>,
    /// `AIPROD_QA_DURATION_TOLERANCE_PCT`: how far a length may be from the one asked for.
    pub qa_duration_tolerance_pct: u32,
    /// `AIPROD_QA_AV_SYNC_MS`: the largest gap between the audio and video streams' starts or
    /// lengths.
    pub qa_av_sync_ms: u32,
    /// `AIPROD_QA_MAX_MB_PER_MINUTE`: the largest file size per minute of video.
    pub qa_max_mb_per_minute: u32,
    /// `AIPROD_QA_MAX_BLACK_PCT`: the largest share of a clip that may be black.
    pub qa_max_black_pct: u32,
    /// `AIPROD_QA_MAX_FROZEN_PCT`: the largest share of a clip that may be frozen.
    pub qa_max_frozen_pct: u32,
}

impl Default for MediaSettings {
    fn default() -> Self {
        MediaSettings {
            ffmpeg: PathBuf::from("ffmpeg"),
            ffprobe: PathBuf::from("ffprobe"),
            media_slots: 0,
            media_scratch_dir: None,
            max_download_bytes: 2 * 1024 * 1024 * 1024,
            max_image_bytes: 3 * 1024 * 1024,
            image_fetch_allow_http: false,
            image_fetch_allow_private: Vec::new(),
            output_width: 1280,
            output_height: 720,
            output_fps: 24,
            output_bitrate_kbps: 4000,
            qa_min_height: 720,
            qa_min_bitrate_kbps: 2000,
            qa_max_bitrate_kbps: 8000,
            qa_frame_rates: vec![24, 30, 60],
            qa_duration_tolerance_pct: 5,
            qa_av_sync_ms: 100,
            qa_max_mb_per_minute: 500,
            qa_max_black_pct: 50,
            qa_max_frozen_pct: 50,
        }
    }
}

impl MediaSettings {
    /// How many ffmpeg processes run at once: the setting, else one per core.
    pub fn slots(&self) -> usize {
        if self.media_slots > 0 {
            self.media_slots
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        within("AIPROD_MEDIA_SLOTS", self.media_slots, 0..=256)?;
        within(
            "AIPROD_MAX_DOWNLOAD_BYTES",
            self.max_download_bytes,
            1024..=64 * 1024 * 1024 * 1024,
        )?;
        within(
            "AIPROD_MAX_IMAGE_BYTES",
            self.max_image_bytes,
            1024..=3_700_000,
        )?;
        if let Some(ip) = self
            .image_fetch_allow_private
            .iter()
            .find(|ip| never_allowed(**ip))
        {
            return Err(format!(
                "AIPROD_IMAGE_FETCH_ALLOW_PRIVATE cannot allow {ip}: the metadata server, \
                 unspecified, multicast and broadcast addresses are always refused"
            ));
        }
        within("AIPROD_OUTPUT_WIDTH", self.output_width, 320..=7680)?;
        within("AIPROD_OUTPUT_HEIGHT", self.output_height, 240..=4320)?;
        if self.output_width % 2 == 1 || self.output_height % 2 == 1 {
            return Err(format!(
                "AIPROD_OUTPUT_WIDTH and AIPROD_OUTPUT_HEIGHT must be even (yuv420p), got {}x{}",
                self.output_width, self.output_height
            ));
        }
        within("AIPROD_QA_MIN_HEIGHT", self.qa_min_height, 1..=4320)?;
        within(
            "AIPROD_QA_MAX_BITRATE_KBPS",
            self.qa_max_bitrate_kbps,
            self.qa_min_bitrate_kbps.max(1)..=1_000_000,
        )?;
        within(
            "AIPROD_OUTPUT_BITRATE_KBPS",
            self.output_bitrate_kbps,
            self.qa_min_bitrate_kbps..=self.qa_max_bitrate_kbps,
        )?;
        if self.qa_frame_rates.is_empty() {
            return Err("AIPROD_QA_FRAME_RATES must name at least one frame rate".into());
        }
        if !self.qa_frame_rates.contains(&self.output_fps) {
            return Err(format!(
                "AIPROD_OUTPUT_FPS must be one of AIPROD_QA_FRAME_RATES ({:?}), got {}",
                self.qa_frame_rates, self.output_fps
            ));
        }
        within(
            "AIPROD_QA_DURATION_TOLERANCE_PCT",
            self.qa_duration_tolerance_pct,
            0..=100,
        )?;
        within("AIPROD_QA_AV_SYNC_MS", self.qa_av_sync_ms, 0..=10_000)?;
        within(
            "AIPROD_QA_MAX_MB_PER_MINUTE",
            self.qa_max_mb_per_minute,
            1..=100_000,
        )?;
        within("AIPROD_QA_MAX_BLACK_PCT", self.qa_max_black_pct, 0..=100)?;
        within("AIPROD_QA_MAX_FROZEN_PCT", self.qa_max_frozen_pct, 0..=100)
    }
}

/// Whether `ip` may never be allowed as a client image's host: the cloud metadata server (a
/// redirect there is the classic way to steal a workload's credentials) and addresses that no
/// image server can have.
fn never_allowed(ip: IpAddr) -> bool {
    let v4 = match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    ip.is_unspecified()
        || ip.is_multicast()
        || v4.is_some_and(|v4| v4.is_broadcast() || v4.octets() == [169, 254, 169, 254])
}

/// A list of IP addresses, or (as environment variables give it) one comma-separated string.
fn ip_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    let words = match ListOrCsv::deserialize(d)? {
        ListOrCsv::List(v) => v,
        ListOrCsv::Csv(s) => s.split(',').map(|w| w.trim().to_owned()).collect(),
    };
    words
        .iter()
        .filter(|w| !w.is_empty())
        .map(|w| {
            w.parse()
                .map_err(|_| serde::de::Error::custom(format!("`{w}` is not an IP address")))
        })
        .collect()
}

/// A list of numbers, or (as environment variables give it) one comma-separated string.
fn u32_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<u32>),
        One(u32),
        Csv(String),
    }
    match ListOrCsv::deserialize(d)? {
        ListOrCsv::List(v) => Ok(v),
        ListOrCsv::One(n) => Ok(vec![n]),
        ListOrCsv::Csv(s) => s
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(|w| w.parse().map_err(serde::de::Error::custom))
            .collect(),
    }
}

#[cfg(test)]
// figment's Jail returns its large error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use std::net::IpAddr;

    use crate::Settings;

    #[test]
    fn image_fetch_allowances_come_from_the_environment_and_never_cover_the_metadata_server() {
        figment::Jail::expect_with(|jail| {
            let s = Settings::load(None).expect("loads");
            assert!(!s.media.image_fetch_allow_http);
            assert!(s.media.image_fetch_allow_private.is_empty());
            jail.set_env("AIPROD_IMAGE_FETCH_ALLOW_HTTP", "true");
            jail.set_env("AIPROD_IMAGE_FETCH_ALLOW_PRIVATE", "127.0.0.1, ::1");
            let s = Settings::load(None).expect("loads");
            assert!(s.media.image_fetch_allow_http);
            let want: Vec<IpAddr> = vec![
                "127.0.0.1".parse().expect("an address"),
                "::1".parse().expect("an address"),
            ];
            assert_eq!(s.media.image_fetch_allow_private, want);
            for (value, want) in [
                (
                    "10.0.0.1,169.254.169.254",
                    "AIPROD_IMAGE_FETCH_ALLOW_PRIVATE cannot allow 169.254.169.254",
                ),
                ("0.0.0.0", "cannot allow 0.0.0.0"),
                ("localhost", "`localhost` is not an IP address"),
            ] {
                jail.set_env("AIPROD_IMAGE_FETCH_ALLOW_PRIVATE", value);
                let e = Settings::load(None).expect_err(value).to_string();
                assert!(e.contains(want), "{value}: {e}");
            }
            Ok(())
        });
    }
}
