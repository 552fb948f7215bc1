//! How many of each component run and how they are reached: two schedulers, at least two api
//! pods behind the one Service, workers counted by KEDA from the subscription backlog, and a
//! PodDisruptionBudget over every Deployment.

use anyhow::{Context, ensure};

use crate::{containers, gke, name, named, of_kind, setting_u64, settings};

#[test]
fn scheduler_runs_two_replicas_and_workers_leave_the_count_to_the_autoscaler() -> anyhow::Result<()>
{
    let scheduler = named(gke(), "Deployment", "aiprod-scheduler")?;
    ensure!(
        scheduler["spec"]["replicas"] == 2,
        "two schedulers, one leader"
    );
    let api = named(gke(), "Deployment", "aiprod-api")?;
    ensure!(
        api["spec"]["replicas"].as_u64().is_some_and(|r| r >= 2),
        "at least two api pods"
    );
    let worker = named(gke(), "Deployment", "aiprod-worker")?;
    ensure!(
        worker["spec"].get("replicas").is_none(),
        "the worker Deployment must not fix replicas: every apply would reset KEDA's count"
    );
    Ok(())
}

#[test]
fn api_service_routes_to_the_api_port() -> anyhow::Result<()> {
    let service = named(gke(), "Service", "aiprod-api")?;
    let api = named(gke(), "Deployment", "aiprod-api")?;
    let labels = &api["spec"]["template"]["metadata"]["labels"];
    let selector = service["spec"]["selector"]
        .as_object()
        .context("a selector")?;
    ensure!(!selector.is_empty(), "the Service selects pods");
    for (k, v) in selector {
        ensure!(
            &labels[k] == v,
            "the Service selects {k}={v}, which api pods lack"
        );
    }
    let target = &service["spec"]["ports"][0]["targetPort"];
    let port = &containers(&api["spec"]["template"]["spec"])[0]["ports"][0];
    ensure!(
        target == &port["name"] || target == &port["containerPort"],
        "the Service targets {target}, the api listens on {port}"
    );
    ensure!(
        of_kind(gke(), "Service").len() == 1,
        "workers and the scheduler need no Service"
    );
    Ok(())
}

#[test]
fn pod_disruption_budgets_cover_every_deployment() -> anyhow::Result<()> {
    let pdbs = of_kind(gke(), "PodDisruptionBudget");
    for d in of_kind(gke(), "Deployment") {
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        let covering = pdbs.iter().filter(|p| {
            p["spec"]["selector"]["matchLabels"]
                .as_object()
                .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| &labels[k] == v))
        });
        ensure!(
            covering.count() == 1,
            "{}: exactly one PodDisruptionBudget",
            name(d)
        );
    }
    Ok(())
}

#[test]
fn keda_scales_workers_on_the_subscription_backlog() -> anyhow::Result<()> {
    let so = named(gke(), "ScaledObject", "aiprod-worker")?;
    ensure!(so["spec"]["scaleTargetRef"]["name"] == "aiprod-worker");
    ensure!(
        so["spec"]["minReplicaCount"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "keep a worker warm: Cloud Monitoring reports the backlog minutes late"
    );
    let triggers = so["spec"]["triggers"].as_array().context("triggers")?;
    ensure!(triggers.len() == 1, "one trigger");
    let t = &triggers[0];
    ensure!(t["type"] == "gcp-pubsub");
    let config = settings(gke())?;
    ensure!(
        t["metadata"]["subscriptionName"].as_str()
            == config.get("AIPROD_PUBSUB_SUBSCRIPTION").map(String::as_str),
        "KEDA watches the subscription the workers pull from"
    );
    ensure!(t["metadata"]["mode"] == "SubscriptionSize");
    let value: u64 = t["metadata"]["value"].as_str().context("value")?.parse()?;
    let concurrency = setting_u64(gke(), "AIPROD_WORKER_CONCURRENCY")?;
    ensure!(
        value > 0 && value <= concurrency,
        "the backlog per worker ({value}) must not exceed what a worker runs ({concurrency})"
    );
    let auth = t["authenticationRef"]["name"]
        .as_str()
        .context("authenticationRef")?;
    let ta = named(gke(), "TriggerAuthentication", auth)?;
    ensure!(ta["spec"]["podIdentity"]["provider"] == "gcp");
    Ok(())
}
