//! Group commit for submissions. Each API process hands its accepted requests to one task,
//! which checks the rate, inserts and dispatches the jobs, and writes their audit rows for a
//! whole batch in one transaction, then answers each request. A request is answered only after
//! that commit, so an accepted job is durable before its `202`, as with one commit per request;
//! concurrent requests merely share the commit and the tenant's rate row, which would otherwise
//! take them one at a time (ARCHITECTURE.md, "Invariants": group commit). A batch the
//! database refuses is written again one submission at a time, so a row it cannot take fails
//! alone, as the render writer's groups do.

use std::sync::{Arc, OnceLock};

use aiprod_domain::{JobId, JobSpec, OverBudget, Priority, TenantId};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::job::{JobRecord, JobRow};
use crate::rate_limit::{RateDecision, check_rates};

/// The most submissions in one transaction.
const MAX_BATCH: usize = 512;

/// One submission without an idempotency key, validated and entitled, with who made it.
#[derive(Clone, Debug)]
pub struct Submission {
    /// The tenant.
    pub tenant: TenantId,
    /// The tenant's rate, submissions a minute.
    pub per_minute: u32,
    /// The new job's id.
    pub id: JobId,
    /// The request.
    pub spec: JobSpec,
    /// The key that made it.
    pub key_id: Option<Uuid>,
    /// Who, readably (`key:<prefix>`).
    pub actor: String,
    /// The peer's address.
    pub remote_addr: Option<String>,
    /// The request's id.
    pub request_id: Option<String>,
}

/// What became of a submission.
#[derive(Debug)]
pub enum Submitted {
    /// Inserted, dispatched and audited: the job as it was accepted.
    Accepted(Box<JobRecord>, RateDecision),
    /// Over the tenant's rate: nothing written.
    Limited(RateDecision),
}

/// Checks, inserts and audits `subs` in one transaction, in order (a tenant's rate counts
/// them in the order given): one outcome per submission.
pub async fn submit_jobs(pool: &PgPool, subs: &[Submission]) -> sqlx::Result<Vec<Submitted>> {
    let mut tx = pool.begin().await?;
    let asks: Vec<(TenantId, u32)> = subs.iter().map(|s| (s.tenant, s.per_minute)).collect();
    let rates = check_rates(&mut tx, &asks).await?;
    let allowed: Vec<&Submission> = subs
        .iter()
        .zip(&rates)
        .filter(|(_, r)| r.allowed)
        .map(|(s, _)| s)
        .collect();
    let mut jobs = insert_batch(&mut tx, &allowed).await?;
    tx.commit().await?;
    let mut out = Vec::with_capacity(subs.len());
    for (s, rate) in subs.iter().zip(rates) {
        if !rate.allowed {
            out.push(Submitted::Limited(rate));
            continue;
        }
        let job = jobs.remove(&s.id).ok_or_else(|| {
            sqlx::Error::Protocol(format!("job {} was not returned by its insert", s.id))
        })?;
        out.push(Submitted::Accepted(Box::new(job), rate));
    }
    Ok(out)
}

/// Inserts, dispatches and audits the jobs of `subs` in one statement; the jobs by id.
async fn insert_batch(
    conn: &mut sqlx::PgConnection,
    subs: &[&Submission],
) -> sqlx::Result<std::collections::HashMap<JobId, JobRecord>> {
    if subs.is_empty() {
        return Ok(Default::default());
    }
    let ids: Vec<JobId> = subs.iter().map(|s| s.id).collect();
    let prompts: Vec<&str> = subs.iter().map(|s| s.spec.prompt()).collect();
    let durations: Vec<i32> = subs.iter().map(|s| s.spec.duration_s()).collect();
    let quality: Vec<f64> = subs.iter().map(|s| s.spec.quality_min()).collect();
    let priorities: Vec<Priority> = subs.iter().map(|s| s.spec.priority()).collect();
    let backends: Vec<aiprod_domain::BackendChoice> =
        subs.iter().map(|s| s.spec.backend()).collect();
    let speed: Vec<bool> = subs.iter().map(|s| s.spec.speed_priority()).collect();
    let images: Vec<Option<&str>> = subs.iter().map(|s| s.spec.image_url()).collect();
    let metadata: Vec<&Value> = subs.iter().map(|s| s.spec.metadata()).collect();
    let hashes: Vec<String> = subs.iter().map(|s| s.spec.fingerprint()).collect();
    let fail: Vec<bool> = subs
        .iter()
        .map(|s| s.spec.over_budget() == OverBudget::Fail)
        .collect();
    let tenants: Vec<TenantId> = subs.iter().map(|s| s.tenant).collect();
    let cache: Vec<bool> = subs.iter().map(|s| s.spec.cache()).collect();
    let keys: Vec<Option<Uuid>> = subs.iter().map(|s| s.key_id).collect();
    let actors: Vec<&str> = subs.iter().map(|s| s.actor.as_str()).collect();
    let details: Vec<Value> = subs
        .iter()
        .map(|s| {
            json!({
                "backend": s.spec.backend().as_str(),
                "priority": s.spec.priority().as_str(),
                "duration_s": s.spec.duration_s(),
            })
        })
        .collect();
    let remotes: Vec<Option<&str>> = subs.iter().map(|s| s.remote_addr.as_deref()).collect();
    let requests: Vec<Option<&str>> = subs.iter().map(|s| s.request_id.as_deref()).collect();
    let rows = sqlx::query_as!(
        JobRow,
        r#"with j as (
               insert into job (id, prompt, duration_s, quality_min, priority, backend_choice,
                                speed_priority, image_url, metadata, request_hash,
                                fail_over_budget, tenant_id, use_cache)
               select * from unnest($1::uuid[], $2::text[], $3::int[], $4::float8[],
                                    $5::job_priority[], $6::backend_choice[], $7::bool[],
                                    $8::text[], $9::jsonb[], $10::text[], $11::bool[],
                                    $12::uuid[], $13::bool[])
               returning *
           ), a as (
               insert into audit_log (tenant_id, key_id, actor, action, target, detail,
                                      remote_addr, request_id)
               select t, k, actor, 'job.create', id::text, detail, remote, request
                 from unnest($12::uuid[], $14::uuid[], $15::text[], $1::uuid[], $16::jsonb[],
                             $17::text[], $18::text[])
                   as u(t, k, actor, id, detail, remote, request)
           )
           select dispatch_job(id, priority, reap_count) as "id!: JobId",
                  tenant_id as "tenant_id!: TenantId",
                  status as "status!: aiprod_domain::JobStatus",
                  stage as "stage: aiprod_domain::Stage",
                  prompt as "prompt!", duration_s as "duration_s!", quality_min as "quality_min!",
                  priority as "priority!: Priority",
                  backend_choice as "backend_choice!: aiprod_domain::BackendChoice",
                  speed_priority as "speed_priority!", image_url, metadata as "metadata!",
                  backend as "backend: aiprod_domain::BackendName",
                  estimated_cost_micros, cost_micros, quality_score, result_uri, error,
                  cancel_requested as "cancel_requested!", reap_count as "reap_count!",
                  budget_day, budget_held_micros as "budget_held_micros!",
                  fail_over_budget as "fail_over_budget!", use_cache as "use_cache!",
                  waiting_reason, waiting_need_micros, waiting_since,
                  waited_ms as "waited_ms!", created_at as "created_at!", started_at,
                  finished_at, lease_epoch as "lease_epoch!"
             from j"#,
        &ids as &[JobId],
        &prompts as &[&str],
        &durations,
        &quality,
        &priorities as &[Priority],
        &backends as &[aiprod_domain::BackendChoice],
        &speed,
        &images as &[Option<&str>],
        &metadata as &[&Value],
        &hashes,
        &fail,
        &tenants as &[TenantId],
        &cache,
        &keys as &[Option<Uuid>],
        &actors as &[&str],
        &details,
        &remotes as &[Option<&str>],
        &requests as &[Option<&str>],
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| JobRecord::try_from(r).map(|j| (j.id, j)))
        .collect()
}

type Reply = oneshot::Sender<Result<Submitted, Arc<sqlx::Error>>>;

/// The API process's submission writer: a handle that starts its task on first use and ends
/// it once every handle is dropped.
#[derive(Clone)]
pub struct Submitter {
    pool: PgPool,
    tx: Arc<OnceLock<mpsc::UnboundedSender<(Submission, Reply)>>>,
}

impl Submitter {
    /// A writer over `pool`.
    pub fn new(pool: PgPool) -> Submitter {
        Submitter {
            pool,
            tx: Arc::new(OnceLock::new()),
        }
    }

    /// Submits one job and waits for the commit of the batch it joined.
    pub async fn submit(&self, s: Submission) -> Result<Submitted, Arc<sqlx::Error>> {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(write_batches(self.pool.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let stopped = || Arc::new(sqlx::Error::PoolClosed);
        tx.send((s, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn write_batches(pool: PgPool, mut rx: mpsc::UnboundedReceiver<(Submission, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (subs, replies): (Vec<Submission>, Vec<Reply>) = batch.drain(..).unzip();
        match submit_jobs(&pool, &subs).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) if subs.len() > 1 && matches!(e, sqlx::Error::Database(_)) => {
                // The database refused a row: nothing of the batch was committed. Each
                // submission is tried again alone, in order, so the one it refused fails alone
                // and another tenant's request is not lost with it.
                for (s, reply) in subs.iter().zip(replies) {
                    let alone = submit_jobs(&pool, std::slice::from_ref(s)).await;
                    let _ = reply.send(
                        alone
                            .map_err(Arc::new)
                            .and_then(|mut o| o.pop().ok_or_else(|| Arc::new(no_outcome()))),
                    );
                }
            }
            Err(e) => {
                // Nothing of the batch was committed (the connection, not a row, failed):
                // every request is told so, and none is answered as accepted.
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

fn no_outcome() -> sqlx::Error {
    sqlx::Error::Protocol("a submission written alone gave no outcome".into())
}
