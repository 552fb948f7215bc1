//! Leases: a worker claims a job before it runs a stage, renews the claim by heartbeat, and
//! gives it back when it stops early. The lease epoch grows with every claim and fences every
//! write, so a worker that lost its lease cannot write anything.

use std::time::Duration;

use aiprod_domain::{BackendChoice, BackendName, JobId, JobStatus, Priority, Stage, TenantId};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};

use super::job::{JobRecord, JobRow};
use super::millis;

/// A job that this worker now holds, or found to be canceled.
#[derive(Debug)]
pub struct Claim {
    /// The job as it was claimed.
    pub job: JobRecord,
    /// The fencing token for every write under this lease.
    pub lease_epoch: i64,
}

/// What a claim did.
#[derive(Debug)]
pub enum ClaimOutcome {
    /// The lease is this worker's (or the job was found canceled and is now ended).
    Claimed(Box<Claim>),
    /// Another worker holds the job, or it has ended: a duplicate delivery, to drop.
    Duplicate,
    /// The job's tenant already runs its `max_in_flight` jobs: it stays as it is, for a later
    /// delivery to claim.
    TenantAtLimit {
        /// Jobs of the tenant holding a live lease.
        in_flight: i64,
        /// The tenant's limit.
        limit: i32,
    },
}

/// Takes the lease on `id` as `try_claim_job` does; `None` for a duplicate delivery and for a
/// job whose tenant is at its in-flight limit alike.
pub async fn claim_job(
    db: &PgPool,
    id: JobId,
    worker: &str,
    ttl: Duration,
) -> sqlx::Result<Option<Claim>> {
    Ok(match try_claim_job(db, id, worker, ttl).await? {
        ClaimOutcome::Claimed(c) => Some(*c),
        ClaimOutcome::Duplicate | ClaimOutcome::TenantAtLimit { .. } => None,
    })
}

/// Takes the lease on `id` if the job's state machine allows a claim, no one holds a live
/// lease and its tenant has fewer than `max_in_flight` jobs holding one (SQL
/// `tenant_has_room()`, exact under any concurrency), and records the start of its current
/// stage in the same statement. A job whose cancel was requested is canceled here instead (its
/// claim comes back with status `canceled`), and the stage a dead worker left under way (a job
/// has at most one `running` stage row) is closed as `canceled` in the same statement.
#[tracing::instrument(skip_all, fields(job_id = %id))]
pub async fn try_claim_job(
    db: &PgPool,
    id: JobId,
    worker: &str,
    ttl: Duration,
) -> sqlx::Result<ClaimOutcome> {
    claim_on(&mut *db.acquire().await?, id, worker, ttl).await
}

/// Claims several jobs in one transaction, one commit for all: each as `try_claim_job` does, in
/// the order their claims take the tenants' advisory locks (`tenant_has_room()`: by the hash of
/// the tenant, then by job), so two workers' batches wait for each other instead of
/// deadlocking. The outcomes come in the order of `ids`. A batch that fails is rolled back as a
/// whole: no job of it is claimed, and every message is redelivered.
#[tracing::instrument(skip_all, fields(jobs = ids.len()))]
pub async fn try_claim_jobs(
    db: &PgPool,
    ids: &[JobId],
    worker: &str,
    ttl: Duration,
) -> sqlx::Result<Vec<ClaimOutcome>> {
    // A batch of one has no lock order to keep and nothing to commit together: its claim is
    // one statement on its own, as `try_claim_job`, instead of four round trips (begin, order,
    // claim, commit). Most batches of a lightly loaded worker are of one.
    if let [id] = ids {
        return Ok(vec![try_claim_job(db, *id, worker, ttl).await?]);
    }
    let mut tx = db.begin().await?;
    let order = sqlx::query_scalar!(
        r#"select d.id as "id!: JobId"
             from unnest($1::uuid[]) with ordinality as d(id, n)
             left join job j on j.id = d.id
            order by hashtext(j.tenant_id::text), d.id, d.n"#,
        ids as &[JobId],
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut outcomes: Vec<Option<ClaimOutcome>> = ids.iter().map(|_| None).collect();
    for id in order {
        let outcome = claim_on(&mut tx, id, worker, ttl).await?;
        // A job delivered twice in one batch: the first delivery claims, the next is the
        // duplicate it would have been in two batches.
        if let Some(slot) = ids
            .iter()
            .zip(outcomes.iter_mut())
            .find_map(|(i, o)| (*i == id && o.is_none()).then_some(o))
        {
            *slot = Some(outcome);
        }
    }
    tx.commit().await?;
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or(ClaimOutcome::Duplicate))
        .collect())
}

/// One claim, on a connection of the caller's (a transaction for a batch).
async fn claim_on(
    db: &mut sqlx::PgConnection,
    id: JobId,
    worker: &str,
    ttl: Duration,
) -> sqlx::Result<ClaimOutcome> {
    let row = sqlx::query_as!(
        JobRow,
        r#"with room as (
               select tenant_has_room($1) as ok
           ), c as (
               update job set
                   status = next_job_status(status, 'claim', cancel_requested),
                   locked_by = $2,
                   locked_until = now() + $3::bigint * interval '1 millisecond',
                   lease_epoch = lease_epoch + 1,
                   started_at = coalesce(started_at, now()),
                   updated_at = now()
                where id = $1 and stage is not null
                  and next_job_status(status, 'claim', cancel_requested) is not null
                  and (locked_until is null or locked_until < now())
                  and (select ok from room)
               returning *
           ), closed as (
               update job_stage s set status = 'canceled', finished_at = now(), updated_at = now(),
                      duration_ms = (extract(epoch from (now() - s.started_at)) * 1000)::bigint
                 from c
                where s.job_id = c.id and c.status = 'canceled' and s.status = 'running'
           ), s as (
               insert into job_stage (job_id, stage, worker)
               select id, stage, $2 from c where status = 'running'
               on conflict (job_id, stage) do update
                  set attempts = job_stage.attempts + 1, status = 'running',
                      worker = excluded.worker, updated_at = now()
           )
           select id as "id!: JobId", tenant_id as "tenant_id!: TenantId",
                  status as "status!: JobStatus", stage as "stage: Stage",
                  prompt as "prompt!", duration_s as "duration_s!", quality_min as "quality_min!",
                  priority as "priority!: Priority",
                  backend_choice as "backend_choice!: BackendChoice",
                  speed_priority as "speed_priority!", image_url, metadata as "metadata!",
                  backend as "backend: BackendName", estimated_cost_micros, cost_micros,
                  quality_score, result_uri, error, cancel_requested as "cancel_requested!",
                  reap_count as "reap_count!", budget_day,
                  budget_held_micros as "budget_held_micros!",
                  fail_over_budget as "fail_over_budget!", use_cache as "use_cache!", waiting_reason, waiting_need_micros,
                  waiting_since, waited_ms as "waited_ms!", created_at as "created_at!",
                  started_at, finished_at, lease_epoch as "lease_epoch!"
             from c"#,
        id as JobId,
        worker,
        millis(ttl),
    )
    .fetch_optional(&mut *db)
    .await?;
    if let Some(row) = row {
        let lease_epoch = row.lease_epoch;
        return Ok(ClaimOutcome::Claimed(Box::new(Claim {
            job: JobRecord::try_from(row)?,
            lease_epoch,
        })));
    }
    // Not claimed: the job may still be free, its tenant full. Read after the claim, so a slot
    // freed meanwhile reads as a refusal, and the message waits a little longer; never lost.
    let free = sqlx::query!(
        r#"select t.max_in_flight as "limit!",
                  (select count(*) from job r
                    where r.tenant_id = j.tenant_id and r.status = 'running'
                      and r.locked_until > now() and r.id <> j.id) as "in_flight!"
             from job j join tenant t on t.id = j.tenant_id
            where j.id = $1 and j.stage is not null
              and next_job_status(j.status, 'claim', j.cancel_requested) = 'running'
              and (j.locked_until is null or j.locked_until < now())"#,
        id as JobId,
    )
    .fetch_optional(&mut *db)
    .await?;
    Ok(match free {
        Some(f) => ClaimOutcome::TenantAtLimit {
            in_flight: f.in_flight,
            limit: f.limit,
        },
        None => ClaimOutcome::Duplicate,
    })
}

/// The outputs of the stages a job has finished, for a worker that resumes it.
#[tracing::instrument(skip_all, fields(job_id = %id))]
pub async fn load_outputs(db: impl PgExecutor<'_>, id: JobId) -> sqlx::Result<Vec<(Stage, Value)>> {
    Ok(sqlx::query!(
        r#"select stage as "stage: Stage", output as "output!" from job_stage
            where job_id = $1 and status = 'succeeded' and output is not null
            order by stage"#,
        id as JobId
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|r| (r.stage, r.output))
    .collect())
}

/// Extends the leases this worker holds. Returns, for each lease still held, whether a cancel
/// was requested; a job missing from the answer has been lost (reaped or taken over). The rows
/// are locked in id order, so a renewal and a batch of checkpoints never deadlock.
pub async fn renew_leases(
    db: impl PgExecutor<'_>,
    worker: &str,
    leases: &[(JobId, i64)],
    ttl: Duration,
) -> sqlx::Result<Vec<(JobId, bool)>> {
    let ids: Vec<JobId> = leases.iter().map(|l| l.0).collect();
    let epochs: Vec<i64> = leases.iter().map(|l| l.1).collect();
    Ok(sqlx::query!(
        r#"with locked as (
               select j.id from job j where j.id = any($1) and j.locked_by = $4
                order by j.id for no key update
           )
           update job j set locked_until = now() + $3::bigint * interval '1 millisecond', updated_at = now()
             from unnest($1::uuid[], $2::bigint[]) as l(id, epoch) join locked using (id)
            where j.id = l.id and j.lease_epoch = l.epoch and j.locked_by = $4
              and j.status = 'running'
           returning j.id as "id: JobId", j.cancel_requested"#,
        &ids as &[JobId],
        &epochs,
        millis(ttl),
        worker,
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|r| (r.id, r.cancel_requested))
    .collect())
}

/// Gives a lease back early (shutdown) and dispatches the job again at once, so no one waits
/// for the lease to expire: the `release` event.
#[tracing::instrument(skip_all, fields(job_id = %id))]
pub async fn release_lease(
    pool: &PgPool,
    id: JobId,
    epoch: i64,
    worker: &str,
) -> sqlx::Result<bool> {
    let released = sqlx::query_scalar!(
        r#"with r as (
               update job set locked_by = null, locked_until = null,
                      status = next_job_status(status, 'release', cancel_requested),
                      updated_at = now()
                where id = $1 and lease_epoch = $2 and locked_by = $3
                  and next_job_status(status, 'release', cancel_requested) is not null
               returning id, priority, reap_count
           )
           select dispatch_job(r.id, r.priority, r.reap_count) as "id!: JobId" from r"#,
        id as JobId,
        epoch,
        worker,
    )
    .fetch_optional(pool)
    .await?;
    Ok(released.is_some())
}
