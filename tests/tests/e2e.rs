//! End-to-end: real PostgreSQL, real `aiprod` processes, real HTTP.

#![allow(missing_docs)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aiprod_platform::config::QueueSettings;
use aiprod_testkit::TestDb;
use aiprod_testkit::emulator::pubsub::{TEST_PROJECT, pubsub_emulator};
use aiprod_tests::{Proc, Scratch, aiprod_bin, free_port, wait_ready};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

/// Timestamps come back from Postgres as text, compared exactly.
type Stamp = String;

fn base_env(db: &TestDb, dir: &Scratch) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", db.url.clone()),
        (
            "AIPROD_ARTIFACT_DIR",
            dir.0.join("artifacts").display().to_string(),
        ),
        ("AIPROD_SIMULATE_BACKENDS", "true".into()),
        ("AIPROD_LOG_FORMAT", "json".into()),
        ("RUST_LOG", "info".into()),
    ]
}

async fn wait_all_terminal(pool: &PgPool, n: i64, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let done: i64 = sqlx::query_scalar(
            "select count(*) from job where status in ('succeeded', 'failed', 'canceled')",
        )
        .fetch_one(pool)
        .await?;
        if done >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {done} of {n} jobs ended within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Submits a slow job over HTTP and waits until it is rendering; returns its id.
async fn submit_and_wait_for_render(
    http: &reqwest::Client,
    base: &str,
    pool: &PgPool,
) -> anyhow::Result<Uuid> {
    let job: Value = http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"prompt": "A slow river."}))
        .send()
        .await?
        .json()
        .await?;
    let id: Uuid = job["id"].as_str().expect("an id").parse()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stage: Option<String> = sqlx::query_scalar("select stage::text from job where id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
        if stage.as_deref() == Some("render") {
            return Ok(id);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "job {id} never reached render (stage {stage:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_jobs_all_succeed_though_a_worker_is_killed_mid_run() -> anyhow::Result<()> {
    fifty_jobs_and_a_killed_worker("fifty", Vec::new(), &["migrate"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_pubsub_fifty_jobs_all_succeed_though_a_worker_is_killed_mid_run() -> anyhow::Result<()>
{
    let emulator = pubsub_emulator().await?;
    let q = QueueSettings {
        pubsub_ack_deadline: Duration::from_secs(10),
        ..emulator.settings("e2e")
    };
    let env = vec![
        ("AIPROD_QUEUE", "pubsub".to_owned()),
        ("AIPROD_PUBSUB_PROJECT", TEST_PROJECT.to_owned()),
        ("AIPROD_PUBSUB_TOPIC", q.pubsub_topic.clone()),
        ("AIPROD_PUBSUB_SUBSCRIPTION", q.pubsub_subscription.clone()),
        (
            "AIPROD_PUBSUB_DEAD_LETTER_TOPIC",
            q.pubsub_dead_letter_topic.clone(),
        ),
        ("AIPROD_PUBSUB_ACK_DEADLINE_S", "10".to_owned()),
        ("AIPROD_PUBSUB_ENDPOINT", emulator.endpoint().to_owned()),
    ];
    // `migrate --pubsub` creates the topic and subscriptions, as a deployment would.
    fifty_jobs_and_a_killed_worker("fifty-pubsub", env, &["migrate", "--pubsub"]).await
}

/// The same run on either queue: 50 jobs through real processes, one worker killed while it
/// holds jobs; every job succeeds, and no finished stage runs again.
async fn fifty_jobs_and_a_killed_worker(
    tag: &str,
    queue_env: Vec<(&'static str, String)>,
    migrate_args: &[&str],
) -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let dir = Scratch::new(tag)?;
    let port = free_port();
    let mut env = base_env(&db, &dir);
    env.extend([
        ("AIPROD_SIM_LATENCY_MS", "400".to_owned()),
        ("AIPROD_LEASE_TTL_MS", "3000".to_owned()),
        ("AIPROD_REAPER_INTERVAL_MS", "200".to_owned()),
        ("AIPROD_WORKER_CONCURRENCY", "8".to_owned()),
    ]);
    env.extend(queue_env);
    let mut migrate = Proc::start("migrate", migrate_args, &env, &dir.0)?;
    assert_eq!(
        migrate.wait_exit(Duration::from_secs(60))?,
        Some(0),
        "{}",
        migrate.tail()
    );
    let mut api = Proc::start(
        "api",
        &["api", "--listen", &format!("127.0.0.1:{port}")],
        &env,
        &dir.0,
    )?;
    let mut sched = Proc::start(
        "scheduler",
        &["scheduler", "--listen", "127.0.0.1:0"],
        &env,
        &dir.0,
    )?;
    let mut doomed = Proc::start(
        "worker-a",
        &["worker", "--listen", "127.0.0.1:0"],
        &env,
        &dir.0,
    )?;
    let mut survivor = Proc::start(
        "worker-b",
        &["worker", "--listen", "127.0.0.1:0"],
        &env,
        &dir.0,
    )?;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &format!("{base}/readyz"), Duration::from_secs(30)).await?;

    let mut ids = Vec::new();
    for i in 0..50 {
        let body = json!({"prompt": format!("Job {i}. A fox runs through snow. It leaps."), "duration_s": 2 + (i % 11)});
        let r = http
            .post(format!("{base}/v1/jobs"))
            .json(&body)
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 202);
        let job: Value = r.json().await?;
        ids.push(job["id"].as_str().expect("an id").parse::<Uuid>()?);
    }

    // Kill worker A once it holds jobs that have finished at least one stage.
    let mark = format!("%-{}-%", doomed.pid());
    let deadline = Instant::now() + Duration::from_secs(60);
    let held = loop {
        let held: i64 = sqlx::query_scalar(
            "select count(*) from job j where j.locked_by like $1 and j.status = 'running'
                and exists (select 1 from job_stage s where s.job_id = j.id and s.status = 'succeeded')",
        )
        .bind(&mark)
        .fetch_one(&pool)
        .await?;
        if held > 0 {
            break held;
        }
        assert!(
            Instant::now() < deadline,
            "worker A never held a job: {}",
            doomed.tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    doomed.signal("KILL")?;
    doomed.wait_exit(Duration::from_secs(10))?;
    let held_at_kill: Vec<Uuid> =
        sqlx::query_scalar("select id from job where locked_by like $1 and status = 'running'")
            .bind(&mark)
            .fetch_all(&pool)
            .await?;
    assert!(held > 0 && !held_at_kill.is_empty());
    // Everything finished before the kill, exactly as it was.
    let before: Vec<(Uuid, String, Stamp, i32)> = sqlx::query_as(
        "select job_id, stage::text, finished_at::text, attempts from job_stage where status = 'succeeded'",
    )
    .fetch_all(&pool)
    .await?;

    wait_all_terminal(&pool, 50, Duration::from_secs(180)).await?;

    let statuses: Vec<(Uuid, String)> = sqlx::query_as("select id, status::text from job")
        .fetch_all(&pool)
        .await?;
    assert_eq!(statuses.len(), 50);
    for (id, status) in &statuses {
        assert_eq!(status, "succeeded", "job {id}: {}", survivor.tail());
    }
    let per_job: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "select job_id, count(*), count(*) filter (where status = 'succeeded') from job_stage group by job_id",
    )
    .fetch_all(&pool)
    .await?;
    assert_eq!(per_job.len(), 50);
    assert!(
        per_job.iter().all(|(_, n, ok)| *n == 9 && *ok == 9),
        "{per_job:?}"
    );

    // No stage that had finished ran again: its row is untouched.
    let after: HashMap<(Uuid, String), (Stamp, i32)> =
        sqlx::query_as::<_, (Uuid, String, Stamp, i32)>(
            "select job_id, stage::text, finished_at::text, attempts from job_stage",
        )
        .fetch_all(&pool)
        .await?
        .into_iter()
        .map(|(j, s, f, a)| ((j, s), (f, a)))
        .collect();
    assert!(!before.is_empty());
    for (job, stage, finished, attempts) in &before {
        assert_eq!(
            after[&(*job, stage.clone())],
            (finished.clone(), *attempts),
            "stage {stage} of {job} ran again"
        );
    }
    // The killed worker's jobs were rescued by the reaper, and only the stage in flight re-ran.
    let reaped: i64 = sqlx::query_scalar("select count(*) from job where reap_count > 0")
        .fetch_one(&pool)
        .await?;
    assert!(
        reaped >= held_at_kill.len() as i64,
        "reaped {reaped}, held {}",
        held_at_kill.len()
    );
    let extra: i64 =
        sqlx::query_scalar("select coalesce(sum(attempts), 0) - count(*) from job_stage")
            .fetch_one(&pool)
            .await?;
    assert!(
        extra >= 1 && extra <= held_at_kill.len() as i64,
        "extra starts {extra}, held {}",
        held_at_kill.len()
    );
    let all_ids: Vec<Uuid> = statuses.iter().map(|s| s.0).collect();
    assert!(ids.iter().all(|i| all_ids.contains(i)));

    // SIGTERM stops the rest gracefully, with exit code 0.
    for p in [&mut survivor, &mut sched, &mut api] {
        p.signal("TERM")?;
        assert_eq!(
            p.wait_exit(Duration::from_secs(30))?,
            Some(0),
            "{}: {}",
            p.name,
            p.tail()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cancels_a_running_job_and_watch_exits_by_outcome() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let dir = Scratch::new("dev")?;
    let port = free_port();
    let mut env = base_env(&db, &dir);
    env.push(("AIPROD_SIM_LATENCY_MS", "1500".to_owned()));
    let mut dev = Proc::start(
        "dev",
        &["dev", "--listen", &format!("127.0.0.1:{port}")],
        &env,
        &dir.0,
    )?;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&http, &format!("{base}/readyz"), Duration::from_secs(60)).await?;

    // A job canceled while it renders stops before its next stage and ends canceled.
    let id = submit_and_wait_for_render(&http, &base, &pool)
        .await?
        .to_string();
    let r = http
        .post(format!("{base}/v1/jobs/{id}/cancel"))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 202);
    let watch = std::process::Command::new(aiprod_bin()?)
        .args(["jobs", "watch", &id, "--api-url", &base])
        .env_remove("DATABASE_URL")
        .output()?;
    assert_eq!(
        watch.status.code(),
        Some(1),
        "watch of a canceled job must fail"
    );
    let (status, stage_rows): (String, i64) = sqlx::query_as(
        "select status::text, (select count(*) from job_stage where job_id = $1) from job where id = $1",
    )
    .bind(id.parse::<Uuid>()?)
    .fetch_one(&pool)
    .await?;
    assert_eq!(status, "canceled");
    assert_eq!(stage_rows, 6, "render finished, nothing after it started");

    // `jobs submit --watch` of a good job exits 0; of a forbidden prompt, 1.
    let ok = std::process::Command::new(aiprod_bin()?)
        .args([
            "jobs",
            "submit",
            "--prompt",
            "A quick fox.",
            "--duration",
            "2",
            "--watch",
            "--api-url",
            &base,
        ])
        .output()?;
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let done: Value = serde_json::from_slice(&ok.stdout)?;
    assert_eq!(done["status"], "succeeded");
    let bad = std::process::Command::new(aiprod_bin()?)
        .args([
            "jobs",
            "submit",
            "--prompt",
            "nsfw scene",
            "--watch",
            "--api-url",
            &base,
        ])
        .output()?;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("forbidden word"));

    dev.signal("TERM")?;
    assert_eq!(
        dev.wait_exit(Duration::from_secs(30))?,
        Some(0),
        "{}",
        dev.tail()
    );
    Ok(())
}

#[tokio::test]
async fn bad_cli_input_prints_one_line_and_exits_non_zero() -> anyhow::Result<()> {
    let bin = aiprod_bin()?;
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = std::process::Command::new(&bin);
        c.args(args).env_remove("DATABASE_URL");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("aiprod runs")
    };
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["worker"],
            vec![("AIPROD_WORKER_CONCURRENCY", "many")],
            "worker_concurrency",
        ),
        (
            vec!["worker"],
            vec![("AIPROD_WORKER_CONCURRENCY", "0")],
            "AIPROD_WORKER_CONCURRENCY",
        ),
        (vec!["api"], vec![], "DATABASE_URL is not set"),
        (
            vec!["jobs", "get", "x", "--api-url", "http://127.0.0.1:9"],
            vec![],
            "cannot reach the API",
        ),
        (
            vec!["dev", "--config", "/nonexistent.toml"],
            vec![],
            "does not exist",
        ),
    ];
    for (args, env, expected) in cases {
        let out = run(&args, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_stage_in_flight_and_a_restart_completes_the_job() -> anyhow::Result<()>
{
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let dir = Scratch::new("sigterm")?;
    let port = free_port();
    let mut env = base_env(&db, &dir);
    env.push(("AIPROD_SIM_LATENCY_MS", "1500".to_owned()));
    let args = ["dev", "--listen", &format!("127.0.0.1:{port}")];
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");

    let mut first = Proc::start("dev-1", &args, &env, &dir.0)?;
    wait_ready(&http, &format!("{base}/readyz"), Duration::from_secs(60)).await?;
    let id = submit_and_wait_for_render(&http, &base, &pool).await?;
    first.signal("TERM")?;
    assert_eq!(
        first.wait_exit(Duration::from_secs(30))?,
        Some(0),
        "{}",
        first.tail()
    );

    // The render in flight finished and was checkpointed; the job was handed back at once.
    let (status, stage, locked_by): (String, Option<String>, Option<String>) =
        sqlx::query_as("select status::text, stage::text, locked_by from job where id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await?;
    assert_eq!(
        (status.as_str(), stage.as_deref(), locked_by),
        ("running", Some("qa_technical"), None)
    );
    let render: (String, i32) = sqlx::query_as(
        "select status::text, attempts from job_stage where job_id = $1 and stage = 'render'",
    )
    .bind(id)
    .fetch_one(&pool)
    .await?;
    assert_eq!(render, ("succeeded".into(), 1));
    let dispatches: i64 = sqlx::query_scalar(
        "select (select count(*) from outbox where job_id = $1) + (select count(*) from queue_message where job_id = $1)",
    )
    .bind(id)
    .fetch_one(&pool)
    .await?;
    assert_eq!(dispatches, 1, "the job was re-dispatched");

    let mut second = Proc::start("dev-2", &args, &env, &dir.0)?;
    wait_all_terminal(&pool, 1, Duration::from_secs(60)).await?;
    let (status, render_attempts): (String, i32) = sqlx::query_as(
        "select status::text, (select attempts from job_stage where job_id = $1 and stage = 'render') from job where id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await?;
    assert_eq!(
        (status.as_str(), render_attempts),
        ("succeeded", 1),
        "the paid render never ran again"
    );
    second.signal("TERM")?;
    assert_eq!(
        second.wait_exit(Duration::from_secs(30))?,
        Some(0),
        "{}",
        second.tail()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scheduler_processes_open_one_budget_day_and_a_standby_takes_over() -> anyhow::Result<()>
{
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let dir = Scratch::new("two-schedulers")?;
    let mut env = base_env(&db, &dir);
    env.extend([
        ("AIPROD_BUDGET_TIMEZONE", "Pacific/Kiritimati".to_owned()),
        ("AIPROD_BUDGET_TICK_MS", "50".to_owned()),
        ("AIPROD_DAILY_BUDGET_USD", "42.50".to_owned()),
    ]);
    let mut a = Proc::start(
        "scheduler-a",
        &["scheduler", "--listen", "127.0.0.1:0"],
        &env,
        &dir.0,
    )?;
    let mut b = Proc::start(
        "scheduler-b",
        &["scheduler", "--listen", "127.0.0.1:0"],
        &env,
        &dir.0,
    )?;
    let days = || async {
        sqlx::query_as::<_, (String, String, i64)>(
            "select day::text, time_zone, limit_micros from budget_day",
        )
        .fetch_all(&pool)
        .await
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while days().await?.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "no day opened: {}", a.tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Many ticks later, and after the leader dies and the standby leads, still one day.
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.signal("KILL")?;
    a.wait_exit(Duration::from_secs(10))?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let today: String =
        sqlx::query_scalar("select (now() at time zone 'Pacific/Kiritimati')::date::text")
            .fetch_one(&pool)
            .await?;
    let got = days().await?;
    let opened: i64 = sqlx::query_scalar(
        "select count(*) from budget_entry where kind = 'limit' and note = 'day opened'",
    )
    .fetch_one(&pool)
    .await?;
    if got.len() == 2 {
        // The run crossed local midnight: the new day opened once too.
        assert_eq!(opened, 2);
    } else {
        assert_eq!(got, [(today, "Pacific/Kiritimati".to_owned(), 42_500_000)]);
        assert_eq!(opened, 1);
    }
    b.signal("TERM")?;
    assert_eq!(
        b.wait_exit(Duration::from_secs(20))?,
        Some(0),
        "{}",
        b.tail()
    );
    Ok(())
}
