//! The job's state machine: the events that move a job between statuses. The transitions
//! themselves are one table, `job_transition` (migrations), that every status change in SQL is
//! checked against by a trigger and that `next_job_status()` reads; ARCHITECTURE.md draws it,
//! and the store's tests walk every row of it through the real store functions.

use crate::wire::wire_enum;

wire_enum! {
    /// What happens to a job.
    pub enum JobEvent in "job_event" {
        /// A worker takes the lease (a pending cancel ends the job instead).
        Claim,
        /// A stage before the last is checkpointed (a pending cancel ends the job instead).
        Advance,
        /// The last stage is checkpointed.
        Finish,
        /// A stage failed for good.
        Fail,
        /// `financial` found no money: the job waits (a pending cancel ends it instead).
        Park,
        /// The budget covers a waiting job again.
        Wake,
        /// A client cancels: at once when nothing runs, else at the next checkpoint.
        Cancel,
        /// The reaper clears an expired lease and dispatches the job again.
        Reap,
        /// A stopping worker hands its lease back.
        Release,
        /// The sweep dispatches again a queued job whose message is gone.
        Redispatch,
    }
}
