//! The stand-in for a backend without credentials, for `aiprod dev` and tests: the same
//! submit/poll protocol as the real clients, with the seed profile's relative latency and a
//! configured failure rate. The handle carries everything a poll needs (when it is ready, how
//! long the clip is, whether it fails, the text to draw), so a worker that restarts mid-render
//! resumes polling the same simulated render, exactly as with a real provider.
//!
//! Its output is a real clip (`aiprod_media::synth`) with the length, size, frame rate and
//! sound the real backend returns: Runway 1280x720 at 24 fps, silent; Veo 1280x720 at 24 fps
//! in 4, 6 or 8 s, with sound when `AIPROD_VEO_GENERATE_AUDIO` is set; Stable Video Diffusion
//! 1024x576, 14 or 25 frames at the rate that fits the shot.

use std::path::Path;
use std::time::Duration;

use aiprod_domain::BackendName;
use aiprod_media::{ClipSpec, Media};
use async_trait::async_trait;
use base64::Engine as _;
use rand::Rng;

use super::{Backend, BackendError, FailureClass, Output, Poll, RemoteHandle, ShotRequest};

/// The longest text a handle carries to draw on the clip.
const TEXT_MAX: usize = 120;
/// The scheme of a simulated output's URL.
const SCHEME: &str = "sim://";
/// Renders answered by one `poll_many`.
const POLL_BATCH: usize = 1024;

/// One simulated backend.
pub struct Simulated {
    name: BackendName,
    latency: Duration,
    failure_rate: f64,
    media: Media,
    veo_audio: bool,
}

impl Simulated {
    /// A backend that answers after `latency`, fails `failure_rate` (0–1) of its renders, and
    /// makes its clips with `media`.
    pub fn new(name: BackendName, latency: Duration, failure_rate: f64, media: Media) -> Simulated {
        Simulated {
            name,
            latency,
            failure_rate,
            media,
            veo_audio: false,
        }
    }

    /// Simulated Veo clips carry sound (as `AIPROD_VEO_GENERATE_AUDIO` asks of the real one).
    pub fn with_veo_audio(mut self, on: bool) -> Simulated {
        self.veo_audio = on;
        self
    }

    /// The clip the real backend would return for `seconds` asked.
    fn clip(&self, seconds: u32, text: &str) -> ClipSpec {
        match self.name {
            BackendName::Replicate => {
                let (frames, fps) = crate::replicate::frames_for(seconds);
                ClipSpec {
                    frames,
                    fps,
                    ..ClipSpec::moving(0.0, 1024, 576, fps, text)
                }
            }
            BackendName::Veo3 => ClipSpec {
                audio: self.veo_audio,
                ..ClipSpec::moving(f64::from(seconds), 1280, 720, 24, text)
            },
            BackendName::Runway => ClipSpec::moving(f64::from(seconds), 1280, 720, 24, text),
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// What a handle says about its render; the text stays encoded until a clip is drawn, since
/// every poll reads the handle and only the download needs it.
struct Render<'a> {
    ready_at_ms: i64,
    seconds: u32,
    fails: bool,
    text: &'a str,
}

impl Render<'_> {
    /// The text to draw on the clip.
    fn text(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(self.text)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

/// `sim-{backend}-{ready_at_ms}-{seconds}-{fails}-{uuid}-{text, base64url}`.
fn parse(handle: &str) -> Option<Render<'_>> {
    let mut parts = handle.splitn(7, '-');
    let (_sim, _backend) = (parts.next()?, parts.next()?);
    let ready_at_ms = parts.next()?.parse().ok()?;
    let seconds = parts.next()?.parse().ok()?;
    let fails = parts.next()? == "1";
    let _id = parts.next()?;
    Some(Render {
        ready_at_ms,
        seconds,
        fails,
        text: parts.next().unwrap_or_default(),
    })
}

impl Simulated {
    /// A poll, answered from the handle alone: no I/O, so any number are answered in one call.
    fn check(&self, handle: &RemoteHandle, now: i64) -> Result<Poll, BackendError> {
        let r = parse(&handle.0).ok_or_else(|| {
            BackendError::Expired(format!("{}: unknown render {}", self.name, handle.0))
        })?;
        if now < r.ready_at_ms {
            let total = self.latency.as_millis().max(1) as i64;
            let pct = (100 - (r.ready_at_ms - now) * 100 / total).clamp(0, 99) as u8;
            return Ok(Poll::Pending(Some(pct)));
        }
        if r.fails {
            return Ok(Poll::Failed(
                FailureClass::Internal,
                format!("simulated {} render failed", self.name),
            ));
        }
        // The simulation reports no hardware time: its tries are charged their estimate.
        Ok(Poll::Done(
            vec![Output::Url(format!("{SCHEME}{}", handle.0))],
            None,
        ))
    }
}

#[async_trait]
impl Backend for Simulated {
    fn name(&self) -> BackendName {
        self.name
    }

    fn simulated(&self) -> bool {
        true
    }

    fn poll_interval(&self) -> Duration {
        (self.latency / 4).clamp(Duration::from_millis(5), Duration::from_millis(500))
    }

    /// The lengths the real backend renders: Veo only 4, 6 or 8 s, Runway 2–10 s.
    fn render_seconds(&self, seconds: u32) -> u32 {
        match self.name {
            BackendName::Veo3 => {
                aiprod_domain::billed_seconds(BackendName::Veo3, i64::from(seconds)) as u32
            }
            BackendName::Runway => seconds.clamp(2, 10),
            BackendName::Replicate => seconds,
        }
    }

    async fn submit(&self, shot: &ShotRequest) -> Result<RemoteHandle, BackendError> {
        let fails = self.failure_rate > 0.0 && rand::rng().random_bool(self.failure_rate);
        let ready = now_ms() + i64::try_from(self.latency.as_millis()).unwrap_or(i64::MAX / 2);
        let label = format!("Shot {} · {}: {}", shot.shot + 1, self.name, shot.prompt);
        let label: String = label.chars().take(TEXT_MAX).collect();
        Ok(RemoteHandle(format!(
            "sim-{}-{ready}-{}-{}-{}-{}",
            self.name,
            shot.duration_s,
            u8::from(fails),
            uuid::Uuid::new_v4().simple(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(label)
        )))
    }

    async fn poll(&self, handle: &RemoteHandle) -> Result<Poll, BackendError> {
        self.check(handle, now_ms())
    }

    async fn poll_many(&self, handles: &[&RemoteHandle]) -> Vec<Result<Poll, BackendError>> {
        let now = now_ms();
        handles.iter().map(|h| self.check(h, now)).collect()
    }

    fn poll_batch(&self) -> usize {
        POLL_BATCH
    }

    async fn cancel(&self, _: &RemoteHandle) -> Result<(), BackendError> {
        Ok(())
    }

    async fn fetch_output(&self, handle: &RemoteHandle) -> Result<Vec<Output>, BackendError> {
        match self.poll(handle).await? {
            Poll::Done(o, _) => Ok(o),
            other => Err(BackendError::Rejected(format!(
                "{}: {} has no output ({other:?})",
                self.name, handle.0
            ))),
        }
    }

    async fn download(&self, output: &Output, dest: &Path, cap: u64) -> Result<u64, BackendError> {
        let render = match output {
            Output::Url(u) => u.strip_prefix(SCHEME).and_then(parse),
            _ => None,
        }
        .ok_or_else(|| {
            BackendError::Rejected(format!("{}: nothing to download at {output:?}", self.name))
        })?;
        let clip = self
            .media
            .clip(&self.clip(render.seconds, &render.text()))
            .await
            .map_err(|e| BackendError::Transient(format!("{}: {e}", self.name)))?;
        let size = tokio::fs::metadata(&clip)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if size > cap {
            return Err(crate::too_large(self.name, cap));
        }
        // A link, not a copy: the cached clip is never written again (`aiprod_platform::files`),
        // and a copy of it was most of the bench worker's CPU.
        aiprod_platform::files::link_or_copy(&clip, dest)
            .await
            .map_err(|e| {
                BackendError::Transient(format!("{}: cannot hand over the clip: {e}", self.name))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_carries_its_render() {
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("Shot 1 · veo3: a-b");
        let handle = format!("sim-veo3-1700-6-0-abc-{text}");
        let r = parse(&handle).expect("parses");
        assert_eq!((r.ready_at_ms, r.seconds, r.fails), (1700, 6, false));
        assert_eq!(r.text(), "Shot 1 · veo3: a-b");
    }

    #[tokio::test]
    async fn a_batch_poll_answers_each_handle_in_order() {
        let media = Media::new(&aiprod_platform::config::MediaSettings::default());
        let sim = Simulated::new(BackendName::Runway, Duration::from_secs(60), 0.0, media);
        let later = now_ms() + 60_000;
        let handles = [
            RemoteHandle(format!("sim-runway-{later}-5-0-a-")),
            RemoteHandle("sim-runway-0-5-1-b-".into()),
            RemoteHandle("not-a-handle".into()),
            RemoteHandle("sim-runway-0-5-0-c-".into()),
        ];
        let refs: Vec<&RemoteHandle> = handles.iter().collect();
        let answers = sim.poll_many(&refs).await;
        assert!(
            matches!(answers[0], Ok(Poll::Pending(Some(_)))),
            "{answers:?}"
        );
        assert!(matches!(
            answers[1],
            Ok(Poll::Failed(FailureClass::Internal, _))
        ));
        assert!(matches!(answers[2], Err(BackendError::Expired(_))));
        assert_eq!(
            answers[3],
            Ok(Poll::Done(
                vec![Output::Url("sim://sim-runway-0-5-0-c-".into())],
                None
            ))
        );
        assert_eq!(answers.len(), 4);
    }
}
