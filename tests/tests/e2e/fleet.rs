//! Fifty jobs through real processes, on the PostgreSQL queue and on Pub/Sub (the emulator),
//! with a worker killed while it holds jobs: every job succeeds, the reaper rescues the killed
//! worker's jobs, and no stage that had finished runs again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aiprod_platform::config::QueueSettings;
use aiprod_testkit::TestDb;
use aiprod_testkit::emulator::pubsub::{TEST_PROJECT, pubsub_emulator};
use aiprod_tests::{Proc, Scratch, free_port, keyed, tenant_key, wait_ready};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{base_env, wait_all_terminal};

/// Timestamps come back from Postgres as text, compared exactly.
type Stamp = String;

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
        // Fifty Runway jobs cost more than the default day.
        ("AIPROD_DAILY_BUDGET_USD", "100000".to_owned()),
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
        &[
            "api",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--ops-listen",
            "127.0.0.1:0",
        ],
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
    let http = keyed(&tenant_key(&pool, "e2e").await?)?;

    let mut ids = Vec::new();
    for i in 0..50 {
        // One prompt and a few lengths: the simulated clips come from the cache, and Runway's
        // clips match the output profile, so the media work is a check and a copy-join per job
        // (this test is about the queue; the media tests are elsewhere).
        let body = json!({"prompt": "A fox runs through snow. It leaps.", "duration_s": 2 + (i % 5),
                          "backend": "runway", "metadata": {"n": i}});
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

    wait_all_terminal(&pool, 50, Duration::from_secs(420))
        .await
        .map_err(|e| {
            e.context(format!(
                "scheduler: {}\nworker-b: {}",
                sched.tail(),
                survivor.tail()
            ))
        })?;

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
    // The killed worker's jobs were rescued by the reaper, and re-ran only what was in flight.
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
    // At most two starts more per held job: the stage in flight, and one more when a stage
    // that ran while its predecessor's checkpoint committed (`render` behind `financial`'s,
    // or a free stage) was lost with it, or a killed try of `render` was taken over first.
    // CI saw exactly two per held job in both fleet tests; runs here saw one or fewer.
    assert!(
        extra >= 1 && extra <= 2 * held_at_kill.len() as i64,
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
