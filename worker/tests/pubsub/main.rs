//! The Pub/Sub queue against Google's emulator (started by the harness if it is not running):
//! publishing, streaming pull, ack, nack, flow control, shutdown, dead-lettering, and the
//! worker running jobs from it with a real database.

#![allow(missing_docs)]

mod queue;
mod worker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiprod_domain::{JobId, Priority};
use aiprod_platform::config::QueueSettings;
use aiprod_platform::queue::{Delivery, Dispatch, PubSubQueue, Queue, ensure_pubsub};
use aiprod_testkit::emulator::pubsub::pubsub_emulator;

/// A topic and subscription of the test's own, created on the emulator.
async fn fresh(tag: &str, ack_deadline_s: u64) -> anyhow::Result<QueueSettings> {
    let emulator = pubsub_emulator().await?;
    let settings = QueueSettings {
        pubsub_ack_deadline: Duration::from_secs(ack_deadline_s),
        pubsub_max_delivery_attempts: 5,
        ..emulator.settings(tag)
    };
    ensure_pubsub(&settings).await?;
    Ok(settings)
}

async fn connect(settings: &QueueSettings, slots: u32) -> anyhow::Result<Arc<PubSubQueue>> {
    Ok(Arc::new(
        PubSubQueue::connect(settings, slots, Duration::from_secs(600)).await?,
    ))
}

fn dispatch(job_id: JobId) -> Dispatch {
    Dispatch {
        job_id,
        attempt: 1,
        priority: Priority::Normal,
    }
}

/// Receives until `n` deliveries have arrived or `within` passes.
async fn receive_n(q: &dyn Queue, n: usize, within: Duration) -> anyhow::Result<Vec<Delivery>> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        got.extend(q.receive(n - got.len()).await?);
        if got.len() < n {
            q.wait(Duration::from_millis(200)).await;
        }
    }
    Ok(got)
}
