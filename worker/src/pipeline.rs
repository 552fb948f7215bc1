//! One job, stage after stage: run a try, decide (checkpoint, retry or fail), write the
//! checkpoint, advance. Nothing is held open across a stage's work: the lease is renewed by the
//! heartbeat, and every write is one fenced statement.
//!
//! A checkpoint is handed to the group-commit writer, and the next stage starts while it
//! commits, unless that stage may call a paid service before writing anything the checkpoints
//! fence (`stages::settles_first`), the job is ending, or the worker is stopping: then the job
//! first waits for all its checkpoints. A cancel or a lost lease that a checkpoint finds
//! therefore stops the job before it pays for anything (`render` pays only after an intent,
//! which is fenced on the job's row being at `render`), and a crash costs the stage in flight
//! plus at most the free stages whose checkpoints had not committed yet (milliseconds of
//! commit behind them).

use std::collections::BTreeMap;
use std::time::Instant;

use aiprod_domain::Stage;
use aiprod_domain::StepError;
use aiprod_platform::metrics::Metrics;
use aiprod_store::{
    CheckpointOutcome, Claim, fail_job, load_outputs, park_for_budget, release_lease,
    save_checkpoint,
};
use backon::Retryable;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::context::WorkerContext;
use crate::dbretry::{db_retry, transient};
use crate::stages::{self, JobState};
use crate::transition::{Decision, decide};
use crate::writer::{Committing, PendingCheckpoint};

/// How a job's run in this worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// All nine stages are checkpointed.
    Succeeded,
    /// A stage failed for good.
    Failed,
    /// A cancel was honoured before a stage.
    Canceled,
    /// The lease was lost; another worker owns the job.
    LeaseLost,
    /// This worker is shutting down and handed the job back for another to resume.
    Released,
    /// Parked until the budget covers it (status `waiting_budget`).
    WaitingBudget,
}

/// The two ways a worker stops: `soft` after the stage in flight, `hard` at once (grace over).
#[derive(Clone, Default)]
pub(crate) struct Stops {
    pub soft: CancellationToken,
    pub hard: CancellationToken,
}

/// Runs a claimed job from its current stage to its end, or until it must stop.
pub(crate) async fn run_job(ctx: &WorkerContext, claim: Claim, stops: &Stops) -> JobOutcome {
    let job_id = claim.job.id;
    let epoch = claim.lease_epoch;
    let lost = ctx.leases.hold(job_id, epoch);
    // A step an earlier run of the job queued may have been refused after that run ended: what
    // it tells is that run's, and must not fail this one's writes.
    if let Some(writer) = &ctx.writer {
        writer.forget(job_id);
    }
    let span = tracing::info_span!("job", %job_id, epoch);
    let outcome = run_stages(ctx, claim, stops, &lost).instrument(span).await;
    ctx.leases.forget(job_id);
    if let Some(writer) = &ctx.writer {
        writer.forget(job_id);
    }
    if matches!(outcome, JobOutcome::Released) {
        // Retried: at shutdown every job hands its lease back at once, and the pool's queue
        // can outlast one acquire.
        let released = (|| release_lease(&ctx.pool, job_id, epoch, &ctx.worker_id))
            .retry(db_retry())
            .when(transient)
            .await;
        match released {
            // If this process exits before the wake-up goes out, the relay's poll finds it.
            Ok(true) => ctx.dispatched.poke(),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(%job_id, error = %e, "cannot hand the job back; it resumes once its lease expires")
            }
        }
    }
    outcome
}

async fn run_stages(
    ctx: &WorkerContext,
    claim: Claim,
    stops: &Stops,
    lost: &CancellationToken,
) -> JobOutcome {
    let job_id = claim.job.id;
    let epoch = claim.lease_epoch;
    let Some(mut stage) = claim.job.stage else {
        tracing::error!("claimed a job with no stage to run");
        return JobOutcome::LeaseLost;
    };
    let mut outputs = BTreeMap::new();
    if stage != Stage::Sanitize {
        match (|| load_outputs(&ctx.pool, job_id))
            .retry(db_retry())
            .when(transient)
            .await
        {
            Ok(rows) => outputs.extend(rows.into_iter().map(|(s, v)| (s, v.to_string().into()))),
            Err(e) => {
                tracing::warn!(error = %e, "cannot load earlier outputs; handing the job back");
                return JobOutcome::Released;
            }
        }
        tracing::info!(%stage, "resuming job");
    }
    let mut state = JobState {
        id: job_id,
        tenant: claim.job.tenant_id,
        lease_epoch: epoch,
        deadline_from: claim.job.created_at + chrono::Duration::milliseconds(claim.job.waited_ms),
        spec: claim.job.spec.clone(),
        outputs,
        // The first lease: no run before this one can have left a row (`claim_job` counts
        // epochs from 1). A stage's second try makes it false for the rest of the run.
        fresh: epoch == 1 && stage == Stage::Sanitize,
        asked: Default::default(),
    };
    let started = claim.job.started_at;
    let metrics = Metrics::global();
    // Checkpoints handed to the writer whose commit this job has not yet seen, oldest first.
    let mut unsure: Vec<Committing> = Vec::new();
    loop {
        let mut delays = ctx.settings.worker.retry.delays();
        let mut retries = 0i32;
        let result = loop {
            let t0 = Instant::now();
            let attempt = tokio::select! {
                // Boxed: a stage's future nests the render protocol's and the storage client's,
                // too deep for the compiler to lay out inline in every caller.
                r = Box::pin(stages::run(stage, ctx, &state)) => r,
                _ = lost.cancelled() => return JobOutcome::LeaseLost,
                _ = stops.hard.cancelled() => return JobOutcome::Released,
            };
            match &attempt {
                Ok(_) => metrics
                    .stage_duration
                    .with_label_values(&[stage.as_str()])
                    .observe(t0.elapsed().as_secs_f64()),
                Err(e) => {
                    let class = match e {
                        StepError::Permanent(_) => "permanent",
                        StepError::InvalidAsset(_) => "invalid_asset",
                        StepError::Retryable(_) => "retryable",
                        StepError::RetryAfter { .. } => "retry_after",
                        StepError::OverBudget { .. } => "over_budget",
                    };
                    metrics
                        .stage_errors
                        .with_label_values(&[stage.as_str(), class])
                        .inc();
                }
            }
            match decide(&attempt, delays.next()) {
                Decision::Checkpoint => break Ok(attempt.expect("decide checkpoints only Ok")),
                Decision::Retry(d) => {
                    tracing::info!(%stage, retry_in_ms = d.as_millis() as u64, error = %attempt.expect_err("retry follows an error"), "stage failed; retrying");
                    // A cancel found meanwhile ends the job rather than the retries.
                    if let Some(end) = take_ready(&mut unsure, started) {
                        return end;
                    }
                    // The next try reads the job's rows afresh: what this one queued without
                    // waiting (a render's id) must be in them.
                    if let Some(writer) = &ctx.writer {
                        writer.flush(job_id).await;
                    }
                    retries += 1;
                    // The failed try may have left rows the next one must read.
                    state.fresh = false;
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = lost.cancelled() => return JobOutcome::LeaseLost,
                        _ = stops.hard.cancelled() => return JobOutcome::Released,
                    }
                }
                Decision::Fail(reason) => break Err(reason),
                Decision::WaitForBudget { reason, need } => {
                    // Parking is fenced on the stage, which the earlier checkpoints advance.
                    if let Some(end) = settle(&mut unsure, started).await {
                        return end;
                    }
                    return park(ctx, job_id, epoch, &reason, need).await;
                }
            }
        };
        let out = match result {
            Ok(out) => out,
            Err(reason) => {
                // Failing is fenced on the stage, which the earlier checkpoints advance.
                if let Some(end) = settle(&mut unsure, started).await {
                    return end;
                }
                let reason = format!("stage {stage} failed: {reason}");
                tracing::warn!(%stage, %reason, "job failed");
                let failed = (|| {
                    fail_job(
                        &ctx.pool,
                        job_id,
                        epoch,
                        &ctx.worker_id,
                        stage,
                        &reason,
                        retries,
                    )
                })
                .retry(db_retry())
                .when(transient)
                .await;
                return match failed {
                    Ok(true) => {
                        metrics.jobs_failed.inc();
                        observe_pipeline(started);
                        JobOutcome::Failed
                    }
                    Ok(false) => JobOutcome::LeaseLost,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot record the failure; the job resumes once its lease expires");
                        JobOutcome::LeaseLost
                    }
                };
            }
        };
        let text: Box<str> = out.output.to_string().into();
        let pending = PendingCheckpoint {
            job_id,
            lease_epoch: epoch,
            stage,
            output: out.output,
            retries,
            patch: out.patch,
        };
        unsure.push(match &ctx.writer {
            Some(writer) => writer.send(pending),
            None => {
                let cp = pending.borrowed(&ctx.worker_id);
                let saved = (|| save_checkpoint(&ctx.pool, &cp))
                    .retry(db_retry())
                    .when(transient)
                    .await;
                Committing::Done(saved.map_err(|e| e.to_string()))
            }
        });
        state.outputs.insert(stage, text);
        // A cancel or a lost lease that a committed checkpoint found stops the job now.
        if let Some(end) = take_ready(&mut unsure, started) {
            return end;
        }
        let stopping = stops.soft.is_cancelled();
        match stage.next() {
            Some(next) if !stopping && !stages::settles_first(next, ctx) => {
                stage = next;
                continue;
            }
            _ => {}
        }
        if let Some(end) = settle(&mut unsure, started).await {
            return end;
        }
        let Some(next) = stage.next() else {
            tracing::error!(%stage, "the last stage's checkpoint left the job running");
            return JobOutcome::LeaseLost;
        };
        stage = next;
        if stopping {
            tracing::info!(next = %stage, "shutting down; handing the job back after its checkpoint");
            return JobOutcome::Released;
        }
    }
}

/// The answers of the job's checkpoints that have committed already, oldest first, up to the
/// first still under way: how the job ended, if one of them ended it.
fn take_ready(
    unsure: &mut Vec<Committing>,
    started: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<JobOutcome> {
    while let Some(done) = unsure.first_mut().and_then(Committing::ready) {
        unsure.remove(0);
        if let Some(end) = ended(done, started) {
            return Some(end);
        }
    }
    None
}

/// Waits for the job's checkpoints in flight, oldest first. `None`: each advanced the job, so
/// it runs on; otherwise how the job ended (the first that did not advance it says why; the
/// later ones were fenced out by it).
async fn settle(
    unsure: &mut Vec<Committing>,
    started: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<JobOutcome> {
    for committing in unsure.drain(..) {
        if let Some(end) = ended(committing.outcome().await, started) {
            return Some(end);
        }
    }
    None
}

/// How a checkpoint's answer ends the job; `None` if it advanced it.
fn ended(
    answer: Result<CheckpointOutcome, String>,
    started: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<JobOutcome> {
    let metrics = Metrics::global();
    match answer {
        Ok(CheckpointOutcome::Advanced(_)) => None,
        Ok(CheckpointOutcome::Succeeded) => {
            metrics.jobs_completed.inc();
            observe_pipeline(started);
            Some(JobOutcome::Succeeded)
        }
        Ok(CheckpointOutcome::Canceled) => {
            tracing::info!("job canceled");
            metrics.jobs_canceled.inc();
            Some(JobOutcome::Canceled)
        }
        Ok(CheckpointOutcome::LeaseLost) => {
            tracing::warn!("lease lost before a checkpoint; dropping the job");
            Some(JobOutcome::LeaseLost)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot write a checkpoint; the stage runs again after the lease expires");
            Some(JobOutcome::LeaseLost)
        }
    }
}

/// Parks the job until money is available; the scheduler re-dispatches it.
async fn park(
    ctx: &WorkerContext,
    job_id: aiprod_domain::JobId,
    epoch: i64,
    reason: &str,
    need: aiprod_domain::Money,
) -> JobOutcome {
    let parked = (|| park_for_budget(&ctx.pool, job_id, epoch, &ctx.worker_id, reason, need))
        .retry(db_retry())
        .when(transient)
        .await;
    match parked {
        Ok(true) => {
            tracing::info!(%reason, %need, "job waits for budget");
            JobOutcome::WaitingBudget
        }
        Ok(false) => JobOutcome::LeaseLost,
        Err(e) => {
            tracing::error!(error = %e, "cannot park the job; it resumes once its lease expires");
            JobOutcome::LeaseLost
        }
    }
}

fn observe_pipeline(started: Option<chrono::DateTime<chrono::Utc>>) {
    if let Some(t) = started {
        let secs = (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0;
        Metrics::global().pipeline_duration.observe(secs);
    }
}
