//! `financial`: estimates the cost on every backend and chooses one. Selection, after
//! DESIGN.md: keep enabled backends, then those whose quality meets the job's floor, then those
//! whose estimate fits the budget; with speed priority take the fastest, for premium (`high`)
//! jobs the best quality, else the cheapest. Ties follow the fallback order.
//!
//! Fleet-wide health and the daily budget come later; `Selection::budget_left` is where the
//! budget plugs in.

use std::collections::BTreeMap;

use aiprod_shared::Money;
use aiprod_shared::domain::{BackendName, JobSpec, Priority, Stage};
use aiprod_shared::pricing::PriceTable;
use aiprod_shared::retry::StepError;
use aiprod_shared::store::JobPatch;
use serde::{Deserialize, Serialize};

use super::visual::Visual;
use super::{JobState, StageOutput};
use crate::context::WorkerContext;

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
}

/// The facts selection reads besides the request.
pub(crate) struct Selection<'a> {
    pub prices: &'a PriceTable,
    pub enabled: &'a [BackendName],
    /// `None`: no budget limit applies.
    pub budget_left: Option<Money>,
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
    for b in considered {
        let p = sel.prices.profile(b);
        let reason = if !sel.enabled.contains(&b) {
            Some("not enabled (no credentials, and simulation is off)".to_owned())
        } else if p.quality < spec.quality_min {
            Some(format!(
                "quality {} is below quality_min {}",
                p.quality, spec.quality_min
            ))
        } else if sel.budget_left.is_some_and(|left| estimates[&b] > left) {
            Some(format!(
                "estimate {} exceeds the budget left",
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
        let why: Vec<String> = rejected.iter().map(|(b, r)| format!("{b}: {r}")).collect();
        return Err(StepError::Permanent(format!(
            "no backend qualifies ({})",
            why.join("; ")
        )));
    };
    Ok(Financial {
        backend,
        model: sel.prices.profile(backend).model.clone(),
        estimated_cost: estimates[&backend],
        estimates,
        rejected,
    })
}

pub(crate) fn run(ctx: &WorkerContext, job: &JobState) -> Result<StageOutput, StepError> {
    let v: Visual = job.output(Stage::Visual)?;
    let seconds: Vec<i64> = v
        .shots
        .iter()
        .map(|s| i64::from(s.shot.duration_s))
        .collect();
    let enabled = ctx.backends.enabled();
    let f = select(
        &job.spec,
        &seconds,
        &Selection {
            prices: &ctx.settings.backends,
            enabled: &enabled,
            budget_left: None,
        },
    )?;
    let patch = JobPatch {
        backend: Some(f.backend),
        estimated_cost_micros: Some(f.estimated_cost.micros()),
        ..JobPatch::default()
    };
    Ok(StageOutput::of(&f).with(patch))
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
        let sel = Selection {
            prices: &prices,
            enabled: &BackendName::ALL,
            budget_left,
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
    fn a_disabled_named_backend_fails_with_the_reason() {
        let prices = PriceTable::default();
        let sel = Selection {
            prices: &prices,
            enabled: &[],
            budget_left: None,
        };
        let mut s = spec(json!({}));
        s.backend = BackendChoice::Veo3;
        let e = select(&s, &[5], &sel).expect_err("disabled");
        assert!(e.to_string().contains("veo3: not enabled"), "{e}");
    }
}
