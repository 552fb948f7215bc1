//! The receiving side of the Pub/Sub queue: a background task reads the streaming pull into an
//! [`Inbox`], where received messages wait as [`Delivery`]s for the worker to take, and each
//! held message's handler waits, under a numeric id, for its ack or nack.
//!
//! The inbox also bounds how many messages a worker holds (one slot per message): the reader
//! takes a slot before it asks the stream for the next message, and the slot is given back only
//! when the message is settled.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use google_cloud_pubsub::client::Subscriber;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::handler::Handler;
use google_cloud_pubsub::subscriber::{MessageStream, ShutdownBehavior, ShutdownToken};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::message::parse_dispatch;
use crate::config::QueueSettings;
use crate::queue::Delivery;

/// How long the reader waits before it opens a new stream after one ended.
const REOPEN_DELAY: Duration = Duration::from_secs(1);

/// Whether the reader runs: started by the first receive, and never restarted once the worker
/// has stopped receiving.
pub(super) enum ReaderState {
    NotStarted,
    Running {
        stop: CancellationToken,
        task: JoinHandle<()>,
    },
    Stopped,
}

/// Messages received and not yet handed out, and the handlers of every message held.
pub(super) struct Inbox {
    pub(super) ready: Mutex<VecDeque<Delivery>>,
    /// Each held message's handler, with the slot it takes.
    pub(super) handlers: Mutex<HashMap<i64, (Handler, OwnedSemaphorePermit)>>,
    /// One permit per message the worker may hold. Pub/Sub's server honours
    /// `max_outstanding_messages` too, but the emulator does not, and a bound that only holds
    /// against one server is no bound.
    slots: Arc<Semaphore>,
    /// Set when the worker stops: whatever arrives is given back at once.
    pub(super) stopping: AtomicBool,
    pub(super) arrived: Notify,
    next_id: AtomicI64,
    /// The live stream's shutdown handle, so `close` can wait for its last acks.
    pub(super) shutdown: Mutex<Option<ShutdownToken>>,
}

impl Inbox {
    /// An empty inbox that holds at most `slots` messages.
    pub(super) fn new(slots: usize) -> Inbox {
        Inbox {
            ready: Mutex::default(),
            handlers: Mutex::default(),
            slots: Arc::new(Semaphore::new(slots)),
            arrived: Notify::new(),
            next_id: AtomicI64::new(0),
            stopping: AtomicBool::new(false),
            shutdown: Mutex::default(),
        }
    }

    fn accept(&self, m: Message, h: Handler, slot: OwnedSemaphorePermit) {
        let deliveries = h.delivery_attempt().unwrap_or(1);
        if self.stopping.load(Ordering::SeqCst) {
            h.nack();
            return;
        }
        match parse_dispatch(&m) {
            Ok((job_id, attempt)) => {
                let ack_id = self.next_id.fetch_add(1, Ordering::Relaxed);
                self.handlers
                    .lock()
                    .expect("handler map lock")
                    .insert(ack_id, (h, slot));
                self.ready.lock().expect("inbox lock").push_back(Delivery {
                    ack_id,
                    job_id,
                    attempt,
                    deliveries,
                });
                self.arrived.notify_one();
            }
            Err(why) => {
                // Not ours to run. With a dead-letter policy a nack sends it there after the
                // last attempt, where it can be looked at; without one it would come back for
                // ever, so it is dropped.
                tracing::error!(message_id = %m.message_id, why, "dropping a message that is not a dispatch");
                if h.delivery_attempt().is_some() {
                    h.nack();
                } else {
                    h.ack();
                }
            }
        }
    }
}

/// A streaming pull whose flow control holds at most `max_outstanding` messages.
pub(super) fn open_stream(
    subscriber: &Subscriber,
    settings: &QueueSettings,
    max_outstanding: i64,
    max_lease: Duration,
) -> MessageStream {
    // Pub/Sub clamps the extension to 10–600 s; the subscription's own deadline is the first
    // one a message gets.
    //
    // At shutdown the client nacks everything it holds rather than wait: it may have buffered
    // messages the worker never saw, and would otherwise extend them until `max_lease`. The
    // jobs still running when the worker stops are handed back with a new dispatch (or end),
    // so the nack of their messages only causes a redelivery that is dropped as a duplicate.
    let extension = settings
        .pubsub_ack_deadline
        .clamp(Duration::from_secs(10), Duration::from_secs(600));
    subscriber
        .subscribe(settings.subscription_path())
        .set_max_outstanding_messages(max_outstanding)
        .set_max_lease(max_lease)
        .set_max_lease_extension(extension)
        .set_shutdown_behavior(ShutdownBehavior::NackImmediately)
        .build()
}

/// Reads streams into the inbox until stopped, opening a new stream when one ends.
pub(super) async fn read(
    open: impl Fn() -> MessageStream + Send + 'static,
    inbox: Arc<Inbox>,
    stop: CancellationToken,
) {
    loop {
        let mut stream = open();
        *inbox.shutdown.lock().expect("shutdown lock") = Some(stream.shutdown_token());
        loop {
            let slot = tokio::select! {
                _ = stop.cancelled() => return,
                s = inbox.slots.clone().acquire_owned() => s.expect("the slots are never closed"),
            };
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                n = stream.next() => n,
            };
            match next {
                Some(Ok((m, h))) => inbox.accept(m, h, slot),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the Pub/Sub stream failed; opening a new one");
                    break;
                }
                None => {
                    tracing::warn!("the Pub/Sub stream ended; opening a new one");
                    break;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(REOPEN_DELAY) => {}
        }
    }
}
