//! Group commit for a worker's writes: checkpoints, and the steps of the render protocol
//! (intents, provider ids, downloads, costs). Job tasks hand each write to one writer task,
//! which writes whatever has gathered in one transaction (`aiprod_store::commit_group`) and
//! answers each task after the commit. Every task still waits for its own write to be durable
//! before it goes on (a POST is never sent before its intent has committed); concurrent jobs
//! merely share the commit, so the database does a fraction of the commits under load.

use std::collections::{HashSet, VecDeque};

use aiprod_domain::{BackendName, JobId, Money, RenderState, Stage};
use aiprod_store::{
    Checkpoint, CheckpointOutcome, Group, GroupOutcome, Intent, JobPatch, RenderStep, RenderTask,
    RenderUpdate, commit_group,
};
use backon::Retryable;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::dbretry::{db_retry, transient};

/// The most writes in one transaction.
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

/// An intent waiting to be written, owned (`aiprod_store::Intent`).
#[derive(Debug)]
pub(crate) struct PendingIntent {
    pub job_id: JobId,
    pub lease_epoch: i64,
    pub shot: i32,
    pub attempt: i32,
    pub backend: BackendName,
    pub duration_s: i32,
    pub estimate: Money,
    pub baseline: Option<Money>,
    pub seed: Option<i64>,
    pub spec_key: Option<String>,
}

impl PendingIntent {
    /// An owned copy of `i`.
    pub fn of(i: &Intent<'_>) -> PendingIntent {
        PendingIntent {
            job_id: i.job_id,
            lease_epoch: i.lease_epoch,
            shot: i.shot,
            attempt: i.attempt,
            backend: i.backend,
            duration_s: i.duration_s,
            estimate: i.estimate,
            baseline: i.baseline,
            seed: i.seed,
            spec_key: i.spec_key.map(str::to_owned),
        }
    }

    fn borrowed<'a>(&'a self, worker: &'a str) -> Intent<'a> {
        Intent {
            job_id: self.job_id,
            lease_epoch: self.lease_epoch,
            worker_id: worker,
            shot: self.shot,
            attempt: self.attempt,
            backend: self.backend,
            duration_s: self.duration_s,
            estimate: self.estimate,
            baseline: self.baseline,
            seed: self.seed,
            spec_key: self.spec_key.as_deref(),
        }
    }
}

type Answer<T> = oneshot::Sender<(Result<T, String>, Value)>;

/// One write and where its answer goes. A checkpoint's output travels back with the answer.
enum Op {
    Checkpoint(PendingCheckpoint, Answer<CheckpointOutcome>),
    Intent(PendingIntent, Answer<Option<RenderTask>>),
    Step(Uuid, RenderState, RenderUpdate, Answer<bool>),
}

impl Op {
    /// What the op writes that another op of the same group must not: a job's checkpoint, a
    /// job's intent (each reads the job's money once), a render's step.
    fn key(&self) -> (u8, Uuid) {
        match self {
            Op::Checkpoint(c, _) => (0, c.job_id.as_uuid()),
            Op::Intent(i, _) => (1, i.job_id.as_uuid()),
            Op::Step(id, ..) => (2, *id),
        }
    }
}

/// A handle to the writer task; the task ends once every handle is dropped.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::UnboundedSender<Op>,
}

const STOPPED: &str = "the writer has stopped";

impl Writer {
    /// Starts the writer for the leases of `worker`.
    pub fn start(pool: PgPool, worker: std::sync::Arc<str>) -> (Writer, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Writer { tx }, tokio::spawn(write_groups(pool, worker, rx)))
    }

    async fn ask<T>(&self, op: impl FnOnce(Answer<T>) -> Op) -> (Result<T, String>, Value) {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(op(reply)).is_err() {
            return (Err(STOPPED.into()), Value::Null);
        }
        answer
            .await
            .unwrap_or_else(|_| (Err(STOPPED.into()), Value::Null))
    }

    /// Writes one checkpoint and waits for its commit. Gives the output back for the job's
    /// later stages.
    pub async fn write(&self, cp: PendingCheckpoint) -> (Result<CheckpointOutcome, String>, Value) {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(Op::Checkpoint(cp, _))) =
            self.tx.send(Op::Checkpoint(cp, reply))
        {
            return (Err(STOPPED.into()), cp.output);
        }
        answer
            .await
            .unwrap_or_else(|_| (Err(STOPPED.into()), Value::Null))
    }

    /// Writes an intent, reserving its money on the job's stripe, and waits for its commit.
    /// `None`: not written (the stripe is short or the lease gone); ask `insert_intent`.
    pub async fn intent(&self, i: &Intent<'_>) -> Result<Option<RenderTask>, String> {
        let pending = PendingIntent::of(i);
        self.ask(|reply| Op::Intent(pending, reply)).await.0
    }

    /// Takes a step of render `id` from state `from` and waits for its commit; false if the
    /// render had left `from`.
    pub async fn step(&self, id: Uuid, from: RenderState, u: RenderUpdate) -> Result<bool, String> {
        self.ask(|reply| Op::Step(id, from, u, reply)).await.0
    }
}

async fn write_groups(
    pool: PgPool,
    worker: std::sync::Arc<str>,
    mut rx: mpsc::UnboundedReceiver<Op>,
) {
    let mut queue: VecDeque<Op> = VecDeque::new();
    let mut incoming = Vec::with_capacity(MAX_BATCH);
    loop {
        if queue.is_empty() {
            if rx.recv_many(&mut incoming, MAX_BATCH).await == 0 {
                return;
            }
        } else {
            // Writes held back from the last group go first; add whatever else has come.
            while incoming.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => incoming.push(op),
                    Err(_) => break,
                }
            }
        }
        queue.extend(incoming.drain(..));
        let mut group = Vec::with_capacity(MAX_BATCH.min(queue.len()));
        let mut keys = HashSet::new();
        let mut rest = VecDeque::new();
        while let Some(op) = queue.pop_front() {
            if group.len() < MAX_BATCH && keys.insert(op.key()) {
                group.push(op);
            } else {
                rest.push_back(op);
            }
        }
        queue = rest;
        write_group(&pool, &worker, group).await;
    }
}

/// Writes one group and answers its ops. A group that fails for a reason other than a
/// transient one is written again op by op, so one bad write fails only its own job.
async fn write_group(pool: &PgPool, worker: &str, ops: Vec<Op>) {
    let result = commit(pool, worker, &ops).await;
    match result {
        Ok(out) => answer(ops, out),
        Err(e) if ops.len() == 1 || transient(&e) => {
            let msg = e.to_string();
            for op in ops {
                fail(op, &msg);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, writes = ops.len(), "a group of writes failed; writing each alone");
            for op in ops {
                let one = [op];
                match commit(pool, worker, &one).await {
                    Ok(out) => answer(one.into_iter().collect(), out),
                    Err(e) => {
                        let [op] = one;
                        fail(op, &e.to_string());
                    }
                }
            }
        }
    }
}

async fn commit(pool: &PgPool, worker: &str, ops: &[Op]) -> sqlx::Result<GroupOutcome> {
    let mut cps = Vec::new();
    let mut intents = Vec::new();
    let mut steps = Vec::new();
    for op in ops {
        match op {
            Op::Checkpoint(c, _) => cps.push(c.borrowed(worker)),
            Op::Intent(i, _) => intents.push(i.borrowed(worker)),
            Op::Step(id, from, u, _) => steps.push(RenderStep {
                id: *id,
                from: *from,
                update: u,
            }),
        }
    }
    let group = Group {
        checkpoints: &cps,
        intents: &intents,
        steps: &steps,
    };
    (|| commit_group(pool, worker, group))
        .retry(db_retry())
        .when(transient)
        .await
}

fn answer(ops: Vec<Op>, out: GroupOutcome) {
    let mut cps = out.checkpoints.into_iter();
    let mut intents = out.intents.into_iter();
    let mut steps = out.steps.into_iter();
    for op in ops {
        match op {
            Op::Checkpoint(c, reply) => {
                let outcome = cps.next().unwrap_or(CheckpointOutcome::LeaseLost);
                let _ = reply.send((Ok(outcome), c.output));
            }
            Op::Intent(_, reply) => {
                let _ = reply.send((Ok(intents.next().flatten()), Value::Null));
            }
            Op::Step(.., reply) => {
                let _ = reply.send((Ok(steps.next().unwrap_or(false)), Value::Null));
            }
        }
    }
}

fn fail(op: Op, msg: &str) {
    match op {
        Op::Checkpoint(c, reply) => {
            let _ = reply.send((Err(msg.to_owned()), c.output));
        }
        Op::Intent(_, reply) => {
            let _ = reply.send((Err(msg.to_owned()), Value::Null));
        }
        Op::Step(.., reply) => {
            let _ = reply.send((Err(msg.to_owned()), Value::Null));
        }
    }
}
