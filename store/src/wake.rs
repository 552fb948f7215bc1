//! Waking listeners after a commit, never inside it.
//!
//! A transaction that sends NOTIFY takes a cluster-wide lock at commit and holds it through
//! its commit record's flush, so notifying commits anywhere in the cluster run one at a time
//! (ARCHITECTURE.md, "No NOTIFY inside a data transaction"). The statements that write jobs,
//! outbox rows and queue messages therefore notify nobody; the process that committed them
//! pokes a [`Wake`] afterwards, and its one task per channel sends a single `pg_notify` for
//! every poke since its last send, at most one per [`WAKE_WINDOW`].
//!
//! A wake is a hint, not a delivery: a process that dies between its commit and the send, or a
//! send that fails, leaves the rows for the listener's own poll to find, so every listener of
//! these channels also polls.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc;

/// The shortest time between two notifications a process sends on one channel. Pokes in the
/// window after a send share the next one, so a burst costs two NOTIFYs; a lone poke is sent
/// at once.
pub const WAKE_WINDOW: Duration = Duration::from_millis(20);

/// A handle that wakes one channel's listeners after a commit. Clones share one sender task;
/// it ends when the last clone is dropped.
#[derive(Clone)]
pub struct Wake {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    /// `None`: the outbox relay's channel, as `outbox_channel()` names it.
    channel: Option<Cow<'static, str>>,
    /// Started by the first poke, so a handle can be built outside a runtime.
    poked: OnceLock<mpsc::Sender<()>>,
}

impl Wake {
    /// Wakes the outbox relay (the channel `outbox_channel()` names): poke it after a
    /// transaction that called `dispatch_job()` commits.
    pub fn outbox(pool: PgPool) -> Wake {
        Wake::new(pool, None)
    }

    /// Wakes the listeners of `channel`: poke it after the transaction that gave them work
    /// commits.
    pub fn channel(pool: PgPool, channel: impl Into<Cow<'static, str>>) -> Wake {
        Wake::new(pool, Some(channel.into()))
    }

    fn new(pool: PgPool, channel: Option<Cow<'static, str>>) -> Wake {
        Wake {
            inner: Arc::new(Inner {
                pool,
                channel,
                poked: OnceLock::new(),
            }),
        }
    }

    /// Asks for one notification, sent soon by the handle's task. Call it only after the
    /// commit that wrote the work: a listener woken before that finds nothing. Never waits;
    /// must run inside a Tokio runtime.
    pub fn poke(&self) {
        let tx = self.inner.poked.get_or_init(|| {
            // One slot: a poke that finds it full is already covered by the send it waits for.
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(send_loop(
                self.inner.pool.clone(),
                self.inner.channel.clone(),
                rx,
            ));
            tx
        });
        let _ = tx.try_send(());
    }
}

/// Sends one notification per wake-up, then keeps quiet for the window; pokes made meanwhile
/// (or during the send) leave the one slot full, which is the next send. Ends when every
/// handle is gone.
async fn send_loop(pool: PgPool, channel: Option<Cow<'static, str>>, mut rx: mpsc::Receiver<()>) {
    while rx.recv().await.is_some() {
        let sent = sqlx::query!(
            "select pg_notify(coalesce($1, outbox_channel()), '')",
            channel.as_deref()
        )
        .execute(&pool)
        .await;
        match sent {
            Ok(_) => {}
            // The process is stopping and has closed its pool: every later send would fail the
            // same way, and a listener elsewhere still polls. Not worth a warning at each stop.
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                // The listener's poll finds the work; only the wake is late.
                tracing::warn!(error = %e, channel = channel.as_deref().unwrap_or("outbox"),
                    "cannot send a wake-up; the listener finds the work at its next poll");
            }
        }
        tokio::time::sleep(WAKE_WINDOW).await;
    }
}
