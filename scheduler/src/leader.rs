//! Leader election and the leader's loop. The advisory lock lives on one connection kept for
//! the leader's whole term; if that connection dies, the lock is released by Postgres and
//! another replica takes over.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aiprod_shared::Settings;
use aiprod_shared::queue::Queue;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::alerts::{Notifier, run_alert_rules};
use crate::budget::roll_budget;
use crate::tasks::{reap_once, redispatch_once, relay_once};
use aiprod_shared::budget::BudgetCalendar;
use aiprod_shared::report::refresh_fleet_gauges;
use chrono::Utc;

/// The advisory-lock key that names the scheduler's leader ("aiprod" in ASCII).
pub const LEADER_LOCK_KEY: i64 = 0x6169_7072_6f64;

/// The channel the API notifies when it writes to the outbox.
pub const OUTBOX_CHANNEL: &str = "aiprod_outbox";

/// One run of a `Periodic` task.
pub type TaskRun = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Work the leader does every `every` besides its own, supplied by the binary (such as the
/// orphan reconciler, which needs the provider clients). A failure is logged and retried at
/// the next tick; it never costs the leadership.
#[derive(Clone)]
pub struct Periodic {
    /// For logs.
    pub name: &'static str,
    /// How often.
    pub every: Duration,
    /// One run.
    pub task: Arc<dyn Fn() -> TaskRun + Send + Sync>,
}

/// Runs the scheduler until `shutdown`: waits for leadership, then leads until it is lost.
pub async fn run(
    pool: PgPool,
    queue: Arc<dyn Queue>,
    settings: Arc<Settings>,
    extra: Vec<Periodic>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    while !shutdown.is_cancelled() {
        match lead(&pool, queue.as_ref(), &settings, &extra, &shutdown).await {
            Ok(true) => {}
            Ok(false) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "scheduler lost its leadership or its database; retrying"
                );
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        }
    }
    tracing::info!("scheduler stopped");
    Ok(())
}

/// Leads until shutdown or error. Returns false when another replica holds the lock.
async fn lead(
    pool: &PgPool,
    queue: &dyn Queue,
    settings: &Settings,
    extra: &[Periodic],
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let mut lock_conn = pool.acquire().await?.detach();
    let got: bool = sqlx::query_scalar("select pg_try_advisory_lock($1)")
        .bind(LEADER_LOCK_KEY)
        .fetch_one(&mut lock_conn)
        .await?;
    if !got {
        return Ok(false);
    }
    tracing::info!("scheduler is the leader");
    // Dropped with the leadership, which aborts them.
    let mut side = tokio::task::JoinSet::new();
    for p in extra.iter().cloned() {
        side.spawn(async move {
            let mut tick = tokio::time::interval(p.every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = (p.task)().await {
                    tracing::warn!(
                        task = p.name,
                        error = format!("{e:#}"),
                        "leader task failed; retrying at its next tick"
                    );
                }
            }
        });
    }
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(super::leader::OUTBOX_CHANNEL).await?;
    let mut reap = tokio::time::interval(Duration::from_millis(settings.reaper_interval_ms));
    reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let relay_every = Duration::from_millis(settings.relay_interval_ms);
    // A stranded job waits at least `redispatch_after`; looking ten times as often is enough.
    let redispatch_after = Duration::from_secs(settings.queue.redispatch_after_s);
    let mut sweep = tokio::time::interval(redispatch_after / 10);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut check = tokio::time::interval(Duration::from_secs(5));
    let calendar = BudgetCalendar::from_settings(&settings.budget);
    let mut budget_tick =
        tokio::time::interval(Duration::from_millis(settings.budget.budget_tick_ms));
    budget_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut alert_tick =
        tokio::time::interval(Duration::from_millis(settings.alerts.alert_interval_ms));
    alert_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let notifier = Notifier::from_settings(settings);
    loop {
        relay_once(pool, queue).await?;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            n = tokio::time::timeout(relay_every, listener.recv()) => {
                if let Ok(Err(e)) = n {
                    return Err(anyhow::Error::new(e).context("while listening for outbox notifications"));
                }
            }
            _ = reap.tick() => {
                reap_once(pool).await?;
            }
            _ = sweep.tick() => {
                redispatch_once(pool, redispatch_after).await?;
            }
            _ = budget_tick.tick() => {
                // A failed tick is retried at the next one; it never costs the leadership.
                if let Err(e) = roll_budget(pool, &calendar, Utc::now()).await {
                    tracing::warn!(error = format!("{e:#}"), "budget tick failed");
                }
            }
            _ = alert_tick.tick() => {
                let now = Utc::now();
                if let Err(e) = run_alert_rules(pool, settings, now).await {
                    tracing::warn!(error = format!("{e:#}"), "alert evaluation failed");
                }
                if let Some(n) = &notifier {
                    n.spawn_delivery(pool.clone());
                }
                if let Err(e) = refresh_fleet_gauges(pool, settings, now).await {
                    tracing::warn!(error = %e, "cannot refresh the fleet gauges");
                }
            }
            _ = check.tick() => {
                // The lock is only as alive as its connection.
                lock_conn.ping().await?;
            }
        }
    }
    let _ = sqlx::query("select pg_advisory_unlock($1)")
        .bind(LEADER_LOCK_KEY)
        .execute(&mut lock_conn)
        .await;
    Ok(true)
}
