//! `aiprod bench --in-flight N --render-s S`: what jobs in flight cost one worker. On a fresh
//! database of its own (dropped afterwards), N jobs are placed at the `render` stage (their
//! earlier stages copied from one job that ran the whole pipeline first), and one worker with
//! N slots renders them on simulated Runway, whose renders take S seconds. Once all N are
//! rendering at once (or the first renders could end), the run holds for a lease TTL and a
//! bit, so that renewals are exercised, then stops the worker and prints one JSON line:
//! how many were rendering at once, the process's resident memory (peak, and per job in
//! flight), its CPU in cores over the hold, and how its leases were kept.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use aiprod_domain::{JobId, JobSpec, TenantId};
use aiprod_platform::Settings;
use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use secrecy::SecretString;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

use crate::commands::{Parts, parts, worker_context};
use crate::database;

/// Runs the benchmark: `n` jobs in render at once, renders of `render_s` seconds.
pub async fn run(n: usize, render_s: u64, mut settings: Settings) -> anyhow::Result<ExitCode> {
    // The worker's warnings (`RUST_LOG=warn`) say what went wrong at the ramp, on stderr.
    aiprod_platform::telemetry::init(settings.log_format);
    anyhow::ensure!(
        (1..=20_000).contains(&n) && render_s > 0,
        "--in-flight must be 1–20000 and --render-s at least 1"
    );
    let base = database::resolve(&settings, true).await?;
    let server = base.server();
    let name = format!("aiprod_bench_{}", uuid::Uuid::new_v4().simple());
    database::ensure_database(&server, &name).await?;
    let artifacts = std::env::temp_dir().join(&name);
    settings.database_url = Some(SecretString::from(aiprod_store::db::with_database(
        &server, &name,
    )));
    settings.worker.worker_concurrency = u32::try_from(n)?;
    settings.budget.daily_budget_usd = aiprod_domain::Money::from_usd(1_000_000_000);
    settings.artifact_dir = artifacts.clone();
    // Renders never end within the grace: the worker stops them at once and hands them back.
    settings.worker.shutdown_grace = Duration::from_secs(1);
    let result = measure(n, render_s, settings).await;
    let _ = std::fs::remove_dir_all(&artifacts);
    if let Err(e) = database::drop_database(&server, &name).await {
        tracing::warn!(error = %e, "cannot drop the bench database {name}");
    }
    println!("{}", result?);
    Ok(ExitCode::SUCCESS)
}

async fn measure(n: usize, render_s: u64, settings: Settings) -> anyhow::Result<serde_json::Value> {
    let ttl = settings.worker.lease_ttl;
    let render = Duration::from_secs(render_s);
    let p = parts(settings, false, true, aiprod_store::db::Plans::Generic).await?;
    let tenant = aiprod_store::create_tenant(&p.pool, "bench", &unlimited())
        .await?
        .context("the bench database already has a bench tenant")?;
    let (p, template) = run_template(p, tenant.id).await?;
    place_at_render(&p, tenant.id, template, n).await?;
    let relayed = aiprod_scheduler::relay_once(&p.pool, p.queue.as_ref()).await?;
    anyhow::ensure!(relayed == n, "relayed {relayed} of {n} dispatches");

    let mut with_latency = (*p.settings).clone();
    with_latency.backends.sim_latency = render;
    let p = Parts {
        settings: std::sync::Arc::new(with_latency),
        ..p
    };
    let ctx = worker_context(&p, true).await?;
    // The bench's own connection: its samples must not queue behind the worker's statements.
    let probe = PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*p.pool.connect_options()).clone())
        .await?;
    let rss_before = rss_mib("VmRSS:");
    let stop = CancellationToken::new();
    let t0 = Instant::now();
    let worker = tokio::spawn(aiprod_worker::run(ctx.clone(), stop.clone()));

    // Ramp: until all N render at once, or the first renders could be ending.
    let mut s = Sample::default();
    let ramp_limit = render
        .saturating_sub(ttl + ttl / 2)
        .max(Duration::from_secs(1));
    while s.in_render < n as i64 && t0.elapsed() < ramp_limit {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s = s.next(&probe).await?;
    }
    let ramp_s = t0.elapsed().as_secs_f64();

    // Hold: at least one full TTL, so every lease is renewed at least three times.
    let hold = ttl + ttl / 4;
    let cpu0 = cpu_s();
    let t1 = Instant::now();
    let mut least_in_render = s.in_render;
    let mut rss_hold = 0f64;
    while t1.elapsed() < hold {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s = s.next(&probe).await?;
        least_in_render = least_in_render.min(s.in_render);
        rss_hold = rss_hold.max(rss_mib("VmRSS:"));
    }
    let hold_s = t1.elapsed().as_secs_f64();
    let cores = (cpu_s() - cpu0) / hold_s;
    let leases = ctx.lease_stats();
    let lost = aiprod_platform::metrics::Metrics::global()
        .leases_lost
        .get();

    let t2 = Instant::now();
    stop.cancel();
    drop(ctx);
    worker.await.context("the worker panicked")??;
    let stop_s = t2.elapsed().as_secs_f64();
    probe.close().await;
    p.close().await;
    Ok(json!({
        "in_flight": s.most_in_render,
        "asked": n,
        "render_s": render_s,
        "ramp_s": round(ramp_s),
        "hold_s": round(hold_s),
        "least_in_render_during_hold": least_in_render,
        "peak_rss_mib": round(rss_mib("VmHWM:")),
        "rss_before_worker_mib": round(rss_before),
        "rss_kib_per_job_in_flight": round((rss_hold - rss_before) * 1024.0 / n as f64),
        "cpu_cores_during_hold": (cores * 1000.0).round() / 1000.0,
        "leases_lost": lost,
        "leases_expired_seen": s.most_expired,
        "lease_ttl_ms": ttl.as_millis() as u64,
        "lease_renewals": leases.renewals,
        "lease_longest_gap_ms": leases.longest_gap.as_millis() as u64,
        "lease_longest_renewal_ms": leases.longest_renewal.as_millis() as u64,
        "lease_least_left_ms": s.least_left_ms,
        "stop_s": round(stop_s),
    }))
}

fn unlimited() -> aiprod_store::TenantLimits {
    aiprod_store::TenantLimits {
        rate_per_minute: 1_000_000,
        max_in_flight: 1_000_000,
        ..aiprod_store::TenantLimits::default()
    }
}

/// The one prompt of every job; `cache: false` so that each job renders its own shot.
fn spec() -> anyhow::Result<JobSpec> {
    JobSpec::parse(
        &json!({"prompt": "A fox runs through snow.", "duration_s": 5,
                           "backend": "runway", "cache": false}),
    )
    .map_err(|e| anyhow::anyhow!("the bench's job is refused: {e:?}"))
}

/// Runs one job through the whole pipeline with instant renders, for its earlier stages'
/// outputs (plan, keyframe, routing).
async fn run_template(p: Parts, tenant: TenantId) -> anyhow::Result<(Parts, JobId)> {
    let id = JobId::new();
    aiprod_store::insert_job(&p.pool, tenant, id, &spec()?, None).await?;
    aiprod_scheduler::relay_once(&p.pool, p.queue.as_ref()).await?;
    let settings = p.settings.clone();
    let mut instant = (*settings).clone();
    instant.backends.sim_latency = Duration::ZERO;
    let quick = Parts {
        settings: std::sync::Arc::new(instant),
        ..p
    };
    let outcome = match worker_context(&quick, true).await {
        Ok(ctx) => aiprod_worker::run_once(&ctx).await,
        Err(e) => Err(e),
    };
    let p = Parts { settings, ..quick };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            p.close().await;
            return Err(e);
        }
    };
    if outcome != aiprod_worker::Outcome::Worked(Some(aiprod_worker::JobOutcome::Succeeded)) {
        p.close().await;
        anyhow::bail!("the template job did not succeed: {outcome:?}");
    }
    Ok((p, id))
}

/// Accepts `n` jobs, then gives each the template's outputs up to `financial`, so that the
/// worker resumes each at `render`.
async fn place_at_render(
    p: &Parts,
    tenant: TenantId,
    template: JobId,
    n: usize,
) -> anyhow::Result<()> {
    let spec = spec()?;
    futures::stream::iter(0..n)
        .map(|_| aiprod_store::insert_job(&p.pool, tenant, JobId::new(), &spec, None))
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let moved = sqlx::query_scalar!(
        r#"with t as (
               select stage, output from job_stage
                where job_id = $1 and status = 'succeeded' and stage < 'render'
           ), s as (
               insert into job_stage (job_id, stage, status, output, worker, finished_at,
                                      duration_ms)
               select j.id, t.stage, 'succeeded', t.output, 'bench', now(), 0
                 from job j cross join t
                where j.id <> $1 and j.status = 'queued'
           ), m as (
               update job set stage = 'render', updated_at = now()
                where id <> $1 and status = 'queued'
               returning id
           )
           select count(*) as "moved!" from m"#,
        template as JobId,
    )
    .fetch_one(&p.pool)
    .await?;
    anyhow::ensure!(moved == n as i64, "placed {moved} of {n} jobs at render");
    Ok(())
}

/// What the database shows every half second.
#[derive(Default)]
struct Sample {
    /// Renders submitted and not yet ended.
    in_render: i64,
    most_in_render: i64,
    /// The most running jobs seen at once whose lease had expired: what the reaper takes.
    most_expired: i64,
    /// The least time left on any running job's lease, in ms.
    least_left_ms: Option<i64>,
}

impl Sample {
    async fn next(self, pool: &PgPool) -> anyhow::Result<Sample> {
        let r = sqlx::query!(
            r#"select (select count(*) from render_task where state = 'submitted')
                          as "in_render!",
                      count(*) filter (where locked_until < now()) as "expired!",
                      (extract(epoch from min(locked_until) - now()) * 1000)::bigint
                          as least_left_ms
                 from job where status = 'running' and locked_by is not null"#
        )
        .fetch_one(pool)
        .await?;
        Ok(Sample {
            in_render: r.in_render,
            most_in_render: self.most_in_render.max(r.in_render),
            most_expired: self.most_expired.max(r.expired),
            least_left_ms: match (self.least_left_ms, r.least_left_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        })
    }
}

/// CPU seconds (user and system) of this process.
fn cpu_s() -> f64 {
    crate::bench::figures::ProcessUsage::read("self").cpu_s
}

/// A line of /proc/self/status (`VmRSS:` now, `VmHWM:` the peak), in MiB.
fn rss_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(str::to_owned))
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
