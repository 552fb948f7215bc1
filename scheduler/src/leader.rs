//! Leader election and the leader's term. The advisory lock lives on one connection kept for
//! the whole term; if that connection dies, Postgres releases the lock and another replica
//! takes over. While it leads, every duty runs in a loop of its own (`duty` has the one error
//! policy); the outbox relay also runs at once on every dispatch notification.

use std::sync::Arc;
use std::time::Duration;

use aiprod_platform::metrics::Metrics;
use aiprod_store::outbox_channel;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::duties::{self, LeaderParts};
use crate::duty::Duty;

/// The advisory-lock key that names the scheduler's leader ("aiprod" in ASCII).
pub const LEADER_LOCK_KEY: i64 = 0x6169_7072_6f64;

/// How often the leader checks that its lock's connection is alive.
const LOCK_CHECK: Duration = Duration::from_secs(5);

/// How long a stopping leader lets its duties finish the run they are in.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Runs the scheduler until `shutdown`: waits for leadership, then leads until it is lost.
pub async fn run(parts: LeaderParts, shutdown: CancellationToken) -> anyhow::Result<()> {
    while !shutdown.is_cancelled() {
        match lead(&parts, &shutdown).await {
            Ok(true) => {}
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "scheduler lost its leadership or its database; retrying"
                );
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    tracing::info!("scheduler stopped");
    Ok(())
}

/// Leads until shutdown or until the lock's connection fails. Returns false when another
/// replica holds the lock.
async fn lead(parts: &LeaderParts, shutdown: &CancellationToken) -> anyhow::Result<bool> {
    let mut lock_conn = parts.pool.acquire().await?.detach();
    let got = sqlx::query_scalar!(
        r#"select pg_try_advisory_lock($1) as "got!""#,
        LEADER_LOCK_KEY
    )
    .fetch_one(&mut lock_conn)
    .await?;
    if !got {
        return Ok(false);
    }
    tracing::info!("scheduler is the leader");
    let term = CancellationToken::new();
    let dispatched = Arc::new(Notify::new());
    let mut running = JoinSet::new();
    for duty in duties::all(parts) {
        let wake = duty.wakes_on_dispatch().then(|| dispatched.clone());
        running.spawn(keep(duty, wake, term.clone()));
    }
    let ended = watch(parts, &mut lock_conn, &dispatched, shutdown).await;
    term.cancel();
    if tokio::time::timeout(STOP_GRACE, running.join_all())
        .await
        .is_err()
    {
        tracing::warn!("leader duties did not stop in time; abandoning them");
    }
    let _ = sqlx::query_scalar!("select pg_advisory_unlock($1)", LEADER_LOCK_KEY)
        .fetch_one(&mut lock_conn)
        .await;
    ended.map(|()| true)
}

/// The leader's own loop: wakes the relay on dispatch notifications and checks the lock's
/// connection, until shutdown (`Ok`) or until the connection fails (`Err`).
async fn watch(
    parts: &LeaderParts,
    lock_conn: &mut PgConnection,
    dispatched: &Notify,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut listener = PgListener::connect_with(&parts.pool).await?;
    listener.listen(&outbox_channel(&parts.pool).await?).await?;
    let mut check = tokio::time::interval(LOCK_CHECK);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            n = listener.recv() => {
                n.map_err(|e| anyhow::Error::new(e).context("while listening for dispatches"))?;
                dispatched.notify_one();
            }
            _ = check.tick() => {
                // The lock is only as alive as its connection.
                lock_conn.ping().await?;
            }
        }
    }
}

/// Runs one duty every `every()` (and on `wake`) until `term`, with the one error policy: a
/// failed run is logged and counted, and the duty runs again at its next tick. A run in
/// progress is never cut short by `term`.
async fn keep(duty: Box<dyn Duty>, wake: Option<Arc<Notify>>, term: CancellationToken) {
    let mut tick = tokio::time::interval(duty.every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let woken = async |w: &Option<Arc<Notify>>| match w {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    };
    loop {
        tokio::select! {
            _ = term.cancelled() => return,
            _ = tick.tick() => {}
            _ = woken(&wake) => {}
        }
        if let Err(e) = duty.run().await {
            Metrics::global()
                .leader_duty_failures
                .with_label_values(&[duty.name()])
                .inc();
            tracing::warn!(
                duty = duty.name(),
                error = format!("{e:#}"),
                "leader duty failed; it runs again at its next tick"
            );
        }
    }
}
