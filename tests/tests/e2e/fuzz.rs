//! The HTTP API against its own OpenAPI document: schemathesis generates requests from
//! `/openapi.json` and sends them to a real `aiprod dev`, and every answer must be no server
//! error and exactly what the document says (status, content type, headers, body schema). A
//! finished job's view, which the fuzzer's own jobs do not reach in time, is checked against
//! the document's `JobView` first.
//!
//! Two passes. The dev tenant's key (all three scopes) fuzzes every operation but
//! `POST /v1/keys/{key}/revoke`: the stateful phase learns key ids from `GET /v1/keys` and would
//! revoke the very key it sends, after which every answer is a 401. Then the admin token, which
//! no revocation can touch, fuzzes the admin operations, revocation included.
//!
//! Not checked: `positive_data_acceptance` and `negative_data_rejection`, which hold request
//! schemas to rules JSON Schema cannot state: `2.0` is an integer to it and not to the API,
//! `limit_usd` is also read from a JSON number, an unknown tenant in a filter is a `422`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aiprod_testkit::TestDb;
use aiprod_tests::{Proc, Scratch, dev_key, free_port, keyed, wait_ready};
use serde_json::{Value, json};

use crate::base_env;

/// At least 32 characters, as start-up asks.
const ADMIN_TOKEN: &str = "fuzz-admin-token-0123456789abcdef0123";
/// Fixed, so that a failure in CI is the same failure on a developer's machine.
const SEED: &str = "20261202";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_the_api_is_what_its_openapi_document_says() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let dir = Scratch::new("fuzz")?;
    let port = free_port();
    let mut env = base_env(&db, &dir);
    env.push(("AIPROD_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()));
    // The fuzzer's jobs render real clips: one at a time keeps ffmpeg off the API's cores.
    env.push(("AIPROD_WORKER_CONCURRENCY", "1".to_owned()));
    env.push(("AIPROD_SIM_LATENCY_MS", "200".to_owned()));
    let mut dev = Proc::start(
        "dev",
        &[
            "dev",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--ops-listen",
            "127.0.0.1:0",
        ],
        &env,
        &dir.0,
    )?;
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(
        &reqwest::Client::new(),
        &format!("{base}/readyz"),
        Duration::from_secs(60),
    )
    .await?;
    let key = dev_key(&dir.0)?;

    let job = finished_job(&keyed(&key)?, &base, &dev).await?;
    let doc: Value = reqwest::get(format!("{base}/openapi.json"))
        .await?
        .json()
        .await?;
    let schema = json!({"$ref": "#/components/schemas/JobView", "components": doc["components"]});
    let (schema_file, job_file) = (dir.0.join("jobview.json"), dir.0.join("job.json"));
    std::fs::write(&schema_file, schema.to_string())?;
    std::fs::write(&job_file, job.to_string())?;
    let mut check = Command::new("check-jsonschema");
    check.arg("--schemafile").arg(&schema_file).arg(&job_file);
    succeeds(
        check,
        "check-jsonschema (a succeeded job against JobView)",
        &dev,
    )?;

    let keyed_pass = schemathesis(
        &base,
        &key,
        &dir.0,
        &["--max-examples=150", "--exclude-path=/v1/keys/{key}/revoke"],
    );
    succeeds(keyed_pass, "schemathesis with the dev tenant's key", &dev)?;
    let admin_pass = schemathesis(
        &base,
        ADMIN_TOKEN,
        &dir.0,
        &["--max-examples=75", "--include-tag=admin"],
    );
    succeeds(admin_pass, "schemathesis with the admin token", &dev)?;

    dev.signal("TERM")?;
    assert_eq!(
        dev.wait_exit(Duration::from_secs(30))?,
        Some(0),
        "{}",
        dev.tail()
    );
    Ok(())
}

/// A short job, submitted and followed until it succeeded: its view has every part the
/// document describes (routing, renders and their checks, the video, its assembly and QA).
async fn finished_job(http: &reqwest::Client, base: &str, dev: &Proc) -> anyhow::Result<Value> {
    let job: Value = http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"prompt": "A red fox runs through snow. It leaps over a log.", "duration_s": 4}))
        .send()
        .await?
        .json()
        .await?;
    let id = job["id"].as_str().expect("an id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let j: Value = http
            .get(format!("{base}/v1/jobs/{id}"))
            .send()
            .await?
            .json()
            .await?;
        if j["status"] == "succeeded" {
            return Ok(j);
        }
        anyhow::ensure!(
            j["status"] != "failed" && Instant::now() < deadline,
            "job {id} did not succeed: {j}\n{}",
            dev.tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `schemathesis run` against `base` with `bearer`, every check but the two of request
/// schemas, with the hooks that keep generated image links on this machine.
fn schemathesis(base: &str, bearer: &str, dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new("schemathesis");
    c.current_dir(dir)
        .env(
            "SCHEMATHESIS_HOOKS",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/fuzz_hooks.py"),
        )
        .args(["run", &format!("{base}/openapi.json")])
        .args(["--header", &format!("Authorization: Bearer {bearer}")])
        .args([
            "--checks=all",
            "--exclude-checks=positive_data_acceptance,negative_data_rejection",
            &format!("--seed={SEED}"),
            "--workers=1",
            "--request-timeout=30",
            "--generation-database=none",
            "--no-color",
        ])
        .args(extra);
    c
}

/// Runs `cmd` and fails with its output (and the server's last lines) unless it exits 0.
fn succeeds(mut cmd: Command, what: &str, dev: &Proc) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {what} ({e}): scripts/setup installs it"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        out.status.success(),
        "{what} failed ({}):\n{text}\naiprod dev's last lines:\n{}",
        out.status,
        dev.tail()
    );
    // The summary (schemathesis prints it last), for the test's log (`--nocapture`).
    let summary = text
        .rfind("SUMMARY")
        .map_or(text.as_str(), |at| &text[at..]);
    println!("{what}: {summary}");
    Ok(())
}
