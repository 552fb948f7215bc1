//! Which queue and which artifact store a process uses, and how it reaches Google Cloud's:
//! flat `AIPROD_*` names, validated at start-up.

use serde::{Deserialize, Serialize};

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
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct QueueSettings {
    /// `AIPROD_QUEUE`: `postgres` or `pubsub`.
    pub queue: QueueKind,
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
    pub pubsub_ack_deadline_s: i32,
    /// `AIPROD_REDISPATCH_AFTER_S`: a queued job that no one holds and that has had no
    /// dispatch for this long is dispatched again (10–86400), because its message can be gone:
    /// dead-lettered, or held by a subscriber that went away.
    pub redispatch_after_s: u64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            queue: QueueKind::Postgres,
            pubsub_project: None,
            pubsub_topic: "aiprod-jobs".into(),
            pubsub_subscription: "aiprod-workers".into(),
            pubsub_endpoint: None,
            pubsub_dead_letter_topic: "aiprod-jobs-dead".into(),
            pubsub_max_delivery_attempts: 10,
            pubsub_ack_deadline_s: 60,
            redispatch_after_s: 900,
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
        if !(10..=86_400).contains(&self.redispatch_after_s) {
            return Err(format!(
                "AIPROD_REDISPATCH_AFTER_S must be 10–86400, got {}",
                self.redispatch_after_s
            ));
        }
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
        if !(5..=100).contains(&self.pubsub_max_delivery_attempts) {
            return Err(format!(
                "AIPROD_PUBSUB_MAX_DELIVERY_ATTEMPTS must be 5–100, got {}",
                self.pubsub_max_delivery_attempts
            ));
        }
        if !(10..=600).contains(&self.pubsub_ack_deadline_s) {
            return Err(format!(
                "AIPROD_PUBSUB_ACK_DEADLINE_S must be 10–600, got {}",
                self.pubsub_ack_deadline_s
            ));
        }
        check_endpoint("AIPROD_PUBSUB_ENDPOINT", self.pubsub_endpoint.as_deref())
    }
}

/// The artifact store: a local directory, or a Cloud Storage bucket.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct StorageSettings {
    /// `AIPROD_STORAGE`: `local` or `gcs`.
    pub storage: StorageKind,
    /// `AIPROD_GCS_BUCKET`: the bucket; artifacts go to `gs://BUCKET/jobs/{job_id}/…`.
    pub gcs_bucket: Option<String>,
    /// `AIPROD_GCS_ENDPOINT`: an emulator's `http://host:port`; with it, no credentials are sent.
    pub gcs_endpoint: Option<String>,
    /// `AIPROD_GCS_SIGNED_URL_TTL_S`: how long the signed URL in a job's view lasts (0: none).
    pub gcs_signed_url_ttl_s: u64,
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            storage: StorageKind::Local,
            gcs_bucket: None,
            gcs_endpoint: None,
            gcs_signed_url_ttl_s: 3_600,
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
        if self.gcs_signed_url_ttl_s > 7 * 86_400 {
            return Err(format!(
                "AIPROD_GCS_SIGNED_URL_TTL_S must be 0–604800, got {}",
                self.gcs_signed_url_ttl_s
            ));
        }
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
