//! The Postgres queue's table, `queue_message`, with Pub/Sub's semantics: at-least-once
//! delivery, an ack deadline after which an unacked message is delivered again, ack deletes,
//! nack makes it visible at once, defer after a delay. Receiving serves tenants in turn. The
//! queue adapter (`aiprod_platform::queue`) wraps these.

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

/// Appends one message per `(job, attempt, priority)`. It notifies no one: the caller wakes
/// the queue's listeners after the commit (`Wake`), so no enqueue waits for the cluster-wide
/// lock a notifying commit takes.
/// Each message carries its job's tenant and its rank among that tenant's messages: how many
/// the tenant already had in the queue, plus its place in this batch. Ranks are fixed here, at
/// enqueue, whatever order the relay publishes in, so a tenant's burst cannot push another
/// tenant's message back however it was relayed.
pub async fn enqueue_messages(
    db: impl PgExecutor<'_>,
    jobs: &[JobId],
    attempts: &[i32],
    priorities: &[Priority],
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"with d as (
               select d.*, j.tenant_id
                 from unnest($1::uuid[], $2::int[], $3::job_priority[]) with ordinality
                      as d(job_id, attempt, priority, n)
                 left join job j on j.id = d.job_id
           ), p as (
               select q.tenant_id, count(*) as pending from queue_message q
                where q.tenant_id in (select tenant_id from d) group by q.tenant_id
           )
           insert into queue_message (job_id, attempt, priority, tenant_id, tenant_rank)
           select d.job_id, d.attempt, d.priority, d.tenant_id,
                  least(coalesce(p.pending, 0)
                        + row_number() over (partition by d.tenant_id order by d.n) - 1,
                        2147483647)::int
             from d left join p on p.tenant_id = d.tenant_id
            order by d.n"#,
        jobs as &[JobId],
        attempts,
        priorities as &[Priority],
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Hands out up to `max` visible messages, hiding each for `ack_deadline`: highest priority
/// first, then lowest rank (tenants in turn), then oldest. Messages of a tenant that already
/// runs its `max_in_flight` jobs stay where they are, so workers do not pull what they could
/// only refuse; the claim stays the exact check. `SKIP LOCKED`: concurrent receivers never get
/// the same message. The ids chosen are an array, not an `in (subquery)`: a generic plan of
/// the latter, made while the queue was nearly empty, joined them to the whole table by hash
/// and read every message at each receive.
pub async fn receive_messages(
    db: impl PgExecutor<'_>,
    max: usize,
    ack_deadline: Duration,
) -> sqlx::Result<Vec<ReceivedMessage>> {
    sqlx::query_as!(
        ReceivedMessage,
        r#"with live as (
               select tenant_id, count(*) as n from job
                where status = 'running' and locked_until > now() group by tenant_id
           ), full_tenant as (
               select live.tenant_id from live join tenant t on t.id = live.tenant_id
                where live.n >= t.max_in_flight
           )
           update queue_message m
              set visible_at = now() + $2::bigint * interval '1 millisecond', deliveries = m.deliveries + 1
            where m.id = any(array(
                  select id from queue_message q
                   where q.visible_at <= now()
                     and (q.tenant_id is null
                          or q.tenant_id not in (select tenant_id from full_tenant))
                   order by q.priority desc, q.tenant_rank, q.id
                   limit $1
                   for update skip locked))
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

/// Puts the messages back for later: each becomes deliverable again after `delay`. For a job
/// that cannot be claimed yet (its tenant is at its in-flight limit), so that it is neither lost
/// nor received again at once.
pub async fn defer_messages(
    db: impl PgExecutor<'_>,
    ids: &[i64],
    delay: Duration,
) -> sqlx::Result<()> {
    sqlx::query!(
        "update queue_message set visible_at = now() + $2::bigint * interval '1 millisecond'
          where id = any($1)",
        ids,
        millis(delay),
    )
    .execute(db)
    .await?;
    Ok(())
}
