//! Kustomize renders the base, the gke overlay and the HPA component; kubernetes-validate
//! --strict checks the built-in kinds and KEDA's own schema checks KEDA's, so a manifest the API
//! server would refuse fails here rather than at deploy time.

use anyhow::{Context, ensure};
use serde_json::Value;

use crate::{KUBERNETES_VALIDATE, NODE, kustomize, named, node_script, root, run_ok, yaml_docs};

/// The Kubernetes version the manifests are validated against: the oldest GKE minor we
/// deploy to (the api's preStop `sleep` needs 1.30 or later).
const KUBERNETES_VERSION: &str = "1.33.0";

/// Validates `yaml` with kubernetes-validate --strict, after setting KEDA's objects aside
/// (returned, for KEDA's own schema): kubernetes-validate only warns about kinds it has no
/// schema for, so any such warning left is a failure.
fn validate_strict(yaml: &str) -> anyhow::Result<Vec<Value>> {
    let docs = yaml_docs(yaml)?;
    let (keda, core): (Vec<Value>, Vec<Value>) = docs.into_iter().partition(|d| {
        d["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("keda.sh/"))
    });
    ensure!(!core.is_empty(), "nothing rendered");
    // JSON is YAML: one document per line.
    let stream: String = core
        .iter()
        .map(|d| format!("---\n{d}\n"))
        .collect::<Vec<_>>()
        .concat();
    let out = run_ok(
        &KUBERNETES_VALIDATE,
        &["--strict", "--kubernetes-version", KUBERNETES_VERSION, "-"],
        Some(&stream),
    )?;
    let passed = out.lines().filter(|l| l.contains(" passed ")).count();
    ensure!(
        passed == core.len() && !out.contains("Couldn't find schema"),
        "kubernetes-validate checked {passed} of {} objects:\n{out}",
        core.len()
    );
    Ok(keda)
}

#[test]
fn base_renders_and_passes_strict_validation() -> anyhow::Result<()> {
    let keda = validate_strict(&kustomize("k8s/base")?)?;
    ensure!(
        keda.is_empty(),
        "the base must apply without KEDA installed"
    );
    Ok(())
}

#[test]
fn gke_overlay_renders_and_passes_strict_validation() -> anyhow::Result<()> {
    let keda = validate_strict(&kustomize("k8s/overlays/gke")?)?;
    ensure!(
        keda.len() == 2,
        "expected the ScaledObject and its TriggerAuthentication"
    );
    Ok(())
}

#[test]
fn hpa_component_replaces_keda_and_passes_strict_validation() -> anyhow::Result<()> {
    // kustomize takes no absolute paths: the scratch overlay reaches the repository through
    // as many `..` as it is deep.
    let dir = tempfile::tempdir()?;
    let up = "../".repeat(dir.path().components().count() - 1);
    let repo = root();
    let repo = repo
        .to_str()
        .context("a UTF-8 path")?
        .trim_start_matches('/');
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - \
             {up}{repo}/k8s/overlays/gke\ncomponents:\n  - {up}{repo}/k8s/components/hpa-cpu\n"
        ),
    )?;
    let yaml = kustomize(dir.path().to_str().context("a UTF-8 path")?)?;
    let keda = validate_strict(&yaml)?;
    ensure!(
        keda.is_empty(),
        "with the HPA, KEDA's objects must go: {keda:?}"
    );
    let docs = yaml_docs(&yaml)?;
    let hpa = named(&docs, "HorizontalPodAutoscaler", "aiprod-worker")?;
    ensure!(hpa["spec"]["scaleTargetRef"]["name"] == "aiprod-worker");
    Ok(())
}

#[test]
fn keda_objects_pass_kedas_schema() -> anyhow::Result<()> {
    let script = node_script("validate-keda.mjs")?;
    let yaml = kustomize("k8s/overlays/gke")?;
    let out = run_ok(&NODE, &[&script, "-"], Some(&yaml))?;
    for object in [
        "ScaledObject/aiprod-worker",
        "TriggerAuthentication/aiprod-keda-gcp",
    ] {
        ensure!(
            out.contains(&format!("{object}: valid")),
            "{object} not validated:\n{out}"
        );
    }
    Ok(())
}
