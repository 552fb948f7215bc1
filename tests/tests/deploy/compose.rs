//! docker-compose.yml: it follows the compose spec, its services start in order on the local
//! stand-ins (PostgreSQL, the Pub/Sub emulator, fake-gcs), workers scale, and each service gets
//! the time to finish its stage when stopped.

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use crate::{CHECK_JSONSCHEMA, root, run_ok, yaml_docs};

pub(crate) fn compose() -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(root().join("docker-compose.yml"))?;
    yaml_docs(&text)?
        .into_iter()
        .next()
        .context("docker-compose.yml is empty")
}

/// A compose duration ("35s", "1m30s", "500ms") in milliseconds.
fn compose_duration_ms(s: &str) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits]
            .parse()
            .with_context(|| format!("bad duration {s}"))?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        total += n * match &rest[..unit] {
            "h" => 3_600_000,
            "m" => 60_000,
            "s" => 1_000,
            "ms" => 1,
            u => bail!("bad unit {u:?} in {s}"),
        };
        rest = &rest[unit..];
    }
    Ok(total)
}

pub(crate) const AIPROD_SERVICES: [&str; 4] = ["migrate", "api", "worker", "scheduler"];

#[test]
fn compose_file_follows_the_compose_spec() -> anyhow::Result<()> {
    run_ok(
        &CHECK_JSONSCHEMA,
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            "docker-compose.yml",
        ],
        None,
    )?;
    Ok(())
}

#[test]
fn compose_services_start_in_order_and_workers_scale() -> anyhow::Result<()> {
    let c = compose()?;
    let services = &c["services"];
    let image = |s: &str| services[s]["image"].as_str().unwrap_or_default().to_owned();
    ensure!(
        image("postgres").starts_with("postgres:15"),
        "PostgreSQL 15"
    );
    ensure!(
        image("pubsub").starts_with("gcr.io/google.com/cloudsdktool/google-cloud-cli:emulators"),
        "the Pub/Sub emulator"
    );
    ensure!(
        image("gcs").starts_with("fsouza/fake-gcs-server:"),
        "fake-gcs-server"
    );
    for s in ["postgres", "pubsub", "gcs"] {
        ensure!(
            services[s]["healthcheck"]["test"].is_array(),
            "{s} needs a healthcheck for depends_on: service_healthy"
        );
    }
    ensure!(
        services["migrate"]["command"] == serde_json::json!(["migrate", "--pubsub"]),
        "migrate runs `aiprod migrate --pubsub`"
    );
    for (s, on) in [
        ("migrate", "postgres"),
        ("migrate", "pubsub"),
        ("gcs-bucket", "gcs"),
    ] {
        ensure!(
            services[s]["depends_on"][on]["condition"] == "service_healthy",
            "{s} waits for {on} to be healthy"
        );
    }
    for s in ["api", "worker", "scheduler"] {
        for on in ["migrate", "gcs-bucket"] {
            ensure!(
                services[s]["depends_on"][on]["condition"] == "service_completed_successfully",
                "{s} waits for {on} to finish"
            );
        }
        ensure!(
            services[s]["image"] == services["migrate"]["image"],
            "{s} runs the same aiprod image as migrate"
        );
    }
    let bucket = services["gcs-bucket"]["command"].to_string();
    ensure!(
        bucket.contains("/storage/v1/b?project=") && bucket.contains("aiprod-artifacts"),
        "gcs-bucket creates the bucket through the JSON API: {bucket}"
    );
    let worker = &services["worker"];
    ensure!(
        worker.get("container_name").is_none() && worker.get("ports").is_none(),
        "the worker must scale with --scale worker=N: no container_name, no host port"
    );
    for s in AIPROD_SERVICES {
        let env = &services[s]["environment"];
        ensure!(
            env["AIPROD_SIMULATE_BACKENDS"] == "true",
            "{s} simulates backends"
        );
        ensure!(
            env["AIPROD_PUBSUB_ENDPOINT"] == "http://pubsub:8085",
            "{s} uses the emulator"
        );
        ensure!(
            env["AIPROD_GCS_ENDPOINT"] == "http://gcs",
            "{s} uses fake-gcs"
        );
    }
    Ok(())
}

#[test]
fn compose_stop_grace_outlasts_the_shutdown_grace() -> anyhow::Result<()> {
    let c = compose()?;
    for s in ["api", "worker", "scheduler"] {
        let service = &c["services"][s];
        let grace: u64 = service["environment"]["AIPROD_SHUTDOWN_GRACE_MS"]
            .as_str()
            .with_context(|| format!("{s} sets AIPROD_SHUTDOWN_GRACE_MS"))?
            .parse()?;
        let stop = compose_duration_ms(
            service["stop_grace_period"]
                .as_str()
                .with_context(|| format!("{s} sets stop_grace_period"))?,
        )?;
        ensure!(
            stop >= grace + 5_000,
            "{s}: stop_grace_period {stop} ms must outlast the shutdown grace {grace} ms"
        );
    }
    Ok(())
}
