//! `financial`: gathers what routing needs (the enabled backends, their fleet-wide health, the
//! money left today), lets `aiprod_domain::routing` choose, and reserves the choice's estimate.
//! When another job took the money in between, it routes again within what is left. Its
//! checkpointed output is the `Routing`.

use std::collections::BTreeMap;

use aiprod_backends::Fleet;
use aiprod_domain::routing::{self, Facts, Routing};
use aiprod_domain::{BackendName, Stage, StepError};
use aiprod_platform::config::BackendSettings;
use aiprod_store::JobPatch;
use aiprod_store::Shortfall;

use super::visual::Visual;
use super::{JobState, StageOutput};
use crate::ledger::{Ask, Grant, Ledger};

/// How many times a job routes again after losing the money to another job.
const ROUTE_TRIES: u32 = 4;

/// What the financial stage routes and reserves with.
pub(crate) struct Router<'a> {
    /// The backends this worker can call.
    pub fleet: &'a Fleet,
    /// Today's money.
    pub ledger: &'a Ledger,
    /// Prices and the fallback order.
    pub backends: &'a BackendSettings,
    /// The holder of the job's lease.
    pub worker_id: &'a str,
}

pub(crate) async fn run(job: &JobState, router: &Router<'_>) -> Result<StageOutput, StepError> {
    let v: Visual = job.output(Stage::Visual)?;
    let seconds: Vec<i64> = v
        .shots
        .iter()
        .map(|s| i64::from(s.shot.duration_s))
        .collect();
    let enabled = router.fleet.enabled();
    let holder = job.id.to_string();
    // One statement reads the backends' health with the money: the server runs one
    // statement instead of two.
    let (headroom, rights, health) = router
        .ledger
        .purse_and_health(job.id, Some(&holder))
        .await
        .map_err(|e| StepError::Retryable(format!("cannot read the budget and health: {e}")))?;
    let unhealthy: BTreeMap<BackendName, String> = health
        .values()
        .filter_map(|h| h.unhealthy_because().map(|why| (h.backend, why)))
        .collect();
    let mut budget_left = Some(headroom.remaining);
    let mut tries = 0;
    let chosen: Routing = loop {
        tries += 1;
        let facts = Facts {
            prices: &router.backends.prices,
            enabled: &enabled,
            unhealthy: &unhealthy,
            budget_left,
            fallback_order: &router.backends.fallback_order,
            allowed: rights.allowed_backends.as_deref(),
            max_cost: rights.max_job_cost,
        };
        let routed = match routing::route(&job.spec, &seconds, &facts) {
            Ok(r) => r,
            Err(StepError::OverBudget { reason, need }) => {
                let reason = match headroom.bound_by {
                    Shortfall::Fleet => reason,
                    Shortfall::Tenant => format!("the tenant's budget is short: {reason}"),
                };
                return Err(routing::short_of_money(
                    &job.spec,
                    headroom.limit,
                    reason,
                    need,
                ));
            }
            Err(e) => return Err(e),
        };
        let ask = Ask {
            job_id: job.id,
            lease_epoch: job.lease_epoch,
            worker: router.worker_id,
            amount: routed.estimated_cost,
        };
        let note = format!("{} on {}", routed.model, routed.backend);
        match router.ledger.reserve(ask, &note).await {
            Ok(Grant::Reserved) => break routed,
            Ok(Grant::Short(left, _)) if tries < ROUTE_TRIES => budget_left = Some(left),
            Ok(Grant::Short(left, of)) => {
                let whose = match of {
                    Shortfall::Fleet => "today's budget",
                    Shortfall::Tenant => "the tenant's budget today",
                };
                let reason = format!(
                    "{whose} has {left} left, less than the {} {} needs",
                    routed.estimated_cost, routed.backend
                );
                return Err(routing::short_of_money(
                    &job.spec,
                    headroom.limit,
                    reason,
                    routed.estimated_cost,
                ));
            }
            Ok(Grant::LeaseLost) => {
                return Err(StepError::Retryable("the job's lease is gone".into()));
            }
            Err(e) => return Err(StepError::Retryable(e)),
        }
    };
    let patch = JobPatch {
        backend: Some(chosen.backend),
        estimated_cost_micros: Some(chosen.estimated_cost.micros()),
        ..JobPatch::default()
    };
    Ok(StageOutput::of(&chosen).with(patch))
}
