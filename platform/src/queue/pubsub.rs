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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::client::{Publisher, Subscriber, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::{DeadLetterPolicy, Message};
use google_cloud_pubsub::subscriber::handler::Handler;
use google_cloud_pubsub::subscriber::{MessageStream, ShutdownBehavior, ShutdownToken};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{AckPoint, Delivery, Dispatch, Queue};
use crate::config::QueueSettings;
use aiprod_domain::JobId;

/// The attribute that names the job.
pub const ATTR_JOB_ID: &str = "job_id";
/// The attribute that gives the dispatch attempt.
pub const ATTR_ATTEMPT: &str = "attempt";
/// The attribute that gives the job's priority (informative: Pub/Sub does not order by it).
pub const ATTR_PRIORITY: &str = "priority";

/// How long `close` waits for pending acks and nacks to reach Pub/Sub.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the reader waits before it opens a new stream after one ended.
const REOPEN_DELAY: Duration = Duration::from_secs(1);

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

enum ReaderState {
    NotStarted,
    Running {
        stop: CancellationToken,
        task: JoinHandle<()>,
    },
    Stopped,
}

/// Messages received and not yet handed out, and the handlers of every message held.
struct Inbox {
    ready: Mutex<VecDeque<Delivery>>,
    /// Each held message's handler, with the slot it takes.
    handlers: Mutex<HashMap<i64, (Handler, OwnedSemaphorePermit)>>,
    /// One permit per message the worker may hold. Pub/Sub's server honours
    /// `max_outstanding_messages` too, but the emulator does not, and a bound that only holds
    /// against one server is no bound.
    slots: Arc<Semaphore>,
    /// Set when the worker stops: whatever arrives is given back at once.
    stopping: AtomicBool,
    arrived: Notify,
    next_id: AtomicI64,
    /// The live stream's shutdown handle, so `close` can wait for its last acks.
    shutdown: Mutex<Option<ShutdownToken>>,
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
            inbox: Arc::new(Inbox {
                ready: Mutex::default(),
                handlers: Mutex::default(),
                slots: Arc::new(Semaphore::new(max_outstanding.max(1) as usize)),
                arrived: Notify::new(),
                next_id: AtomicI64::new(0),
                stopping: AtomicBool::new(false),
                shutdown: Mutex::default(),
            }),
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

/// A streaming pull whose flow control holds at most `max_outstanding` messages.
fn open_stream(
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
async fn read(
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

impl Inbox {
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

fn parse_dispatch(m: &Message) -> Result<(JobId, i32), &'static str> {
    let job_id = m
        .attributes
        .get(ATTR_JOB_ID)
        .ok_or("no job_id attribute")?
        .parse::<JobId>()
        .map_err(|_| "job_id is not a UUID")?;
    let attempt = m
        .attributes
        .get(ATTR_ATTEMPT)
        .map(|a| a.parse::<i32>())
        .transpose()
        .map_err(|_| "attempt is not an integer")?
        .unwrap_or(1);
    Ok((job_id, attempt))
}

/// The message for one dispatch: the attributes carry it; the body repeats it as JSON for
/// people reading a dead-letter subscription.
pub fn dispatch_message(d: &Dispatch) -> Message {
    let priority = serde_json::to_value(d.priority)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let body = serde_json::json!({"job_id": d.job_id, "attempt": d.attempt, "priority": priority});
    Message::new().set_data(body.to_string()).set_attributes([
        (ATTR_JOB_ID, d.job_id.to_string()),
        (ATTR_ATTEMPT, d.attempt.to_string()),
        (ATTR_PRIORITY, priority),
    ])
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

/// What `ensure_pubsub` found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// A resource path.
    pub name: String,
    /// Whether this call created it.
    pub created: bool,
}

/// Creates the topic, the dead-letter topic and its subscription, and the workers'
/// subscription (with its dead-letter policy and ack deadline) where they are missing. Safe to
/// repeat: what exists is left as it is.
pub async fn ensure_pubsub(settings: &QueueSettings) -> anyhow::Result<Vec<Provisioned>> {
    let endpoint = settings.pubsub_endpoint.as_ref();
    let topics = configure!(TopicAdmin::builder(), endpoint)
        .build()
        .await
        .context("cannot build the Pub/Sub topic admin client")?;
    let subs = configure!(SubscriptionAdmin::builder(), endpoint)
        .build()
        .await
        .context("cannot build the Pub/Sub subscription admin client")?;
    let mut done = Vec::new();
    let topic = |name: String| {
        let topics = topics.clone();
        async move {
            let r = topics.create_topic().set_name(&name).send().await;
            created(name, r.map(|_| ()))
        }
    };
    done.push(topic(settings.topic_path()).await?);
    let dead = settings.dead_letter_topic_path();
    if let Some(dead) = &dead {
        done.push(topic(dead.clone()).await?);
        // A topic without a subscription drops what is published to it.
        let dead_sub = settings
            .dead_letter_subscription_path()
            .expect("set with the dead-letter topic");
        let r = subs
            .create_subscription()
            .set_name(&dead_sub)
            .set_topic(dead)
            .send()
            .await;
        done.push(created(dead_sub, r.map(|_| ()))?);
    }
    let mut create = subs
        .create_subscription()
        .set_name(settings.subscription_path())
        .set_topic(settings.topic_path())
        .set_ack_deadline_seconds(
            i32::try_from(settings.pubsub_ack_deadline.as_secs()).unwrap_or(600),
        );
    if let Some(dead) = dead {
        create = create.set_dead_letter_policy(
            DeadLetterPolicy::new()
                .set_dead_letter_topic(dead)
                .set_max_delivery_attempts(settings.pubsub_max_delivery_attempts),
        );
    }
    done.push(created(
        settings.subscription_path(),
        create.send().await.map(|_| ()),
    )?);
    Ok(done)
}

fn created(name: String, r: google_cloud_pubsub::Result<()>) -> anyhow::Result<Provisioned> {
    match r {
        Ok(()) => Ok(Provisioned {
            name,
            created: true,
        }),
        Err(e) if e.status().is_some_and(|s| s.code == Code::AlreadyExists) => Ok(Provisioned {
            name,
            created: false,
        }),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot create {name}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiprod_domain::Priority;

    #[test]
    fn a_dispatch_round_trips_through_its_attributes() {
        let d = Dispatch {
            job_id: aiprod_domain::JobId::new(),
            attempt: 3,
            priority: Priority::High,
        };
        let m = dispatch_message(&d);
        assert_eq!(parse_dispatch(&m), Ok((d.job_id, 3)));
        assert_eq!(m.attributes[ATTR_PRIORITY], "high");
        let mut bad = m.clone();
        bad.attributes.insert(ATTR_JOB_ID.into(), "nope".into());
        assert_eq!(parse_dispatch(&bad), Err("job_id is not a UUID"));
        bad.attributes.remove(ATTR_JOB_ID);
        assert_eq!(parse_dispatch(&bad), Err("no job_id attribute"));
    }
}
