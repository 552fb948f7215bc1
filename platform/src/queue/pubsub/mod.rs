//! The Pub/Sub queue, on Google's official client: the outbox relay publishes one message per
//! dispatch, and workers consume through a streaming pull whose leases the client extends.
//!
//! The message is only a hint that a job needs work; the job row and its Postgres lease stay the
//! truth. So a worker holds a message for as long as it runs the job ([`AckPoint::Finished`]):
//! Pub/Sub's flow control (`max_outstanding_messages` = the worker's slots) then counts running
//! jobs, and a worker never holds more messages than it can run. A worker that dies stops
//! extending its messages, Pub/Sub delivers them again, and the next worker takes the job over
//! once its Postgres lease has expired (or the reaper re-dispatches it first).
//!
//! The client's handlers are not ids, and the [`Queue`] trait speaks ids: each received message
//! gets a process-local id, and its handler waits in a map until it is acked or nacked.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use google_cloud_pubsub::client::{Publisher, Subscriber};
use tokio_util::sync::CancellationToken;

use super::{AckPoint, Delivery, Dispatch, Queue};
use crate::config::QueueSettings;

/// How long `close` waits for pending acks and nacks to reach Pub/Sub.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Builder arguments shared by every Google client: an emulator endpoint means anonymous
/// credentials, because the client ignores `PUBSUB_EMULATOR_HOST` and would otherwise look for
/// Application Default Credentials.
macro_rules! configure {
    ($builder:expr, $endpoint:expr) => {{
        let b = $builder;
        match $endpoint {
            Some(e) => b.with_endpoint(e.clone()).with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            ),
            None => b,
        }
    }};
}

mod message;
mod provision;
mod receiver;

pub use message::{ATTR_ATTEMPT, ATTR_JOB_ID, ATTR_PRIORITY, dispatch_message};
pub use provision::{Provisioned, ensure_pubsub};
use receiver::{Inbox, ReaderState, open_stream, read};

/// The Pub/Sub queue. Cheap to share; the streaming pull starts on the first receive, so a
/// process that only publishes (the scheduler) never opens one.
pub struct PubSubQueue {
    settings: QueueSettings,
    publisher: Publisher,
    subscriber: Subscriber,
    max_outstanding: i64,
    max_lease: Duration,
    inbox: Arc<Inbox>,
    reader: Mutex<ReaderState>,
}

impl PubSubQueue {
    /// Connects the publisher and the subscriber clients (no stream is opened yet).
    /// `max_outstanding` is the most messages held at once (the worker's slots); `max_lease`
    /// the longest a message is kept leased (longer than any job runs).
    pub async fn connect(
        settings: &QueueSettings,
        max_outstanding: u32,
        max_lease: Duration,
    ) -> anyhow::Result<PubSubQueue> {
        let endpoint = settings.pubsub_endpoint.as_ref();
        let publisher = configure!(Publisher::builder(settings.topic_path()), endpoint)
            .set_delay_threshold(Duration::from_millis(5))
            .build()
            .await
            .context("cannot build the Pub/Sub publisher")?;
        let subscriber = configure!(Subscriber::builder(), endpoint)
            .build()
            .await
            .context("cannot build the Pub/Sub subscriber")?;
        Ok(PubSubQueue {
            settings: settings.clone(),
            publisher,
            subscriber,
            max_outstanding: i64::from(max_outstanding.max(1)),
            max_lease,
            inbox: Arc::new(Inbox::new(max_outstanding.max(1) as usize)),
            reader: Mutex::new(ReaderState::NotStarted),
        })
    }

    /// Starts the streaming pull on first use.
    fn ensure_reading(&self) {
        let mut state = self.reader.lock().expect("reader state lock");
        if !matches!(*state, ReaderState::NotStarted) {
            return;
        }
        let stop = CancellationToken::new();
        let open = {
            let subscriber = self.subscriber.clone();
            let settings = self.settings.clone();
            let (max_outstanding, max_lease) = (self.max_outstanding, self.max_lease);
            move || open_stream(&subscriber, &settings, max_outstanding, max_lease)
        };
        let task = tokio::spawn(read(open, self.inbox.clone(), stop.clone()));
        *state = ReaderState::Running { stop, task };
    }

    fn settle(&self, ids: &[i64], ack: bool) {
        let mut handlers = self.inbox.handlers.lock().expect("handler map lock");
        for id in ids {
            match handlers.remove(id) {
                Some((h, _slot)) if ack => h.ack(),
                Some((h, _slot)) => h.nack(),
                None => tracing::debug!(ack_id = id, "no such message held; already settled"),
            }
        }
    }
}

#[async_trait]
impl Queue for PubSubQueue {
    fn ack_point(&self) -> AckPoint {
        AckPoint::Finished
    }

    async fn publish(&self, dispatches: &[Dispatch]) -> anyhow::Result<()> {
        let sent: Vec<_> = dispatches
            .iter()
            .map(|d| self.publisher.publish(dispatch_message(d)))
            .collect();
        for (r, d) in futures::future::join_all(sent)
            .await
            .into_iter()
            .zip(dispatches)
        {
            r.with_context(|| {
                format!(
                    "cannot publish job {} to {}",
                    d.job_id,
                    self.settings.topic_path()
                )
            })?;
        }
        Ok(())
    }

    async fn receive(&self, max: usize) -> anyhow::Result<Vec<Delivery>> {
        self.ensure_reading();
        let mut ready = self.inbox.ready.lock().expect("inbox lock");
        let n = max.min(ready.len());
        Ok(ready.drain(..n).collect())
    }

    async fn wait(&self, timeout: Duration) {
        self.ensure_reading();
        if !self.inbox.ready.lock().expect("inbox lock").is_empty() {
            return;
        }
        let _ = tokio::time::timeout(timeout, self.inbox.arrived.notified()).await;
    }

    async fn ack(&self, ack_ids: &[i64]) -> anyhow::Result<()> {
        self.settle(ack_ids, true);
        Ok(())
    }

    async fn nack(&self, ack_ids: &[i64]) -> anyhow::Result<()> {
        self.settle(ack_ids, false);
        Ok(())
    }

    /// A nack: the client cannot change one message's deadline (its handler only acks and
    /// nacks), and holding the message meanwhile would keep one of the worker's slots, and a
    /// place in the subscription's flow control, for a job it cannot run. An operator may give
    /// the subscription a retry policy so that the redelivery waits; `migrate --pubsub` does
    /// not, because with one the emulator stopped redelivering a dead worker's messages
    /// (README, "Pub/Sub").
    async fn defer(&self, ack_ids: &[i64], _delay: Duration) -> anyhow::Result<()> {
        self.settle(ack_ids, false);
        Ok(())
    }

    async fn stop_receiving(&self) {
        self.inbox.stopping.store(true, Ordering::SeqCst);
        // The stream goes first. A nack sent while it is still open is redelivered to it at
        // once, into a client that is going away, and the emulator then keeps the message
        // on that dead stream; closed first, nothing more arrives and the client's shutdown
        // nacks every lease it holds, these included (see `open_stream`).
        let running = std::mem::replace(
            &mut *self.reader.lock().expect("reader state lock"),
            ReaderState::Stopped,
        );
        if let ReaderState::Running { stop, task } = running {
            stop.cancel();
            let _ = task.await;
        }
        let unstarted: Vec<i64> = self
            .inbox
            .ready
            .lock()
            .expect("inbox lock")
            .drain(..)
            .map(|d| d.ack_id)
            .collect();
        if !unstarted.is_empty() {
            tracing::info!(
                count = unstarted.len(),
                "giving back messages that had not started"
            );
        }
        self.settle(&unstarted, false);
    }

    async fn close(&self) {
        self.stop_receiving().await;
        let token = self.inbox.shutdown.lock().expect("shutdown lock").take();
        let flush = async {
            if let Some(token) = token {
                token.shutdown().await;
            }
            self.publisher.flush().await;
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, flush).await.is_err() {
            tracing::warn!(
                "Pub/Sub did not confirm every ack in time; those messages will be delivered again"
            );
        }
    }
}
