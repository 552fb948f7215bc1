//! The receive loop: pull as many messages as there are free job slots (a batch at a time,
//! while the database has a connection to spare), lease their jobs in one transaction (one
//! commit for the batch), ack each message once its lease is held, and run the job. A duplicate
//! delivery finds the lease taken
//! (or the job ended) and is acked and dropped. A job whose tenant already runs its
//! `max_in_flight` jobs is not claimed: its message is deferred, to come back later, with a
//! delay that grows with its deliveries so that a long wait costs few refusals.
//!
//! Shutdown: stop receiving, let each job finish the stage in flight and hand the job back,
//! and at the grace timeout stop the rest at once (their leases are handed back too).

use std::sync::Arc;
use std::time::Duration;

use aiprod_domain::JobStatus;
use aiprod_platform::metrics::Metrics;
use aiprod_platform::queue::{AckPoint, Delivery};
use aiprod_store::{ClaimOutcome, try_claim_job, try_claim_jobs};
use anyhow::Context as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acker::Acker;
use crate::context::WorkerContext;
use crate::lease::heartbeat;
use crate::pipeline::{JobOutcome, Stops, run_job};
use crate::writer::Writer;

/// What one step of the loop did, for tests that drive the worker step by step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A message was handled, with what became of its job (`None`: dropped as a duplicate, or
    /// nacked for redelivery).
    Worked(Option<JobOutcome>),
    /// No message was waiting.
    Idle,
}

/// Runs the worker until `shutdown` is cancelled and in-flight work has stopped.
pub async fn run(ctx: WorkerContext, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (acker, acks) = Acker::start(ctx.queue.clone());
    let (writer, writes) = Writer::start(ctx.pool.clone(), ctx.worker_id.clone())
        .context("cannot start the checkpoint writer's thread")?;
    let ctx = WorkerContext {
        acker: Some(acker),
        writer: Some(writer),
        ..ctx
    };
    let slots = ctx.settings.worker.worker_concurrency as usize;
    let permits = Arc::new(Semaphore::new(slots));
    let tracker = TaskTracker::new();
    let stops = Stops {
        soft: shutdown.clone(),
        hard: CancellationToken::new(),
    };
    let beat_stop = CancellationToken::new();
    let beat = tokio::spawn(heartbeat(ctx.clone(), beat_stop.clone()));
    tracing::info!(worker = %ctx.worker_id, slots, "worker started");
    while !shutdown.is_cancelled() {
        let free = permits.available_permits().min(START_BATCH);
        if free == 0 {
            tokio::select! {
                p = permits.clone().acquire_owned() => drop(p),
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        if !db_has_room(&ctx.pool) {
            tokio::select! {
                _ = tokio::time::sleep(DB_BUSY_WAIT) => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        let deliveries = match ctx.queue.receive(free).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot receive from the queue; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
        };
        if deliveries.is_empty() {
            tokio::select! {
                _ = ctx.queue.wait(Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        // Every job received is claimed in one transaction: one commit for the batch.
        let ids: Vec<_> = deliveries.iter().map(|d| d.job_id).collect();
        let claims: Vec<Claimed> = match try_claim_jobs(
            &ctx.pool,
            &ids,
            &ctx.worker_id,
            ctx.settings.worker.lease_ttl,
        )
        .await
        {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(e) => {
                let e = e.to_string();
                ids.iter().map(|_| Err(e.clone())).collect()
            }
        };
        for (d, claim) in deliveries.into_iter().zip(claims) {
            let permit = permits.clone().acquire_owned().await?;
            let (ctx, stops) = (ctx.clone(), stops.clone());
            tracker.spawn(async move { handle(&ctx, d, claim, &stops, permit).await });
        }
    }
    // Stop pulling at once, and give back what was received but never started, so another
    // worker takes it now rather than after this one's grace.
    ctx.queue.stop_receiving().await;
    tracker.close();
    let grace = ctx.settings.worker.shutdown_grace;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "grace period over; stopping the stages still running"
        );
        stops.hard.cancel();
        tracker.wait().await;
    }
    beat_stop.cancel();
    let _ = beat.await;
    let worker_id = ctx.worker_id.clone();
    let queue = ctx.queue.clone();
    // The last handle goes with the context; the ack task then sends what is left and ends.
    drop(ctx);
    let _ = acks.await;
    let _ = writes.await;
    queue.close().await;
    tracing::info!(worker = %worker_id, "worker stopped");
    Ok(())
}

async fn handle(
    ctx: &WorkerContext,
    d: Delivery,
    claim: Claimed,
    stops: &Stops,
    _permit: OwnedSemaphorePermit,
) {
    run_claimed(ctx, d, claim, stops).await;
}

/// What claiming a delivery's job gave: the outcome, or why the claim could not run.
type Claimed = Result<ClaimOutcome, String>;

/// Receives one message and handles it to the end of its job. `Idle` when none was waiting.
pub async fn run_once(ctx: &WorkerContext) -> anyhow::Result<Outcome> {
    let Some(d) = ctx.queue.receive(1).await?.pop() else {
        return Ok(Outcome::Idle);
    };
    Ok(Outcome::Worked(
        process_delivery(ctx, d, &Stops::default()).await,
    ))
}

/// Handles one delivery: lease the job, ack, run it. Returns what became of the job, or `None`
/// when the delivery was a duplicate (acked and dropped) or could not be handled now (nacked).
pub(crate) async fn process_delivery(
    ctx: &WorkerContext,
    d: Delivery,
    stops: &Stops,
) -> Option<JobOutcome> {
    let claim = try_claim_job(
        &ctx.pool,
        d.job_id,
        &ctx.worker_id,
        ctx.settings.worker.lease_ttl,
    )
    .await
    .map_err(|e| e.to_string());
    run_claimed(ctx, d, claim, stops).await
}

/// Handles a delivery whose job's claim ran: ack, run the job, or hand the message back.
async fn run_claimed(
    ctx: &WorkerContext,
    d: Delivery,
    claim: Claimed,
    stops: &Stops,
) -> Option<JobOutcome> {
    let metrics = Metrics::global();
    let claim = match claim {
        Ok(ClaimOutcome::Claimed(c)) => Some(*c),
        Ok(ClaimOutcome::Duplicate) => None,
        Ok(ClaimOutcome::TenantAtLimit { in_flight, limit }) => {
            let delay = defer_delay(d.deliveries);
            tracing::debug!(job_id = %d.job_id, in_flight, limit, delay_ms = delay.as_millis() as u64, "the job's tenant is at its in-flight limit; deferring its message");
            if let Err(e) = ctx.queue.defer(&[d.ack_id], delay).await {
                tracing::warn!(error = %e, "cannot defer; the message is redelivered after its deadline");
            }
            return None;
        }
        Err(e) => {
            tracing::warn!(job_id = %d.job_id, error = %e, "cannot claim the job; the message is redelivered");
            if let Err(e) = ctx.queue.nack(&[d.ack_id]).await {
                tracing::warn!(error = %e, "cannot nack; the message is redelivered after its deadline");
            }
            return None;
        }
    };
    // Once the lease is held (or the job found ended), the database owns the job: the reaper
    // re-dispatches it if this worker dies. A queue that extends deadlines keeps the message
    // until the job is done, so that its flow control counts the jobs running.
    let Some(claim) = claim else {
        ack(ctx, &d).await;
        metrics.duplicate_deliveries.inc();
        tracing::debug!(job_id = %d.job_id, deliveries = d.deliveries, "dropped a delivery: job leased elsewhere or ended");
        return None;
    };
    let hold = ctx.queue.ack_point() == AckPoint::Finished;
    let canceled = claim.job.status == JobStatus::Canceled;
    if !hold || canceled {
        ack(ctx, &d).await;
    }
    if canceled {
        metrics.jobs_canceled.inc();
        return Some(JobOutcome::Canceled);
    }
    metrics.jobs_in_flight.inc();
    // Boxed behind `dyn`: a job's future nests every stage's, the render protocol's and the
    // Cloud Storage client's, too deep for the compiler to lay out in every caller.
    let job: std::pin::Pin<Box<dyn Future<Output = JobOutcome> + Send + '_>> =
        Box::pin(run_job(ctx, claim, stops));
    let outcome = job.await;
    metrics.jobs_in_flight.dec();
    // Every outcome leaves the job checkpointed, parked, ended or handed back with a new
    // dispatch, so the message has done its work whatever happened.
    if hold {
        ack(ctx, &d).await;
    }
    Some(outcome)
}

/// The most jobs started at once. With thousands of slots free (a worker starting up), the
/// jobs start a batch at a time, each batch once the database has a connection to spare.
const START_BATCH: usize = 64;
/// How long the loop waits before it looks again for a connection to spare.
const DB_BUSY_WAIT: Duration = Duration::from_millis(20);

/// Whether the pool has a connection idle or room to open one. When it has neither, jobs
/// already started are still at their statements: new ones would only queue behind them, past
/// the pool's acquire timeout, and fail their first statement.
fn db_has_room(pool: &sqlx::PgPool) -> bool {
    pool.num_idle() > 0 || pool.size() < pool.options().get_max_connections()
}

/// The first wait of a message whose tenant is at its in-flight limit.
const DEFER_FIRST: Duration = Duration::from_millis(500);
/// The longest: a slot freed meanwhile waits at most this long for the message to come back
/// (another of the tenant's messages may take it first).
const DEFER_MAX: Duration = Duration::from_secs(30);

/// How long a message delivered `deliveries` times waits before it is delivered again: doubling
/// from `DEFER_FIRST` up to `DEFER_MAX`.
fn defer_delay(deliveries: i32) -> Duration {
    let doublings = u32::try_from(deliveries.saturating_sub(1))
        .unwrap_or(0)
        .min(16);
    (DEFER_FIRST * 2u32.pow(doublings)).min(DEFER_MAX)
}

async fn ack(ctx: &WorkerContext, d: &Delivery) {
    match &ctx.acker {
        Some(acker) => acker.ack(d.ack_id),
        None => {
            if let Err(e) = ctx.queue.ack(&[d.ack_id]).await {
                tracing::warn!(job_id = %d.job_id, error = %e, "cannot ack; a redelivery will be dropped as a duplicate");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deferred_message_waits_longer_at_each_delivery_up_to_the_cap() {
        let waits: Vec<u128> = [0, 1, 2, 3, 7, 8, 1000, i32::MAX]
            .into_iter()
            .map(|n| defer_delay(n).as_millis())
            .collect();
        assert_eq!(
            waits,
            [500, 500, 1000, 2000, 30_000, 30_000, 30_000, 30_000]
        );
    }
}
