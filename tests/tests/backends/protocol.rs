//! The clients through the worker's render protocol over a real database (the `Rig`): a 429 is
//! waited out, an expired output URL is fetched again, input safety fails the job, a failed
//! render falls back to the next provider, a render past the deadline is canceled, and the
//! reconciler finds an orphaned render by its seed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiprod_backends::Fleet;
use aiprod_domain::{BackendName, JobId, JobSpec, TenantId};
use aiprod_platform::Settings;
use aiprod_platform::queue::PgQueue;
use aiprod_platform::storage::ArtifactStore;
use aiprod_store::insert_job;
use aiprod_testkit::TestDb;
use aiprod_tests::stubs::{Provider, Step, Stub};
use aiprod_worker::{Outcome, WorkerContext, run_once};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::{client, settings_for, shot};

/// A worker over a database of its own, with real clients pointed at stubs.
pub(crate) struct Rig {
    pub(crate) ctx: WorkerContext,
    pub(crate) pool: PgPool,
    pub(crate) queue: Arc<PgQueue>,
    _artifacts: tempfile::TempDir,
    _db: TestDb,
}

impl Rig {
    pub(crate) async fn new(mut settings: Settings) -> anyhow::Result<Rig> {
        settings.worker.lease_ttl = Duration::from_millis(5_000);
        settings.worker.retry.initial = Duration::from_millis(1);
        settings.worker.retry.max_interval = Duration::from_millis(10);
        settings.validate()?;
        let db = TestDb::new().await?;
        let pool = db.pool().await?;
        let artifacts = tempfile::tempdir()?;
        let store = ArtifactStore::local(artifacts.path())?;
        let fleet = Fleet::from_settings(&settings, false)?;
        let queue = Arc::new(PgQueue::new(pool.clone(), Duration::from_secs(30)));
        let ctx = WorkerContext::new(
            pool.clone(),
            queue.clone(),
            store,
            fleet,
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

    pub(crate) async fn run(&self, body: Value) -> anyhow::Result<(JobId, String, Option<String>)> {
        let id = self.submit(body).await?;
        self.drain().await?;
        let (status, error) = self.status(id).await?;
        Ok((id, status, error))
    }

    /// Accepts a job and puts its message on the queue.
    pub(crate) async fn submit(&self, body: Value) -> anyhow::Result<JobId> {
        let spec = JobSpec::parse(&body).map_err(|e| anyhow::anyhow!("bad spec: {e:?}"))?;
        let id = JobId::new();
        insert_job(&self.pool, TenantId::DEFAULT, id, &spec, None).await?;
        aiprod_scheduler::relay_once(&self.pool, self.queue.as_ref()).await?;
        Ok(id)
    }

    /// Runs jobs until the queue is empty.
    pub(crate) async fn drain(&self) -> anyhow::Result<()> {
        while !matches!(run_once(&self.ctx).await?, Outcome::Idle) {}
        Ok(())
    }

    /// A job's status and error.
    pub(crate) async fn status(&self, id: JobId) -> anyhow::Result<(String, Option<String>)> {
        Ok(
            sqlx::query_as("select status::text, error from job where id = $1")
                .bind(id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn tries(
        &self,
        id: JobId,
    ) -> anyhow::Result<Vec<(String, String, Option<String>, Option<i64>)>> {
        Ok(sqlx::query_as(
            "select backend::text, state::text, failure_class, cost_micros from render_task
              where job_id = $1 order by shot, attempt",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }
}

#[tokio::test]
async fn a_submit_429_is_waited_out_for_its_retry_after_and_the_shot_renders_once()
-> anyhow::Result<()> {
    let stub = Stub::start(Provider::Runway).await;
    let rig = Rig::new(settings_for(Provider::Runway, &stub.uri())).await?;
    stub.script_submits([Step::Http(429, Some(1), r#"{"error":"Too many requests"}"#)]);
    let t0 = Instant::now();
    let (id, status, error) = rig
        .run(json!({"prompt": "A fox.", "duration_s": 5, "quality_min": 0}))
        .await?;
    assert_eq!(status, "succeeded", "{error:?}");
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
    assert_eq!(stub.count("POST", "/v1/image_to_video").await, 2);
    assert_eq!(
        rig.tries(id).await?,
        [(
            "runway".to_owned(),
            "downloaded".to_owned(),
            None,
            Some(30_000_000)
        )]
    );
    Ok(())
}

#[tokio::test]
async fn an_expired_output_url_is_fetched_again_without_a_second_render() -> anyhow::Result<()> {
    let stub = Stub::start(Provider::Runway).await;
    let rig = Rig::new(settings_for(Provider::Runway, &stub.uri())).await?;
    stub.expire_next_download();
    let (id, status, error) = rig
        .run(json!({"prompt": "A fox.", "duration_s": 5, "quality_min": 0}))
        .await?;
    assert_eq!(status, "succeeded", "{error:?}");
    assert_eq!(stub.count("POST", "/v1/image_to_video").await, 1);
    // Once to learn it finished, once more for fresh URLs.
    assert_eq!(stub.count("GET", "/files/").await, 2);
    assert_eq!(rig.tries(id).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn input_safety_fails_the_job_charged_and_falls_back_nowhere() -> anyhow::Result<()> {
    let runway = Stub::start(Provider::Runway).await;
    let veo = Stub::start(Provider::Veo).await;
    let mut s = settings_for(Provider::Runway, &runway.uri());
    let v = settings_for(Provider::Veo, &veo.uri());
    (s.vertex, s.veo) = (v.vertex, v.veo);
    let rig = Rig::new(s).await?;
    runway.script_polls([Step::Fail("SAFETY.INPUT.TEXT")]);
    let (id, status, error) = rig
        .run(json!({"prompt": "A fox.", "duration_s": 5, "speed_priority": true, "quality_min": 0}))
        .await?;
    assert_eq!(status, "failed");
    let error = error.unwrap_or_default();
    assert!(
        error.contains("runway refused the input of shot 0"),
        "{error}"
    );
    assert_eq!(
        rig.tries(id).await?,
        [(
            "runway".to_owned(),
            "failed".to_owned(),
            Some("input_safety".to_owned()),
            Some(30_000_000)
        )]
    );
    assert_eq!(veo.count("POST", ":predictLongRunning").await, 0);
    Ok(())
}

#[tokio::test]
async fn a_failed_render_falls_back_down_the_order_and_the_job_shows_each_try() -> anyhow::Result<()>
{
    let runway = Stub::start(Provider::Runway).await;
    let veo = Stub::start(Provider::Veo).await;
    let mut s = settings_for(Provider::Runway, &runway.uri());
    let v = settings_for(Provider::Veo, &veo.uri());
    (s.vertex, s.veo) = (v.vertex, v.veo);
    let rig = Rig::new(s).await?;
    runway.script_polls([Step::Fail("internal")]);
    let (id, status, error) = rig
        .run(json!({"prompt": "A fox.", "duration_s": 5, "speed_priority": true, "quality_min": 0}))
        .await?;
    assert_eq!(status, "succeeded", "{error:?}");
    assert_eq!(
        rig.tries(id).await?,
        [
            (
                "runway".to_owned(),
                "failed".to_owned(),
                Some("internal".to_owned()),
                Some(0)
            ),
            // Veo renders 6 s for a 5 s shot: 0.10 + 6 × 0.50.
            (
                "veo3".to_owned(),
                "downloaded".to_owned(),
                None,
                Some(3_100_000)
            ),
        ]
    );
    let health: (String, i32) = sqlx::query_as(
        "select state::text, consecutive_failures from backend_health where backend = 'runway'",
    )
    .fetch_one(&rig.pool)
    .await?;
    assert_eq!(health, ("closed".to_owned(), 1));
    let cost: i64 = sqlx::query_scalar("select cost_micros from job where id = $1")
        .bind(id)
        .fetch_one(&rig.pool)
        .await?;
    assert_eq!(cost, 3_100_000);
    Ok(())
}

#[tokio::test]
async fn a_render_past_the_jobs_deadline_is_canceled_at_the_provider() -> anyhow::Result<()> {
    let stub = Stub::start(Provider::Replicate).await;
    let mut s = settings_for(Provider::Replicate, &stub.uri());
    s.worker.job_deadline = Duration::from_secs(2);
    let rig = Rig::new(s).await?;
    stub.hold();
    let (id, status, error) = rig
        .run(json!({"prompt": "A fox.", "duration_s": 5}))
        .await?;
    assert_eq!(status, "failed");
    assert!(
        error
            .unwrap_or_default()
            .contains("passed the job's deadline")
    );
    assert_eq!(stub.canceled().len(), 1);
    let tries = rig.tries(id).await?;
    assert_eq!(
        tries,
        [(
            "replicate".to_owned(),
            "canceled".to_owned(),
            Some("deadline".to_owned()),
            Some(0)
        )]
    );
    Ok(())
}

#[tokio::test]
async fn the_reconciler_finds_a_replicate_orphan_by_its_seed_and_cancels_it() -> anyhow::Result<()>
{
    use aiprod_domain::Money;
    use aiprod_store::{Intent, IntentOutcome, claim_job, insert_intent};

    let stub = Stub::start(Provider::Replicate).await;
    let rig = Rig::new(settings_for(Provider::Replicate, &stub.uri())).await?;
    stub.hold();
    // A worker wrote its intent and POSTed, then died before saving the id.
    let spec =
        JobSpec::parse(&json!({"prompt": "A fox."})).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let id = JobId::new();
    insert_job(&rig.pool, TenantId::DEFAULT, id, &spec, None).await?;
    let claim = claim_job(&rig.pool, id, "doomed", Duration::from_secs(30))
        .await?
        .expect("free");
    aiprod_testkit::skip_to_render(&rig.pool, id.as_uuid()).await?;
    let task = insert_intent(
        &rig.pool,
        &Intent {
            job_id: id,
            lease_epoch: claim.lease_epoch,
            worker_id: "doomed",
            shot: 0,
            attempt: 1,
            backend: BackendName::Replicate,
            duration_s: 5,
            estimate: "0.26".parse::<Money>()?,
            baseline: None,
            seed: None,
            spec_key: None,
        },
    )
    .await?;
    let IntentOutcome::Written(task) = task else {
        panic!("the lease is held and the job has no budget day: {task:?}");
    };
    // Other predictions on the account, created around the same time, must not be mistaken
    // for it.
    let b = client(Provider::Replicate, &stub, Duration::from_secs(5));
    let mut other = shot(5);
    other.seed = 7;
    b.submit(&other).await.expect("another prediction");
    let mut ours = shot(5);
    ours.seed = u32::try_from(task.seed)?;
    let lost = b.submit(&ours).await.expect("the orphan");
    sqlx::query("update job set locked_until = now() - interval '1 second' where id = $1")
        .bind(id)
        .execute(&rig.pool)
        .await?;

    let found =
        aiprod_scheduler::reconcile_orphans(&rig.pool, &rig.ctx.backends, Duration::ZERO).await?;
    assert_eq!(found, 1);
    let row: (String, Option<String>, Option<i64>) =
        sqlx::query_as("select state::text, remote_id, cost_micros from render_task where id = $1")
            .bind(task.id)
            .fetch_one(&rig.pool)
            .await?;
    assert_eq!(
        row,
        ("orphaned".to_owned(), Some(lost.0.clone()), Some(260_000))
    );
    assert_eq!(stub.canceled(), [lost.0]);
    // Found once: the next pass has nothing to do.
    assert_eq!(
        aiprod_scheduler::reconcile_orphans(&rig.pool, &rig.ctx.backends, Duration::ZERO).await?,
        0
    );
    Ok(())
}
