//! Which queue and which artifact store a process uses, and how it reaches Google Cloud's:
//! flat `AIPROD_*` names, validated at start-up.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_with::{DurationMilliSeconds, DurationSeconds, serde_as};

use super::check::{within, within_ms, within_s};

/// The work queue behind the outbox relay and the workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueKind {
    /// A table in the same PostgreSQL (one machine, `aiprod dev`).
    #[default]
    Postgres,
    /// Google Cloud Pub/Sub (or its emulator).
    Pubsub,
}

/// Where artifacts live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageKind {
    /// A local directory (`AIPROD_ARTIFACT_DIR`).
    #[default]
    Local,
    /// A Cloud Storage bucket (or fake-gcs-server).
    Gcs,
}

/// The queue: Postgres, or Pub/Sub with its names.
#[serde_as]
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct QueueSettings {
    /// `AIPROD_QUEUE`: `postgres` or `pubsub`.
    pub queue: QueueKind,
    /// `AIPROD_QUEUE_ACK_DEADLINE_MS`: how long a message received from the Postgres queue
    /// stays invisible before it is delivered again.
    #[serde(rename = "queue_ack_deadline_ms")]
    #[serde_as(as = "DurationMilliSeconds<u64>")]
    pub queue_ack_deadline: Duration,
    /// `AIPROD_PUBSUB_PROJECT`: the Google Cloud project of the topic and subscription.
    pub pubsub_project: Option<String>,
    /// `AIPROD_PUBSUB_TOPIC`: the topic the outbox relay publishes dispatches to.
    pub pubsub_topic: String,
    /// `AIPROD_PUBSUB_SUBSCRIPTION`: the subscription the workers pull from.
    pub pubsub_subscription: String,
    /// `AIPROD_PUBSUB_ENDPOINT`: an emulator's `http://host:port`; with it, no credentials are
    /// sent (the client ignores `PUBSUB_EMULATOR_HOST`).
    pub pubsub_endpoint: Option<String>,
    /// `AIPROD_PUBSUB_DEAD_LETTER_TOPIC`: where a message goes after too many deliveries
    /// (empty: no dead-letter policy).
    pub pubsub_dead_letter_topic: String,
    /// `AIPROD_PUBSUB_MAX_DELIVERY_ATTEMPTS`: deliveries before a message is dead-lettered
    /// (5–100, Pub/Sub's own range).
    pub pubsub_max_delivery_attempts: i32,
    /// `AIPROD_PUBSUB_ACK_DEADLINE_S`: the subscription's ack deadline that `aiprod migrate
    /// --pubsub` sets (10–600); the client extends it while a job runs.
    #[serde(rename = "pubsub_ack_deadline_s")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub pubsub_ack_deadline: Duration,
    /// `AIPROD_REDISPATCH_AFTER_S`: a queued job that no one holds and that has had no
    /// dispatch for this long is dispatched again (10–86400), because its message can be gone:
    /// dead-lettered, or held by a subscriber that went away.
    #[serde(rename = "redispatch_after_s")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub redispatch_after: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            queue: QueueKind::Postgres,
            queue_ack_deadline: Duration::from_secs(30),
            pubsub_project: None,
            pubsub_topic: "aiprod-jobs".into(),
            pubsub_subscription: "aiprod-workers".into(),
            pubsub_endpoint: None,
            pubsub_dead_letter_topic: "aiprod-jobs-dead".into(),
            pubsub_max_delivery_attempts: 10,
            pubsub_ack_deadline: Duration::from_secs(60),
            redispatch_after: Duration::from_secs(900),
        }
    }
}

impl QueueSettings {
    /// `projects/P/topics/T`.
    pub fn topic_path(&self) -> String {
        format!("projects/{}/topics/{}", self.project(), self.pubsub_topic)
    }

    /// `projects/P/subscriptions/S`.
    pub fn subscription_path(&self) -> String {
        format!(
            "projects/{}/subscriptions/{}",
            self.project(),
            self.pubsub_subscription
        )
    }

    /// `projects/P/topics/D`, when a dead-letter topic is set.
    pub fn dead_letter_topic_path(&self) -> Option<String> {
        (!self.pubsub_dead_letter_topic.is_empty()).then(|| {
            format!(
                "projects/{}/topics/{}",
                self.project(),
                self.pubsub_dead_letter_topic
            )
        })
    }

    /// The subscription that keeps dead-lettered messages (a topic without one drops them).
    pub fn dead_letter_subscription_path(&self) -> Option<String> {
        (!self.pubsub_dead_letter_topic.is_empty()).then(|| {
            format!(
                "projects/{}/subscriptions/{}",
                self.project(),
                self.pubsub_dead_letter_topic
            )
        })
    }

    fn project(&self) -> &str {
        self.pubsub_project.as_deref().unwrap_or("")
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        within_ms(
            "AIPROD_QUEUE_ACK_DEADLINE_MS",
            self.queue_ack_deadline,
            10..=3_600_000,
        )?;
        within_s(
            "AIPROD_REDISPATCH_AFTER_S",
            self.redispatch_after,
            10..=86_400,
        )?;
        if self.queue != QueueKind::Pubsub {
            return Ok(());
        }
        let Some(project) = self.pubsub_project.as_deref() else {
            return Err("AIPROD_PUBSUB_PROJECT must be set when AIPROD_QUEUE=pubsub".into());
        };
        if !valid_project(project) {
            return Err(format!(
                "AIPROD_PUBSUB_PROJECT must be a project id (6–30 lowercase letters, digits or hyphens, starting with a letter), got {project}"
            ));
        }
        for (name, v, optional) in [
            ("AIPROD_PUBSUB_TOPIC", &self.pubsub_topic, false),
            (
                "AIPROD_PUBSUB_SUBSCRIPTION",
                &self.pubsub_subscription,
                false,
            ),
            (
                "AIPROD_PUBSUB_DEAD_LETTER_TOPIC",
                &self.pubsub_dead_letter_topic,
                true,
            ),
        ] {
            if optional && v.is_empty() {
                continue;
            }
            if !valid_resource_name(v) {
                return Err(format!(
                    "{name} must be 3–255 characters of letters, digits and -_.~+%, starting with a letter and not with goog, got {v:?}"
                ));
            }
        }
        within(
            "AIPROD_PUBSUB_MAX_DELIVERY_ATTEMPTS",
            self.pubsub_max_delivery_attempts,
            5..=100,
        )?;
        within_s(
            "AIPROD_PUBSUB_ACK_DEADLINE_S",
            self.pubsub_ack_deadline,
            10..=600,
        )?;
        check_endpoint("AIPROD_PUBSUB_ENDPOINT", self.pubsub_endpoint.as_deref())
    }
}

/// The artifact store: a local directory, or a Cloud Storage bucket.
#[serde_as]
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct StorageSettings {
    /// `AIPROD_STORAGE`: `local` or `gcs`.
    pub storage: StorageKind,
    /// `AIPROD_GCS_BUCKET`: the bucket; artifacts go to `gs://BUCKET/jobs/{job_id}/…`.
    pub gcs_bucket: Option<String>,
    /// `AIPROD_GCS_ENDPOINT`: an emulator's `http://host:port`; with it, no credentials are sent.
    pub gcs_endpoint: Option<String>,
    /// `AIPROD_GCS_SIGNED_URL_TTL_S`: how long the signed URL in a job's view lasts (0: none).
    #[serde(rename = "gcs_signed_url_ttl_s")]
    #[serde_as(as = "DurationSeconds<u64>")]
    pub gcs_signed_url_ttl: Duration,
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            storage: StorageKind::Local,
            gcs_bucket: None,
            gcs_endpoint: None,
            gcs_signed_url_ttl: Duration::from_secs(3_600),
        }
    }
}

impl StorageSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.storage != StorageKind::Gcs {
            return Ok(());
        }
        let Some(bucket) = self.gcs_bucket.as_deref() else {
            return Err("AIPROD_GCS_BUCKET must be set when AIPROD_STORAGE=gcs".into());
        };
        if !valid_bucket(bucket) {
            return Err(format!(
                "AIPROD_GCS_BUCKET must be a bucket name (3–63 lowercase letters, digits, -, _ or ., starting and ending with a letter or digit), got {bucket:?}"
            ));
        }
        // Cloud Storage caps a V4 signature at seven days.
        within_s(
            "AIPROD_GCS_SIGNED_URL_TTL_S",
            self.gcs_signed_url_ttl,
            0..=7 * 86_400,
        )?;
        check_endpoint("AIPROD_GCS_ENDPOINT", self.gcs_endpoint.as_deref())
    }
}

fn check_endpoint(name: &str, v: Option<&str>) -> Result<(), String> {
    match v {
        Some(url) if !url.starts_with("http://") && !url.starts_with("https://") => Err(format!(
            "{name} must be an http(s) URL such as http://127.0.0.1:8085, got {url}"
        )),
        _ => Ok(()),
    }
}

fn valid_project(p: &str) -> bool {
    (6..=30).contains(&p.len())
        && p.starts_with(|c: char| c.is_ascii_lowercase())
        && !p.ends_with('-')
        && p.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn valid_resource_name(n: &str) -> bool {
    (3..=255).contains(&n.len())
        && n.starts_with(|c: char| c.is_ascii_alphabetic())
        && !n.to_ascii_lowercase().starts_with("goog")
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~+%".contains(c))
}

fn valid_bucket(b: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (3..=63).contains(&b.len())
        && edge(b.chars().next())
        && edge(b.chars().last())
        && b.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_google_cloud_rules() {
        assert!(valid_project("aiprod-test"));
        assert!(!valid_project("Aiprod"));
        assert!(!valid_project("abc"));
        assert!(valid_resource_name("aiprod-jobs"));
        assert!(!valid_resource_name("goog-jobs"));
        assert!(!valid_resource_name("1jobs"));
        assert!(!valid_resource_name("jobs/x"));
        assert!(valid_bucket("aiprod-artifacts"));
        assert!(!valid_bucket("Aiprod"));
        assert!(!valid_bucket("-abc"));
        assert!(!valid_bucket("ab"));
    }

    #[test]
    fn pubsub_needs_a_project_and_gcs_a_bucket() {
        let q = QueueSettings {
            queue: QueueKind::Pubsub,
            ..QueueSettings::default()
        };
        assert!(
            q.validate()
                .expect_err("no project")
                .contains("AIPROD_PUBSUB_PROJECT")
        );
        let q = QueueSettings {
            pubsub_project: Some("aiprod-test".into()),
            ..q
        };
        q.validate().expect("valid");
        assert_eq!(q.topic_path(), "projects/aiprod-test/topics/aiprod-jobs");
        let s = StorageSettings {
            storage: StorageKind::Gcs,
            ..StorageSettings::default()
        };
        assert!(
            s.validate()
                .expect_err("no bucket")
                .contains("AIPROD_GCS_BUCKET")
        );
    }
}
