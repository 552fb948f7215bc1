//! Dispatch: the outbox the relay reads and clears, the lease reaper (and its limit, past which
//! a job fails as poison) and the sweep of stranded queued jobs. Every dispatch is written by the SQL function `dispatch_job()`; the relay's
//! network side (publishing to the queue) is the scheduler's, not the store's.

use std::time::Duration;

use aiprod_domain::{JobId, Priority, Stage};
use sqlx::PgExecutor;

use super::millis;

/// One dispatch waiting in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    /// The row, to delete it once relayed.
    pub id: i64,
    /// The job to work on.
    pub job_id: JobId,
    /// 1 for the first dispatch, then one more per re-dispatch after a reap.
    pub attempt: i32,
    /// The job's priority.
    pub priority: Priority,
}

/// The name of the channel that wakes the relay, as the database defines it. `dispatch_job()`
/// does not notify it: the dispatcher's `Wake::outbox` does, after the commit.
pub async fn outbox_channel(db: impl PgExecutor<'_>) -> sqlx::Result<String> {
    sqlx::query_scalar!(r#"select outbox_channel() as "channel!""#)
        .fetch_one(db)
        .await
}

/// Up to `limit` outbox rows, oldest first. Only one relay may run at a time (the scheduler's
/// leader), so no row is handed out twice at once.
pub async fn outbox_batch(db: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<OutboxRow>> {
    sqlx::query_as!(
        OutboxRow,
        r#"select id, job_id as "job_id: JobId", attempt, priority as "priority: Priority"
             from outbox order by id limit $1"#,
        limit
    )
    .fetch_all(db)
    .await
}

/// Deletes relayed outbox rows and records when their jobs were last dispatched. At-least-once:
/// a relay that dies between its publish and this publishes the rows again, and the lease
/// makes the duplicate harmless.
pub async fn delete_relayed(db: impl PgExecutor<'_>, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query!(
        "with d as (delete from outbox where id = any($1) returning job_id),
              l as (select j.id from job j where j.id in (select job_id from d)
                     order by j.id for no key update)
         update job set dispatched_at = now() where id in (select id from l)",
        ids
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Clears the expired leases of running jobs and dispatches each again, in one statement, so
/// the next worker resumes them at their first unfinished stage: the `reap` event.
pub async fn requeue_expired_leases(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<JobId>> {
    // `status = 'running'` rather than next_job_status(): the partial index on expired
    // leases needs the literal, and `reap` leaves a running job running (job_transition).
    sqlx::query_scalar!(
        r#"with l as (
               -- In id order, like every update of several jobs; a row locked right now is
               -- being renewed or checkpointed by its holder, so this pass leaves it alone.
               select id from job where status = 'running' and locked_until < now()
                order by id for no key update skip locked
           ), r as (
               update job set locked_by = null, locked_until = null, reap_count = reap_count + 1,
                      updated_at = now()
                where id in (select id from l) and status = 'running' and locked_until < now()
               returning id, priority, reap_count
           )
           select dispatch_job(r.id, r.priority, r.reap_count) as "id!: JobId" from r"#
    )
    .fetch_all(db)
    .await
}

/// A job the reaper failed instead of dispatching it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoisonedJob {
    /// The job.
    pub id: JobId,
    /// How many times it had been reaped and dispatched again.
    pub reaps: i32,
    /// The stage it was in each time its worker went (it keeps it, as every failed job does).
    pub stage: Option<Stage>,
}

/// Fails each running job whose lease expired although it had already been reaped `max_reaps`
/// times: the `fail` event, with the reason in the job's error and its stage's. Something in
/// such a job kills or stalls every worker that runs it (a crash, an out-of-memory kill, a
/// hang), so dispatching it again would only take down the next worker. Ending the job gives
/// its unused money back (the `job_release_budget` trigger). Run it before
/// `requeue_expired_leases`, which would otherwise re-dispatch these jobs once more.
pub async fn fail_poison_jobs(
    db: impl PgExecutor<'_>,
    max_reaps: i32,
) -> sqlx::Result<Vec<PoisonedJob>> {
    // `status = 'running'` for the partial index on expired leases, as the reaper does; the
    // transition itself is next_job_status()'s.
    sqlx::query_as!(
        PoisonedJob,
        r#"with l as (
               select id from job where status = 'running' and locked_until < now()
                  and reap_count >= $1
                order by id for no key update skip locked
           ), f as (
               update job j set status = next_job_status(j.status, 'fail', j.cancel_requested),
                      error = format('poison: reaped %s times and its lease expired again (its '
                                     'worker died or stalled each time); last stage %s',
                                     j.reap_count, coalesce(j.stage::text, 'none')),
                      updated_at = now()
                where j.id in (select id from l) and j.status = 'running'
                  and j.locked_until < now() and j.reap_count >= $1
                  and next_job_status(j.status, 'fail', j.cancel_requested) is not null
               returning j.id, j.reap_count, j.stage, j.error
           ), s as (
               update job_stage st set status = 'failed', error = f.error, finished_at = now(),
                      duration_ms = (extract(epoch from (now() - st.started_at)) * 1000)::bigint,
                      updated_at = now()
                 from f
                where st.job_id = f.id and st.stage = f.stage and st.status = 'running'
           )
           select id as "id!: JobId", reap_count as "reaps!", stage as "stage: Stage" from f"#,
        max_reaps
    )
    .fetch_all(db)
    .await
}

/// Dispatches again each queued job that no one holds, that has no dispatch waiting (no outbox
/// row, and no message in the Postgres queue), and whose last dispatch is older than
/// `older_than`; returns them: the `redispatch` event.
///
/// A queued job's message can be gone while the job waits: Pub/Sub dead-letters a message whose
/// claims kept failing, and a subscriber that goes away can leave what it held unredelivered.
/// Pub/Sub's backlog cannot be read, so on Pub/Sub a job that simply waits longer than
/// `older_than` in a long backlog gets one more message per `older_than`; the claim drops the
/// spare as a duplicate. The bump of `dispatched_at` here keeps the sweep from repeating
/// itself before the relay has run.
pub async fn redispatch_stranded(
    db: impl PgExecutor<'_>,
    older_than: Duration,
) -> sqlx::Result<Vec<JobId>> {
    // `status = 'queued'` rather than next_job_status(): the sweep reads queued jobs through
    // job_status_id_idx, and `redispatch` leaves a queued job queued (job_transition).
    sqlx::query_scalar!(
        r#"with s as (
               update job j set dispatched_at = now(), updated_at = now()
                where j.status = 'queued' and j.stage is not null
                  and (j.locked_until is null or j.locked_until < now())
                  and coalesce(j.dispatched_at, j.created_at) < now() - $1::bigint * interval '1 millisecond'
                  and not exists (select 1 from outbox o where o.job_id = j.id)
                  and not exists (select 1 from queue_message m where m.job_id = j.id)
               returning id, priority, reap_count
           )
           select dispatch_job(s.id, s.priority, s.reap_count) as "id!: JobId" from s"#,
        millis(older_than)
    )
    .fetch_all(db)
    .await
}
