//! The scheduler: one leader at a time (a Postgres advisory lock held on a dedicated
//! connection; other replicas wait as hot standbys) runs the fleet's periodic duties, one file
//! each under `duties/` and one error policy for all (`duty`): it relays the outbox to the
//! queue, reaps expired leases, re-dispatches stranded jobs, rolls the budget day over and
//! wakes jobs waiting for money, evaluates the alert rules, refreshes the fleet gauges and
//! reconciles orphaned renders.

mod alerts;
mod duties;
mod duty;
mod leader;

pub use alerts::{Notifier, evaluate_rules, run_alert_rules, slack_message};
pub use duties::{
    BudgetTick, LeaderParts, reap_once, reconcile_orphans, redispatch_once, relay_once, roll_budget,
};
pub use duty::Duty;
pub use leader::{LEADER_LOCK_KEY, run};
