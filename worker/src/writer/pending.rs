//! The writes the writer takes, owned so that they can cross to its task, and their borrowed
//! forms as the store takes them.

use aiprod_domain::{BackendName, JobId, Money, Stage};
use aiprod_store::{Checkpoint, Intent, JobPatch};
use serde_json::Value;

/// A finished stage waiting to be written, owned so it can cross to the writer task.
#[derive(Debug)]
pub(crate) struct PendingCheckpoint {
    pub job_id: JobId,
    pub lease_epoch: i64,
    pub stage: Stage,
    pub output: Value,
    pub retries: i32,
    pub patch: JobPatch,
}

impl PendingCheckpoint {
    /// The checkpoint as the store takes it.
    pub fn borrowed<'a>(&'a self, worker: &'a str) -> Checkpoint<'a> {
        Checkpoint {
            job_id: self.job_id,
            lease_epoch: self.lease_epoch,
            worker,
            stage: self.stage,
            output: &self.output,
            retries: self.retries,
            patch: self.patch.clone(),
        }
    }
}

/// An intent waiting to be written, owned (`aiprod_store::Intent`).
#[derive(Debug)]
pub(crate) struct PendingIntent {
    pub job_id: JobId,
    pub lease_epoch: i64,
    pub shot: i32,
    pub attempt: i32,
    pub backend: BackendName,
    pub duration_s: i32,
    pub estimate: Money,
    pub baseline: Option<Money>,
    pub seed: Option<i64>,
    pub spec_key: Option<String>,
}

impl PendingIntent {
    /// An owned copy of `i`.
    pub fn of(i: &Intent<'_>) -> PendingIntent {
        PendingIntent {
            job_id: i.job_id,
            lease_epoch: i.lease_epoch,
            shot: i.shot,
            attempt: i.attempt,
            backend: i.backend,
            duration_s: i.duration_s,
            estimate: i.estimate,
            baseline: i.baseline,
            seed: i.seed,
            spec_key: i.spec_key.map(str::to_owned),
        }
    }

    pub(super) fn borrowed<'a>(&'a self, worker: &'a str) -> Intent<'a> {
        Intent {
            job_id: self.job_id,
            lease_epoch: self.lease_epoch,
            worker_id: worker,
            shot: self.shot,
            attempt: self.attempt,
            backend: self.backend,
            duration_s: self.duration_s,
            estimate: self.estimate,
            baseline: self.baseline,
            seed: self.seed,
            spec_key: self.spec_key.as_deref(),
        }
    }
}
