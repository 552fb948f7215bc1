//! The pure decision after a stage's try: checkpoint, retry after a delay, or fail for good.
//! It depends only on the outcome and on the next delay the retry policy offers (`None` once
//! the tries are used up), so it is tested table-style.

use std::time::Duration;

use aiprod_domain::StepError;

/// What follows a stage's try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The stage succeeded: write its checkpoint and advance.
    Checkpoint,
    /// Try the stage again after this delay.
    Retry(Duration),
    /// Fail the job, with this reason.
    Fail(String),
    /// Park the job until the budget covers `need`.
    WaitForBudget {
        /// Why, for the job's JSON.
        reason: String,
        /// The least that would let the job go on.
        need: aiprod_domain::Money,
    },
}

/// Decides what follows `outcome`, given the policy's next delay.
pub fn decide<T>(outcome: &Result<T, StepError>, next_delay: Option<Duration>) -> Decision {
    match (outcome, next_delay) {
        (Ok(_), _) => Decision::Checkpoint,
        (Err(StepError::Permanent(reason)), _) => Decision::Fail(reason.clone()),
        (Err(e @ StepError::InvalidAsset(_)), _) => Decision::Fail(e.to_string()),
        (Err(StepError::OverBudget { reason, need }), _) => Decision::WaitForBudget {
            reason: reason.clone(),
            need: *need,
        },
        (Err(StepError::Retryable(_)), Some(d)) => Decision::Retry(d),
        (Err(StepError::RetryAfter { after, .. }), Some(d)) => Decision::Retry(d.max(*after)),
        (Err(e @ (StepError::Retryable(_) | StepError::RetryAfter { .. })), None) => {
            Decision::Fail(format!("{e} (gave up after the last attempt)"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decides_by_outcome_and_remaining_tries() {
        let ms = Duration::from_millis;
        let retry_after = |a| StepError::RetryAfter {
            reason: "throttled".into(),
            after: ms(a),
        };
        let cases: Vec<(Result<(), StepError>, Option<Duration>, Decision)> = vec![
            (Ok(()), None, Decision::Checkpoint),
            (Ok(()), Some(ms(5)), Decision::Checkpoint),
            (
                Err(StepError::Permanent("bad prompt".into())),
                Some(ms(5)),
                Decision::Fail("bad prompt".into()),
            ),
            (
                Err(StepError::InvalidAsset("image_url: not an image".into())),
                Some(ms(5)),
                Decision::Fail("invalid_asset: image_url: not an image".into()),
            ),
            (
                Err(StepError::Retryable("flaky".into())),
                Some(ms(5)),
                Decision::Retry(ms(5)),
            ),
            (
                Err(StepError::Retryable("flaky".into())),
                None,
                Decision::Fail("flaky (gave up after the last attempt)".into()),
            ),
            (Err(retry_after(900)), Some(ms(5)), Decision::Retry(ms(900))),
            (
                Err(StepError::OverBudget {
                    reason: "no money".into(),
                    need: aiprod_domain::Money::from_usd(1),
                }),
                None,
                Decision::WaitForBudget {
                    reason: "no money".into(),
                    need: aiprod_domain::Money::from_usd(1),
                },
            ),
            (Err(retry_after(1)), Some(ms(5)), Decision::Retry(ms(5))),
            (
                Err(retry_after(1)),
                None,
                Decision::Fail(
                    "throttled (retry after 1ms) (gave up after the last attempt)".into(),
                ),
            ),
        ];
        for (outcome, delay, expected) in cases {
            assert_eq!(decide(&outcome, delay), expected, "{outcome:?} {delay:?}");
        }
    }
}
