//! How a worker runs jobs: its slots, its leases, its stages' retries and its shutdown.

use std::time::Duration;

use aiprod_domain::RetryPolicy;
use serde::{Deserialize, Serialize};
use serde_with::{DurationMilliSeconds, DurationSeconds, serde_as};

use super::check::{within, within_ms, within_s};

/// The worker's settings (flat `AIPROD_*` names).
#[serde_as]
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct WorkerSettings {
    /// `AIPROD_WORKER_CONCURRENCY`: jobs one worker process runs at once.
    pub worker_concurrency: u32,
    /// `AIPROD_LEASE_TTL_MS`: how long a job lease lasts; renewed every third of it.
    #[serde(rename = "lease_ttl_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub lease_ttl: Duration,
    /// `AIPROD_SHUTDOWN_GRACE_MS`: how long in-flight stages may run after SIGTERM.
    #[serde(rename = "shutdown_grace_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub shutdown_grace: Duration,
    /// `AIPROD_JOB_DEADLINE_S`: a job's renders are canceled this long after it was accepted
    /// (time spent waiting for money not counted).
    #[serde(rename = "job_deadline_s")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub job_deadline: Duration,
    /// `AIPROD_FORBIDDEN_WORDS`: words that fail the sanitize stage (comma-separated in env).
    #[serde(deserialize_with = "super::list_or_csv")]
    pub forbidden_words: Vec<String>,
    /// `AIPROD_RETRY__*`: the per-stage retry policy.
    pub retry: RetryPolicy,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            worker_concurrency: 64,
            lease_ttl: Duration::from_secs(15),
            shutdown_grace: Duration::from_secs(25),
            job_deadline: Duration::from_secs(3_600),
            forbidden_words: ["gore", "nsfw", "beheading"].map(String::from).to_vec(),
            retry: RetryPolicy::default(),
        }
    }
}

impl WorkerSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        within(
            "AIPROD_WORKER_CONCURRENCY",
            self.worker_concurrency,
            1..=20_000,
        )?;
        within_ms("AIPROD_LEASE_TTL_MS", self.lease_ttl, 300..=3_600_000)?;
        within_s("AIPROD_JOB_DEADLINE_S", self.job_deadline, 1..=7 * 86_400)?;
        self.retry.validate()
    }
}
