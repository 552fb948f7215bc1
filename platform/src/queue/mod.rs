//! The work queue, with Google Pub/Sub's semantics so that either can sit behind it:
//! at-least-once delivery, ack and nack, an ack deadline after which an unacked message is
//! delivered again, and no ordering guarantee. A message only says "job X needs work"; the job
//! row is the truth, and a duplicate delivery is dropped by the lease.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Mutex;

use aiprod_domain::{JobId, Priority};
use aiprod_store as store;

pub mod pubsub;

pub use pubsub::{PubSubQueue, ensure_pubsub};

/// The channel that wakes idle workers when messages arrive: notified after the publish
/// commits, listened to by `wait`, named only here.
pub const QUEUE_CHANNEL: &str = "aiprod_queue";

/// A request to run a job, as the outbox relays it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dispatch {
    /// The job to work on.
    pub job_id: JobId,
    /// 1 for the first dispatch, then one more per re-dispatch by the reaper.
    pub attempt: i32,
    /// Higher priority is received first where the queue can order.
    pub priority: Priority,
}

/// A received message: acknowledge it once the job is safely leased (or found finished), or
/// nack it to have it delivered again.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The queue's handle for ack and nack.
    pub ack_id: i64,
    /// The job to work on.
    pub job_id: JobId,
    /// The dispatch attempt.
    pub attempt: i32,
    /// How many times this message has been delivered, this one included.
    pub deliveries: i32,
}

/// When a worker acknowledges a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckPoint {
    /// As soon as the job's lease is held: the database owns the job from then on, and the
    /// reaper rescues it if the worker dies. For queues that cannot extend a message's deadline.
    Claimed,
    /// When the worker is done with the job (any outcome, every stage checkpointed). The queue
    /// extends the message's deadline meanwhile, so its flow control counts running jobs and a
    /// worker never holds more messages than it has slots.
    Finished,
}

/// A queue of dispatches.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// When the worker acknowledges a message.
    fn ack_point(&self) -> AckPoint {
        AckPoint::Claimed
    }
    /// Stops receiving and gives back (nacks) what was received but not yet handed out, so
    /// another worker gets it at once. Called when a worker starts to shut down.
    async fn stop_receiving(&self) {}
    /// Sends the acks and nacks still pending and closes the connections. Called last.
    async fn close(&self) {}
    /// Publishes dispatches (at-least-once).
    async fn publish(&self, dispatches: &[Dispatch]) -> anyhow::Result<()>;
    /// Receives at most `max` messages without waiting; each stays invisible to other
    /// receivers until its ack deadline.
    async fn receive(&self, max: usize) -> anyhow::Result<Vec<Delivery>>;
    /// Waits until messages may be available or `timeout` passes.
    async fn wait(&self, timeout: Duration);
    /// Acknowledges: the messages are never delivered again.
    async fn ack(&self, ack_ids: &[i64]) -> anyhow::Result<()>;
    /// Refuses: the messages become deliverable again at once.
    async fn nack(&self, ack_ids: &[i64]) -> anyhow::Result<()>;
    /// Puts the messages back for later: deliverable again after about `delay`, for a job that
    /// cannot be claimed yet (its tenant is at its in-flight limit). A queue that cannot delay a
    /// message itself nacks it and relies on its own redelivery backoff.
    async fn defer(&self, ack_ids: &[i64], delay: Duration) -> anyhow::Result<()> {
        let _ = delay;
        self.nack(ack_ids).await
    }
}

/// The Postgres queue: `FOR UPDATE SKIP LOCKED` to receive, LISTEN/NOTIFY to wake. The
/// publish commits its messages without notifying and then pokes `woken`, which sends one
/// coalesced NOTIFY; `wait` never sleeps longer than its timeout, so a lost wake-up only delays.
pub struct PgQueue {
    pool: PgPool,
    ack_deadline: Duration,
    listener: Mutex<Option<PgListener>>,
    woken: store::Wake,
}

impl PgQueue {
    /// A queue over `pool`; received messages are redelivered after `ack_deadline` unless acked.
    pub fn new(pool: PgPool, ack_deadline: Duration) -> PgQueue {
        PgQueue {
            woken: store::Wake::channel(pool.clone(), QUEUE_CHANNEL),
            pool,
            ack_deadline,
            listener: Mutex::new(None),
        }
    }
}

#[async_trait]
impl Queue for PgQueue {
    async fn publish(&self, dispatches: &[Dispatch]) -> anyhow::Result<()> {
        if dispatches.is_empty() {
            return Ok(());
        }
        let jobs: Vec<JobId> = dispatches.iter().map(|d| d.job_id).collect();
        let attempts: Vec<i32> = dispatches.iter().map(|d| d.attempt).collect();
        let priorities: Vec<Priority> = dispatches.iter().map(|d| d.priority).collect();
        store::enqueue_messages(&self.pool, &jobs, &attempts, &priorities).await?;
        self.woken.poke();
        Ok(())
    }

    async fn receive(&self, max: usize) -> anyhow::Result<Vec<Delivery>> {
        Ok(store::receive_messages(&self.pool, max, self.ack_deadline)
            .await?
            .into_iter()
            .map(|m| Delivery {
                ack_id: m.id,
                job_id: m.job_id,
                attempt: m.attempt,
                deliveries: m.deliveries,
            })
            .collect())
    }

    async fn wait(&self, timeout: Duration) {
        let mut guard = self.listener.lock().await;
        if guard.is_none() {
            match PgListener::connect_with(&self.pool).await {
                Ok(mut l) => match l.listen(QUEUE_CHANNEL).await {
                    Ok(()) => *guard = Some(l),
                    Err(e) => tracing::warn!(error = %e, "cannot LISTEN; polling instead"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open a LISTEN connection; polling instead")
                }
            }
        }
        match guard.as_mut() {
            Some(l) => {
                if let Ok(Err(e)) = tokio::time::timeout(timeout, l.recv()).await {
                    tracing::warn!(error = %e, "LISTEN connection failed; reconnecting");
                    *guard = None;
                }
            }
            None => tokio::time::sleep(timeout).await,
        }
    }

    async fn ack(&self, ack_ids: &[i64]) -> anyhow::Result<()> {
        store::ack_messages(&self.pool, ack_ids).await?;
        Ok(())
    }

    async fn nack(&self, ack_ids: &[i64]) -> anyhow::Result<()> {
        store::nack_messages(&self.pool, ack_ids).await?;
        Ok(())
    }

    async fn defer(&self, ack_ids: &[i64], delay: Duration) -> anyhow::Result<()> {
        store::defer_messages(&self.pool, ack_ids, delay).await?;
        Ok(())
    }
}
