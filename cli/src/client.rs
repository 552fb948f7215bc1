//! `aiprod jobs …`: a client of the HTTP API. Output is the API's JSON (pretty), except for
//! `watch`, which draws a progress bar across the nine stages. An API error prints its detail,
//! field and rule on one line and exits 1.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use aiprod_domain::{BackendChoice, JobStatus, OverBudget, Priority, Stage};
use anyhow::Context;
use clap::Subcommand;
use clap::builder::PossibleValuesParser;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::header::{self, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

/// What to do with jobs.
#[derive(Subcommand)]
pub enum JobsCommand {
    /// Submits a job.
    Submit {
        /// The brief, 1–2000 characters.
        #[arg(long)]
        prompt: String,
        /// Length in seconds, 2–60.
        #[arg(long)]
        duration: Option<i64>,
        /// Lowest acceptable quality, 0–1.
        #[arg(long)]
        quality_min: Option<f64>,
        /// How urgently it should run.
        #[arg(long, value_parser = PossibleValuesParser::new(Priority::names()))]
        priority: Option<String>,
        /// A named backend, or automatic selection.
        #[arg(long, value_parser = PossibleValuesParser::new(BackendChoice::names()))]
        backend: Option<String>,
        /// Prefer the fastest backend.
        #[arg(long)]
        speed_priority: bool,
        /// An input image URL.
        #[arg(long)]
        image_url: Option<String>,
        /// Metadata, a JSON object.
        #[arg(long)]
        metadata: Option<String>,
        /// Makes retries of this submit safe.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// When the budget does not cover the job (default: wait).
        #[arg(long, value_parser = PossibleValuesParser::new(OverBudget::names()))]
        over_budget: Option<String>,
        /// Watch the job after submitting it.
        #[arg(long)]
        watch: bool,
    },
    /// Shows one job.
    Get {
        /// The job id.
        id: String,
    },
    /// Lists jobs, newest first.
    List {
        /// Only jobs with this status.
        #[arg(long, value_parser = PossibleValuesParser::new(JobStatus::names()))]
        status: Option<String>,
        /// Page size, 1–500.
        #[arg(long)]
        limit: Option<u32>,
        /// The `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Cancels a job: at once if queued, before its next stage if running.
    Cancel {
        /// The job id.
        id: String,
    },
    /// Follows a job to its end; exits 0 only if it succeeded.
    Watch {
        /// The job id.
        id: String,
    },
}

/// An HTTP client that sends `credential` (an API key or the admin token) as its bearer.
fn http_client(credential: &SecretString) -> anyhow::Result<reqwest::Client> {
    let mut auth = HeaderValue::from_str(&format!("Bearer {}", credential.expose_secret()))
        .context("the API key is not a valid header value")?;
    auth.set_sensitive(true);
    let headers = HeaderMap::from_iter([(header::AUTHORIZATION, auth)]);
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(headers)
        .build()?)
}

/// Runs a jobs subcommand against the API at `base`, as the holder of `credential`.
pub async fn run(
    cmd: JobsCommand,
    base: &str,
    credential: &SecretString,
) -> anyhow::Result<ExitCode> {
    let http = http_client(credential)?;
    let base = base.trim_end_matches('/');
    match cmd {
        JobsCommand::Submit {
            prompt,
            duration,
            quality_min,
            priority,
            backend,
            speed_priority,
            image_url,
            metadata,
            idempotency_key,
            over_budget,
            watch: follow,
        } => {
            let mut body = json!({"prompt": prompt, "speed_priority": speed_priority});
            let obj = body.as_object_mut().expect("a json object");
            if let Some(d) = duration {
                obj.insert("duration_s".into(), json!(d));
            }
            if let Some(q) = quality_min {
                obj.insert("quality_min".into(), json!(q));
            }
            for (k, v) in [
                ("priority", priority),
                ("backend", backend),
                ("image_url", image_url),
                ("over_budget", over_budget),
            ] {
                if let Some(v) = v {
                    obj.insert(k.into(), json!(v));
                }
            }
            if let Some(m) = metadata {
                let m: Value = serde_json::from_str(&m).context("--metadata is not valid JSON")?;
                obj.insert("metadata".into(), m);
            }
            let mut req = http.post(format!("{base}/v1/jobs")).json(&body);
            if let Some(k) = idempotency_key {
                req = req.header("Idempotency-Key", k);
            }
            let job = send(req).await?;
            if follow {
                let id = job["id"]
                    .as_str()
                    .context("the API answered without an id")?
                    .to_owned();
                eprintln!("submitted {id}");
                return watch(&http, base, &id).await;
            }
            print_json(&job);
        }
        JobsCommand::Get { id } => {
            print_json(&send(http.get(format!("{base}/v1/jobs/{id}"))).await?)
        }
        JobsCommand::List {
            status,
            limit,
            cursor,
        } => {
            let mut q: Vec<(&str, String)> = Vec::new();
            if let Some(s) = status {
                q.push(("status", s));
            }
            if let Some(l) = limit {
                q.push(("limit", l.to_string()));
            }
            if let Some(c) = cursor {
                q.push(("cursor", c));
            }
            print_json(&send(http.get(format!("{base}/v1/jobs")).query(&q)).await?);
        }
        JobsCommand::Cancel { id } => {
            print_json(&send(http.post(format!("{base}/v1/jobs/{id}/cancel"))).await?)
        }
        JobsCommand::Watch { id } => return watch(&http, base, &id).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// Today's budget and alerts.
#[derive(Subcommand)]
pub enum BudgetCommand {
    /// Shows today's limit, reserved, spent and remaining money, and the estimates per backend.
    Show,
    /// Sets today's limit, at once for the whole fleet (needs AIPROD_ADMIN_TOKEN).
    SetLimit {
        /// The new limit in dollars, such as 150 or 99.50.
        usd: String,
    },
    /// Lists alerts, newest first.
    Alerts {
        /// Only the open ones.
        #[arg(long)]
        open: bool,
    },
}

/// Runs a budget subcommand against the API at `base`.
pub async fn run_budget(
    cmd: BudgetCommand,
    base: &str,
    credential: &SecretString,
) -> anyhow::Result<ExitCode> {
    let http = http_client(credential)?;
    let base = base.trim_end_matches('/');
    match cmd {
        BudgetCommand::Show => print_json(&send(http.get(format!("{base}/v1/budget"))).await?),
        BudgetCommand::SetLimit { usd } => {
            let limit: aiprod_domain::Money = usd
                .parse()
                .with_context(|| format!("the limit `{usd}` is not an amount of dollars"))?;
            let req = http
                .put(format!("{base}/v1/budget"))
                .json(&json!({"limit_usd": limit}));
            print_json(&send(req).await?);
        }
        BudgetCommand::Alerts { open } => {
            let req = http
                .get(format!("{base}/v1/alerts"))
                .query(&[("open", open.to_string())]);
            print_json(&send(req).await?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// Sends a request; a problem+json answer becomes a one-line error.
async fn send(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let resp = req
        .send()
        .await
        .context("cannot reach the API (is `aiprod dev` or `aiprod api` running?)")?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let detail = body["detail"].as_str().unwrap_or("no detail");
    let mut line = format!("HTTP {}: {detail}", status.as_u16());
    if let (Some(f), Some(r)) = (body["field"].as_str(), body["rule"].as_str()) {
        line.push_str(&format!(" (field `{f}`, rule `{r}`)"));
    }
    anyhow::bail!(line)
}

/// Polls a job until it ends, drawing the nine stages as a bar.
async fn watch(http: &reqwest::Client, base: &str, id: &str) -> anyhow::Result<ExitCode> {
    let tty = std::io::stderr().is_terminal();
    let bar = ProgressBar::new(Stage::ALL.len() as u64);
    if tty {
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:27}] {pos}/{len} {msg} ({elapsed})")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut last = String::new();
    loop {
        let job = send(http.get(format!("{base}/v1/jobs/{id}"))).await?;
        let done = job["stages"]
            .as_array()
            .map(|s| s.iter().filter(|s| s["status"] == "succeeded").count())
            .unwrap_or(0);
        let status = job["status"]
            .as_str()
            .and_then(|s| s.parse::<JobStatus>().ok())
            .context("the API answered a job without a status")?;
        let stage = job["stage"].as_str().unwrap_or("-").to_owned();
        bar.set_position(done as u64);
        bar.set_message(format!("{status} · {stage}"));
        let line = format!("{status} {done}/{} {stage}", Stage::ALL.len());
        if !tty && line != last {
            eprintln!("{id}: {line}");
        }
        last = line;
        match status {
            JobStatus::Succeeded => {
                bar.finish_with_message(format!(
                    "succeeded · {}",
                    job["result_uri"].as_str().unwrap_or("")
                ));
                println!("{}", serde_json::to_string(&job).unwrap_or_default());
                return Ok(ExitCode::SUCCESS);
            }
            JobStatus::Failed | JobStatus::Canceled => {
                let why = job["error"].as_str().unwrap_or("").to_owned();
                bar.abandon_with_message(format!("{status} {why}"));
                eprintln!(
                    "aiprod: job {id} {status}{}",
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(": {why}")
                    }
                );
                return Ok(ExitCode::FAILURE);
            }
            JobStatus::Queued | JobStatus::Running | JobStatus::WaitingBudget => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
        }
    }
}
