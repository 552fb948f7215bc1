//! Where a job is in its life, and how urgent it is. The transitions between statuses are the
//! database's (`job_transition`, see `lifecycle` and ARCHITECTURE.md); this is their vocabulary.

use serde_with::{DeserializeFromStr, SerializeDisplay};
use strum::{Display, EnumString, IntoStaticStr, VariantArray};

use crate::wire::wire_name;

/// Where a job is in its life.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Display,
    EnumString,
    IntoStaticStr,
    VariantArray,
    SerializeDisplay,
    DeserializeFromStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum JobStatus {
    /// Accepted and waiting for a worker.
    Queued,
    /// A worker has run at least one stage; it may be between leases after a crash.
    Running,
    /// Parked at `financial`: today's budget covers no backend that qualifies. It holds no
    /// lease and resumes when a new budget day opens or the limit is raised.
    WaitingBudget,
    /// All nine stages finished.
    Succeeded,
    /// A stage failed for good; `error` names it.
    Failed,
    /// Canceled by a client; it stopped before its next stage.
    Canceled,
}

wire_name!(JobStatus, pg = "job_status");

impl JobStatus {
    /// True once the job can no longer change.
    pub fn is_terminal(self) -> bool {
        match self {
            JobStatus::Queued | JobStatus::Running | JobStatus::WaitingBudget => false,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Canceled => true,
        }
    }
}

/// How urgently a job should run.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Display,
    EnumString,
    IntoStaticStr,
    VariantArray,
    SerializeDisplay,
    DeserializeFromStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum Priority {
    /// Background work.
    Low,
    /// The default.
    Normal,
    /// Premium: runs first and prefers the best quality.
    High,
}

wire_name!(Priority, pg = "job_priority");

/// What a job does when today's budget does not cover it.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Display,
    EnumString,
    IntoStaticStr,
    VariantArray,
    SerializeDisplay,
    DeserializeFromStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum OverBudget {
    /// Wait for money (the default): status `waiting_budget` until a day covers it.
    Wait,
    /// Fail at once.
    Fail,
}

wire_name!(OverBudget);
