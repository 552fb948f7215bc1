//! The scheduler's leader election and its two duties, on a real database.

#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiprod_backends::Fleet;
use aiprod_domain::{JobId, JobSpec, TenantId};
use aiprod_platform::Settings;
use aiprod_platform::queue::{PgQueue, Queue};
use aiprod_scheduler::{LEADER_LOCK_KEY, LeaderParts, reap_once, redispatch_once, relay_once};
use aiprod_store::{Wake, claim_job, insert_job};
use aiprod_testkit::TestDb;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// The pid of the backend holding the leader lock in this test's database, if any (advisory
/// locks are per database; other tests' leaders hold theirs at the same time).
async fn leader_pid(pool: &PgPool) -> Option<i32> {
    sqlx::query_scalar(
        "select pid from pg_locks where locktype = 'advisory' and granted
            and database = (select oid from pg_database where datname = current_database())
            and ((classid::bigint << 32) | objid::bigint) = $1",
    )
    .bind(LEADER_LOCK_KEY)
    .fetch_optional(pool)
    .await
    .expect("pg_locks is readable")
}

async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a scheduler with a pool of its own, as a separate replica would.
async fn start(
    url: &str,
    settings: &Arc<Settings>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let pool = PgPool::connect(url).await?;
    let queue: Arc<dyn Queue> = Arc::new(PgQueue::new(pool.clone(), Duration::from_secs(30)));
    let parts = LeaderParts {
        pool,
        queue,
        settings: settings.clone(),
        fleet: Fleet::empty(),
    };
    Ok(tokio::spawn(aiprod_scheduler::run(parts, stop)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scheduler_leads_and_a_standby_takes_over_when_it_stops() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let settings = Arc::new(Settings::default());
    let watch = db.pool().await?;
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let a = start(&db.url, &settings, stop_a.clone()).await?;
    wait_for("a leader", || async { leader_pid(&watch).await.is_some() }).await;
    let first = leader_pid(&watch).await;
    let b = start(&db.url, &settings, stop_b.clone()).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let holders: i64 = sqlx::query_scalar(
        "select count(*) from pg_locks where locktype = 'advisory' and granted
            and database = (select oid from pg_database where datname = current_database())
            and ((classid::bigint << 32) | objid::bigint) = $1",
    )
    .bind(LEADER_LOCK_KEY)
    .fetch_one(&watch)
    .await?;
    assert_eq!(holders, 1, "exactly one leader");
    assert_eq!(
        leader_pid(&watch).await,
        first,
        "the first leader keeps leading"
    );

    // The leader relays the outbox: a job inserted now reaches the queue.
    let spec = JobSpec::parse(&json!({"prompt": "a fox"})).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    insert_job(&watch, TenantId::DEFAULT, JobId::new(), &spec, None).await?;
    wait_for("the relay", || async {
        sqlx::query_scalar::<_, i64>("select count(*) from queue_message")
            .fetch_one(&watch)
            .await
            .unwrap_or(0)
            == 1
    })
    .await;

    stop_a.cancel();
    a.await??;
    wait_for("the standby to lead", || async {
        let now = leader_pid(&watch).await;
        now.is_some() && now != first
    })
    .await;
    stop_b.cancel();
    b.await??;
    Ok(())
}

#[tokio::test]
async fn the_reaper_redispatches_only_expired_leases() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let queue = PgQueue::new(pool.clone(), Duration::from_secs(30));
    let spec = JobSpec::parse(&json!({"prompt": "a fox"})).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (expired, live) = (JobId::new(), JobId::new());
    insert_job(&pool, TenantId::DEFAULT, expired, &spec, None).await?;
    insert_job(&pool, TenantId::DEFAULT, live, &spec, None).await?;
    assert_eq!(relay_once(&pool, &queue).await?, 2);
    claim_job(&pool, expired, "w1", Duration::from_secs(60))
        .await?
        .expect("claimed");
    claim_job(&pool, live, "w2", Duration::from_secs(60))
        .await?
        .expect("claimed");
    sqlx::query("update job set locked_until = now() - interval '1 second' where id = $1")
        .bind(expired)
        .execute(&pool)
        .await?;

    assert_eq!(reap_once(&pool, 5).await?, 1);
    let rows: Vec<(JobId, Option<String>, i32)> =
        sqlx::query_as("select id, locked_by, reap_count from job order by id")
            .fetch_all(&pool)
            .await?;
    assert_eq!(rows, vec![(expired, None, 1), (live, Some("w2".into()), 0)]);
    let outbox: Vec<(JobId, i32)> = sqlx::query_as("select job_id, attempt from outbox")
        .fetch_all(&pool)
        .await?;
    assert_eq!(outbox, vec![(expired, 2)], "one re-dispatch, as attempt 2");
    assert_eq!(reap_once(&pool, 5).await?, 0, "reaping again finds nothing");
    Ok(())
}

/// Makes every dispatch of the given jobs look an hour old.
async fn age(pool: &PgPool, ids: &[JobId]) -> anyhow::Result<()> {
    sqlx::query("update job set dispatched_at = now() - interval '1 hour' where id = any($1)")
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(())
}

#[tokio::test]
async fn the_sweep_dispatches_again_only_queued_jobs_whose_message_is_gone() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let queue = PgQueue::new(pool.clone(), Duration::from_secs(30));
    let spec = JobSpec::parse(&json!({"prompt": "a fox"})).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let ids: Vec<JobId> = (0..5).map(|_| JobId::new()).collect();
    let [stranded, recent, waiting_in_queue, running, parked] = ids[..] else {
        unreachable!()
    };
    for id in &ids {
        insert_job(&pool, TenantId::DEFAULT, *id, &spec, None).await?;
    }
    assert_eq!(relay_once(&pool, &queue).await?, 5);
    let undated: i64 = sqlx::query_scalar("select count(*) from job where dispatched_at is null")
        .fetch_one(&pool)
        .await?;
    assert_eq!(undated, 0, "the relay dates every dispatch");
    // The messages of `stranded` and `recent` are gone (acked by a worker that never ran the
    // job, as a dead-letter topic would take them); `waiting_in_queue` still has its message;
    // `running` is held; `parked` waits for money.
    sqlx::query("delete from queue_message where job_id = any($1)")
        .bind([stranded, recent, running, parked])
        .execute(&pool)
        .await?;
    claim_job(&pool, running, "w1", Duration::from_secs(60))
        .await?
        .expect("claimed");
    // Parked the way a worker parks it: claimed (running), then waiting for money.
    claim_job(&pool, parked, "w2", Duration::from_secs(60))
        .await?
        .expect("claimed");
    sqlx::query("update job set status = 'waiting_budget' where id = $1")
        .bind(parked)
        .execute(&pool)
        .await?;
    age(&pool, &[stranded, waiting_in_queue, running, parked]).await?;

    let after = Duration::from_secs(600);
    assert_eq!(redispatch_once(&pool, after).await?, 1);
    let outbox: Vec<(JobId, i32)> = sqlx::query_as("select job_id, attempt from outbox")
        .fetch_all(&pool)
        .await?;
    assert_eq!(outbox, vec![(stranded, 1)], "only the stranded job");
    assert_eq!(
        redispatch_once(&pool, after).await?,
        0,
        "a re-dispatch waiting in the outbox is not made twice"
    );
    assert_eq!(relay_once(&pool, &queue).await?, 1);
    assert_eq!(
        redispatch_once(&pool, after).await?,
        0,
        "the new dispatch is recent"
    );
    let delivered = queue.receive(10).await?;
    let mut got: Vec<JobId> = delivered.iter().map(|d| d.job_id).collect();
    got.sort();
    let mut want = vec![stranded, waiting_in_queue];
    want.sort();
    assert_eq!(got, want);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_runs_the_sweep() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let mut settings = Settings::default();
    settings.queue.redispatch_after = Duration::from_secs(10);
    settings.validate()?;
    let settings = Arc::new(settings);
    let spec = JobSpec::parse(&json!({"prompt": "a fox"})).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let id = JobId::new();
    insert_job(&pool, TenantId::DEFAULT, id, &spec, None).await?;
    let stop = CancellationToken::new();
    let leader = start(&db.url, &settings, stop.clone()).await?;
    // The relay publishes the first dispatch; the message is then lost.
    wait_for("the first dispatch", || async {
        sqlx::query_scalar::<_, bool>("select exists (select 1 from queue_message)")
            .fetch_one(&pool)
            .await
            .unwrap_or(false)
    })
    .await;
    sqlx::query("delete from queue_message")
        .execute(&pool)
        .await?;
    age(&pool, &[id]).await?;
    wait_for("the re-dispatch", || async {
        sqlx::query_scalar::<_, bool>(
            "select exists (select 1 from queue_message where job_id = $1)",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap_or(false)
    })
    .await;
    stop.cancel();
    leader.await??;
    Ok(())
}

/// The relay and the worker's queue are woken after the commit, well before either polls: a
/// job accepted as the API accepts it (its statement, then a wake of the relay) is relayed and
/// wakes a waiting consumer within a few seconds, with both fallback polls a minute long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_job_wakes_the_relay_and_the_consumer_long_before_they_poll()
-> anyhow::Result<()> {
    const POLL: Duration = Duration::from_secs(60);
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let mut settings = Settings::default();
    settings.scheduler.relay_interval = POLL;
    settings.validate()?;
    let stop = CancellationToken::new();
    let leader = start(&db.url, &Arc::new(settings), stop.clone()).await?;
    wait_for("the leader to listen", || async {
        sqlx::query_scalar::<_, bool>(
            "select exists (select 1 from pg_stat_activity
                             where datname = current_database() and query ilike 'listen%')",
        )
        .fetch_one(&pool)
        .await
        .unwrap_or(false)
    })
    .await;
    // The consumer's side, as a worker has it: its first idle wait opens its LISTEN.
    let consumer = PgQueue::new(pool.clone(), Duration::from_secs(30));
    consumer.wait(Duration::from_millis(1)).await;
    assert!(consumer.receive(1).await?.is_empty(), "nothing queued yet");

    let started = Instant::now();
    let spec = JobSpec::parse(&json!({"prompt": "a fox"})).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let id = JobId::new();
    insert_job(&pool, TenantId::DEFAULT, id, &spec, None).await?;
    Wake::outbox(pool.clone()).poke();
    consumer.wait(POLL).await;
    let woken = started.elapsed();
    let got: Vec<JobId> = consumer
        .receive(1)
        .await?
        .iter()
        .map(|d| d.job_id)
        .collect();
    assert_eq!(got, vec![id], "the wake-up was for the job");
    assert!(
        woken < Duration::from_secs(5),
        "relayed and received in {woken:?}, against polls of {POLL:?}"
    );
    stop.cancel();
    leader.await??;
    Ok(())
}
