//! Where a job is in its life, and how urgent it is. The transitions between statuses are the
//! database's (`job_transition`, see `lifecycle` and ARCHITECTURE.md); this is their vocabulary.

use crate::wire::wire_enum;

wire_enum! {
    /// Where a job is in its life.
    pub enum JobStatus in "job_status" {
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
}

impl JobStatus {
    /// True once the job can no longer change.
    pub fn is_terminal(self) -> bool {
        match self {
            JobStatus::Queued | JobStatus::Running | JobStatus::WaitingBudget => false,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Canceled => true,
        }
    }
}

wire_enum! {
    /// How urgently a job should run.
    pub enum Priority in "job_priority" {
        /// Background work.
        Low,
        /// The default.
        Normal,
        /// Premium: runs first and prefers the best quality.
        High,
    }
}

wire_enum! {
    /// What a job does when today's budget does not cover it.
    pub enum OverBudget {
        /// Wait for money (the default): status `waiting_budget` until a day covers it.
        Wait,
        /// Fail at once.
        Fail,
    }
}
