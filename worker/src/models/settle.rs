//! The end of a model call (its answer or failure recorded, its money settled, its breaker
//! and cache claim updated) and the cache's claim before it: the second half of `call`.

use std::time::Duration;

use aiprod_backends::models::ModelError;
use aiprod_domain::{ModelCallState, Money, StepError};
use aiprod_platform::metrics::Metrics;
use aiprod_store::{
    CacheClaim, CacheFill, ModelCall, ModelUpdate, claim_cache, fill_cache, record_model_failure,
    release_cache, release_model_probe, update_model_call,
};
use serde_json::Value;

use super::call::{Answer, CallSpec, ModelCaller};

/// How long a job waits for another job to fill a cache entry before making it itself.
const CACHE_WAIT: Duration = Duration::from_secs(600);
/// How often a waiting job looks at the entry again.
const CACHE_POLL: Duration = Duration::from_millis(250);

/// What the cache said of a call.
pub(super) enum Claimed {
    /// Answered: the value, and what making it cost.
    Hit(Answer, Money),
    /// This job makes it, and fills the entry.
    Mine,
    /// No cache for this call.
    Uncached,
}

impl ModelCaller<'_> {
    /// A call made whose answer is gone: charged its estimate, since the provider billed it.
    pub async fn lose(&self, call: &ModelCall) -> Result<(), StepError> {
        tracing::warn!(job_id = %self.job_id, step = %call.step, provider = %call.provider, "a model call was made but its answer was lost; charging its estimate");
        self.update(
            call,
            ModelUpdate {
                state: Some(ModelCallState::Lost),
                cost: Some(Money::from_micros(call.estimated_cost_micros)),
                error: Some("the worker stopped before the answer was saved".into()),
                ..ModelUpdate::default()
            },
        )
        .await
        .map(|_| ())
    }

    pub async fn update(&self, call: &ModelCall, u: ModelUpdate) -> Result<bool, StepError> {
        self.db("record a model call", || {
            update_model_call(self.pool, call.id, call.state, &u)
        })
        .await
    }

    /// Step 5's good end: the answer, its cost and tokens in one update, which closes the
    /// breaker too; the cache is filled.
    #[allow(clippy::too_many_arguments)]
    pub async fn succeed(
        &self,
        c: &CallSpec<'_>,
        call: &ModelCall,
        claimed: bool,
        answer: &Answer,
        cost: Money,
        tokens: Option<(u64, u64)>,
    ) -> Result<(), StepError> {
        let u = ModelUpdate {
            state: Some(ModelCallState::Done),
            cost: Some(cost),
            prompt_tokens: tokens.map(|t| t.0 as i64),
            output_tokens: tokens.map(|t| t.1 as i64),
            answer: Some(answer.value.clone()),
            artifact_uri: answer.artifact_uri.clone(),
            closes_circuit: Some(c.service.to_owned()),
            ..ModelUpdate::default()
        };
        self.update(call, u).await?;
        Metrics::global()
            .models
            .model_calls
            .with_label_values(&[c.provider, "ok"])
            .inc();
        if let (true, Some((tier, ttl))) = (claimed, c.cache) {
            let fill = CacheFill {
                value: Some(&answer.value),
                artifact_uri: answer.artifact_uri.as_deref(),
                cost,
                ttl,
            };
            let r = fill_cache(self.pool, self.job_id, tier, &c.hash, &fill).await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot fill a cache entry; the next job makes it again");
            }
        }
        Ok(())
    }

    /// Step 5's bad end: the call failed, charged `cost` (nothing, unless the provider bills
    /// a started call whatever its end), its health booked, the claim freed.
    pub async fn fail(
        &self,
        c: &CallSpec<'_>,
        call: &ModelCall,
        claimed: bool,
        e: &ModelError,
        cost: Money,
    ) -> Result<(), StepError> {
        self.update(
            call,
            ModelUpdate {
                state: Some(ModelCallState::Failed),
                cost: Some(cost),
                error: Some(e.to_string()),
                ..ModelUpdate::default()
            },
        )
        .await?;
        let outcome = match e {
            ModelError::Throttled { .. } => "throttled",
            ModelError::Blocked(_) => "blocked",
            ModelError::Malformed(_) => "malformed",
            _ => "error",
        };
        Metrics::global()
            .models
            .model_calls
            .with_label_values(&[c.provider, outcome])
            .inc();
        let holder = self.holder();
        if e.counts_against_health() {
            let r =
                record_model_failure(self.pool, c.service, &holder, &e.to_string(), self.circuit)
                    .await;
            if let Err(err) = r {
                tracing::warn!(service = c.service, error = %err, "cannot record a model failure");
            }
        } else if let Err(err) = release_model_probe(self.pool, c.service, &holder).await {
            tracing::warn!(service = c.service, error = %err, "cannot hand a model's probe back");
        }
        self.release(c, claimed).await;
        Ok(())
    }

    pub(super) async fn release(&self, c: &CallSpec<'_>, claimed: bool) {
        if let (true, Some((tier, _))) = (claimed, c.cache)
            && let Err(e) = release_cache(self.pool, self.job_id, tier, &c.hash).await
        {
            tracing::warn!(error = %e, "cannot free a cache claim; it is taken over once this job ends");
        }
    }

    /// The cache's answer for `c`: a hit, this job's claim, or no cache.
    pub(super) async fn claim(&self, c: &CallSpec<'_>) -> Result<Claimed, StepError> {
        let Some((tier, _)) = c.cache else {
            return Ok(Claimed::Uncached);
        };
        let m = &Metrics::global().models;
        let started = std::time::Instant::now();
        loop {
            let claim = self
                .db("claim a cache entry", || {
                    claim_cache(self.pool, self.job_id, tier, &c.hash)
                })
                .await?;
            match claim {
                CacheClaim::Ready {
                    value,
                    artifact_uri,
                    cost,
                } => {
                    m.cache_hits.with_label_values(&[tier.as_str()]).inc();
                    let answer = Answer {
                        value: value.unwrap_or(Value::Null),
                        artifact_uri,
                    };
                    return Ok(Claimed::Hit(answer, cost));
                }
                CacheClaim::Mine => {
                    m.cache_misses.with_label_values(&[tier.as_str()]).inc();
                    return Ok(Claimed::Mine);
                }
                CacheClaim::Pending if started.elapsed() < CACHE_WAIT => {
                    tokio::time::sleep(CACHE_POLL).await;
                }
                CacheClaim::Pending => {
                    m.cache_misses.with_label_values(&[tier.as_str()]).inc();
                    return Ok(Claimed::Uncached);
                }
            }
        }
    }
}
