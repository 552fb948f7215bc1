//! `JobId`: a job's identifier, a type of its own so that a job id is never confused with a
//! render task's or a request's UUID.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A job's identifier: a UUIDv7, so that id order is creation order (keyset pagination relies
/// on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
pub struct JobId(Uuid);

impl JobId {
    /// A new id, ordered after every id made before it.
    pub fn new() -> JobId {
        JobId(Uuid::now_v7())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        JobId::new()
    }
}

impl From<Uuid> for JobId {
    fn from(u: Uuid) -> JobId {
        JobId(u)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<JobId, uuid::Error> {
        s.parse().map(JobId)
    }
}

#[cfg(test)]
mod tests {
    use super::JobId;

    #[test]
    fn ids_order_by_creation_and_read_back_from_their_text() {
        let (a, b) = (JobId::new(), JobId::new());
        assert!(a < b);
        assert_eq!(a.to_string().parse::<JobId>().expect("a uuid"), a);
        assert_eq!(
            serde_json::to_value(a).expect("serialises"),
            serde_json::Value::String(a.to_string())
        );
    }
}
