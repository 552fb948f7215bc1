//! Routing: which backend renders a job, and where its shots fall back to. A pure policy
//! (README, "Video backends"): keep the enabled backends whose fleet-wide circuit lets them be used,
//! then those whose quality meets the job's floor, then those whose estimate fits the budget
//! left; with speed priority take the fastest, for premium (`high`) jobs the best quality, else
//! the cheapest. Ties follow the default order. The others that also qualify, in the configured
//! fallback order, are the fallbacks. A backend named in the request is the only candidate.
//!
//! The `financial` stage gathers the facts (health, budget), calls [`route`], and reserves the
//! money; its checkpointed output is the [`Routing`], which the API shows as the job's
//! `routing`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{BackendName, JobSpec, Money, OverBudget, PriceTable, Priority, StepError};

/// The routing decision and how it was made: the `financial` stage's checkpointed output.
/// Field names are those of checkpoints already written; keep them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Routing {
    /// The chosen backend.
    pub backend: BackendName,
    /// Its model id.
    pub model: String,
    /// The estimate on the chosen backend, reserved for the job.
    pub estimated_cost: Money,
    /// The estimate on every backend.
    pub estimates: BTreeMap<BackendName, Money>,
    /// Why each backend not chosen was left out.
    pub rejected: BTreeMap<BackendName, String>,
    /// Where `render` falls back to, in order, after the chosen backend.
    #[serde(default)]
    pub fallbacks: Vec<BackendName>,
}

impl Routing {
    /// The chosen backend, then its fallbacks.
    pub fn candidates(&self) -> Vec<BackendName> {
        std::iter::once(self.backend)
            .chain(
                self.fallbacks
                    .iter()
                    .copied()
                    .filter(|b| *b != self.backend),
            )
            .collect()
    }
}

/// The facts routing reads besides the request.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// Prices, quality priors and relative speeds.
    pub prices: &'a PriceTable,
    /// The backends this worker can call.
    pub enabled: &'a [BackendName],
    /// Why a backend's circuit keeps it out; absent: healthy (or its probe is free).
    pub unhealthy: &'a BTreeMap<BackendName, String>,
    /// What today's budget has left; `None`: no limit applies.
    pub budget_left: Option<Money>,
    /// The configured fallback order.
    pub fallback_order: &'a [BackendName],
    /// The backends the job's tenant may use; `None`: every one.
    pub allowed: Option<&'a [BackendName]>,
    /// The most the job's tenant lets one job cost; `None`: no cap.
    pub max_cost: Option<Money>,
}

/// Chooses a backend for shots of the given lengths, or says why none qualifies:
/// `StepError::OverBudget` when only money keeps every backend out (the job may wait),
/// `StepError::Permanent` otherwise.
pub fn route(spec: &JobSpec, shot_seconds: &[i64], sel: &Facts<'_>) -> Result<Routing, StepError> {
    let estimates: BTreeMap<BackendName, Money> = BackendName::ALL
        .iter()
        .map(|b| (*b, sel.prices.estimate(*b, shot_seconds)))
        .collect();
    let mut rejected = BTreeMap::new();
    let considered: Vec<BackendName> = match spec.backend().named() {
        Some(b) => vec![b],
        None => BackendName::ALL.to_vec(),
    };
    let mut qualifying = Vec::new();
    // Backends kept out by the budget alone: the job may wait for money instead of failing.
    let mut money_short: Vec<BackendName> = Vec::new();
    for b in considered {
        let p = sel.prices.profile(b);
        let reason = if !sel.enabled.contains(&b) {
            Some("not enabled (no credentials, and simulation is off)".to_owned())
        } else if sel.allowed.is_some_and(|a| !a.contains(&b)) {
            Some("not among the tenant's allowed_backends".to_owned())
        } else if let Some(cap) = sel.max_cost.filter(|cap| estimates[&b] > *cap) {
            Some(format!(
                "estimate {} exceeds the tenant's max_job_cost_usd ({cap})",
                estimates[&b]
            ))
        } else if let Some(why) = sel.unhealthy.get(&b) {
            Some(format!("unhealthy: {why}"))
        } else if p.quality < spec.quality_min() {
            Some(format!(
                "quality {} is below quality_min {}",
                p.quality,
                spec.quality_min()
            ))
        } else if let Some(left) = sel.budget_left.filter(|left| estimates[&b] > *left) {
            money_short.push(b);
            Some(format!(
                "estimate {} exceeds the budget left ({left})",
                estimates[&b]
            ))
        } else {
            None
        };
        match reason {
            Some(r) => {
                rejected.insert(b, r);
            }
            None => qualifying.push(b),
        }
    }
    let order = |b: &BackendName| {
        BackendName::ALL
            .iter()
            .position(|x| x == b)
            .unwrap_or(usize::MAX)
    };
    let chosen = if spec.speed_priority() {
        qualifying.iter().min_by(|a, b| {
            let (pa, pb) = (sel.prices.profile(**a), sel.prices.profile(**b));
            pa.latency_factor
                .total_cmp(&pb.latency_factor)
                .then(order(a).cmp(&order(b)))
        })
    } else if spec.priority() == Priority::High {
        qualifying.iter().max_by(|a, b| {
            let (pa, pb) = (sel.prices.profile(**a), sel.prices.profile(**b));
            pa.quality
                .total_cmp(&pb.quality)
                .then(order(b).cmp(&order(a)))
        })
    } else {
        qualifying.iter().min_by_key(|b| (estimates[*b], order(b)))
    };
    let Some(&backend) = chosen else {
        if let Some(need) = money_short.iter().map(|b| estimates[b]).min() {
            let why: Vec<String> = rejected.iter().map(|(b, r)| format!("{b}: {r}")).collect();
            return Err(StepError::OverBudget {
                reason: format!(
                    "today's budget does not cover this job ({}); it needs at least {need}",
                    why.join("; ")
                ),
                need,
            });
        }
        if let Some(b) = spec.backend().named() {
            let why = rejected
                .get(&b)
                .map_or("it does not qualify", String::as_str);
            return Err(StepError::Permanent(format!(
                "the requested backend {b} cannot take this job: {why}"
            )));
        }
        let why: Vec<String> = rejected.iter().map(|(b, r)| format!("{b}: {r}")).collect();
        return Err(StepError::Permanent(format!(
            "no backend qualifies ({})",
            why.join("; ")
        )));
    };
    let fallbacks = sel
        .fallback_order
        .iter()
        .copied()
        .filter(|b| *b != backend && qualifying.contains(b))
        .collect();
    Ok(Routing {
        backend,
        model: sel.prices.profile(backend).model.clone(),
        estimated_cost: estimates[&backend],
        estimates,
        rejected,
        fallbacks,
    })
}

/// What a job the budget does not cover gets: a wait for money, or a failure when the client
/// asked to fail fast or when even a whole day's limit could not cover it.
pub fn short_of_money(spec: &JobSpec, limit: Money, reason: String, need: Money) -> StepError {
    if spec.over_budget() == OverBudget::Fail {
        return StepError::Permanent(format!("{reason} (the request asked to fail, not wait)"));
    }
    if need > limit {
        return StepError::Permanent(format!(
            "{reason}; that is more than a whole day's limit of {limit}, so waiting cannot help"
        ));
    }
    StepError::OverBudget { reason, need }
}

#[cfg(test)]
mod tests;
