//! Stopping and losing processes: SIGTERM lets the stage in flight finish and hands the job back
//! so a restart completes it without paying for the render again, a worker killed while it
//! assembles the video is resumed without a second POST, and of two scheduler processes only
//! one opens the budget day, the standby taking over when the leader dies.

use std::time::{Duration, Instant};

use aiprod_testkit::TestDb;
use aiprod_tests::stubs::{Provider, Stub};
use aiprod_tests::{Proc, Scratch, dev_key, free_port, keyed, wait_ready};

use crate::{base_env, submit_and_wait_for_render, wait_all_terminal};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_stage_in_flight_and_a_restart_completes_the_job() -> anyhow::Result<()>
{
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let dir = Scratch::new("sigterm")?;
    let port = free_port();
    let mut env = base_env(&db, &dir);
    env.push(("AIPROD_SIM_LATENCY_MS", "1500".to_owned()));
    let args = [
        "dev",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--ops-listen",
        "127.0.0.1:0",
    ];
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");

    let mut first = Proc::start("dev-1", &args, &env, &dir.0)?;
    wait_ready(&http, &format!("{base}/readyz"), Duration::from_secs(60)).await?;
    let http = keyed(&dev_key(&dir.0)?)?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_during_assembly_is_resumed_without_a_second_render() -> anyhow::Result<()>
{
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let dir = Scratch::new("sigkill-assembly")?;
    let runway = Stub::start(Provider::Runway).await;
    // An ffmpeg that, the first time it is asked to join shots, says so and then hangs, so the
    // process can be killed in the middle of assembly.
    let marker = dir.0.join("assembling");
    let wrapper = dir.0.join("ffmpeg-slow-join");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = shots.txt ] && [ ! -e '{m}' ]; then\n    \
             touch '{m}'; sleep 60; exit 1\n  fi\ndone\nexec ffmpeg \"$@\"\n",
            m = marker.display()
        ),
    )?;
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let port = free_port();
    let mut env = base_env(&db, &dir);
    env.extend([
        ("AIPROD_RUNWAY_BASE_URL", runway.uri()),
        ("AIPROD_RUNWAY_API_KEY", "key_e2e".to_owned()),
        ("AIPROD_RUNWAY_POLL_MS", "50".to_owned()),
        ("AIPROD_LEASE_TTL_MS", "2000".to_owned()),
        ("AIPROD_REAPER_INTERVAL_MS", "200".to_owned()),
    ]);
    let args = [
        "dev",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--ops-listen",
        "127.0.0.1:0",
    ];
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut slow = env.clone();
    slow.push(("AIPROD_FFMPEG", wrapper.display().to_string()));
    let mut first = Proc::start("dev-1", &args, &slow, &dir.0)?;
    wait_ready(&http, &format!("{base}/readyz"), Duration::from_secs(60)).await?;
    let http = keyed(&dev_key(&dir.0)?)?;
    let job: serde_json::Value = http
        .post(format!("{base}/v1/jobs"))
        .json(
            &serde_json::json!({"prompt": "A fox runs. It jumps.", "duration_s": 8,
                                  "backend": "runway", "quality_min": 0}),
        )
        .send()
        .await?
        .json()
        .await?;
    let id: uuid::Uuid = job["id"].as_str().expect("an id").parse()?;
    let deadline = Instant::now() + Duration::from_secs(90);
    while !marker.exists() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "assembly never began: {}",
            first.tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let posts = runway.count("POST", "/v1/image_to_video").await;
    assert!(posts >= 1);
    first.signal("KILL")?;
    first.wait_exit(Duration::from_secs(10))?;

    let mut second = Proc::start("dev-2", &args, &env, &dir.0)?;
    wait_all_terminal(&pool, 1, Duration::from_secs(120)).await?;
    let (status, finalize_attempts, render_attempts): (String, i32, i32) = sqlx::query_as(
        "select status::text,
                (select attempts from job_stage where job_id = $1 and stage = 'finalize'),
                (select attempts from job_stage where job_id = $1 and stage = 'render')
           from job where id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await?;
    assert_eq!(status, "succeeded", "{}", second.tail());
    assert_eq!(finalize_attempts, 2, "assembly ran again after the kill");
    assert_eq!(render_attempts, 1, "the render never ran again");
    assert_eq!(
        runway.count("POST", "/v1/image_to_video").await,
        posts,
        "the stub saw no second POST"
    );
    let uri: String = sqlx::query_scalar("select result_uri from job where id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await?;
    assert!(uri.ends_with("/final.mp4"), "{uri}");
    second.signal("TERM")?;
    assert_eq!(
        second.wait_exit(Duration::from_secs(30))?,
        Some(0),
        "{}",
        second.tail()
    );
    Ok(())
}
