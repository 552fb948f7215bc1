//! The stand-in for a backend without credentials, for `aiprod dev` and tests: the same
//! submit/poll protocol as the real clients, with the seed profile's relative latency and a
//! configured failure rate. The handle carries everything a poll needs (when it is ready, how
//! long the clip is, whether it fails), so a worker that restarts mid-render resumes polling
//! the same simulated render, exactly as with a real provider.

use std::time::Duration;

use crate::mp4;
use aiprod_domain::BackendName;
use async_trait::async_trait;
use rand::Rng;

use super::{Backend, BackendError, FailureClass, Output, Poll, RemoteHandle, ShotRequest};

/// One simulated backend.
pub struct Simulated {
    name: BackendName,
    latency: Duration,
    failure_rate: f64,
}

impl Simulated {
    /// A backend that answers after `latency` and fails `failure_rate` (0–1) of its renders.
    pub fn new(name: BackendName, latency: Duration, failure_rate: f64) -> Simulated {
        Simulated {
            name,
            latency,
            failure_rate,
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `sim-{backend}-{ready_at_ms}-{seconds}-{fails}-{uuid}`.
fn parse(handle: &RemoteHandle) -> Option<(i64, u32, bool)> {
    let mut parts = handle.0.splitn(6, '-');
    let (_sim, _backend) = (parts.next()?, parts.next()?);
    let ready = parts.next()?.parse().ok()?;
    let seconds = parts.next()?.parse().ok()?;
    let fails = parts.next()? == "1";
    Some((ready, seconds, fails))
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

    async fn submit(&self, shot: &ShotRequest) -> Result<RemoteHandle, BackendError> {
        let fails = self.failure_rate > 0.0 && rand::rng().random_bool(self.failure_rate);
        let ready = now_ms() + i64::try_from(self.latency.as_millis()).unwrap_or(i64::MAX / 2);
        Ok(RemoteHandle(format!(
            "sim-{}-{ready}-{}-{}-{}",
            self.name,
            shot.duration_s,
            u8::from(fails),
            uuid::Uuid::new_v4().simple()
        )))
    }

    async fn poll(&self, handle: &RemoteHandle) -> Result<Poll, BackendError> {
        let (ready, seconds, fails) = parse(handle).ok_or_else(|| {
            BackendError::Expired(format!("{}: unknown render {}", self.name, handle.0))
        })?;
        let now = now_ms();
        if now < ready {
            let total = self.latency.as_millis().max(1) as i64;
            let pct = (100 - (ready - now) * 100 / total).clamp(0, 99) as u8;
            return Ok(Poll::Pending(Some(pct)));
        }
        if fails {
            return Ok(Poll::Failed(
                FailureClass::Internal,
                format!("simulated {} render failed", self.name),
            ));
        }
        let payload = format!("{}\n", handle.0);
        Ok(Poll::Done(vec![Output::Inline(mp4::write_minimal(
            Duration::from_secs(u64::from(seconds)),
            payload.as_bytes(),
        ))]))
    }

    async fn cancel(&self, _: &RemoteHandle) -> Result<(), BackendError> {
        Ok(())
    }

    async fn fetch_output(&self, handle: &RemoteHandle) -> Result<Vec<Output>, BackendError> {
        match self.poll(handle).await? {
            Poll::Done(o) => Ok(o),
            other => Err(BackendError::Rejected(format!(
                "{}: {} has no output ({other:?})",
                self.name, handle.0
            ))),
        }
    }

    async fn download(&self, output: &Output) -> Result<Vec<u8>, BackendError> {
        match output {
            Output::Inline(b) => Ok(b.clone()),
            other => Err(BackendError::Rejected(format!(
                "{}: nothing to download at {other:?}",
                self.name
            ))),
        }
    }
}
