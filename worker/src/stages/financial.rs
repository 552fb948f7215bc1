//! `financial`: estimates the cost on every backend and chooses one. Selection, after
//! DESIGN.md: keep enabled and healthy backends (the fleet-wide circuit), then those whose
//! quality meets the job's floor, then those whose estimate fits the budget; with speed
//! priority take the fastest, for premium (`high`) jobs the best quality, else the cheapest.
//! Ties follow the fallback order. The backends that also qualify, in the configured fallback
//! order, are where `render` goes when the chosen one fails. A backend named in the request is
//! the only candidate: if it is disabled or unhealthy the job fails and says why.

use std::collections::BTreeMap;

use aiprod_shared::Money;
use aiprod_shared::domain::{BackendName, JobSpec, Priority, Stage};
use aiprod_shared::pricing::PriceTable;
use aiprod_shared::retry::StepError;
use aiprod_shared::store::{Availability, JobPatch, backend_health};
use backon::Retryable;
use serde::{Deserialize, Serialize};

use super::visual::Visual;
use super::{JobState, StageOutput};
use crate::budget::{Ask, Grant};
use crate::context::WorkerContext;
use crate::dbretry::{db_retry, transient};

/// The choice and how it was made.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Financial {
    pub backend: BackendName,
    pub model: String,
    pub estimated_cost: Money,
    /// The estimate on every backend.
    pub estimates: BTreeMap<BackendName, Money>,
    /// Why each backend not chosen was left out.
    pub rejected: BTreeMap<BackendName, String>,
    /// Where `render` falls back to, in order, after the chosen backend.
    #[serde(default)]
    pub fallbacks: Vec<BackendName>,
}

impl Financial {
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

/// The facts selection reads besides the request.
pub(crate) struct Selection<'a> {
    pub prices: &'a PriceTable,
    pub enabled: &'a [BackendName],
    /// Why a backend's circuit keeps it out; absent: healthy (or a probe is free).
    pub unhealthy: &'a BTreeMap<BackendName, String>,
    /// `None`: no budget limit applies.
    pub budget_left: Option<Money>,
    /// The configured fallback order.
    pub fallback_order: &'a [BackendName],
}

/// Chooses a backend for shots of the given lengths, or says why none qualifies.
pub(crate) fn select(
    spec: &JobSpec,
    shot_seconds: &[i64],
    sel: &Selection<'_>,
) -> Result<Financial, StepError> {
    let estimates: BTreeMap<BackendName, Money> = BackendName::ALL
        .iter()
        .map(|b| (*b, sel.prices.estimate(*b, shot_seconds)))
        .collect();
    let mut rejected = BTreeMap::new();
    let considered: Vec<BackendName> = match spec.backend.named() {
        Some(b) => vec![b],
        None => BackendName::ALL.to_vec(),
    };
    let mut qualifying = Vec::new();
    // Backends kept out by the budget alone: the job may wait for money instead of failing.
    let mut short_of_money: Vec<BackendName> = Vec::new();
    for b in considered {
        let p = sel.prices.profile(b);
        let reason = if !sel.enabled.contains(&b) {
            Some("not enabled (no credentials, and simulation is off)".to_owned())
        } else if let Some(why) = sel.unhealthy.get(&b) {
            Some(format!("unhealthy: {why}"))
        } else if p.quality < spec.quality_min {
            Some(format!(
                "quality {} is below quality_min {}",
                p.quality, spec.quality_min
            ))
        } else if let Some(left) = sel.budget_left.filter(|left| estimates[&b] > *left) {
            short_of_money.push(b);
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
    let chosen = if spec.speed_priority {
        qualifying.iter().min_by(|a, b| {
            let (pa, pb) = (sel.prices.profile(**a), sel.prices.profile(**b));
            pa.latency_factor
                .total_cmp(&pb.latency_factor)
                .then(order(a).cmp(&order(b)))
        })
    } else if spec.priority == Priority::High {
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
        if let Some(need) = short_of_money.iter().map(|b| estimates[b]).min() {
            let why: Vec<String> = rejected.iter().map(|(b, r)| format!("{b}: {r}")).collect();
            return Err(StepError::OverBudget {
                reason: format!(
                    "today's budget does not cover this job ({}); it needs at least {need}",
                    why.join("; ")
                ),
                need,
            });
        }
        if let Some(b) = spec.backend.named() {
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
    Ok(Financial {
        backend,
        model: sel.prices.profile(backend).model.clone(),
        estimated_cost: estimates[&backend],
        estimates,
        rejected,
        fallbacks,
    })
}

pub(crate) async fn run(ctx: &WorkerContext, job: &JobState) -> Result<StageOutput, StepError> {
    let v: Visual = job.output(Stage::Visual)?;
    let seconds: Vec<i64> = v
        .shots
        .iter()
        .map(|s| i64::from(s.shot.duration_s))
        .collect();
    let enabled = ctx.backends.enabled();
    let health = (|| backend_health(&ctx.pool))
        .retry(db_retry())
        .when(transient)
        .await
        .map_err(|e| StepError::Retryable(format!("cannot read backend health: {e}")))?;
    let holder = job.id.to_string();
    let unhealthy: BTreeMap<BackendName, String> = health
        .rows
        .iter()
        .filter_map(|(b, h)| match h.availability(&holder, health.now) {
            Availability::Unhealthy(why) => Some((*b, why)),
            Availability::Healthy | Availability::ProbeAvailable => None,
        })
        .collect();
    let headroom = ctx
        .budget
        .headroom()
        .await
        .map_err(|e| StepError::Retryable(format!("cannot read the budget: {e}")))?;
    let mut budget_left = Some(headroom.remaining);
    // Select, then reserve the choice; when another job took the money in between, select
    // again within what is left (a cheaper backend that qualifies), a few times at most.
    let mut tries = 0;
    let f = loop {
        tries += 1;
        let chosen = select(
            &job.spec,
            &seconds,
            &Selection {
                prices: &ctx.settings.backends,
                enabled: &enabled,
                unhealthy: &unhealthy,
                budget_left,
                fallback_order: &ctx.settings.fallback_order,
            },
        );
        let f = match chosen {
            Ok(f) => f,
            Err(StepError::OverBudget { reason, need }) => {
                return Err(over_budget(job, headroom.limit, reason, need));
            }
            Err(e) => return Err(e),
        };
        let ask = Ask {
            job_id: job.id,
            lease_epoch: job.lease_epoch,
            worker: &ctx.worker_id,
            amount: f.estimated_cost,
        };
        let note = format!("{} on {}", f.model, f.backend);
        match ctx.budget.reserve(ask, &note).await {
            Ok(Grant::Reserved) => break f,
            Ok(Grant::Short(left)) if tries < 4 => budget_left = Some(left),
            Ok(Grant::Short(left)) => {
                let reason = format!(
                    "today's budget has {left} left, less than the {} {} needs",
                    f.estimated_cost, f.backend
                );
                return Err(over_budget(job, headroom.limit, reason, f.estimated_cost));
            }
            Ok(Grant::LeaseLost) => {
                return Err(StepError::Retryable("the job's lease is gone".into()));
            }
            Err(e) => return Err(StepError::Retryable(e)),
        }
    };
    let patch = JobPatch {
        backend: Some(f.backend),
        estimated_cost_micros: Some(f.estimated_cost.micros()),
        ..JobPatch::default()
    };
    Ok(StageOutput::of(&f).with(patch))
}

/// What a job the budget does not cover gets: a wait for money, or a failure when the client
/// asked to fail fast or when even a whole day's limit could not cover it.
fn over_budget(job: &JobState, limit: Money, reason: String, need: Money) -> StepError {
    if job.spec.fail_over_budget {
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
mod tests {
    use super::*;
    use aiprod_shared::domain::BackendChoice;
    use serde_json::json;

    fn spec(extra: serde_json::Value) -> JobSpec {
        let mut body = json!({"prompt": "a fox"});
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        JobSpec::from_json(&body).expect("valid")
    }

    fn choose(extra: serde_json::Value, budget: Option<&str>) -> Result<BackendName, StepError> {
        let prices = PriceTable::default();
        let budget_left = budget.map(|b| b.parse().expect("money"));
        let unhealthy = BTreeMap::new();
        let sel = Selection {
            prices: &prices,
            enabled: &BackendName::ALL,
            unhealthy: &unhealthy,
            budget_left,
            fallback_order: &BackendName::ALL,
        };
        select(&spec(extra), &[5], &sel).map(|f| f.backend)
    }

    #[test]
    fn chooses_by_budget_quality_speed_and_priority() {
        use BackendName::*;
        let cases: Vec<(serde_json::Value, Option<&str>, Option<BackendName>)> = vec![
            (json!({}), None, Some(Replicate)),
            (json!({"quality_min": 0.9}), None, Some(Veo3)),
            (json!({"quality_min": 0.94}), None, Some(Runway)),
            (json!({"quality_min": 0.99}), None, None),
            (json!({"speed_priority": true}), None, Some(Runway)),
            (json!({"priority": "high"}), None, Some(Runway)),
            (json!({"priority": "high"}), Some("5"), Some(Veo3)),
            (json!({}), Some("0"), None),
            (json!({"quality_min": 0}), Some("1"), Some(Replicate)),
            (
                json!({"quality_min": 0, "speed_priority": true}),
                Some("5"),
                Some(Veo3),
            ),
            (
                json!({"quality_min": 0, "speed_priority": true}),
                Some("35"),
                Some(Runway),
            ),
            (
                json!({"backend": "runway", "quality_min": 0}),
                None,
                Some(Runway),
            ),
            (
                json!({"backend": "replicate", "quality_min": 0.9}),
                None,
                None,
            ),
        ];
        for (extra, budget, expected) in cases {
            let got = choose(extra.clone(), budget).ok();
            assert_eq!(got, expected, "{extra} budget {budget:?}");
        }
    }

    #[test]
    fn the_seed_budget_examples_decide_which_backends_qualify() {
        use BackendName::*;
        let prices = PriceTable::default();
        let unhealthy = BTreeMap::new();
        // A 5 s shot: runway $30.00, veo3 $2.60, replicate $0.26.
        let cases: [(&str, &[BackendName]); 7] = [
            ("0", &[]),
            ("0.25", &[]),
            ("1", &[Replicate]),
            ("5", &[Veo3, Replicate]),
            ("29.99", &[Veo3, Replicate]),
            ("30", &[Runway, Veo3, Replicate]),
            ("35", &[Runway, Veo3, Replicate]),
        ];
        for (budget, expected) in cases {
            let sel = Selection {
                prices: &prices,
                enabled: &BackendName::ALL,
                unhealthy: &unhealthy,
                budget_left: Some(budget.parse().expect("money")),
                fallback_order: &BackendName::ALL,
            };
            let got = select(&spec(json!({"quality_min": 0})), &[5], &sel)
                .map(|f| {
                    let mut c = f.candidates();
                    c.sort();
                    c
                })
                .unwrap_or_default();
            assert_eq!(got, expected, "budget ${budget}");
        }
        // The quality floor applies before the budget: $5 with quality 0.8 leaves veo3 alone.
        let sel = Selection {
            prices: &prices,
            enabled: &BackendName::ALL,
            unhealthy: &unhealthy,
            budget_left: Some("5".parse().expect("money")),
            fallback_order: &BackendName::ALL,
        };
        let f = select(&spec(json!({"quality_min": 0.8})), &[5], &sel).expect("veo3");
        assert_eq!(f.candidates(), [Veo3]);
        assert!(f.rejected[&Replicate].contains("below quality_min"));
        assert!(f.rejected[&Runway].contains("exceeds the budget left"));
    }

    #[test]
    fn a_disabled_named_backend_fails_with_the_reason() {
        let prices = PriceTable::default();
        let unhealthy = BTreeMap::new();
        let sel = Selection {
            prices: &prices,
            enabled: &[],
            unhealthy: &unhealthy,
            budget_left: None,
            fallback_order: &BackendName::ALL,
        };
        let mut s = spec(json!({}));
        s.backend = BackendChoice::Veo3;
        let e = select(&s, &[5], &sel).expect_err("disabled");
        assert!(
            e.to_string()
                .contains("the requested backend veo3 cannot take this job: not enabled"),
            "{e}"
        );
    }

    #[test]
    fn an_open_circuit_keeps_a_backend_out_and_fallbacks_follow_the_order() {
        let prices = PriceTable::default();
        let unhealthy = BTreeMap::from([(BackendName::Runway, "circuit open".to_owned())]);
        let order = [
            BackendName::Replicate,
            BackendName::Veo3,
            BackendName::Runway,
        ];
        let sel = Selection {
            prices: &prices,
            enabled: &BackendName::ALL,
            unhealthy: &unhealthy,
            budget_left: None,
            fallback_order: &order,
        };
        let f = select(
            &spec(json!({"speed_priority": true, "quality_min": 0})),
            &[5],
            &sel,
        )
        .expect("veo3 qualifies");
        assert_eq!(f.backend, BackendName::Veo3);
        assert_eq!(f.candidates(), [BackendName::Veo3, BackendName::Replicate]);
        assert!(f.rejected[&BackendName::Runway].contains("unhealthy: circuit open"));
        let mut named = spec(json!({"quality_min": 0}));
        named.backend = BackendChoice::Runway;
        let e = select(&named, &[5], &sel).expect_err("runway is unhealthy");
        assert!(
            e.to_string()
                .contains("the requested backend runway cannot take this job: unhealthy"),
            "{e}"
        );
    }
}
