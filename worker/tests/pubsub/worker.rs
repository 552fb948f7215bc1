//! A worker on Pub/Sub with a real database: duplicate deliveries, claims that fail and are
//! nacked, a job whose tenant is at its in-flight limit nacked until a slot frees, and a
//! dead-lettered job dispatched again by the leader's sweep.

use std::sync::Arc;
use std::time::Duration;

use aiprod_backends::Fleet;
use aiprod_domain::{JobId, JobSpec, TenantId};
use aiprod_platform::Settings;
use aiprod_platform::queue::{PubSubQueue, Queue};
use aiprod_platform::storage::ArtifactStore;
use aiprod_store::insert_job;
use aiprod_testkit::TestDb;
use aiprod_worker::{JobOutcome, Outcome, WorkerContext, run_once};
use serde_json::json;

use super::{connect, dispatch, fresh, receive_n};

/// A worker over a test database and a Pub/Sub subscription of its own.
struct Rig {
    ctx: WorkerContext,
    pool: sqlx::PgPool,
    queue: Arc<PubSubQueue>,
    _artifacts: tempfile::TempDir,
    _db: TestDb,
}

impl Rig {
    async fn new(tag: &str) -> anyhow::Result<Rig> {
        let mut settings = Settings {
            queue: fresh(tag, 600).await?,
            ..Settings::default()
        };
        settings.worker.lease_ttl = Duration::from_secs(2);
        settings.worker.worker_concurrency = 4;
        settings.backends.sim_latency = Duration::ZERO;
        settings.worker.retry.initial = Duration::from_millis(1);
        settings.validate()?;
        let db = TestDb::new().await?;
        let pool = db.pool().await?;
        let artifacts = tempfile::tempdir()?;
        let queue = connect(&settings.queue, settings.worker.worker_concurrency).await?;
        let ctx = WorkerContext::new(
            pool.clone(),
            queue.clone(),
            ArtifactStore::local(artifacts.path())?,
            Fleet::from_settings(&settings, true)?,
            Arc::new(settings),
        );
        Ok(Rig {
            ctx,
            pool,
            queue,
            _artifacts: artifacts,
            _db: db,
        })
    }

    /// Accepts a job as the API does and relays its dispatch to Pub/Sub, as the leader does.
    async fn submit(&self) -> anyhow::Result<JobId> {
        let spec = JobSpec::parse(&json!({"prompt": "A fox."}))
            .map_err(|e| anyhow::anyhow!("bad spec: {e:?}"))?;
        let id = JobId::new();
        insert_job(&self.pool, TenantId::DEFAULT, id, &spec, None).await?;
        assert_eq!(
            aiprod_scheduler::relay_once(&self.pool, self.queue.as_ref()).await?,
            1
        );
        Ok(id)
    }

    /// Waits for a message to arrive, then handles it as the worker's loop does.
    async fn work_one(&self) -> anyhow::Result<Outcome> {
        self.queue.wait(Duration::from_secs(20)).await;
        run_once(&self.ctx).await
    }
}

#[tokio::test]
async fn a_duplicate_delivery_from_pubsub_runs_no_stage_twice() -> anyhow::Result<()> {
    let rig = Rig::new("dup").await?;
    let id = rig.submit().await?;
    // The same dispatch twice more, as Pub/Sub may deliver it.
    rig.queue.publish(&[dispatch(id), dispatch(id)]).await?;
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(rig.work_one().await?);
    }
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(
        outcomes,
        vec![
            Outcome::Worked(None),
            Outcome::Worked(None),
            Outcome::Worked(Some(JobOutcome::Succeeded)),
        ]
    );
    let attempts: Vec<i32> = sqlx::query_scalar("select attempts from job_stage where job_id = $1")
        .bind(id)
        .fetch_all(&rig.pool)
        .await?;
    assert_eq!(attempts, vec![1; 9], "a stage ran twice");
    // All three were acked: nothing is left to deliver.
    assert!(
        receive_n(rig.queue.as_ref(), 1, Duration::from_secs(3))
            .await?
            .is_empty()
    );
    rig.queue.close().await;
    Ok(())
}

#[tokio::test]
async fn a_delivery_that_cannot_claim_its_job_is_nacked_and_redelivered() -> anyhow::Result<()> {
    let rig = Rig::new("claimfail").await?;
    let id = rig.submit().await?;
    // The database refuses the claim (as when it is unreachable): the message must come back
    // rather than be lost.
    sqlx::query("alter table job rename to job_away")
        .execute(&rig.pool)
        .await?;
    assert_eq!(rig.work_one().await?, Outcome::Worked(None));
    sqlx::query("alter table job_away rename to job")
        .execute(&rig.pool)
        .await?;
    assert_eq!(
        rig.work_one().await?,
        Outcome::Worked(Some(JobOutcome::Succeeded)),
        "the nacked message was redelivered and its job ran"
    );
    let status: String = sqlx::query_scalar("select status::text from job where id = $1")
        .bind(id)
        .fetch_one(&rig.pool)
        .await?;
    assert_eq!(status, "succeeded");
    rig.queue.close().await;
    Ok(())
}

#[tokio::test]
async fn a_job_whose_message_was_dead_lettered_is_dispatched_again_and_runs() -> anyhow::Result<()>
{
    let rig = Rig::new("stranded").await?;
    let id = rig.submit().await?;
    // Every claim fails (the database is away), so every delivery is nacked, until Pub/Sub
    // dead-letters the message: the job is queued and nothing will deliver it again.
    sqlx::query("alter table job rename to job_away")
        .execute(&rig.pool)
        .await?;
    for _ in 0..rig.ctx.settings.queue.pubsub_max_delivery_attempts {
        assert_eq!(rig.work_one().await?, Outcome::Worked(None));
    }
    sqlx::query("alter table job_away rename to job")
        .execute(&rig.pool)
        .await?;
    assert!(
        receive_n(rig.queue.as_ref(), 1, Duration::from_secs(3))
            .await?
            .is_empty(),
        "the message is dead-lettered"
    );
    // The leader's sweep finds the job once its last dispatch is old enough, and only then.
    let after = rig.ctx.settings.queue.redispatch_after;
    assert_eq!(
        aiprod_scheduler::redispatch_once(&rig.pool, after).await?,
        0
    );
    sqlx::query("update job set dispatched_at = now() - interval '1 hour' where id = $1")
        .bind(id)
        .execute(&rig.pool)
        .await?;
    assert_eq!(
        aiprod_scheduler::redispatch_once(&rig.pool, after).await?,
        1
    );
    assert_eq!(
        aiprod_scheduler::relay_once(&rig.pool, rig.queue.as_ref()).await?,
        1
    );
    assert_eq!(
        rig.work_one().await?,
        Outcome::Worked(Some(JobOutcome::Succeeded)),
        "the new dispatch arrived and its job ran"
    );
    let attempts: Vec<i32> = sqlx::query_scalar("select attempts from job_stage where job_id = $1")
        .bind(id)
        .fetch_all(&rig.pool)
        .await?;
    assert_eq!(attempts, vec![1; 9]);
    rig.queue.close().await;
    Ok(())
}

#[tokio::test]
async fn a_job_whose_tenant_is_at_its_limit_is_nacked_and_runs_once_a_slot_frees()
-> anyhow::Result<()> {
    use aiprod_domain::Stage;
    use aiprod_store::{claim_job, fail_job};
    let rig = Rig::new("tenant-limit").await?;
    let tenant = TenantId::new();
    sqlx::query("insert into tenant (id, name, max_in_flight) values ($1, 'one-at-a-time', 1)")
        .bind(tenant)
        .execute(&rig.pool)
        .await?;
    let spec = JobSpec::parse(&json!({"prompt": "A fox."}))
        .map_err(|e| anyhow::anyhow!("bad spec: {e:?}"))?;
    // The tenant's one slot is taken by a job another worker runs (its dispatch is not ours).
    let busy = JobId::new();
    insert_job(&rig.pool, tenant, busy, &spec, None).await?;
    sqlx::query("delete from outbox where job_id = $1")
        .bind(busy)
        .execute(&rig.pool)
        .await?;
    let held = claim_job(&rig.pool, busy, "elsewhere", Duration::from_secs(60))
        .await?
        .expect("free");
    let waiting = JobId::new();
    insert_job(&rig.pool, tenant, waiting, &spec, None).await?;
    aiprod_scheduler::relay_once(&rig.pool, rig.queue.as_ref()).await?;
    // Refused: nacked, not lost, and delivered again (at once: the subscription has no retry
    // policy, README "Pub/Sub").
    assert_eq!(rig.work_one().await?, Outcome::Worked(None));
    let refused_at = std::time::Instant::now();
    assert_eq!(rig.work_one().await?, Outcome::Worked(None));
    eprintln!(
        "pubsub: a refused message came back after {:?}",
        refused_at.elapsed()
    );
    assert!(
        fail_job(
            &rig.pool,
            busy,
            held.lease_epoch,
            "elsewhere",
            Stage::Sanitize,
            "done",
            0
        )
        .await?
    );
    let outcome = loop {
        match rig.work_one().await? {
            Outcome::Worked(None) => continue,
            o => break o,
        }
    };
    assert_eq!(outcome, Outcome::Worked(Some(JobOutcome::Succeeded)));
    rig.queue.close().await;
    Ok(())
}
