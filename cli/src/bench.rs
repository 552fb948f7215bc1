//! `aiprod bench`: end-to-end throughput on a fresh database of its own (dropped afterwards).
//! It enqueues N jobs over HTTP with zero simulated latency, then drains them with W job slots
//! in this process, and prints one JSON line.
//!
//! Every job runs the whole pipeline with real media: simulated Runway clips (cached by what
//! they show, so every job asks for the same shots), technical QA of each clip, and assembly,
//! which takes the fast path (the clips match the output profile, so they are joined without
//! re-encoding). The CPU time of every ffmpeg and ffprobe the run waited for is reported per
//! minute of video produced.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aiprod_platform::Settings;
use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::commands::{parts, worker_context};
use crate::database;

/// Benchmark sizes.
#[derive(Args)]
pub struct BenchArgs {
    /// Jobs to enqueue and drain.
    #[arg(long, default_value_t = 2000)]
    jobs: usize,
    /// Concurrent job slots of the worker.
    #[arg(long, default_value_t = 8)]
    workers: u32,
    /// Concurrent HTTP clients while enqueueing.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Where the run's artifacts go (a fresh directory below it, removed afterwards). Default:
    /// the system temp directory. A tmpfs such as /dev/shm takes the file system out of the
    /// measurement.
    #[arg(long)]
    artifact_dir: Option<std::path::PathBuf>,
    /// Instead: hold this many jobs in render at once in one worker (`bench_inflight`).
    #[arg(long)]
    in_flight: Option<usize>,
    /// With --in-flight: how long each simulated render takes, in seconds.
    #[arg(long, default_value_t = 60)]
    render_s: u64,
}

/// Runs the benchmark.
pub async fn run(args: BenchArgs, mut settings: Settings) -> anyhow::Result<ExitCode> {
    if let Some(n) = args.in_flight {
        return crate::bench_inflight::run(n, args.render_s, settings).await;
    }
    anyhow::ensure!(
        args.jobs > 0 && args.workers > 0,
        "--jobs and --workers must be at least 1"
    );
    // Kept until the end: a private cluster is stopped when this is dropped (unless a `dev`
    // uses it too).
    let base = database::resolve(&settings, true).await?;
    let server = base.server();
    let name = format!("aiprod_bench_{}", uuid::Uuid::new_v4().simple());
    database::ensure_database(&server, &name).await?;
    let artifacts = args
        .artifact_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(&name);
    settings.database_url = Some(SecretString::from(aiprod_store::db::with_database(
        &server, &name,
    )));
    settings.worker.worker_concurrency = args.workers;
    settings.backends.sim_latency = Duration::ZERO;
    // The ledger is on the measured path, but the run must never wait for money.
    settings.budget.daily_budget_usd = aiprod_domain::Money::from_usd(1_000_000_000);
    settings.artifact_dir = artifacts.clone();
    settings.db_max_connections = settings.db_max_connections.max(args.workers + 16);
    let result = measure(&args, settings).await;
    let _ = std::fs::remove_dir_all(&artifacts);
    if let Err(e) = database::drop_database(&server, &name).await {
        tracing::warn!(error = %e, "cannot drop the bench database {name}");
    }
    println!("{}", result?);
    Ok(ExitCode::SUCCESS)
}

async fn measure(args: &BenchArgs, settings: Settings) -> anyhow::Result<serde_json::Value> {
    let artifact_root = settings
        .artifact_dir
        .parent()
        .map(|p| p.display().to_string());
    let p = parts(settings, false, true).await?;
    let ctx = worker_context(&p, true).await?;
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let api = tokio::spawn(aiprod_api::serve(
        listener,
        p.app_state(Some(ctx.store.clone())),
        stop.clone(),
    ));
    let sched = tokio::spawn(aiprod_scheduler::run(
        p.leader_parts(aiprod_backends::Fleet::empty()),
        stop.clone(),
    ));

    // Phase 1: enqueue over HTTP, as a tenant whose limits are far above the run's.
    let unlimited = aiprod_store::TenantLimits {
        rate_per_minute: 1_000_000,
        max_in_flight: 1_000_000,
        ..aiprod_store::TenantLimits::default()
    };
    let tenant = aiprod_store::create_tenant(&p.pool, "bench", &unlimited)
        .await?
        .context("the bench database already has a bench tenant")?;
    let key = aiprod_store::keys::NewKey::generate();
    let scopes = [aiprod_domain::Scope::JobsWrite];
    aiprod_store::insert_api_key(&p.pool, tenant.id, &key.prefix, &key.hash, "bench", &scopes)
        .await?;
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", key.secret.expose_secret()).parse()?,
    );
    let http = reqwest::Client::builder().default_headers(auth).build()?;
    let endpoint = Arc::new(format!("http://{addr}/v1/jobs"));
    let t0 = Instant::now();
    let results: Vec<anyhow::Result<()>> =
        futures::stream::iter(0..args.jobs)
            .map(|i| {
                let (http, endpoint) = (http.clone(), endpoint.clone());
                async move {
                    let r = http
                    .post(endpoint.as_str())
                    // One prompt for all: the simulated clips come from the media cache after
                    // the first job, so the run measures the pipeline, not the clip generator.
                    // The render cache is off: every job renders its shots, as distinct
                    // prompts would.
                    .json(&json!({"prompt": "A fox runs through snow.", "duration_s": BENCH_SECONDS,
                                  "backend": "runway", "cache": false,
                                  "metadata": {"bench": i}}))
                    .send()
                    .await?;
                    anyhow::ensure!(
                        r.status().as_u16() == 202,
                        "enqueue answered {}",
                        r.status()
                    );
                    Ok(())
                }
            })
            .buffer_unordered(args.clients)
            .collect()
            .await;
    let enqueue_s = t0.elapsed().as_secs_f64();
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;

    // Phase 2: drain with W slots.
    let cpu0 = children_cpu_s();
    let t1 = Instant::now();
    let worker = tokio::spawn(aiprod_worker::run(ctx, stop.clone()));
    let total = args.jobs as i64;
    loop {
        // The terminal statuses once per poll, not once per job row: the poll runs every 20 ms
        // beside the measured work and must stay out of its way.
        let done = sqlx::query_scalar!(
            r#"select count(*) as "done!" from job
                where status in (select s from unnest(enum_range(null::job_status)) s
                                  where job_status_is_terminal(s))"#
        )
        .fetch_one(&p.pool)
        .await?;
        if done >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_s = t1.elapsed().as_secs_f64();
    let media_cpu_s = children_cpu_s() - cpu0;
    stop.cancel();
    let _ = tokio::join!(api, sched, worker);

    let r = sqlx::query!(
        r#"select (select count(*) from job where status = 'succeeded') as "succeeded!",
                  (select count(*) from job_stage where status = 'succeeded') as "checkpoints!",
                  (select count(*) from job_stage
                    where stage = 'finalize' and output->'assembly'->>'path' = 'copy')
                      as "copied!",
                  coalesce(percentile_cont(0.5) within group (
                      order by extract(epoch from finished_at - started_at)::float8 * 1000), 0)
                      as "p50!",
                  coalesce(percentile_cont(0.99) within group (
                      order by extract(epoch from finished_at - started_at)::float8 * 1000), 0)
                      as "p99!"
             from job"#
    )
    .fetch_one(&p.pool)
    .await?;
    let (succeeded, checkpoints, p50, p99) = (r.succeeded, r.checkpoints, r.p50, r.p99);
    let copied = r.copied;
    p.close().await;
    anyhow::ensure!(
        succeeded == total,
        "only {succeeded} of {total} jobs succeeded"
    );
    Ok(json!({
        "jobs": total,
        "workers": args.workers,
        "enqueue_per_s": round(total as f64 / enqueue_s),
        "jobs_per_s": round(total as f64 / drain_s),
        "checkpoints_per_s": round(checkpoints as f64 / drain_s),
        "p50_ms": round(p50),
        "p99_ms": round(p99),
        "worker_rss_mib": round(peak_rss_mib()),
        // Jobs whose shots were joined without re-encoding (the fast path).
        "assembled_by_copy": copied,
        // ffmpeg and ffprobe (the only child processes) per minute of final video.
        "media_cpu_s_per_output_min": round(media_cpu_s / (total as f64 * f64::from(BENCH_SECONDS) / 60.0)),
        "artifact_dir": artifact_root,
    }))
}

/// The length of every bench job, seconds.
const BENCH_SECONDS: u32 = 5;

/// CPU seconds (user and system) of this process's waited-for children: fields 16 and 17 of
/// /proc/self/stat, in clock ticks (100 a second on Linux).
fn children_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name, in parentheses, may hold spaces: count fields after it.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the name, field 3 (state) is index 0; cutime is field 16, cstime 17.
    let tick = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(16) + tick(17)) / 100.0
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The peak resident set of this process (API, scheduler and worker together), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
