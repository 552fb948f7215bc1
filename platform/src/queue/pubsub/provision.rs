//! `aiprod migrate --pubsub`: the topics and subscriptions the queue needs, created where
//! missing. Kept apart from the queue itself because only the migration holds the admin
//! clients, and with them the permission to create resources.

use anyhow::Context;
use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::client::{SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::DeadLetterPolicy;

use crate::config::QueueSettings;

/// What `ensure_pubsub` found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// A resource path.
    pub name: String,
    /// Whether this call created it.
    pub created: bool,
}

/// Creates the topic, the dead-letter topic and its subscription, and the workers'
/// subscription (with its dead-letter policy and ack deadline) where they are missing. Safe to
/// repeat: what exists is left as it is.
pub async fn ensure_pubsub(settings: &QueueSettings) -> anyhow::Result<Vec<Provisioned>> {
    let endpoint = settings.pubsub_endpoint.as_ref();
    let topics = configure!(TopicAdmin::builder(), endpoint)
        .build()
        .await
        .context("cannot build the Pub/Sub topic admin client")?;
    let subs = configure!(SubscriptionAdmin::builder(), endpoint)
        .build()
        .await
        .context("cannot build the Pub/Sub subscription admin client")?;
    let mut done = Vec::new();
    let topic = |name: String| {
        let topics = topics.clone();
        async move {
            let r = topics.create_topic().set_name(&name).send().await;
            created(name, r.map(|_| ()))
        }
    };
    done.push(topic(settings.topic_path()).await?);
    let dead = settings.dead_letter_topic_path();
    if let Some(dead) = &dead {
        done.push(topic(dead.clone()).await?);
        // A topic without a subscription drops what is published to it.
        let dead_sub = settings
            .dead_letter_subscription_path()
            .expect("set with the dead-letter topic");
        let r = subs
            .create_subscription()
            .set_name(&dead_sub)
            .set_topic(dead)
            .send()
            .await;
        done.push(created(dead_sub, r.map(|_| ()))?);
    }
    let mut create = subs
        .create_subscription()
        .set_name(settings.subscription_path())
        .set_topic(settings.topic_path())
        .set_ack_deadline_seconds(
            i32::try_from(settings.pubsub_ack_deadline.as_secs()).unwrap_or(600),
        );
    if let Some(dead) = dead {
        create = create.set_dead_letter_policy(
            DeadLetterPolicy::new()
                .set_dead_letter_topic(dead)
                .set_max_delivery_attempts(settings.pubsub_max_delivery_attempts),
        );
    }
    done.push(created(
        settings.subscription_path(),
        create.send().await.map(|_| ()),
    )?);
    Ok(done)
}

/// A create call's outcome: "already exists" is success, so that a repeated migration passes.
fn created(name: String, r: google_cloud_pubsub::Result<()>) -> anyhow::Result<Provisioned> {
    match r {
        Ok(()) => Ok(Provisioned {
            name,
            created: true,
        }),
        Err(e) if e.status().is_some_and(|s| s.code == Code::AlreadyExists) => Ok(Provisioned {
            name,
            created: false,
        }),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot create {name}"))),
    }
}
