//! The scheduler: one leader at a time (a Postgres advisory lock held on a dedicated
//! connection; other replicas wait as hot standbys) relays the outbox to the queue, reaps
//! expired leases so that a dead worker's jobs resume elsewhere, rolls the budget day over and
//! wakes jobs waiting for money, and evaluates the alert rules. The binary adds its own
//! periodic work (`Periodic`), such as the orphan reconciler.

mod alerts;
mod budget;
mod leader;
mod tasks;

pub use alerts::{Notifier, evaluate_rules, run_alert_rules, slack_message};
pub use budget::{BudgetTick, roll_budget};
pub use leader::{LEADER_LOCK_KEY, Periodic, run};
pub use tasks::{reap_once, redispatch_once, relay_once};
