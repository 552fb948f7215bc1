//! What a dispatch looks like on Pub/Sub: attributes a worker reads without touching the body,
//! and a JSON body that repeats them for people reading a dead-letter subscription.

use google_cloud_pubsub::model::Message;

use crate::queue::Dispatch;
use aiprod_domain::JobId;

/// The attribute that names the job.
pub const ATTR_JOB_ID: &str = "job_id";
/// The attribute that gives the dispatch attempt.
pub const ATTR_ATTEMPT: &str = "attempt";
/// The attribute that gives the job's priority (informative: Pub/Sub does not order by it).
pub const ATTR_PRIORITY: &str = "priority";

/// The job and attempt a message carries, or why it is not a dispatch. A missing attempt
/// counts as the first, so that a hand-published message still runs.
pub(super) fn parse_dispatch(m: &Message) -> Result<(JobId, i32), &'static str> {
    let job_id = m
        .attributes
        .get(ATTR_JOB_ID)
        .ok_or("no job_id attribute")?
        .parse::<JobId>()
        .map_err(|_| "job_id is not a UUID")?;
    let attempt = m
        .attributes
        .get(ATTR_ATTEMPT)
        .map(|a| a.parse::<i32>())
        .transpose()
        .map_err(|_| "attempt is not an integer")?
        .unwrap_or(1);
    Ok((job_id, attempt))
}

/// The message for one dispatch: the attributes carry it; the body repeats it as JSON for
/// people reading a dead-letter subscription.
pub fn dispatch_message(d: &Dispatch) -> Message {
    let priority = serde_json::to_value(d.priority)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let body = serde_json::json!({"job_id": d.job_id, "attempt": d.attempt, "priority": priority});
    Message::new().set_data(body.to_string()).set_attributes([
        (ATTR_JOB_ID, d.job_id.to_string()),
        (ATTR_ATTEMPT, d.attempt.to_string()),
        (ATTR_PRIORITY, priority),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use aiprod_domain::Priority;

    #[test]
    fn a_dispatch_round_trips_through_its_attributes() {
        let d = Dispatch {
            job_id: aiprod_domain::JobId::new(),
            attempt: 3,
            priority: Priority::High,
        };
        let m = dispatch_message(&d);
        assert_eq!(parse_dispatch(&m), Ok((d.job_id, 3)));
        assert_eq!(m.attributes[ATTR_PRIORITY], "high");
        let mut bad = m.clone();
        bad.attributes.insert(ATTR_JOB_ID.into(), "nope".into());
        assert_eq!(parse_dispatch(&bad), Err("job_id is not a UUID"));
        bad.attributes.remove(ATTR_JOB_ID);
        assert_eq!(parse_dispatch(&bad), Err("no job_id attribute"));
    }
}
