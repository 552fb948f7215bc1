//! The leader's duties, one file each, and the one list of them.

mod evaluate_alerts;
mod reap_leases;
mod reconcile_orphans;
mod redispatch_stranded;
mod refresh_gauges;
mod relay_outbox;
mod roll_budget_day;

use std::sync::Arc;

use aiprod_backends::Fleet;
use aiprod_platform::Settings;
use aiprod_platform::queue::Queue;
use aiprod_store::Wake;
use sqlx::PgPool;

use crate::alerts::Notifier;
use crate::duty::Duty;

pub use reap_leases::reap_once;
pub use reconcile_orphans::reconcile_orphans;
pub use redispatch_stranded::redispatch_once;
pub use relay_outbox::relay_once;
pub use roll_budget_day::{BudgetTick, roll_budget};

/// What the duties work with.
#[derive(Clone)]
pub struct LeaderParts {
    /// The database.
    pub pool: PgPool,
    /// Where the outbox is relayed.
    pub queue: Arc<dyn Queue>,
    /// Every setting.
    pub settings: Arc<Settings>,
    /// The real provider clients, for the orphan reconciler (the simulation leaves no orphans).
    pub fleet: Fleet,
}

/// Every duty of the leader: adding one is a file here and a line in this list.
pub(crate) fn all(p: &LeaderParts) -> Vec<Box<dyn Duty>> {
    let s = &p.settings;
    // The duties that dispatch wake the relay after their commit, like every other process.
    let dispatched = Wake::outbox(p.pool.clone());
    vec![
        Box::new(relay_outbox::RelayOutbox {
            pool: p.pool.clone(),
            queue: p.queue.clone(),
            every: s.scheduler.relay_interval,
        }),
        Box::new(reap_leases::ReapLeases {
            pool: p.pool.clone(),
            every: s.scheduler.reaper_interval,
            max_reaps: s.scheduler.max_reaps,
            dispatched: dispatched.clone(),
        }),
        Box::new(redispatch_stranded::RedispatchStranded {
            pool: p.pool.clone(),
            after: s.queue.redispatch_after,
            dispatched: dispatched.clone(),
        }),
        Box::new(roll_budget_day::RollBudgetDay {
            pool: p.pool.clone(),
            calendar: s.budget.calendar(),
            every: s.budget.budget_tick,
            dispatched,
        }),
        Box::new(evaluate_alerts::EvaluateAlerts {
            pool: p.pool.clone(),
            settings: s.clone(),
            notifier: Notifier::from_settings(s),
        }),
        Box::new(refresh_gauges::RefreshGauges {
            pool: p.pool.clone(),
            settings: s.clone(),
        }),
        Box::new(reconcile_orphans::ReconcileOrphans {
            pool: p.pool.clone(),
            fleet: p.fleet.clone(),
            settle: s.scheduler.orphan_settle,
            every: s.scheduler.reconcile_interval,
        }),
    ]
}
