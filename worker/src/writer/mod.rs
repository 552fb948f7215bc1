//! Group commit for a worker's writes: checkpoints, and the steps of the render protocol
//! (intents, provider ids, downloads, costs). Job tasks hand each write to one writer task,
//! which writes whatever has gathered in one transaction (`aiprod_store::commit_group`) and
//! answers each task after the commit. An intent's task waits for its write to be durable
//! before it goes on (a POST is never sent before its intent has committed), as do most render
//! steps'; two steps that nothing outside depends on are queued without a wait (`step_behind`). A checkpoint's
//! task may go on at once and look at the answer later (`Committing`): its job's next writes
//! queue behind it, and a group writes a job's writes in order, one round each
//! (`aiprod_store::commit_rounds`), so a job that runs several stages while one group commits
//! still takes one commit for them; checkpoints one after the other share a round, and so one
//! statement and one update of the job's row.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use aiprod_domain::{JobId, RenderState};
use aiprod_store::{
    CheckpointOutcome, Group, GroupOutcome, Intent, RenderStep, RenderTask, RenderUpdate,
    commit_rounds,
};
use backon::Retryable;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::dbretry::{db_retry, transient};
pub(crate) use pending::{PendingCheckpoint, PendingIntent};
use rounds::{next_group, refusal_of};

/// The most writes in one transaction.
const MAX_BATCH: usize = 256;
/// The most writes of one job in one transaction (a statement per round): a job has nine
/// checkpoints in all, and one render step at a time per shot.
const MAX_ROUNDS: usize = 16;

type Answer<T> = oneshot::Sender<Result<T, String>>;

/// One write and where its answer goes.
enum Op {
    Checkpoint(PendingCheckpoint, Answer<CheckpointOutcome>),
    Intent(PendingIntent, Answer<Option<RenderTask>>),
    /// A step of render `.1`, of job `.0`; no answer: its caller went on (`step_behind`).
    Step(JobId, Uuid, RenderState, RenderUpdate, Option<Answer<bool>>),
    /// Writes nothing; answered once every earlier write of the job has been (`flush`).
    Flush(JobId, oneshot::Sender<()>),
}

impl Op {
    /// The job the op writes for: a job's writes land in the order it made them, one round
    /// each (a run of checkpoints shares one), since each statement reads a job's money once.
    fn job(&self) -> JobId {
        match self {
            Op::Checkpoint(c, _) => c.job_id,
            Op::Intent(i, _) => i.job_id,
            Op::Step(job, ..) | Op::Flush(job, _) => *job,
        }
    }
}

/// A checkpoint handed to the writer, whose commit may still be under way.
pub(crate) enum Committing {
    /// In the writer's queue or group.
    Sent(oneshot::Receiver<Result<CheckpointOutcome, String>>),
    /// Already written (no writer runs).
    Done(Result<CheckpointOutcome, String>),
}

impl Committing {
    /// What the checkpoint did, once its group has committed.
    pub async fn outcome(self) -> Result<CheckpointOutcome, String> {
        match self {
            Committing::Sent(answer) => answer.await.unwrap_or_else(|_| Err(STOPPED.into())),
            Committing::Done(r) => r,
        }
    }

    /// What the checkpoint did, if its group has committed already.
    pub fn ready(&mut self) -> Option<Result<CheckpointOutcome, String>> {
        match self {
            Committing::Sent(answer) => match answer.try_recv() {
                Ok(a) => Some(a),
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => Some(Err(STOPPED.into())),
            },
            Committing::Done(r) => Some(r.clone()),
        }
    }
}

/// A handle to the writer task; the task ends once every handle is dropped.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::UnboundedSender<Op>,
    refused: Refused,
}

/// Why a step whose caller went on was not taken, by render (with its job), until that
/// render's next awaited step reports it or the job's run ends (`forget`).
type Refused = Arc<Mutex<HashMap<Uuid, (JobId, String)>>>;

const STOPPED: &str = "the writer has stopped";

impl Writer {
    /// Starts the writer for the leases of `worker`, on a thread of its own with a connection of
    /// its own to the database `pool` reaches. The handle ends once the writer has.
    ///
    /// Every awaited write of every job waits for the writer's group, one after the other,
    /// so the writer is the process's one serial path. On the runtime's threads it took its
    /// turn behind the job tasks' work between each round trip of a group; on its own thread
    /// the system schedules it as soon as the server answers (at 8 slots a group took 9.8 ms
    /// on the runtime and 7.7 ms on its own thread, README "Performance").
    pub fn start(
        pool: PgPool,
        worker: std::sync::Arc<str>,
    ) -> std::io::Result<(Writer, JoinHandle<()>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let refused = Refused::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (done, ended) = oneshot::channel();
        let theirs = refused.clone();
        std::thread::Builder::new()
            .name("aiprod-writer".into())
            .spawn(move || {
                runtime.block_on(async move {
                    // Made here: the pool's connections live on this thread's runtime.
                    let own = aiprod_store::db::keyed_pool(&pool, 1);
                    drop(pool);
                    write_groups(own.clone(), worker, rx, theirs).await;
                    own.close().await;
                });
                let _ = done.send(());
            })?;
        let writes = tokio::spawn(async move {
            let _ = ended.await;
        });
        Ok((Writer { tx, refused }, writes))
    }

    async fn ask<T>(&self, op: impl FnOnce(Answer<T>) -> Op) -> Result<T, String> {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(op(reply)).is_err() {
            return Err(STOPPED.into());
        }
        answer.await.unwrap_or_else(|_| Err(STOPPED.into()))
    }

    /// Queues one checkpoint, behind every write its job has queued, and returns at once.
    pub fn send(&self, cp: PendingCheckpoint) -> Committing {
        let (reply, answer) = oneshot::channel();
        match self.tx.send(Op::Checkpoint(cp, reply)) {
            Ok(()) => Committing::Sent(answer),
            Err(_) => Committing::Done(Err(STOPPED.into())),
        }
    }

    /// Writes an intent, reserving its money on the job's stripe, and waits for its commit.
    /// `None`: not written (the stripe is short or the lease gone); ask `insert_intent`.
    pub async fn intent(&self, i: &Intent<'_>) -> Result<Option<RenderTask>, String> {
        let pending = PendingIntent::of(i);
        self.ask(|reply| Op::Intent(pending, reply)).await
    }

    /// Takes a step of render `id` of job `job` from state `from` and waits for its commit;
    /// false if the render had left `from`.
    pub async fn step(
        &self,
        job: JobId,
        id: Uuid,
        from: RenderState,
        u: RenderUpdate,
    ) -> Result<bool, String> {
        let taken = self
            .ask(|reply| Op::Step(job, id, from, u, Some(reply)))
            .await;
        // An earlier step of this render that its caller did not wait for, and that was not
        // taken, fails this one: it is the first the caller hears of the render.
        match self.refused.lock().expect("never poisoned").remove(&id) {
            Some((_, why)) => Err(why),
            None => taken,
        }
    }

    /// Waits until every write `job` has queued is written (or failed), and forgets the
    /// refusals of its steps: before a stage runs again and reads the job's rows afresh, so
    /// that it reads what its last try queued without waiting.
    pub async fn flush(&self, job: JobId) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Op::Flush(job, done)).is_ok() {
            let _ = wait.await;
        }
        self.forget(job);
    }

    /// Drops what is kept about `job`'s refused steps, once its run in this worker ends.
    pub fn forget(&self, job: JobId) {
        self.refused
            .lock()
            .expect("never poisoned")
            .retain(|_, (j, _)| *j != job);
    }

    /// Queues a step of render `id` and returns at once. Whether it was taken is told by the
    /// render's next `step`, which queues behind it; until the job's run has heard it (its
    /// `flush` or its end), every later write of the job fails with it, so nothing that
    /// follows the step (the stage's checkpoint) lands without it. For steps that nothing
    /// outside the process depends on (the provider's id once the POST is answered, the
    /// outputs once it is done, the download), so the render's polls, download and the next
    /// stages run while it commits.
    pub fn step_behind(
        &self,
        job: JobId,
        id: Uuid,
        from: RenderState,
        u: RenderUpdate,
    ) -> Result<(), String> {
        self.tx
            .send(Op::Step(job, id, from, u, None))
            .map_err(|_| STOPPED.to_owned())
    }
}

async fn write_groups(
    pool: PgPool,
    worker: std::sync::Arc<str>,
    mut rx: mpsc::UnboundedReceiver<Op>,
    refused: Refused,
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
        let rounds = next_group(&mut queue, &refused);
        write_group(&pool, &worker, rounds, &refused).await;
    }
}

/// Writes one group and answers its ops. A group that fails for a reason other than a
/// transient one is written again op by op, in order, so one bad write fails only its own job.
async fn write_group(pool: &PgPool, worker: &str, rounds: Vec<Vec<Op>>, refused: &Refused) {
    let result = commit(pool, worker, &rounds).await;
    let ops = rounds.iter().map(Vec::len).sum::<usize>();
    match result {
        Ok(out) => {
            for (round, out) in rounds.into_iter().zip(out) {
                answer(round, out, refused);
            }
        }
        Err(e) if ops == 1 || transient(&e) => {
            let msg = e.to_string();
            for op in rounds.into_iter().flatten() {
                fail(op, &msg, refused);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, writes = ops, "a group of writes failed; writing each alone");
            for op in rounds.into_iter().flatten() {
                if let Some(why) = refusal_of(refused, op.job()) {
                    fail(op, &why, refused);
                    continue;
                }
                let one = vec![vec![op]];
                match commit(pool, worker, &one).await {
                    Ok(out) => {
                        for (round, out) in one.into_iter().zip(out) {
                            answer(round, out, refused);
                        }
                    }
                    Err(e) => {
                        for op in one.into_iter().flatten() {
                            fail(op, &e.to_string(), refused);
                        }
                    }
                }
            }
        }
    }
}

async fn commit(
    pool: &PgPool,
    worker: &str,
    rounds: &[Vec<Op>],
) -> sqlx::Result<Vec<GroupOutcome>> {
    let mut cps = Vec::with_capacity(rounds.len());
    let mut intents = Vec::with_capacity(rounds.len());
    let mut steps = Vec::with_capacity(rounds.len());
    for ops in rounds {
        let (mut c, mut i, mut s) = (Vec::new(), Vec::new(), Vec::new());
        for op in ops {
            match op {
                Op::Checkpoint(cp, _) => c.push(cp.borrowed(worker)),
                Op::Intent(intent, _) => i.push(intent.borrowed(worker)),
                Op::Step(_, id, from, u, _) => s.push(RenderStep {
                    id: *id,
                    from: *from,
                    update: u,
                }),
                Op::Flush(..) => {}
            }
        }
        cps.push(c);
        intents.push(i);
        steps.push(s);
    }
    let groups: Vec<Group<'_>> = (0..rounds.len())
        .map(|r| Group {
            checkpoints: &cps[r],
            intents: &intents[r],
            steps: &steps[r],
        })
        .collect();
    (|| commit_rounds(pool, worker, &groups))
        .retry(db_retry())
        .when(transient)
        .await
}

fn answer(ops: Vec<Op>, out: GroupOutcome, refused: &Refused) {
    let mut cps = out.checkpoints.into_iter();
    let mut intents = out.intents.into_iter();
    let mut steps = out.steps.into_iter();
    for op in ops {
        match op {
            Op::Checkpoint(_, reply) => {
                let outcome = cps.next().unwrap_or(CheckpointOutcome::LeaseLost);
                let _ = reply.send(Ok(outcome));
            }
            Op::Intent(_, reply) => {
                let _ = reply.send(Ok(intents.next().flatten()));
            }
            Op::Step(job, id, .., reply) => {
                let taken = steps.next().unwrap_or(false);
                match reply {
                    Some(reply) => {
                        let _ = reply.send(Ok(taken));
                    }
                    None if !taken => refuse(refused, job, id, TAKEN_OVER.to_owned()),
                    None => {}
                }
            }
            Op::Flush(_, done) => {
                let _ = done.send(());
            }
        }
    }
}

fn fail(op: Op, msg: &str, refused: &Refused) {
    match op {
        Op::Checkpoint(_, reply) => {
            let _ = reply.send(Err(msg.to_owned()));
        }
        Op::Intent(_, reply) => {
            let _ = reply.send(Err(msg.to_owned()));
        }
        Op::Step(job, id, .., reply) => match reply {
            Some(reply) => {
                let _ = reply.send(Err(msg.to_owned()));
            }
            None => refuse(refused, job, id, msg.to_owned()),
        },
        Op::Flush(_, done) => {
            let _ = done.send(());
        }
    }
}

/// What a step not taken says: the render had left the state it was taken from.
const TAKEN_OVER: &str = "another worker took over this render";

fn refuse(refused: &Refused, job: JobId, id: Uuid, why: String) {
    refused
        .lock()
        .expect("never poisoned")
        .entry(id)
        .or_insert((job, why));
}

mod pending;
mod rounds;
#[cfg(test)]
mod tests;
