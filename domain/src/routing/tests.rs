//! Routing's choices, rejections, money and entitlements.

use super::*;
use serde_json::json;

fn spec(extra: serde_json::Value) -> JobSpec {
    let mut body = json!({"prompt": "a fox"});
    body.as_object_mut()
        .expect("object")
        .extend(extra.as_object().expect("object").clone());
    JobSpec::parse(&body).expect("valid")
}

fn choose(extra: serde_json::Value, budget: Option<&str>) -> Result<BackendName, StepError> {
    let prices = PriceTable::default();
    let budget_left = budget.map(|b| b.parse().expect("money"));
    let unhealthy = BTreeMap::new();
    let sel = Facts {
        prices: &prices,
        enabled: BackendName::ALL,
        unhealthy: &unhealthy,
        budget_left,
        fallback_order: BackendName::ALL,
        allowed: None,
        max_cost: None,
    };
    route(&spec(extra), &[5], &sel).map(|f| f.backend)
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
        let sel = Facts {
            prices: &prices,
            enabled: BackendName::ALL,
            unhealthy: &unhealthy,
            budget_left: Some(budget.parse().expect("money")),
            fallback_order: BackendName::ALL,
            allowed: None,
            max_cost: None,
        };
        let got = route(&spec(json!({"quality_min": 0})), &[5], &sel)
            .map(|f| {
                let mut c = f.candidates();
                c.sort();
                c
            })
            .unwrap_or_default();
        assert_eq!(got, expected, "budget ${budget}");
    }
    // The quality floor applies before the budget: $5 with quality 0.8 leaves veo3 alone.
    let sel = Facts {
        prices: &prices,
        enabled: BackendName::ALL,
        unhealthy: &unhealthy,
        budget_left: Some("5".parse().expect("money")),
        fallback_order: BackendName::ALL,
        allowed: None,
        max_cost: None,
    };
    let f = route(&spec(json!({"quality_min": 0.8})), &[5], &sel).expect("veo3");
    assert_eq!(f.candidates(), [Veo3]);
    assert!(f.rejected[&Replicate].contains("below quality_min"));
    assert!(f.rejected[&Runway].contains("exceeds the budget left"));
}

#[test]
fn a_disabled_named_backend_fails_with_the_reason() {
    let prices = PriceTable::default();
    let unhealthy = BTreeMap::new();
    let sel = Facts {
        prices: &prices,
        enabled: &[],
        unhealthy: &unhealthy,
        budget_left: None,
        fallback_order: BackendName::ALL,
        allowed: None,
        max_cost: None,
    };
    let s = spec(json!({"backend": "veo3"}));
    let e = route(&s, &[5], &sel).expect_err("disabled");
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
    let sel = Facts {
        prices: &prices,
        enabled: BackendName::ALL,
        unhealthy: &unhealthy,
        budget_left: None,
        fallback_order: &order,
        allowed: None,
        max_cost: None,
    };
    let f = route(
        &spec(json!({"speed_priority": true, "quality_min": 0})),
        &[5],
        &sel,
    )
    .expect("veo3 qualifies");
    assert_eq!(f.backend, BackendName::Veo3);
    assert_eq!(f.candidates(), [BackendName::Veo3, BackendName::Replicate]);
    assert!(f.rejected[&BackendName::Runway].contains("unhealthy: circuit open"));
    let named = spec(json!({"quality_min": 0, "backend": "runway"}));
    let e = route(&named, &[5], &sel).expect_err("runway is unhealthy");
    assert!(
        e.to_string()
            .contains("the requested backend runway cannot take this job: unhealthy"),
        "{e}"
    );
}

#[test]
fn a_tenants_entitlements_keep_backends_out_and_a_cost_cap_fails_rather_than_waits() {
    let prices = PriceTable::default();
    let unhealthy = BTreeMap::new();
    let allowed = [BackendName::Veo3, BackendName::Replicate];
    let mut sel = Facts {
        prices: &prices,
        enabled: BackendName::ALL,
        unhealthy: &unhealthy,
        budget_left: None,
        fallback_order: BackendName::ALL,
        allowed: Some(&allowed),
        max_cost: None,
    };
    let high = spec(json!({"priority": "high", "quality_min": 0}));
    let r = route(&high, &[5], &sel).expect("veo3 qualifies");
    assert_eq!(
        r.backend,
        BackendName::Veo3,
        "runway is best but not allowed"
    );
    assert!(r.rejected[&BackendName::Runway].contains("allowed_backends"));
    assert!(!r.candidates().contains(&BackendName::Runway));
    // A cap below every allowed plan: no wait for money can help, so it fails.
    sel.max_cost = Some(Money::from_micros(100_000));
    let e = route(&high, &[5], &sel).expect_err("nothing within $0.10");
    assert!(matches!(e, StepError::Permanent(_)), "{e:?}");
    assert!(e.to_string().contains("max_job_cost_usd"), "{e}");
}
