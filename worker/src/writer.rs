//! Group commit for checkpoints. Job tasks hand their finished stage to one writer task, which
//! writes whatever has gathered in one statement (one commit) and answers each task. Every job
//! still waits for its own checkpoint to commit before it starts the next stage; concurrent jobs
//! merely share the commit, so the database does a fraction of the commits under load.

use aiprod_domain::{JobId, Stage};
use aiprod_store::{Checkpoint, CheckpointOutcome, JobPatch, save_checkpoints};
use backon::Retryable;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::dbretry::{db_retry, transient};

/// The most checkpoints in one statement.
const MAX_BATCH: usize = 256;

/// A finished stage waiting to be written, owned so it can cross to the writer task.
#[derive(Debug)]
pub(crate) struct PendingCheckpoint {
    pub job_id: JobId,
    pub lease_epoch: i64,
    pub stage: Stage,
    pub output: Value,
    pub retries: i32,
    pub patch: JobPatch,
}

impl PendingCheckpoint {
    /// The checkpoint as the store takes it.
    pub fn borrowed<'a>(&'a self, worker: &'a str) -> Checkpoint<'a> {
        Checkpoint {
            job_id: self.job_id,
            lease_epoch: self.lease_epoch,
            worker,
            stage: self.stage,
            output: &self.output,
            retries: self.retries,
            patch: self.patch.clone(),
        }
    }
}

type Reply = oneshot::Sender<(Result<CheckpointOutcome, String>, Value)>;

/// A handle to the writer task; the task ends once every handle is dropped.
#[derive(Clone)]
pub(crate) struct CheckpointWriter {
    tx: mpsc::UnboundedSender<(PendingCheckpoint, Reply)>,
}

impl CheckpointWriter {
    /// Starts the writer for the leases of `worker`.
    pub fn start(pool: PgPool, worker: std::sync::Arc<str>) -> (CheckpointWriter, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            CheckpointWriter { tx },
            tokio::spawn(write_batches(pool, worker, rx)),
        )
    }

    /// Writes one checkpoint and waits for its commit. Gives the output back for the job's
    /// later stages.
    pub async fn write(&self, cp: PendingCheckpoint) -> (Result<CheckpointOutcome, String>, Value) {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError((cp, _))) = self.tx.send((cp, reply)) {
            return (Err("the checkpoint writer has stopped".into()), cp.output);
        }
        answer
            .await
            .unwrap_or_else(|_| (Err("the checkpoint writer has stopped".into()), Value::Null))
    }
}

async fn write_batches(
    pool: PgPool,
    worker: std::sync::Arc<str>,
    mut rx: mpsc::UnboundedReceiver<(PendingCheckpoint, Reply)>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let cps: Vec<Checkpoint<'_>> = batch.iter().map(|(p, _)| p.borrowed(&worker)).collect();
        let saved = (|| save_checkpoints(&pool, &worker, &cps))
            .retry(db_retry())
            .when(transient)
            .await;
        drop(cps);
        match saved {
            Ok(outcomes) => {
                for ((p, reply), outcome) in batch.drain(..).zip(outcomes) {
                    let _ = reply.send((Ok(outcome), p.output));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (p, reply) in batch.drain(..) {
                    let _ = reply.send((Err(msg.clone()), p.output));
                }
            }
        }
    }
}
