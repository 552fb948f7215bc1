//! Video backends behind one trait. Today only the simulated stand-ins exist; the real Runway,
//! Veo 3 and Replicate clients plug in here.

mod simulated;

use aiprod_shared::Money;
use aiprod_shared::domain::{BackendName, JobId};
use aiprod_shared::retry::StepError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use simulated::SimulatedBackends;

use crate::planner::Shot;

/// A rendered shot, stored in our artifact store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedShot {
    /// Which shot.
    pub index: usize,
    /// The provider's id of the render.
    pub remote_id: String,
    /// Where our copy is.
    pub uri: String,
    /// What it cost.
    pub cost: Money,
}

/// The enabled backends.
#[async_trait]
pub trait Backends: Send + Sync + 'static {
    /// Which backends can render now.
    fn enabled(&self) -> Vec<BackendName>;
    /// Renders one shot on `backend` and stores the result.
    async fn render(
        &self,
        backend: BackendName,
        job: JobId,
        shot: &Shot,
        keyframe_uri: &str,
    ) -> Result<RenderedShot, StepError>;
}

/// No backend at all: production with no credentials and simulation off. Every job then fails
/// at `financial` with a reason that says how to enable one, and nothing is faked.
pub struct NoBackends;

#[async_trait]
impl Backends for NoBackends {
    fn enabled(&self) -> Vec<BackendName> {
        Vec::new()
    }

    async fn render(
        &self,
        backend: BackendName,
        _: JobId,
        _: &Shot,
        _: &str,
    ) -> Result<RenderedShot, StepError> {
        Err(StepError::Permanent(format!(
            "backend {backend} is not enabled"
        )))
    }
}
