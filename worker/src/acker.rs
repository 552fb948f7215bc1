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

/// How long a batch waits for more acks after its first. Acks come as jobs are claimed, a few
/// milliseconds apart under load: sending each at once made one statement (one commit, on the
/// Postgres queue) per job or two. A redelivery is all that a lost ack costs, so waiting a
/// little is safe; Google's own clients wait up to 100 ms.
const LINGER: Duration = Duration::from_millis(25);

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
        let until = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(until, rx.recv_many(&mut batch, room)).await {
                // More came: wait on for the rest of the linger.
                Ok(n) if n > 0 => {}
                // Every handle is gone (the worker is stopping), or the linger is over: send.
                _ => break,
            }
        }
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

#[cfg(test)]
mod tests {
    use aiprod_domain::{JobId, Priority};
    use aiprod_platform::queue::{Dispatch, PgQueue};
    use aiprod_testkit::TestDb;

    use super::*;

    #[tokio::test]
    async fn acks_still_lingering_are_sent_when_the_worker_stops() -> anyhow::Result<()> {
        let db = TestDb::new().await?;
        let pool = db.pool().await?;
        let queue = Arc::new(PgQueue::new(pool.clone(), Duration::from_secs(60)));
        let dispatches: Vec<Dispatch> = (0..5)
            .map(|_| Dispatch {
                job_id: JobId::new(),
                attempt: 1,
                priority: Priority::Normal,
            })
            .collect();
        queue.publish(&dispatches).await?;
        let received = queue.receive(10).await?;
        assert_eq!(received.len(), 5);
        let (acker, task) = Acker::start(queue.clone());
        for d in &received {
            acker.ack(d.ack_id);
        }
        // The last handle goes at once, well inside the linger: the batch must still be sent,
        // or every one of these messages would be delivered again.
        drop(acker);
        task.await?;
        let left: i64 = sqlx::query_scalar("select count(*) from queue_message")
            .fetch_one(&pool)
            .await?;
        assert_eq!(left, 0, "every ack was sent before the task ended");
        Ok(())
    }
}
