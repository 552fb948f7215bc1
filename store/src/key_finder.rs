//! The API process's key lookups, batched: requests that arrive together share one statement
//! (`find_api_keys`) instead of a round trip each. A request's key is still read after the
//! request arrived, so a revoked key is refused at once, on every replica, as with one lookup
//! per request; concurrent requests merely share the read.

use std::sync::{Arc, OnceLock};

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::tenant::{KeyLookup, find_api_keys};

/// The most keys in one statement.
const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<Option<KeyLookup>, Arc<sqlx::Error>>>;

/// A presented key: its prefix and the SHA-256 of the whole key.
type Ask = (String, [u8; 32]);

/// Batched key lookups over one pool: a handle that starts its task on first use and ends it
/// once every handle is dropped.
#[derive(Clone)]
pub struct KeyFinder {
    pool: PgPool,
    tx: Arc<OnceLock<mpsc::UnboundedSender<(Ask, Reply)>>>,
}

impl KeyFinder {
    /// Lookups over `pool`.
    pub fn new(pool: PgPool) -> KeyFinder {
        KeyFinder {
            pool,
            tx: Arc::new(OnceLock::new()),
        }
    }

    /// The key with `prefix` (`find_api_key` with `used` = `digest`), read in the batch this
    /// call joins.
    pub async fn find(
        &self,
        prefix: &str,
        digest: [u8; 32],
    ) -> Result<Option<KeyLookup>, Arc<sqlx::Error>> {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(look_up(self.pool.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let stopped = || Arc::new(sqlx::Error::PoolClosed);
        tx.send(((prefix.to_owned(), digest), reply))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn look_up(pool: PgPool, mut rx: mpsc::UnboundedReceiver<(Ask, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (asks, replies): (Vec<Ask>, Vec<Reply>) = batch.drain(..).unzip();
        let keys: Vec<(&str, Option<&[u8]>)> = asks
            .iter()
            .map(|(p, d)| (p.as_str(), Some(d.as_slice())))
            .collect();
        match find_api_keys(&pool, &keys).await {
            Ok(found) => {
                for (reply, f) in replies.into_iter().zip(found) {
                    let _ = reply.send(Ok(f));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
