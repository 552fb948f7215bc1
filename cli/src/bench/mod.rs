//! `aiprod bench`: end-to-end throughput on a fresh database of its own (dropped afterwards).
//! It runs a warm-up job to the end, then enqueues N jobs over HTTP with zero simulated latency
//! and drains them with W job slots, in this process or in P worker processes, and prints one
//! JSON line.
//!
//! Every job runs the whole pipeline with real media: simulated Runway clips (cached by what
//! they show, so every job asks for the same shots), technical QA of each clip, and assembly,
//! which takes the fast path (the clips match the output profile, so they are joined without
//! re-encoding). The CPU time of every ffmpeg and ffprobe the run waited for is reported per
//! minute of video produced. With `--media once` each distinct file goes through the tools
//! once and later jobs reuse the readings, which takes the media CPU out of the figure.

mod client;
mod drain;
pub(crate) mod figures;
mod processes;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use aiprod_platform::Settings;
use clap::Args;
use secrecy::SecretString;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use self::client::BenchClient;
use self::drain::Drainer;
use self::figures::{CommitCounter, Settle, round};
use crate::commands::{parts, worker_context};
use crate::database;

/// Benchmark sizes.
#[derive(Args)]
pub struct BenchArgs {
    /// Jobs to enqueue and drain.
    #[arg(long, default_value_t = 2000)]
    jobs: usize,
    /// Concurrent job slots of the worker (of each worker process with --processes).
    #[arg(long, default_value_t = 8)]
    workers: u32,
    /// Drain with this many `aiprod worker` processes (each with --workers slots) instead of a
    /// worker inside the bench process. The API and scheduler stay in the bench process.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    processes: Option<u32>,
    /// Concurrent HTTP clients while enqueueing.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Where the run's artifacts go (a fresh directory below it, removed afterwards), with its
    /// scratch files unless `AIPROD_MEDIA_SCRATCH_DIR` is set. Default: the system temp
    /// directory. A tmpfs such as /dev/shm takes the file system out of the measurement.
    #[arg(long)]
    artifact_dir: Option<std::path::PathBuf>,
    /// Instead: hold this many jobs in render at once in one worker (`bench_inflight`).
    #[arg(long)]
    in_flight: Option<usize>,
    /// With --in-flight: how long each simulated render takes, in seconds.
    #[arg(long, default_value_t = 60)]
    render_s: u64,
    /// `real`: every job's clips go through ffprobe and ffmpeg. `once`: each distinct file
    /// does, and later jobs reuse the readings; every bench job shows the same clips, so the
    /// figure is the orchestration's (queue, ledger, render protocol, checkpoints, semantic
    /// QA's calls), as a job queue's bench measures. Needs the in-process worker.
    #[arg(long, value_enum, default_value_t = MediaMode::Real)]
    media: MediaMode,
    /// Jobs run to the end before the measured ones are enqueued, outside every figure but
    /// `warm_up_s`: the simulated providers make their clip and keyframe once per run (one
    /// ffmpeg each, seconds that every slot waits for), which a provider makes on its own
    /// machines; with `--media once` the first readings of each file are made there too.
    #[arg(long, default_value_t = 1)]
    warm_up: usize,
}

/// How the bench's media work is done.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MediaMode {
    /// Every job's files are read by the tools.
    Real,
    /// Each distinct file is read once (`aiprod_media::Media::remembering`).
    Once,
}

/// Runs the benchmark; `config` is the settings file given to this command, which worker
/// processes read too.
pub async fn run(
    args: BenchArgs,
    mut settings: Settings,
    config: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    if let Some(n) = args.in_flight {
        return crate::bench_inflight::run(n, args.render_s, settings).await;
    }
    anyhow::ensure!(
        args.jobs > 0 && args.workers > 0,
        "--jobs and --workers must be at least 1"
    );
    anyhow::ensure!(
        args.media == MediaMode::Real || args.processes.is_none(),
        "--media once needs the in-process worker: leave out --processes"
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
    let url = aiprod_store::db::with_database(&server, &name);
    settings.database_url = Some(SecretString::from(url.clone()));
    settings.worker.worker_concurrency = args.workers;
    settings.backends.sim_latency = Duration::ZERO;
    // The ledger is on the measured path, but the run must never wait for money.
    settings.budget.daily_budget_usd = aiprod_domain::Money::from_usd(1_000_000_000);
    settings.artifact_dir = artifacts.clone();
    // Scratch files on the artifacts' file system unless set: every clip moves between the
    // two, and with only the artifacts on a tmpfs each move still paid for a disk file
    // system's bookkeeping. Below the run's own directory, so the run leaves nothing behind;
    // the simulated clip cached there is made once per run (one ffmpeg: its askers wait).
    if args.artifact_dir.is_some() && settings.media.media_scratch_dir.is_none() {
        settings.media.media_scratch_dir = Some(artifacts.join("scratch"));
    }
    settings.db_max_connections = settings.db_max_connections.max(args.workers + 16);
    let drainer = match args.processes {
        None => Drainer::InProcess,
        Some(count) => Drainer::Processes {
            count,
            env: processes::worker_env(&settings, &url),
            config,
        },
    };
    // SIGTERM or Ctrl-C ends the run as a failure does: the worker processes are killed (on
    // drop) and the database and artifacts removed, rather than left behind.
    let interrupted = aiprod_platform::shutdown::on_signal();
    let result = tokio::select! {
        r = measure(&args, settings, drainer, &server, &name) => r,
        () = interrupted.cancelled() => Err(anyhow::anyhow!("interrupted")),
    };
    let _ = std::fs::remove_dir_all(&artifacts);
    if let Err(e) = database::drop_database(&server, &name).await {
        tracing::warn!(error = %e, "cannot drop the bench database {name}");
    }
    println!("{}", result?);
    Ok(ExitCode::SUCCESS)
}

async fn measure(
    args: &BenchArgs,
    settings: Settings,
    drainer: Drainer,
    server: &str,
    name: &str,
) -> anyhow::Result<serde_json::Value> {
    let artifact_root = settings
        .artifact_dir
        .parent()
        .map(|p| p.display().to_string());
    let mut commits = CommitCounter::connect(server, name).await?;
    let p = parts(settings, false, true, aiprod_store::db::Plans::Generic).await?;
    let mut ctx = worker_context(&p, true).await?;
    if args.media == MediaMode::Once {
        ctx.media = aiprod_media::Media::remembering(&p.settings.media)?;
    }
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

    let client = BenchClient::new(&p, addr).await?;

    // Phase 0: the warm-up, drained by workers that are then stopped, so that the measured
    // enqueue runs with no worker, as before.
    let t = Instant::now();
    let warm: Vec<uuid::Uuid> = if args.warm_up > 0 {
        client.enqueue(0..args.warm_up, args.clients).await?;
        let mut drain = drainer.start(ctx.clone())?;
        wait_for(&p.pool, args.warm_up as i64, &mut drain).await?;
        drain.stop().await?;
        // Every job so far is the warm-up's. One that failed would leave the fixture to the
        // measured drain, whose figures would then say what they did before the warm-up.
        let warm = sqlx::query_scalar!(r#"select id as "id!" from job where status = 'succeeded'"#)
            .fetch_all(&p.pool)
            .await?;
        anyhow::ensure!(
            warm.len() == args.warm_up,
            "only {} of {} warm-up jobs succeeded",
            warm.len(),
            args.warm_up
        );
        warm
    } else {
        Vec::new()
    };
    let warm_up_s = t.elapsed().as_secs_f64();

    // Phase 1: enqueue over HTTP.
    let t0 = Instant::now();
    client
        .enqueue(args.warm_up..args.warm_up + args.jobs, args.clients)
        .await?;
    let enqueue_s = t0.elapsed().as_secs_f64();

    // Phase 2: drain with W slots, here or in P processes.
    let commits0 = commits.settled(Settle::Idle).await?;
    let t1 = Instant::now();
    let mut drain = drainer.start(ctx)?;
    let total = args.jobs as i64;
    let polls = wait_for(&p.pool, warm.len() as i64 + total, &mut drain).await?;
    let drain_s = t1.elapsed().as_secs_f64();
    let usage = drain.stop().await?;
    stop.cancel();
    let _ = tokio::join!(api, sched);

    let r = sqlx::query!(
        r#"select (select count(*) from job where status = 'succeeded' and id <> all($1))
                      as "succeeded!",
                  (select count(*) from job_stage where status = 'succeeded'
                      and job_id <> all($1)) as "checkpoints!",
                  (select count(*) from job_stage
                    where stage = 'finalize' and output->'assembly'->>'path' = 'copy'
                      and job_id <> all($1)) as "copied!",
                  coalesce(percentile_cont(0.5) within group (
                      order by extract(epoch from finished_at - started_at)::float8 * 1000), 0)
                      as "p50!",
                  coalesce(percentile_cont(0.99) within group (
                      order by extract(epoch from finished_at - started_at)::float8 * 1000), 0)
                      as "p99!"
             from job
            where id <> all($1)"#,
        &warm
    )
    .fetch_one(&p.pool)
    .await?;
    p.close().await;
    // The query above is one more commit of the harness.
    let engine_commits = commits.settled(Settle::Closed).await? - commits0 - polls - 1;
    anyhow::ensure!(
        r.succeeded == total,
        "only {} of {total} jobs succeeded",
        r.succeeded
    );
    let output_min = total as f64 * f64::from(BENCH_SECONDS) / 60.0;
    let processes = args.processes.unwrap_or(0);
    Ok(json!({
        "jobs": total,
        "workers": args.workers,
        // 0: the worker ran inside the bench process.
        "processes": processes,
        "slots": args.workers * processes.max(1),
        "enqueue_per_s": round(total as f64 / enqueue_s, 1),
        "warm_up_s": round(warm_up_s, 2),
        "drain_s": round(drain_s, 2),
        "jobs_per_s": round(total as f64 / drain_s, 1),
        "checkpoints_per_s": round(r.checkpoints as f64 / drain_s, 1),
        "commits_per_job": round(engine_commits as f64 / total as f64, 2),
        "p50_ms": round(r.p50, 1),
        "p99_ms": round(r.p99, 1),
        "worker_rss_mib": round(usage.rss_peak_mib, 1),
        "worker_rss_mib_sum": round(usage.rss_sum_mib, 1),
        // Jobs whose shots were joined without re-encoding (the fast path).
        "assembled_by_copy": r.copied,
        "worker_cpu_s_per_output_min": round(usage.worker_cpu_s / output_min, 1),
        // ffmpeg and ffprobe (the workers' only child processes) per minute of final video.
        "media_cpu_s_per_output_min": round(usage.media_cpu_s / output_min, 1),
        "artifact_dir": artifact_root,
        "media": match args.media {
            MediaMode::Real => "real",
            MediaMode::Once => "once",
        },
    }))
}

/// Counts the finished jobs until `total` are, while `drain` runs. Returns the polls made:
/// each is one commit on the bench database, the harness's, taken out of the figure.
async fn wait_for(
    pool: &sqlx::PgPool,
    total: i64,
    drain: &mut drain::Drain,
) -> anyhow::Result<i64> {
    let t = Instant::now();
    let mut polls = 0i64;
    loop {
        // The terminal statuses once per poll, not once per job row: the poll runs beside the
        // measured work and must stay out of its way.
        let done = sqlx::query_scalar!(
            r#"select count(*) as "done!" from job
                where status in (select s from unnest(enum_range(null::job_status)) s
                                  where job_status_is_terminal(s))"#
        )
        .fetch_one(pool)
        .await?;
        polls += 1;
        if done >= total {
            return Ok(polls);
        }
        drain.check_running().await?;
        tokio::time::sleep(poll_wait(done, total, t.elapsed())).await;
    }
}

/// The length of every bench job, seconds.
const BENCH_SECONDS: u32 = 5;

/// How long the drain waits before it counts the finished jobs again: an eighth of the time
/// the rest should take at the rate so far, between 20 and 100 ms. Each count reads the whole
/// job table (a millisecond of the server's CPU at 2,000 jobs); every 20 ms it was 5 % of a
/// core beside the measured work. The end is still seen within 20 ms of when it comes unless
/// the last jobs finish eight times faster than the run's average, and within 100 ms always.
fn poll_wait(done: i64, total: i64, elapsed: Duration) -> Duration {
    const FIRST: Duration = Duration::from_millis(20);
    const MOST: Duration = Duration::from_millis(100);
    if done <= 0 {
        return FIRST;
    }
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
    let rest = (total - done).max(0) as f64 / rate;
    Duration::from_secs_f64(rest / 8.0).clamp(FIRST, MOST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_counts_often_only_near_the_end() {
        let ms = |d: Duration| d.as_millis();
        // 100 done in 1 s of 2,000: 19 s to go, counted every 100 ms.
        assert_eq!(ms(poll_wait(100, 2000, Duration::from_secs(1))), 100);
        // 1,990 done in 10 s: 50 ms to go, counted every 20 ms.
        assert_eq!(ms(poll_wait(1990, 2000, Duration::from_secs(10))), 20);
        // 1,920 done in 10 s: 417 ms to go, an eighth of it.
        assert_eq!(ms(poll_wait(1920, 2000, Duration::from_secs(10))), 52);
        assert_eq!(ms(poll_wait(0, 2000, Duration::from_secs(3))), 20);
    }
}
