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
use tokio::time::Instant;

/// The most ack ids sent in one request.
const MAX_BATCH: usize = 1000;

/// The least time between two sends. Under load acks come a few milliseconds apart, and sending
/// each at once made one statement (one commit, on the Postgres queue) per job or two; so a
/// send within this time of the last one waits for it to pass, gathering what comes. An ack
/// after a quiet spell goes at once: a message not yet acked may hold back the next delivery
/// (Pub/Sub's flow control counts it). A lost ack costs only a redelivery, so waiting is safe;
/// Google's own clients wait up to 100 ms.
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
    let mut last_sent: Option<Instant> = None;
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let until = last_sent.map(|t| t + LINGER);
        while let Some(until) = until.filter(|_| batch.len() < MAX_BATCH) {
            let room = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(until, rx.recv_many(&mut batch, room)).await {
                // More came: gather on until the linger is over.
                Ok(n) if n > 0 => {}
                // Every handle is gone (the worker is stopping), or the linger is over: send.
                _ => break,
            }
        }
        last_sent = Some(Instant::now());
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
        let left = || async {
            sqlx::query_scalar!(r#"select count(*) as "n!" from queue_message"#)
                .fetch_one(&pool)
                .await
        };
        let (acker, task) = Acker::start(queue.clone());
        // The first ack after a quiet spell goes at once.
        acker.ack(received[0].ack_id);
        let mut polls = 0;
        while left().await? != 4 {
            polls += 1;
            assert!(polls < 500, "the first ack was never sent");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The rest come within the linger after that send, so they wait for it; the last
        // handle goes at once: the batch must still be sent, or each of these messages would be
        // delivered again.
        for d in &received[1..] {
            acker.ack(d.ack_id);
        }
        drop(acker);
        task.await?;
        assert_eq!(left().await?, 0, "every ack was sent before the task ended");
        Ok(())
    }
}
