//! One `final.mp4` from a job's stored shots, in order: each shot made to the output profile
//! (size, frame rate, pixel format, BT.709, trimmed to its planned length, a silent track where
//! it has no sound), then joined, with faststart and a poster image.
//!
//! When every shot already matches the profile the shots are joined as they are, without
//! re-encoding: the fast path. Whatever was changed is listed as a `Repair`, so the result says
//! honestly what the customer's video went through.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::probe::Probe;
use crate::synth::{audio_encoder, video_encoder};
use crate::tool::{Media, MediaError};

/// One stored shot, fetched into the assembly's directory.
#[derive(Clone, Debug)]
pub struct ShotInput {
    /// Its place in the plan.
    pub index: usize,
    /// The file, inside the assembly's directory.
    pub path: PathBuf,
    /// Its planned length, seconds.
    pub planned_s: f64,
    /// What it holds.
    pub probe: Probe,
}

/// Something normalisation changed in a shot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repair {
    /// The shot.
    pub shot: usize,
    /// What was done, for people: `upscaled from 1024x576 to 1280x720`.
    pub what: String,
}

/// The joined video.
#[derive(Clone, Debug)]
pub struct Assembly {
    /// `final.mp4`.
    pub video: PathBuf,
    /// `poster.jpg`.
    pub poster: PathBuf,
    /// Whether the shots were joined without re-encoding their pictures.
    pub copied: bool,
    /// What normalisation changed, shot by shot.
    pub repairs: Vec<Repair>,
}

impl Media {
    /// Joins `shots` (in the order given) into `dir/final.mp4` and takes `dir/poster.jpg`
    /// from it. `title` and `comment` become the container's tags.
    pub async fn assemble(
        &self,
        shots: &[ShotInput],
        dir: &Path,
        title: &str,
        comment: &str,
    ) -> Result<Assembly, MediaError> {
        match &self.memo {
            Some(memo) => {
                let make = self.assemble_now(shots, dir, title, comment);
                memo.assemble(shots, dir, make).await
            }
            None => self.assemble_now(shots, dir, title, comment).await,
        }
    }

    async fn assemble_now(
        &self,
        shots: &[ShotInput],
        dir: &Path,
        title: &str,
        comment: &str,
    ) -> Result<Assembly, MediaError> {
        if shots.is_empty() {
            return Err(MediaError::Failed {
                tool: "ffmpeg",
                what: "join shots".into(),
                detail: "there are no shots".into(),
            });
        }
        let total: f64 = shots.iter().map(|s| s.planned_s).sum();
        let video_ok = shots.iter().all(|s| self.matches_profile(s))
            && shots
                .iter()
                .all(|s| video_profile(&s.probe) == video_profile(&shots[0].probe));
        let with_sound = shots.iter().filter(|s| s.probe.audio.is_some()).count();
        let copy = video_ok && (with_sound == 0 || with_sound == shots.len());
        let mut repairs = Vec::new();
        let parts: Vec<PathBuf> = if copy {
            shots.iter().map(|s| s.path.clone()).collect()
        } else {
            let mut parts = Vec::with_capacity(shots.len());
            for s in shots {
                repairs.extend(self.describe_repairs(s));
                parts.push(self.normalise(s, dir).await?);
            }
            parts
        };
        if copy && with_sound == 0 {
            repairs.extend(shots.iter().map(|s| Repair {
                shot: s.index,
                what: "added a silent audio track".into(),
            }));
        }
        let list = dir.join("shots.txt");
        let listing: String = parts
            .iter()
            .map(|p| {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                format!("file '{}'\n", name.unwrap_or_default())
            })
            .collect();
        tokio::fs::write(&list, listing)
            .await
            .map_err(|e| MediaError::io(&list, e))?;
        let mut args: Vec<String> = [
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            "shots.txt",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if copy && with_sound == 0 {
            args.extend(
                ["-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo"]
                    .iter()
                    .map(|s| (*s).to_owned()),
            );
            args.extend(
                ["-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy"]
                    .iter()
                    .map(|s| (*s).to_owned()),
            );
            args.extend(audio_encoder());
            args.extend(["-t".into(), format!("{total:.6}")]);
        } else {
            args.extend(["-map", "0", "-c", "copy"].iter().map(|s| (*s).to_owned()));
        }
        args.extend([
            "-metadata".into(),
            format!("title={title}"),
            "-metadata".into(),
            format!("comment={comment}"),
            "-movflags".into(),
            "+faststart".into(),
            "final.mp4".into(),
        ]);
        let what = format!("join {} shots", shots.len());
        self.ffmpeg(&what, &args, Some(dir))
            .await?
            .ok("ffmpeg", &what)?;
        let at = format!("{:.3}", (total / 2.0).min(1.0));
        let what = "take the poster frame";
        self.ffmpeg(
            what,
            [
                "-nostdin",
                "-v",
                "error",
                "-y",
                "-ss",
                &at,
                "-i",
                "final.mp4",
                "-frames:v",
                "1",
                "-q:v",
                "3",
                "poster.jpg",
            ],
            Some(dir),
        )
        .await?
        .ok("ffmpeg", what)?;
        Ok(Assembly {
            video: dir.join("final.mp4"),
            poster: dir.join("poster.jpg"),
            copied: copy,
            repairs,
        })
    }

    /// Whether a shot can be joined as it is: the output profile's codec, size, constant frame
    /// rate, pixel format and colour tags, its planned length to half a frame, a bitrate QA
    /// accepts, and sound (if any) that is ours: AAC stereo at 48 kHz of the picture's length.
    fn matches_profile(&self, s: &ShotInput) -> bool {
        let p = &self.settings;
        let Some(v) = &s.probe.video else {
            return false;
        };
        let frame = 1.0 / f64::from(p.output_fps);
        let len_ok = v
            .duration_s
            .is_some_and(|d| (d - s.planned_s).abs() <= frame / 2.0);
        let rate_ok = v.bit_rate.is_some_and(|b| {
            (u64::from(p.qa_min_bitrate_kbps) * 1000..=u64::from(p.qa_max_bitrate_kbps) * 1000)
                .contains(&b)
        });
        let audio_ok = match &s.probe.audio {
            None => true,
            Some(a) => {
                a.codec == "aac"
                    && a.sample_rate == Some(48_000)
                    && a.channels == Some(2)
                    && matches!((a.duration_s, v.duration_s), (Some(ad), Some(vd)) if (ad - vd).abs() <= frame)
            }
        };
        v.codec == "h264"
            && v.width == p.output_width
            && v.height == p.output_height
            && (v.fps - f64::from(p.output_fps)).abs() < 0.01
            && !v.variable_fps
            && v.pix_fmt.as_deref() == Some("yuv420p")
            && v.color_space.as_deref() == Some("bt709")
            && len_ok
            && rate_ok
            && audio_ok
    }

    /// What `normalise` will change in a shot, for the result.
    fn describe_repairs(&self, s: &ShotInput) -> Vec<Repair> {
        let p = &self.settings;
        let mut out = Vec::new();
        let mut note = |what: String| {
            out.push(Repair {
                shot: s.index,
                what,
            })
        };
        let Some(v) = &s.probe.video else {
            return out;
        };
        if (v.width, v.height) != (p.output_width, p.output_height) {
            let how = if v.height < p.output_height {
                "upscaled"
            } else {
                "scaled"
            };
            note(format!(
                "{how} from {}x{} to {}x{}",
                v.width, v.height, p.output_width, p.output_height
            ));
        }
        if (v.fps - f64::from(p.output_fps)).abs() >= 0.01 || v.variable_fps {
            note(format!(
                "frame rate conformed from {:.2}{} fps to {} fps",
                v.fps,
                if v.variable_fps { " (variable)" } else { "" },
                p.output_fps
            ));
        }
        let len = s.probe.length_s().unwrap_or(0.0);
        if len > s.planned_s + 0.001 {
            note(format!("trimmed from {len:.2} s to {:.2} s", s.planned_s));
        } else if len + 0.001 < s.planned_s {
            note(format!(
                "last frame held for {:.2} s to fill {:.2} s",
                s.planned_s - len,
                s.planned_s
            ));
        }
        if v.codec != "h264" {
            note(format!("re-encoded from {} to h264", v.codec));
        }
        if v.pix_fmt.as_deref() != Some("yuv420p") || v.color_space.as_deref() != Some("bt709") {
            note(format!(
                "converted from {} {} to yuv420p bt709",
                v.pix_fmt.as_deref().unwrap_or("unknown"),
                v.color_space.as_deref().unwrap_or("untagged")
            ));
        }
        if s.probe.audio.is_none() {
            note("added a silent audio track".into());
        }
        out
    }

    /// Re-encodes one shot to the output profile at exactly its planned length.
    async fn normalise(&self, s: &ShotInput, dir: &Path) -> Result<PathBuf, MediaError> {
        let p = &self.settings;
        let (w, h, fps) = (p.output_width, p.output_height, p.output_fps);
        let d = format!("{:.6}", s.planned_s);
        let video = format!(
            "[0:v:0]scale={w}:{h}:force_original_aspect_ratio=decrease,\
             pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={fps},\
             tpad=stop_mode=clone:stop_duration={d},trim=duration={d},setpts=PTS-STARTPTS,\
             format=yuv420p[v]"
        );
        let audio = if s.probe.audio.is_some() {
            format!(
                "[0:a:0]aresample=48000,aformat=channel_layouts=stereo,apad,atrim=duration={d},\
                 asetpts=PTS-STARTPTS[a]"
            )
        } else {
            format!("anullsrc=r=48000:cl=stereo,atrim=duration={d}[a]")
        };
        let name = format!("norm-{:02}.mp4", s.index);
        let input = s
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut args: Vec<String> = ["-nostdin", "-v", "error", "-y", "-threads", "1", "-i"]
            .iter()
            .map(|x| (*x).to_owned())
            .collect();
        args.push(input);
        args.extend([
            "-filter_complex".into(),
            format!("{video};{audio}"),
            "-map".into(),
            "[v]".into(),
            "-map".into(),
            "[a]".into(),
        ]);
        args.extend(video_encoder(p));
        args.extend(audio_encoder());
        args.extend(["-movflags".into(), "+faststart".into(), name.clone()]);
        let what = format!("normalise shot {}", s.index);
        self.ffmpeg(&what, &args, Some(dir))
            .await?
            .ok("ffmpeg", &what)?;
        Ok(dir.join(name))
    }
}

/// What a copy-join needs every shot to share beyond the profile: the encoder's profile.
fn video_profile(p: &Probe) -> Option<&str> {
    p.video.as_ref().and_then(|v| v.profile.as_deref())
}
