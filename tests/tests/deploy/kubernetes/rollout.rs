//! What a safe rollout depends on: probes on /readyz and /healthz at the ports the containers
//! listen on, resource bounds, grace periods that outlast the shutdown grace, a rollout that
//! never lowers capacity, and a migration Job named for the image it migrates for.

use anyhow::{Context, ensure};
use serde_json::Value;

use crate::{containers, gke, name, named, of_kind, pod_specs, setting_u64};

#[test]
fn every_deployment_is_probed_on_readyz_and_healthz() -> anyhow::Result<()> {
    let deployments = of_kind(gke(), "Deployment");
    ensure!(deployments.len() == 3, "api, worker and scheduler");
    for d in deployments {
        for c in containers(&d["spec"]["template"]["spec"]) {
            let ports: Vec<&Value> = c["ports"]
                .as_array()
                .map(|p| p.iter().collect())
                .unwrap_or_default();
            for (probe, path) in [
                ("readinessProbe", "/readyz"),
                ("livenessProbe", "/healthz"),
                ("startupProbe", "/healthz"),
            ] {
                let get = &c[probe]["httpGet"];
                ensure!(
                    get["path"] == path,
                    "{}: {probe} must GET {path}, got {get}",
                    name(d)
                );
                ensure!(
                    ports
                        .iter()
                        .any(|p| p["name"] == get["port"] || p["containerPort"] == get["port"]),
                    "{}: {probe} probes a port the container does not declare",
                    name(d)
                );
            }
        }
    }
    Ok(())
}

#[test]
fn every_container_listens_where_its_probes_and_scrapes_look() -> anyhow::Result<()> {
    // The api serves its metrics on an ops port of their own, off the public Service.
    let api = named(gke(), "Deployment", "aiprod-api")?;
    let c = &containers(&api["spec"]["template"]["spec"])[0];
    let args = c["args"].to_string();
    ensure!(
        args.contains(r#""--listen","0.0.0.0:8080""#)
            && args.contains(r#""--ops-listen","0.0.0.0:9463""#),
        "aiprod-api must serve 8080 and its ops port 9463: {args}"
    );
    ensure!(
        c["ports"][0]["containerPort"] == 8080 && c["ports"][1]["containerPort"] == 9463,
        "aiprod-api declares 8080 and 9463"
    );
    ensure!(
        api["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9463",
        "aiprod-api: Prometheus scrapes the ops port"
    );
    let svc = named(gke(), "Service", "aiprod-api")?;
    ensure!(
        !svc["spec"]["ports"].to_string().contains("9463"),
        "the public Service must not expose the ops port"
    );
    for (component, port) in [("aiprod-worker", 9464), ("aiprod-scheduler", 9465)] {
        let d = named(gke(), "Deployment", component)?;
        let c = &containers(&d["spec"]["template"]["spec"])[0];
        let args: Vec<&str> = c["args"]
            .as_array()
            .context("args")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        ensure!(
            args.windows(2)
                .any(|w| w == ["--listen", &format!("0.0.0.0:{port}")]),
            "{component} must listen on 0.0.0.0:{port}: {args:?}"
        );
        ensure!(
            c["ports"][0]["containerPort"] == port,
            "{component} declares port {port}"
        );
        let annotations = &d["spec"]["template"]["metadata"]["annotations"];
        ensure!(
            annotations["prometheus.io/scrape"] == "true"
                && annotations["prometheus.io/port"] == port.to_string().as_str()
                && annotations["prometheus.io/path"] == "/metrics",
            "{component}: Prometheus annotations must point at :{port}/metrics"
        );
    }
    Ok(())
}

#[test]
fn every_container_has_resource_requests_and_limits() -> anyhow::Result<()> {
    for (w, pod) in pod_specs(gke()) {
        for c in containers(pod) {
            for bound in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    ensure!(
                        c["resources"][bound][resource].is_string(),
                        "{}: resources.{bound}.{resource} is missing",
                        name(w)
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn grace_periods_outlast_the_shutdown_grace() -> anyhow::Result<()> {
    let grace_ms = setting_u64(gke(), "AIPROD_SHUTDOWN_GRACE_MS")?;
    ensure!(
        grace_ms > 25_000,
        "set the shutdown grace explicitly, above the 25 s default"
    );
    for d in of_kind(gke(), "Deployment") {
        let period = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .with_context(|| format!("{}: terminationGracePeriodSeconds", name(d)))?;
        ensure!(
            period * 1000 >= grace_ms + 5_000,
            "{}: terminationGracePeriodSeconds {period} s must outlast AIPROD_SHUTDOWN_GRACE_MS \
             {grace_ms} ms by a margin, or SIGKILL cuts the stage in flight",
            name(d)
        );
        let rolling = &d["spec"]["strategy"]["rollingUpdate"];
        ensure!(
            rolling["maxUnavailable"] == 0,
            "{}: a rollout must never lower capacity (maxUnavailable 0)",
            name(d)
        );
    }
    Ok(())
}

#[test]
fn migrate_job_applies_migrations_and_pubsub_under_the_release_name() -> anyhow::Result<()> {
    let jobs = of_kind(gke(), "Job");
    ensure!(jobs.len() == 1, "one migration Job");
    let job = jobs[0];
    let c = &containers(&job["spec"]["template"]["spec"])[0];
    ensure!(c["args"] == serde_json::json!(["migrate", "--pubsub"]));
    ensure!(job["spec"]["template"]["spec"]["restartPolicy"] == "Never");
    let image = c["image"].as_str().context("image")?;
    let tag = image.rsplit_once(':').context("a tagged image")?.1;
    let expected = format!("aiprod-migrate-{}", tag.replace(['.', '_'], "-"));
    ensure!(
        name(job) == expected,
        "a Job cannot be changed once created: name it {expected} for image tag {tag}, got {}",
        name(job)
    );
    for d in of_kind(gke(), "Deployment") {
        ensure!(
            containers(&d["spec"]["template"]["spec"])[0]["image"] == image,
            "{} runs the image the Job migrated for",
            name(d)
        );
    }
    Ok(())
}
