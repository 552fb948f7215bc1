//! One poll scheduler per backend, so that a render in flight costs an entry in a timer wheel
//! rather than a task of its own that sleeps and wakes at every poll. A render registers its
//! provider handle and deadline, then awaits one answer: the scheduler keeps every render of
//! its backend in a `DelayQueue`, wakes once per tick for all the renders due in it, polls them
//! (in batches where the backend polls several in one call, as the simulation does; each
//! batch, or each single poll, at most `POLLS_AT_ONCE` at a time), and reschedules each at the
//! provider's cadence with jitter until its render ends.
//!
//! The rules are those of one render followed alone: throttling is capacity (a `Retry-After`
//! sets the next poll, and no failure is counted); five failed polls in a row hand the render
//! to the stage's next try; a render still running at the job's deadline is answered
//! `Deadline` (the caller cancels it at the provider). A render whose caller stopped waiting
//! (its lease was lost, or the worker stops at once) is dropped at its next due time, unpolled.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll as TaskPoll;
use std::time::Duration;

use aiprod_backends::{Backend, BackendError, FailureClass, Output, Poll, RemoteHandle};
use aiprod_domain::BackendName;
use aiprod_platform::metrics::Metrics;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::time::DelayQueue;

use super::jitter;

/// Polls of one backend under way at once; each carries up to `Backend::poll_batch` renders.
const POLLS_AT_ONCE: usize = 32;
/// Failed polls in a row that hand a render to the stage's next try.
const ERRORS_TO_HAND_OFF: u32 = 5;
/// The coarsest tick: renders due within one tick are polled together.
const TICK_MAX: Duration = Duration::from_millis(50);

/// How a followed render ended, as far as polling can tell.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Finished: where the video is, and the provider's measure of the work where it gives one.
    Done(Vec<Output>, Option<aiprod_domain::HardwareSeconds>),
    /// Failed at the provider.
    Failed(FailureClass, String),
    /// The provider no longer knows the render.
    Expired(String),
    /// Five polls in a row failed; the last error.
    Unreachable(BackendError),
    /// The job's deadline came while the render was still running.
    Deadline,
    /// The scheduler is gone (its runtime is shutting down).
    Stopped,
}

/// One render waiting for its end.
struct Watch {
    handle: RemoteHandle,
    deadline: Instant,
    /// Failed polls in a row.
    errors: u32,
    answer: oneshot::Sender<Verdict>,
}

/// The poll schedulers of a worker process, one per backend, each started on first use.
#[derive(Default)]
pub(crate) struct Pollers {
    by_backend: Mutex<HashMap<BackendName, mpsc::UnboundedSender<Watch>>>,
}

impl Pollers {
    /// Follows the render `handle` on `backend` until it ends or `deadline` passes. Dropping
    /// the future stops its polling.
    pub async fn follow(
        &self,
        backend: &Arc<dyn Backend>,
        handle: RemoteHandle,
        deadline: Instant,
    ) -> Verdict {
        let (answer, verdict) = oneshot::channel();
        let watch = Watch {
            handle,
            deadline,
            errors: 0,
            answer,
        };
        {
            let mut by_backend = self.by_backend.lock().expect("poller table lock");
            let sender = by_backend
                .entry(backend.name())
                .or_insert_with(|| start(backend.clone()));
            // A scheduler whose runtime ended (a test's, say) is replaced once.
            if let Err(mpsc::error::SendError(watch)) = sender.send(watch) {
                *sender = start(backend.clone());
                if sender.send(watch).is_err() {
                    return Verdict::Stopped;
                }
            }
        }
        verdict.await.unwrap_or(Verdict::Stopped)
    }
}

fn start(backend: Arc<dyn Backend>) -> mpsc::UnboundedSender<Watch> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(Scheduler::new(backend).run(rx));
    tx
}

/// One poll call under way: the renders it asked about, and the answers in their order.
type Batch = Pin<Box<dyn Future<Output = (Vec<Watch>, Vec<Result<Poll, BackendError>>)> + Send>>;

/// The renders of one backend, by next due time.
struct Scheduler {
    backend: Arc<dyn Backend>,
    /// The provider's cadence, before jitter.
    cadence: Duration,
    /// Due times are rounded up to a multiple of this from `epoch`, so renders share wake-ups.
    tick: Duration,
    epoch: Instant,
    wheel: DelayQueue<Watch>,
    /// Due renders, in poll-sized groups, waiting for a free place among `running`.
    ready: VecDeque<Vec<Watch>>,
    running: FuturesUnordered<Batch>,
}

impl Scheduler {
    fn new(backend: Arc<dyn Backend>) -> Scheduler {
        let cadence = backend.poll_interval();
        Scheduler {
            backend,
            cadence,
            tick: (cadence / 10).clamp(Duration::from_millis(1), TICK_MAX),
            epoch: Instant::now(),
            wheel: DelayQueue::new(),
            ready: VecDeque::new(),
            running: FuturesUnordered::new(),
        }
    }

    /// Runs until every handle to it is gone and no render is left.
    async fn run(mut self, mut watches: mpsc::UnboundedReceiver<Watch>) {
        let mut open = true;
        loop {
            tokio::select! {
                w = watches.recv(), if open => match w {
                    // A new render is polled at once, as a render followed alone was.
                    Some(w) if Instant::now() < w.deadline => {
                        self.wheel.insert_at(w, Instant::now());
                    }
                    Some(w) => answer(w, Verdict::Deadline),
                    None => open = false,
                },
                due = expired(&mut self.wheel), if !self.wheel.is_empty() => self.queue(due),
                Some((asked, answers)) = self.running.next(), if !self.running.is_empty() => {
                    self.settle(asked, answers);
                }
            }
            self.start_polls();
            if !open && self.wheel.is_empty() && self.ready.is_empty() && self.running.is_empty() {
                return;
            }
        }
    }

    /// Groups due renders into polls, leaving out those nobody waits for any more.
    fn queue(&mut self, due: Vec<Watch>) {
        let size = self.backend.poll_batch().max(1);
        let mut group = Vec::with_capacity(size.min(due.len()));
        for w in due.into_iter().filter(|w| !w.answer.is_closed()) {
            group.push(w);
            if group.len() == size {
                self.ready.push_back(std::mem::take(&mut group));
            }
        }
        if !group.is_empty() {
            self.ready.push_back(group);
        }
    }

    fn start_polls(&mut self) {
        while self.running.len() < POLLS_AT_ONCE {
            let Some(asked) = self.ready.pop_front() else {
                return;
            };
            let backend = self.backend.clone();
            self.running.push(Box::pin(async move {
                let handles: Vec<&RemoteHandle> = asked.iter().map(|w| &w.handle).collect();
                let answers = backend.poll_many(&handles).await;
                drop(handles);
                (asked, answers)
            }));
        }
    }

    fn settle(&mut self, asked: Vec<Watch>, answers: Vec<Result<Poll, BackendError>>) {
        let name = self.backend.name();
        let missing = || {
            Err(BackendError::Transient(format!(
                "{name} gave no answer for a render in a batch poll"
            )))
        };
        let answers = answers.into_iter().chain(std::iter::repeat_with(missing));
        for (mut w, result) in asked.into_iter().zip(answers) {
            let wait = jitter(self.cadence);
            match result {
                Ok(Poll::Pending(_) | Poll::Throttled) => {
                    w.errors = 0;
                    self.again(w, wait);
                }
                Ok(Poll::Done(outputs, used)) => answer(w, Verdict::Done(outputs, used)),
                Ok(Poll::Failed(class, message)) => answer(w, Verdict::Failed(class, message)),
                Err(BackendError::Throttled { retry_after, .. }) => {
                    self.again(w, retry_after.unwrap_or(wait));
                }
                Err(BackendError::Expired(m)) => answer(w, Verdict::Expired(m)),
                Err(e) => {
                    w.errors += 1;
                    Metrics::global()
                        .backend_errors
                        .with_label_values(&[name.as_str()])
                        .inc();
                    if w.errors >= ERRORS_TO_HAND_OFF {
                        answer(w, Verdict::Unreachable(e));
                    } else {
                        self.again(w, wait);
                    }
                }
            }
        }
    }

    /// Polls `w` again after `wait`, or at its deadline if that comes first; a render whose
    /// deadline has passed is answered instead.
    fn again(&mut self, w: Watch, wait: Duration) {
        let now = Instant::now();
        if now >= w.deadline {
            return answer(w, Verdict::Deadline);
        }
        let at = self.on_tick((now + wait).min(w.deadline));
        self.wheel.insert_at(w, at);
    }

    /// `at` rounded up to the next tick.
    fn on_tick(&self, at: Instant) -> Instant {
        let tick = self.tick.as_nanos();
        let ticks = at
            .saturating_duration_since(self.epoch)
            .as_nanos()
            .div_ceil(tick);
        let offset = u64::try_from(ticks * tick).unwrap_or(u64::MAX);
        self.epoch + Duration::from_nanos(offset)
    }
}

fn answer(w: Watch, verdict: Verdict) {
    // The caller may have stopped waiting (a lost lease): nothing to tell.
    let _ = w.answer.send(verdict);
}

/// Every render now due, once at least one is.
fn expired(wheel: &mut DelayQueue<Watch>) -> impl Future<Output = Vec<Watch>> + '_ {
    std::future::poll_fn(move |cx| {
        let mut due = Vec::new();
        while let TaskPoll::Ready(Some(e)) = wheel.poll_expired(cx) {
            due.push(e.into_inner());
        }
        if due.is_empty() {
            TaskPoll::Pending
        } else {
            TaskPoll::Ready(due)
        }
    })
}

#[cfg(test)]
mod tests;
