//! Batched acknowledgements, as Google's Pub/Sub client does them: job tasks hand their ack ids
//! to one task that sends whatever has gathered in a single request. Under load that turns one
//! commit per job into one per batch. A lost ack only causes a redelivery, which the lease
//! turns into a dropped duplicate.

use std::sync::Arc;
use std::time::Duration;

use aiprod_platform::queue::Queue;
use backon::{ExponentialBuilder, Retryable};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The most ack ids sent in one request.
const MAX_BATCH: usize = 1000;

/// A handle that queues acks; the flushing task ends once every handle is dropped.
#[derive(Clone)]
pub(crate) struct Acker {
    tx: mpsc::UnboundedSender<i64>,
}

impl Acker {
    /// Starts the flushing task.
    pub fn start(queue: Arc<dyn Queue>) -> (Acker, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Acker { tx }, tokio::spawn(flush(queue, rx)))
    }

    /// Queues an ack. After the flushing task has ended the id is dropped, and the message is
    /// simply delivered again.
    pub fn ack(&self, ack_id: i64) {
        let _ = self.tx.send(ack_id);
    }
}

async fn flush(queue: Arc<dyn Queue>, mut rx: mpsc::UnboundedReceiver<i64>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let sent = (|| queue.ack(&batch))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(20))
                    .with_max_times(4)
                    .with_jitter(),
            )
            .await;
        if let Err(e) = sent {
            tracing::warn!(count = batch.len(), error = %e, "cannot ack; those messages will be delivered again");
        }
        batch.clear();
    }
}
