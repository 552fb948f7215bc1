//! Technical QA: the ten checks of the seed and three more (black frames, frozen frames, a full
//! decode), each recorded with its measured value, its limit, and whether it passed. What a failed
//! check means for a provider's clip is decided here, once (README, "Media: clips, technical QA and
//! the final video"): repaired when the output profile's normalisation fixes it honestly,
//! re-rendered on the next backend when no transcode can, and for the final video, which is our own
//! work, the job fails.

use aiprod_platform::config::MediaSettings;
use serde::{Deserialize, Serialize};

use crate::probe::{Probe, Scan};

/// What a clip's checks mean for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check passed.
    Pass,
    /// Usable: normalisation fixes what failed, and the result says what it did.
    Repair,
    /// Unusable: the next backend in the fallback order renders the shot again.
    Rerender,
}

impl Verdict {
    /// The wire name, as serialised (and as the metrics label it).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Repair => "repair",
            Verdict::Rerender => "rerender",
        }
    }
}

/// One check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// `resolution`, `codec`…
    pub name: String,
    /// What was measured.
    pub value: String,
    /// What it had to be.
    pub limit: String,
    /// Whether it held.
    pub pass: bool,
    /// What a failure of this check means for the clip (`pass` when it held).
    pub verdict: Verdict,
}

/// Every check of one file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The worst verdict of any check.
    pub verdict: Verdict,
    /// The checks, in a fixed order.
    pub checks: Vec<Check>,
}

impl Report {
    /// The failed checks, for an error message: `duration 3.98 s (limit 4.75–5.25 s); …`.
    pub fn failures(&self) -> String {
        self.checks
            .iter()
            .filter(|c| !c.pass)
            .map(|c| format!("{} {} (limit {})", c.name, c.value, c.limit))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Pass
    }
}

/// What a file is checked against.
#[derive(Clone, Debug)]
pub struct Expect {
    /// The length asked for, seconds.
    pub duration_s: f64,
    /// The final video must carry sound; a shot may come without (normalisation adds silence).
    pub audio_required: bool,
    /// Container tags that must be present; with none, any tag will do.
    pub tags: Vec<String>,
}

/// The checks made so far.
struct Checks {
    out: Vec<Check>,
}

impl Checks {
    fn push(&mut self, name: &str, value: String, limit: String, pass: bool, on_fail: Verdict) {
        self.out.push(Check {
            name: name.to_owned(),
            value,
            limit,
            pass,
            verdict: if pass { Verdict::Pass } else { on_fail },
        });
    }
}

/// The names of the checks, in the order a report lists them.
pub const CHECKS: [&str; 13] = [
    "resolution",
    "codec",
    "bitrate",
    "frame_rate",
    "duration",
    "av_sync",
    "pixel_format",
    "container",
    "size_per_minute",
    "metadata",
    "black_frames",
    "frozen_frames",
    "decode",
];

const CODECS: [&str; 4] = ["h264", "hevc", "vp9", "av1"];

/// Judges a probe and a scan (`None`: the file could not be read at all, with the reason).
pub fn judge(
    file: Result<(&Probe, &Scan), &str>,
    expect: &Expect,
    limits: &MediaSettings,
) -> Report {
    let mut c = Checks {
        out: Vec::with_capacity(CHECKS.len()),
    };
    let (probe, scan) = match file {
        Ok(ps) => ps,
        Err(why) => {
            // Nothing can be measured: every check fails, and only a new render can help.
            for name in CHECKS {
                let value = if name == "decode" {
                    why.to_owned()
                } else {
                    "unreadable file".to_owned()
                };
                c.push(
                    name,
                    value,
                    "a readable file".into(),
                    false,
                    Verdict::Rerender,
                );
            }
            return finish(c.out);
        }
    };
    let l = limits;
    let length = probe.length_s().unwrap_or(0.0);
    match &probe.video {
        None => {
            for name in [
                "resolution",
                "codec",
                "bitrate",
                "frame_rate",
                "pixel_format",
            ] {
                c.push(
                    name,
                    "no video stream".into(),
                    "a video stream".into(),
                    false,
                    Verdict::Rerender,
                );
            }
        }
        Some(v) => {
            c.push(
                "resolution",
                format!("{}x{}", v.width, v.height),
                format!("height ≥ {}", l.qa_min_height),
                v.height >= l.qa_min_height,
                Verdict::Repair,
            );
            c.push(
                "codec",
                v.codec.clone(),
                CODECS.join(", "),
                CODECS.contains(&v.codec.as_str()),
                Verdict::Repair,
            );
            let kbps = v.bit_rate.map(|b| b / 1000);
            c.push(
                "bitrate",
                kbps.map_or("unknown".into(), |k| format!("{k} kb/s")),
                format!("{}–{} kb/s", l.qa_min_bitrate_kbps, l.qa_max_bitrate_kbps),
                kbps.is_some_and(|k| {
                    (u64::from(l.qa_min_bitrate_kbps)..=u64::from(l.qa_max_bitrate_kbps))
                        .contains(&k)
                }),
                Verdict::Repair,
            );
            let standard = l
                .qa_frame_rates
                .iter()
                .any(|&r| (v.fps - f64::from(r)).abs() < 0.01);
            c.push(
                "frame_rate",
                format!(
                    "{:.2} fps{}",
                    v.fps,
                    if v.variable_fps { " (variable)" } else { "" }
                ),
                format!(
                    "constant {} fps",
                    l.qa_frame_rates
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                standard && !v.variable_fps,
                Verdict::Repair,
            );
            let pix_ok = matches!(v.pix_fmt.as_deref(), Some("yuv420p" | "yuv444p"));
            let bt709 = v.color_space.as_deref() == Some("bt709");
            c.push(
                "pixel_format",
                format!(
                    "{} {}",
                    v.pix_fmt.as_deref().unwrap_or("unknown"),
                    v.color_space.as_deref().unwrap_or("untagged")
                ),
                "yuv420p or yuv444p, bt709".into(),
                pix_ok && bt709,
                Verdict::Repair,
            );
        }
    }
    // Too long is trimmed to plan; too short has nothing to trim to.
    let tol = expect.duration_s * f64::from(l.qa_duration_tolerance_pct) / 100.0;
    let (lo, hi) = (expect.duration_s - tol, expect.duration_s + tol);
    c.push(
        "duration",
        format!("{length:.2} s"),
        format!("{lo:.2}–{hi:.2} s"),
        (lo..=hi).contains(&length),
        if length > hi {
            Verdict::Repair
        } else {
            Verdict::Rerender
        },
    );
    let sync_s = f64::from(l.qa_av_sync_ms) / 1000.0;
    let (value, pass) = match (&probe.video, &probe.audio) {
        (Some(v), Some(a)) => {
            let start = (v.start_s - a.start_s).abs();
            let len = match (v.duration_s, a.duration_s) {
                (Some(vd), Some(ad)) => (vd - ad).abs(),
                _ => 0.0,
            };
            (
                format!(
                    "start Δ {:.0} ms, length Δ {:.0} ms",
                    start * 1000.0,
                    len * 1000.0
                ),
                start <= sync_s && len <= sync_s,
            )
        }
        (_, None) => ("no audio stream".into(), !expect.audio_required),
        (None, Some(_)) => ("no video stream".into(), false),
    };
    c.push(
        "av_sync",
        value,
        format!(
            "{}start and length Δ ≤ {} ms",
            if expect.audio_required {
                "an audio stream; "
            } else {
                ""
            },
            l.qa_av_sync_ms
        ),
        pass,
        Verdict::Repair,
    );
    let container_ok = probe.container.contains("mp4") || probe.container.contains("webm");
    c.push(
        "container",
        probe.container.clone(),
        "mp4 or webm".into(),
        container_ok,
        Verdict::Repair,
    );
    let mb_per_min = if length > 0.0 {
        probe.size_bytes as f64 / 1e6 / (length / 60.0)
    } else {
        0.0
    };
    c.push(
        "size_per_minute",
        format!("{mb_per_min:.1} MB/min"),
        format!("< {} MB/min", l.qa_max_mb_per_minute),
        length > 0.0 && mb_per_min < f64::from(l.qa_max_mb_per_minute),
        Verdict::Repair,
    );
    let missing: Vec<&String> = expect
        .tags
        .iter()
        .filter(|t| !probe.tags.contains_key(t.as_str()))
        .collect();
    c.push(
        "metadata",
        if probe.tags.is_empty() {
            "no tags".into()
        } else {
            probe.tags.keys().cloned().collect::<Vec<_>>().join(", ")
        },
        if expect.tags.is_empty() {
            "a declared length and tags".into()
        } else {
            format!("a declared length and tags {}", expect.tags.join(", "))
        },
        probe.duration_s.is_some() && !probe.tags.is_empty() && missing.is_empty(),
        Verdict::Repair,
    );
    let share = |s: f64| {
        if length > 0.0 {
            s / length * 100.0
        } else {
            0.0
        }
    };
    let black = share(scan.black_s);
    c.push(
        "black_frames",
        format!("{black:.0} % ({:.2} s)", scan.black_s),
        format!("≤ {} %", l.qa_max_black_pct),
        probe.video.is_some() && black <= f64::from(l.qa_max_black_pct),
        Verdict::Rerender,
    );
    let frozen = share(scan.frozen_s);
    c.push(
        "frozen_frames",
        format!("{frozen:.0} % ({:.2} s)", scan.frozen_s),
        format!("≤ {} %", l.qa_max_frozen_pct),
        probe.video.is_some() && frozen <= f64::from(l.qa_max_frozen_pct),
        Verdict::Rerender,
    );
    c.push(
        "decode",
        if scan.errors.is_empty() {
            "no errors".into()
        } else {
            format!("{} error(s): {}", scan.errors.len(), scan.errors[0])
        },
        "a full decode with no errors".into(),
        scan.errors.is_empty(),
        Verdict::Rerender,
    );
    finish(c.out)
}

fn finish(checks: Vec<Check>) -> Report {
    let verdict = checks
        .iter()
        .map(|c| c.verdict)
        .max()
        .unwrap_or(Verdict::Pass);
    Report { verdict, checks }
}
