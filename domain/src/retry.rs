//! The per-stage retry policy: a configuration value that yields exponential delays with jitter
//! (through `backon`), and the error classes a stage can return.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};
use serde_with::{DurationMilliSeconds, serde_as};

/// How a stage failed, which decides what happens next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// Retrying cannot help (bad input, a rule broken); the job fails now.
    #[error("{0}")]
    Permanent(String),
    /// A passing fault; try again after the policy's backoff.
    #[error("{0}")]
    Retryable(String),
    /// The client's own input asset (its `image_url`) cannot be used: refused by the fetcher's
    /// rules, unreachable, too large or not an image. Permanent, like `Permanent`, and a class
    /// of its own so that it reads as the client's fault in the job's error and the metrics,
    /// and never as a backend's: no backend was called.
    #[error("invalid_asset: {0}")]
    InvalidAsset(String),
    /// A passing fault with a known wait (a provider's `Retry-After`).
    #[error("{reason} (retry after {after:?})")]
    RetryAfter {
        /// What happened.
        reason: String,
        /// How long to wait at least.
        after: Duration,
    },
    /// Today's budget covers no backend that qualifies: the job waits for money (status
    /// `waiting_budget`) instead of failing.
    #[error("{reason}")]
    OverBudget {
        /// Why, for the job's JSON.
        reason: String,
        /// The least that would let the job go on.
        need: crate::Money,
    },
}

/// Exponential backoff with jitter: `initial · factor^n`, capped at `max_interval`, at most
/// `max_attempts` tries in all (the first one included). Set as `AIPROD_RETRY__INITIAL_MS`,
/// `__FACTOR`, `__MAX_ATTEMPTS` and `__MAX_INTERVAL_MS`.
#[serde_as]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// The first delay.
    #[serde(rename = "initial_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub initial: Duration,
    /// The growth of each next delay.
    pub factor: f32,
    /// Tries in all, the first one included.
    pub max_attempts: u32,
    /// The longest delay.
    #[serde(rename = "max_interval_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub max_interval: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(200),
            factor: 2.0,
            max_attempts: 5,
            max_interval: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Checks what the types alone do not; the error names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=100).contains(&self.max_attempts) {
            return Err(format!(
                "AIPROD_RETRY__MAX_ATTEMPTS must be 1–100, got {}",
                self.max_attempts
            ));
        }
        if !(self.factor >= 1.0 && self.factor <= 10.0) {
            return Err(format!(
                "AIPROD_RETRY__FACTOR must be 1–10, got {}",
                self.factor
            ));
        }
        if self.initial > self.max_interval {
            return Err(
                "AIPROD_RETRY__INITIAL_MS must not exceed AIPROD_RETRY__MAX_INTERVAL_MS".into(),
            );
        }
        Ok(())
    }

    /// The delays before each retry, jittered; it ends when the tries are used up.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_factor(self.factor)
            .with_max_delay(self.max_interval)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .with_jitter()
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yields_one_delay_per_retry_and_grows() {
        let p = RetryPolicy {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max_attempts: 4,
            max_interval: Duration::from_secs(10),
        };
        let d: Vec<Duration> = p.delays().collect();
        assert_eq!(d.len(), 3);
        // Jitter adds up to one base delay, so each delay lies in [base, 2·base).
        for (i, base) in [100u64, 200, 400].into_iter().enumerate() {
            assert!(
                d[i] >= Duration::from_millis(base) && d[i] < Duration::from_millis(2 * base),
                "{d:?}"
            );
        }
    }

    #[test]
    fn one_attempt_means_no_retry() {
        let p = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        assert_eq!(p.delays().count(), 0);
    }
}
