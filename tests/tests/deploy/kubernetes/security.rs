//! Every pod runs locked down (non-root, read-only, no capabilities, the restricted Pod Security
//! Standard), acts through Workload Identity as its own Google service account, and reads its
//! credentials from the out-of-band Secret, never from the manifests: each Deployment only the
//! ones it uses, the api no provider key.

use anyhow::{Context, ensure};

use crate::{containers, gke, name, named, of_kind, pod_specs, settings};

/// The Secret every component reads its credentials from.
const SECRET: &str = "aiprod-secrets";

/// Settings that are credentials: never in a ConfigMap, always a `secretKeyRef`.
const SECRET_SETTINGS: [&str; 5] = [
    "DATABASE_URL",
    "AIPROD_ADMIN_TOKEN",
    "AIPROD_RUNWAY_API_KEY",
    "AIPROD_REPLICATE_API_TOKEN",
    "AIPROD_ALERT_WEBHOOK_URL",
];

#[test]
fn every_pod_runs_locked_down() -> anyhow::Result<()> {
    let pods = pod_specs(gke());
    ensure!(
        pods.len() == 4,
        "api, worker, scheduler and the migration Job"
    );
    for (w, pod) in pods {
        let n = name(w);
        let sc = &pod["securityContext"];
        ensure!(sc["runAsNonRoot"] == true, "{n}: runAsNonRoot");
        ensure!(
            sc["runAsUser"].as_u64().is_some_and(|u| u != 0),
            "{n}: a numeric non-root runAsUser"
        );
        ensure!(
            sc["seccompProfile"]["type"] == "RuntimeDefault",
            "{n}: seccomp RuntimeDefault"
        );
        // Service links would inject AIPROD_API_SERVICE_HOST and the like, which the binary
        // refuses as unknown settings.
        ensure!(
            pod["enableServiceLinks"] == false,
            "{n}: enableServiceLinks must be false"
        );
        ensure!(
            pod["automountServiceAccountToken"] == false,
            "{n}: no pod needs the Kubernetes API"
        );
        let tmp_volumes: Vec<&str> = pod["volumes"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter(|v| v["emptyDir"].is_object())
                    .filter_map(|v| v["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        for c in containers(pod) {
            let csc = &c["securityContext"];
            ensure!(
                csc["readOnlyRootFilesystem"] == true,
                "{n}: readOnlyRootFilesystem"
            );
            ensure!(
                csc["allowPrivilegeEscalation"] == false,
                "{n}: allowPrivilegeEscalation false"
            );
            ensure!(
                csc["capabilities"]["drop"] == serde_json::json!(["ALL"]),
                "{n}: drop ALL capabilities"
            );
            ensure!(
                c["volumeMounts"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|m| {
                        m["mountPath"] == "/tmp"
                            && m["name"].as_str().is_some_and(|v| tmp_volumes.contains(&v))
                    })),
                "{n}: an emptyDir on /tmp, the root filesystem being read-only"
            );
        }
    }
    let ns = named(gke(), "Namespace", "aiprod")?;
    ensure!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted",
        "the namespace enforces the restricted Pod Security Standard"
    );
    Ok(())
}

#[test]
fn service_accounts_are_bound_by_workload_identity() -> anyhow::Result<()> {
    let project = settings(gke())?
        .get("AIPROD_PUBSUB_PROJECT")
        .cloned()
        .context("AIPROD_PUBSUB_PROJECT in aiprod-config")?;
    for (w, pod) in pod_specs(gke()) {
        let expected = if w["kind"] == "Job" {
            "aiprod-migrate"
        } else {
            "aiprod"
        };
        ensure!(
            pod["serviceAccountName"] == expected,
            "{} runs as the ServiceAccount {expected}",
            name(w)
        );
    }
    for account in ["aiprod", "aiprod-migrate"] {
        let sa = named(gke(), "ServiceAccount", account)?;
        let gsa = sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
            .as_str()
            .with_context(|| format!("{account}: the iam.gke.io/gcp-service-account annotation"))?;
        ensure!(
            gsa == format!("{account}@{project}.iam.gserviceaccount.com"),
            "{account} must act as {account}@{project}.iam.gserviceaccount.com (the project of \
             AIPROD_PUBSUB_PROJECT), got {gsa}"
        );
    }
    Ok(())
}

#[test]
fn secrets_are_referenced_never_inlined() -> anyhow::Result<()> {
    ensure!(
        of_kind(gke(), "Secret").is_empty(),
        "no Secret object in the manifests: create aiprod-secrets out of band"
    );
    let config = settings(gke())?;
    for key in SECRET_SETTINGS {
        ensure!(
            !config.contains_key(key),
            "{key} must not be in the ConfigMap"
        );
    }
    for (w, pod) in pod_specs(gke()) {
        for c in containers(pod) {
            let env = c["env"].as_array().map_or(&[][..], Vec::as_slice);
            for var in env {
                let key = var["name"].as_str().unwrap_or_default();
                if !SECRET_SETTINGS.contains(&key) {
                    continue;
                }
                let r = &var["valueFrom"]["secretKeyRef"];
                ensure!(
                    var.get("value").is_none() && r["name"] == SECRET && r["key"] == key,
                    "{}: {key} must come from secretKeyRef {SECRET}/{key}",
                    name(w)
                );
                let optional = r["optional"] == true;
                ensure!(
                    optional == (key != "DATABASE_URL"),
                    "{}: only DATABASE_URL is required, the others optional ({key})",
                    name(w)
                );
            }
            ensure!(
                env.iter().any(|v| v["name"] == "DATABASE_URL"),
                "{}: DATABASE_URL from the Secret",
                name(w)
            );
        }
    }
    Ok(())
}

/// The credentials each Deployment needs, and no more: a pod holds only the keys of the calls it
/// makes, so a compromised api pod (the one facing clients) holds no provider key.
const NEEDED: [(&str, &[&str]); 3] = [
    ("aiprod-api", &["DATABASE_URL", "AIPROD_ADMIN_TOKEN"]),
    (
        "aiprod-worker",
        &[
            "DATABASE_URL",
            "AIPROD_RUNWAY_API_KEY",
            "AIPROD_REPLICATE_API_TOKEN",
        ],
    ),
    // The orphan reconciler lists Replicate's predictions; the leader sends the alerts.
    (
        "aiprod-scheduler",
        &[
            "DATABASE_URL",
            "AIPROD_REPLICATE_API_TOKEN",
            "AIPROD_ALERT_WEBHOOK_URL",
        ],
    ),
];

/// Provider credentials, which only the components that call providers may hold.
const PROVIDER_SECRETS: [&str; 4] = [
    "AIPROD_RUNWAY_API_KEY",
    "AIPROD_REPLICATE_API_TOKEN",
    "AIPROD_VEO_ACCESS_TOKEN",
    "AIPROD_VERTEX_ACCESS_TOKEN",
];

#[test]
fn each_deployment_reads_only_the_secrets_it_uses_and_the_api_no_provider_key() -> anyhow::Result<()>
{
    let deployments = of_kind(gke(), "Deployment");
    ensure!(
        deployments.len() == NEEDED.len(),
        "api, worker and scheduler"
    );
    for d in deployments {
        let n = name(d);
        let (_, needed) = NEEDED
            .iter()
            .find(|(w, _)| *w == n)
            .with_context(|| format!("{n}: an unexpected Deployment"))?;
        let pod = &d["spec"]["template"]["spec"];
        ensure!(!pod_mounts_secret(pod), "{n}: no Secret volume");
        for c in containers(pod) {
            // The whole Secret through envFrom would hand every key to every pod.
            for from in c["envFrom"].as_array().map_or(&[][..], Vec::as_slice) {
                ensure!(
                    from.get("secretRef").is_none(),
                    "{n}: no envFrom secretRef (it imports every key of the Secret)"
                );
            }
            let env = c["env"].as_array().map_or(&[][..], Vec::as_slice);
            let mut got: Vec<&str> = env
                .iter()
                .filter(|v| v["valueFrom"]["secretKeyRef"].is_object())
                .filter_map(|v| v["name"].as_str())
                .collect();
            got.sort_unstable();
            let mut want = needed.to_vec();
            want.sort_unstable();
            ensure!(
                got == want,
                "{n}: reads the secrets {got:?}, needs {want:?}"
            );
        }
    }
    let api = named(gke(), "Deployment", "aiprod-api")?;
    for c in containers(&api["spec"]["template"]["spec"]) {
        let env = c["env"].as_array().map_or(&[][..], Vec::as_slice);
        for key in PROVIDER_SECRETS
            .iter()
            .chain(["AIPROD_ALERT_WEBHOOK_URL"].iter())
        {
            ensure!(
                !env.iter().any(|v| v["name"] == *key),
                "aiprod-api must not carry {key}: it calls no provider and sends no alert"
            );
        }
    }
    Ok(())
}

/// Whether the pod mounts a Secret (or a projected volume, which can carry one) as files.
fn pod_mounts_secret(pod: &serde_json::Value) -> bool {
    pod["volumes"].as_array().is_some_and(|v| {
        v.iter()
            .any(|v| v["secret"].is_object() || v["projected"].is_object())
    })
}
