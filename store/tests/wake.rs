//! No NOTIFY inside a data transaction, over a real PostgreSQL: accepting a job, dispatching
//! one and enqueueing a message commit without a notification, and a [`Wake`] poked after the
//! commit sends one, coalescing a burst of pokes.

#![allow(missing_docs)]

use std::time::Duration;

use aiprod_domain::{JobId, JobSpec, Priority, TenantId};
use aiprod_store::{Wake, enqueue_messages, insert_job, outbox_channel};
use aiprod_testkit::TestDb;
use serde_json::json;
use sqlx::postgres::PgListener;

/// The Postgres queue's channel (`aiprod_platform::queue::QUEUE_CHANNEL`; the store does not
/// depend on the platform crate).
const QUEUE_CHANNEL: &str = "aiprod_queue";

/// Long enough for a notification sent at a local commit to have arrived many times over.
const QUIET: Duration = Duration::from_millis(500);

/// The channels of the notifications that arrive within `within`, in order.
async fn arrivals(listener: &mut PgListener, within: Duration) -> anyhow::Result<Vec<String>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    while let Ok(n) = tokio::time::timeout_at(deadline, listener.recv()).await {
        got.push(n?.channel().to_owned());
    }
    Ok(got)
}

#[tokio::test]
async fn data_statements_commit_without_notifying_and_the_wake_follows() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let outbox = outbox_channel(&pool).await?;
    let mut listener = PgListener::connect(&db.url).await?;
    listener
        .listen_all([outbox.as_str(), QUEUE_CHANNEL])
        .await?;

    // An accepted job (its own statement, committed at once) ...
    let spec = JobSpec::parse(&json!({"prompt": "a fox"})).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let job = JobId::new();
    insert_job(&pool, TenantId::DEFAULT, job, &spec, None).await?;
    // ... and, in one explicit transaction, a second dispatch and a queue message.
    let mut tx = pool.begin().await?;
    sqlx::query("select dispatch_job($1, 'normal', 1)")
        .bind(job)
        .execute(&mut *tx)
        .await?;
    enqueue_messages(&mut *tx, &[job], &[1], &[Priority::Normal]).await?;
    tx.commit().await?;
    let outboxed: i64 = sqlx::query_scalar("select count(*) from outbox where job_id = $1")
        .bind(job)
        .fetch_one(&pool)
        .await?;
    assert_eq!(outboxed, 2, "both dispatches were written");
    assert_eq!(
        arrivals(&mut listener, QUIET).await?,
        Vec::<String>::new(),
        "no data statement notifies"
    );

    // The wake after the commit is what reaches the listeners, once per channel.
    Wake::outbox(pool.clone()).poke();
    Wake::channel(pool.clone(), QUEUE_CHANNEL).poke();
    let mut woke = arrivals(&mut listener, Duration::from_secs(2)).await?;
    woke.sort();
    assert_eq!(woke, vec![outbox, QUEUE_CHANNEL.to_owned()]);
    Ok(())
}

#[tokio::test]
async fn a_burst_of_pokes_sends_at_most_two_notifications_and_none_is_lost() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let mut listener = PgListener::connect(&db.url).await?;
    listener.listen("aiprod_test_wake").await?;
    let wake = Wake::channel(pool.clone(), "aiprod_test_wake");

    for _ in 0..200 {
        wake.clone().poke();
    }
    let burst = arrivals(&mut listener, QUIET).await?.len();
    assert!(
        (1..=2).contains(&burst),
        "200 pokes at once: the first send and at most one after the window, got {burst}"
    );

    // A poke after the window is sent too, and promptly.
    let started = std::time::Instant::now();
    wake.poke();
    listener.recv().await?;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a lone poke is sent at once, took {:?}",
        started.elapsed()
    );
    Ok(())
}
