//! Stopping and losing processes: SIGTERM lets the stage in flight finish and hands the job back
//! so a restart completes it without paying for the render again, and of two scheduler
//! processes only one opens the budget day, the standby taking over when the leader dies.

use std::time::{Duration, Instant};

use aiprod_testkit::TestDb;
use aiprod_tests::{Proc, Scratch, free_port, wait_ready};

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
