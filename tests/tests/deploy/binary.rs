//! The binary accepts what the deployment files give it: every container's command line, from
//! the Kubernetes manifests and the compose file, parses, and its settings load, since `aiprod`
//! refuses an `AIPROD_*` name it does not know.

use std::collections::HashMap;
use std::process::{Command, Stdio};

use aiprod_testkit::TestDb;
use aiprod_tests::aiprod_bin;
use anyhow::{Context, ensure};
use serde_json::Value;

use crate::compose::{AIPROD_SERVICES, compose};
use crate::{containers, gke, name, pod_specs, settings};

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
                // As long as the longest rule asks (the admin token's 32 characters).
                None => "stand-in-secret-of-forty-characters-xyz0".to_owned(),
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
