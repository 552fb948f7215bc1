//! The Postgres queue's table, `queue_message`, with Pub/Sub's semantics: at-least-once
//! delivery, an ack deadline after which an unacked message is delivered again, ack deletes,
//! nack makes it visible at once. The queue adapter (`aiprod_platform::queue`) wraps these.

use std::time::Duration;

use aiprod_domain::{JobId, Priority};
use sqlx::PgExecutor;

use super::millis;

/// A message handed out by `receive_messages`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The message's id: its ack id.
    pub id: i64,
    /// The job to work on.
    pub job_id: JobId,
    /// The dispatch attempt.
    pub attempt: i32,
    /// Deliveries of this message, this one included.
    pub deliveries: i32,
}

/// Appends one message per `(job, attempt, priority)` and notifies `channel` once, at commit.
pub async fn enqueue_messages(
    db: impl PgExecutor<'_>,
    jobs: &[JobId],
    attempts: &[i32],
    priorities: &[Priority],
    channel: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"with ins as (
               insert into queue_message (job_id, attempt, priority)
               select * from unnest($1::uuid[], $2::int[], $3::job_priority[])
               returning 1
           )
           select pg_notify($4, '') as "notified" from (select 1 from ins limit 1) s"#,
        jobs as &[JobId],
        attempts,
        priorities as &[Priority],
        channel,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Hands out up to `max` visible messages, highest priority first, hiding each for
/// `ack_deadline`. `SKIP LOCKED`: concurrent receivers never get the same message.
pub async fn receive_messages(
    db: impl PgExecutor<'_>,
    max: usize,
    ack_deadline: Duration,
) -> sqlx::Result<Vec<ReceivedMessage>> {
    sqlx::query_as!(
        ReceivedMessage,
        r#"update queue_message m
              set visible_at = now() + $2::bigint * interval '1 millisecond', deliveries = m.deliveries + 1
            where m.id in (
                  select id from queue_message
                   where visible_at <= now()
                   order by priority desc, id
                   limit $1
                   for update skip locked)
           returning m.id, m.job_id as "job_id: JobId", m.attempt, m.deliveries"#,
        i64::try_from(max).unwrap_or(i64::MAX),
        millis(ack_deadline),
    )
    .fetch_all(db)
    .await
}

/// Acknowledges: the messages are never delivered again.
pub async fn ack_messages(db: impl PgExecutor<'_>, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query!("delete from queue_message where id = any($1)", ids)
        .execute(db)
        .await?;
    Ok(())
}

/// Refuses: the messages become deliverable again at once.
pub async fn nack_messages(db: impl PgExecutor<'_>, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query!(
        "update queue_message set visible_at = now() where id = any($1)",
        ids
    )
    .execute(db)
    .await?;
    Ok(())
}
