//! One paid model call through the write-ahead protocol of `model_call` (ARCHITECTURE.md,
//! "Models"), the same for a plan, a judgement and a keyframe:
//!
//! 1. the job's own earlier call of this step, when it asked the same, answers (a stage that
//!    ran again after a crash never pays again for what it already has);
//! 2. the cache: an entry another job of the tenant filled answers at $0, and one it is making
//!    is waited for (single flight);
//! 3. the service's fleet-wide circuit breaker;
//! 4. the estimate reserved in the ledger, and the intent row written, before the call;
//! 5. the call; its answer and cost recorded in one update, which settles the money.

use std::time::Duration;

use aiprod_backends::models::ModelError;
use aiprod_domain::{
    CacheTier, JobId, JobSpec, ModelCallKind, ModelCallState, Money, StepError, routing,
};
use aiprod_store::{
    Gate, ModelCall, ModelHit, ModelIntent, ModelIntentOutcome, ModelUpdate, Shortfall,
    insert_model_call, insert_model_hit, model_calls, model_gate,
};
use backon::Retryable;
use serde_json::Value;
use sqlx::PgPool;

use super::settle::Claimed;
use crate::dbretry::{db_retry, transient};
use crate::ledger::{Ask, Grant, Ledger};

/// Why a model call gave no answer.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The service cannot be used now (circuit open, down, throttled, credentials refused): a
    /// fallback may take over.
    Unavailable(String),
    /// The model refused the content (a safety filter).
    Blocked(String),
    /// The answer is not what was asked.
    Malformed(String),
    /// Stop the stage with this (money, lease, database).
    Step(StepError),
}

impl From<StepError> for CallError {
    fn from(e: StepError) -> CallError {
        CallError::Step(e)
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unavailable(m) | CallError::Malformed(m) => f.write_str(m),
            CallError::Blocked(m) => write!(f, "blocked by the model's safety filter: {m}"),
            CallError::Step(e) => write!(f, "{e}"),
        }
    }
}

/// What every call of one job shares.
pub(crate) struct ModelCaller<'a> {
    /// The database.
    pub pool: &'a PgPool,
    /// Today's money.
    pub ledger: &'a Ledger,
    /// The holder of the job's lease.
    pub worker_id: &'a str,
    /// The job.
    pub job_id: JobId,
    /// Its lease.
    pub lease_epoch: i64,
    /// Its request (whether it waits for money or fails).
    pub spec: &'a JobSpec,
    /// The circuit's knobs.
    pub circuit: aiprod_domain::CircuitPolicy,
    /// How long a half-open probe is held.
    pub probe_ttl: Duration,
    /// The steps the job's run has begun, while every row of the job is the run's own
    /// (`JobState::fresh`): a step not among them has no history to read.
    pub asked: Option<&'a std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// What one call is.
pub(crate) struct CallSpec<'a> {
    pub kind: ModelCallKind,
    /// Which call of the job.
    pub step: &'a str,
    /// The breaker's row (`gemini`, `imagen`, `replicate_image`; the simulation has none).
    pub service: &'a str,
    /// `gemini`, `imagen`, `replicate`, `simulated`.
    pub provider: &'a str,
    pub model: &'a str,
    /// sha256 of everything that decides the answer.
    pub hash: String,
    pub seed: Option<i64>,
    pub estimate: Money,
    /// The cache tier to use, if any, and for how long an entry lives.
    pub cache: Option<(CacheTier, Option<Duration>)>,
}

/// An answer: the JSON or the stored image, and what it cost.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    pub value: Value,
    pub artifact_uri: Option<String>,
}

/// Where a call that must be made stands after the checks.
pub(crate) enum Start {
    /// Answered without a call.
    Answered(Answer),
    /// Make the call: the intent is written (`call`), and the cache claim is this job's when
    /// `claimed`.
    Call { call: Box<ModelCall>, claimed: bool },
    /// A call made before is still at the provider (its id is saved): follow it.
    Follow { call: Box<ModelCall>, claimed: bool },
}

/// sha256 of the parts, hex.
pub(crate) fn digest(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex_string(&h.finalize())
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl ModelCaller<'_> {
    pub(super) async fn db<T, F, Fut>(&self, what: &str, f: F) -> Result<T, StepError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = sqlx::Result<T>>,
    {
        f.retry(db_retry())
            .when(transient)
            .await
            .map_err(|e| StepError::Retryable(format!("cannot {what}: {e}")))
    }

    pub(super) fn holder(&self) -> String {
        self.job_id.to_string()
    }

    /// Steps 1 to 4: an answer already had, the cache, the breaker, the money and the intent.
    /// `adopt` looks for a call an intent may have made (a provider that lists its calls).
    pub async fn start(
        &self,
        c: &CallSpec<'_>,
        adopt: impl AsyncFnOnce(&ModelCall) -> Option<String>,
    ) -> Result<Start, CallError> {
        // A step the run begins for the first time, while every row of the job is the run's
        // own, has none: no round trip to learn so.
        let first = self.asked.is_some_and(|asked| {
            asked
                .lock()
                .expect("never poisoned")
                .insert(c.step.to_owned())
        });
        let history = if first {
            Vec::new()
        } else {
            self.db("read the model calls", || {
                model_calls(self.pool, self.job_id, c.step)
            })
            .await?
        };
        let mut attempt = history.iter().map(|h| h.attempt).max().unwrap_or(0);
        if let Some(done) = history
            .iter()
            .rev()
            .find(|h| h.state == ModelCallState::Done && h.request_hash == c.hash)
        {
            return Ok(Start::Answered(Answer {
                value: done.answer.clone().unwrap_or(Value::Null),
                artifact_uri: done.artifact_uri.clone(),
            }));
        }
        let claimed = self.claim(c).await?;
        let claimed = match claimed {
            Claimed::Hit(answer, saved) => {
                attempt += 1;
                let intent = self.intent(c, attempt);
                let hit = ModelHit {
                    intent,
                    answer: Some(answer.value.clone()),
                    artifact_uri: answer.artifact_uri.as_deref(),
                    saved,
                };
                if !self
                    .db("record a cache hit", || insert_model_hit(self.pool, &hit))
                    .await?
                {
                    return Err(StepError::Retryable("the job's lease is gone".into()).into());
                }
                return Ok(Start::Answered(answer));
            }
            Claimed::Mine => true,
            Claimed::Uncached => false,
        };
        if let Some(last) = history.iter().max_by_key(|h| h.attempt) {
            match last.state {
                ModelCallState::Submitted if last.request_hash == c.hash => {
                    return Ok(Start::Follow {
                        call: Box::new(last.clone()),
                        claimed,
                    });
                }
                ModelCallState::Intent if last.request_hash == c.hash => {
                    if let Some(id) = adopt(last).await {
                        tracing::info!(job_id = %self.job_id, step = c.step, remote_id = %id, "found the call a crashed worker made; adopting it");
                        self.update(
                            last,
                            ModelUpdate {
                                state: Some(ModelCallState::Submitted),
                                remote_id: Some(id.clone()),
                                ..ModelUpdate::default()
                            },
                        )
                        .await?;
                        let mut call = last.clone();
                        call.state = ModelCallState::Submitted;
                        call.remote_id = Some(id);
                        return Ok(Start::Follow {
                            call: Box::new(call),
                            claimed,
                        });
                    }
                    self.lose(last).await?;
                }
                ModelCallState::Intent | ModelCallState::Submitted => self.lose(last).await?,
                _ => {}
            }
        }
        let holder = self.holder();
        let gate = self
            .db("read a model's health", || {
                model_gate(self.pool, c.service, &holder, self.probe_ttl)
            })
            .await?;
        if let Gate::Blocked(why) = gate {
            self.release(c, claimed).await;
            return Err(CallError::Unavailable(format!("{}: {why}", c.service)));
        }
        attempt += 1;
        let call = self.write_intent(c, attempt).await;
        match call {
            Ok(call) => Ok(Start::Call {
                call: Box::new(call),
                claimed,
            }),
            Err(e) => {
                self.release(c, claimed).await;
                Err(e)
            }
        }
    }

    fn intent<'b>(&'b self, c: &'b CallSpec<'b>, attempt: i32) -> ModelIntent<'b> {
        ModelIntent {
            job_id: self.job_id,
            lease_epoch: self.lease_epoch,
            worker_id: self.worker_id,
            kind: c.kind,
            step: c.step,
            attempt,
            provider: c.provider,
            model: c.model,
            request_hash: &c.hash,
            seed: c.seed,
            estimate: c.estimate,
        }
    }

    /// Reserves the estimate, then writes the intent taking it from the job's hold; a sibling
    /// call that took the hold meanwhile means reserving again.
    async fn write_intent(&self, c: &CallSpec<'_>, attempt: i32) -> Result<ModelCall, CallError> {
        let intent = self.intent(c, attempt);
        for _ in 0..5 {
            if c.estimate > Money::ZERO {
                let ask = Ask {
                    job_id: self.job_id,
                    lease_epoch: self.lease_epoch,
                    worker: self.worker_id,
                    amount: c.estimate,
                };
                let note = format!("{} {} ({})", c.provider, c.step, c.model);
                match self.ledger.reserve(ask, &note).await {
                    Ok(Grant::Reserved) => {}
                    Ok(Grant::Short(left, of)) => {
                        let whose = match of {
                            Shortfall::Fleet => "today's budget",
                            Shortfall::Tenant => "the tenant's budget today",
                        };
                        let reason = format!(
                            "{whose} has {left} left, less than the {} {} {} needs",
                            c.estimate, c.provider, c.step
                        );
                        let limit = self
                            .ledger
                            .headroom(self.job_id)
                            .await
                            .map(|h| h.limit)
                            .unwrap_or(Money::ZERO);
                        return Err(
                            routing::short_of_money(self.spec, limit, reason, c.estimate).into(),
                        );
                    }
                    Ok(Grant::LeaseLost) => {
                        return Err(StepError::Retryable("the job's lease is gone".into()).into());
                    }
                    Err(e) => return Err(StepError::Retryable(e).into()),
                }
            }
            let written = self
                .db("write a model call's intent", || {
                    insert_model_call(self.pool, &intent)
                })
                .await?;
            match written {
                ModelIntentOutcome::Written(call) => return Ok(*call),
                ModelIntentOutcome::Short => continue,
                ModelIntentOutcome::LeaseLost => {
                    return Err(StepError::Retryable("the job's lease is gone".into()).into());
                }
            }
        }
        Err(StepError::Retryable(
            "the job's reservation kept being taken by its other calls".into(),
        )
        .into())
    }
}

/// The error a failed call stops with.
pub(crate) fn classify(e: ModelError) -> CallError {
    match e {
        ModelError::Blocked(m) => CallError::Blocked(m),
        ModelError::Malformed(m) => CallError::Malformed(m),
        other => CallError::Unavailable(other.to_string()),
    }
}
