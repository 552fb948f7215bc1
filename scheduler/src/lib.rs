//! The scheduler: one leader at a time (a Postgres advisory lock held on a dedicated
//! connection; other replicas wait as hot standbys) relays the outbox to the queue and reaps
//! expired leases so that a dead worker's jobs resume elsewhere. The binary adds its own
//! periodic work (`Periodic`), such as the orphan reconciler.

mod leader;
mod tasks;

pub use leader::{LEADER_LOCK_KEY, Periodic, run};
pub use tasks::{reap_once, relay_once};
