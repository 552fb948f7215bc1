//! The worker driven step by step (`run_once`) on a real database and queue.

#![allow(missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aiprod_shared::Settings;
use aiprod_shared::domain::{JobId, JobSpec, Priority};
use aiprod_shared::queue::{Dispatch, PgQueue, Queue};
use aiprod_shared::storage::ArtifactStore;
use aiprod_shared::store::{claim_job, insert_job};
use aiprod_shared::testdb::TestDb;
use aiprod_worker::{JobOutcome, Outcome, SimulatedBackends, WorkerContext, run_once};
use serde_json::{Value, json};
use sqlx::PgPool;

struct Rig {
    ctx: WorkerContext,
    pool: PgPool,
    queue: Arc<PgQueue>,
    dir: PathBuf,
    _db: TestDb,
}

impl Rig {
    async fn new(settings: Settings) -> anyhow::Result<Rig> {
        let db = TestDb::new().await?;
        let pool = db.pool().await?;
        let dir = std::env::temp_dir().join(format!(
            "aiprod-worker-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let store = ArtifactStore::local(&dir)?;
        let backends = Arc::new(SimulatedBackends::new(
            settings.backends.clone(),
            store.clone(),
            Duration::ZERO,
            settings.sim_failure_rate,
        ));
        let queue = Arc::new(PgQueue::new(pool.clone(), Duration::from_secs(30)));
        let ctx = WorkerContext::new(
            pool.clone(),
            queue.clone(),
            store,
            backends,
            Arc::new(settings),
        );
        Ok(Rig {
            ctx,
            pool,
            queue,
            dir,
            _db: db,
        })
    }

    /// Inserts a job and relays its outbox row to the queue, as the scheduler would.
    async fn submit(&self, body: Value) -> anyhow::Result<JobId> {
        let spec = JobSpec::from_json(&body).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let id = uuid::Uuid::now_v7();
        insert_job(&self.pool, id, &spec, None).await?;
        aiprod_scheduler::relay_once(&self.pool, self.queue.as_ref()).await?;
        Ok(id)
    }

    async fn drain(&self) -> anyhow::Result<Vec<Outcome>> {
        let mut outcomes = Vec::new();
        loop {
            match run_once(&self.ctx).await? {
                Outcome::Idle => return Ok(outcomes),
                o => outcomes.push(o),
            }
        }
    }

    async fn stages(&self, id: JobId) -> anyhow::Result<Vec<(String, String, i32)>> {
        Ok(sqlx::query_as("select s.stage::text, s.status::text, s.attempts from job_stage s where s.job_id = $1 order by s.stage")
            .bind(id)
            .fetch_all(&self.pool)
            .await?)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_job_runs_all_nine_stages_and_leaves_real_artifacts() -> anyhow::Result<()> {
    let rig = Rig::new(Settings::default()).await?;
    let id = rig
        .submit(json!({"prompt": "A fox runs. It jumps. Snow falls.", "duration_s": 9}))
        .await?;
    assert_eq!(
        rig.drain().await?,
        vec![Outcome::Worked(Some(JobOutcome::Succeeded))]
    );
    let stages = rig.stages(id).await?;
    assert_eq!(stages.len(), 9);
    assert!(
        stages
            .iter()
            .all(|(_, status, attempts)| status == "succeeded" && *attempts == 1),
        "{stages:?}"
    );
    let (backend, est, cost, score, uri): (String, i64, i64, f64, String) = sqlx::query_as(
        "select backend::text, estimated_cost_micros, cost_micros, quality_score, result_uri from job where id = $1",
    )
    .bind(id)
    .fetch_one(&rig.pool)
    .await?;
    // Three 3-second shots on replicate: 3 × (0.01 + 0.05 × 3) = 0.48 exactly.
    assert_eq!(
        (backend.as_str(), est, cost, score),
        ("replicate", 480_000, 480_000, 0.75)
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(uri.trim_start_matches("file://"))?)?;
    let shots = manifest["shots"].as_array().expect("shots");
    assert_eq!(shots.len(), 3);
    for shot in shots {
        let bytes = std::fs::read(
            shot["uri"]
                .as_str()
                .expect("uri")
                .trim_start_matches("file://"),
        )?;
        assert_eq!(
            aiprod_shared::mp4::read_duration(&bytes),
            Some(Duration::from_secs(3))
        );
    }
    assert_eq!(manifest["cost_usd"], "0.48");
    Ok(())
}

#[tokio::test]
async fn a_duplicate_delivery_runs_no_stage_twice() -> anyhow::Result<()> {
    let rig = Rig::new(Settings::default()).await?;
    let id = rig.submit(json!({"prompt": "A fox."})).await?;
    // The same dispatch delivered twice more, as an at-least-once queue may.
    let dup = Dispatch {
        job_id: id,
        attempt: 1,
        priority: Priority::Normal,
    };
    rig.queue.publish(&[dup.clone(), dup]).await?;
    let outcomes = rig.drain().await?;
    assert_eq!(
        outcomes,
        vec![
            Outcome::Worked(Some(JobOutcome::Succeeded)),
            Outcome::Worked(None),
            Outcome::Worked(None)
        ]
    );
    let stages = rig.stages(id).await?;
    assert_eq!(stages.len(), 9);
    assert!(
        stages.iter().all(|s| s.2 == 1),
        "a stage ran twice: {stages:?}"
    );
    let left: i64 = sqlx::query_scalar("select count(*) from queue_message")
        .fetch_one(&rig.pool)
        .await?;
    assert_eq!(left, 0, "every delivery was acked");
    Ok(())
}

#[tokio::test]
async fn a_delivery_for_a_job_leased_elsewhere_is_dropped() -> anyhow::Result<()> {
    let rig = Rig::new(Settings::default()).await?;
    let id = rig.submit(json!({"prompt": "A fox."})).await?;
    claim_job(&rig.pool, id, "another-worker", Duration::from_secs(60))
        .await?
        .expect("claimed");
    assert_eq!(rig.drain().await?, vec![Outcome::Worked(None)]);
    let owner: Option<String> = sqlx::query_scalar("select locked_by from job where id = $1")
        .bind(id)
        .fetch_one(&rig.pool)
        .await?;
    assert_eq!(owner.as_deref(), Some("another-worker"));
    assert_eq!(
        rig.stages(id).await?,
        vec![("sanitize".into(), "running".into(), 1)]
    );
    Ok(())
}

#[tokio::test]
async fn a_stage_that_keeps_failing_fails_the_job_naming_the_stage() -> anyhow::Result<()> {
    let mut settings = Settings {
        sim_failure_rate: 1.0,
        ..Settings::default()
    };
    settings.retry.max_attempts = 2;
    settings.retry.initial_ms = 1;
    let rig = Rig::new(settings).await?;
    let id = rig.submit(json!({"prompt": "A fox."})).await?;
    assert_eq!(
        rig.drain().await?,
        vec![Outcome::Worked(Some(JobOutcome::Failed))]
    );
    let (status, stage, error): (String, String, String) =
        sqlx::query_as("select status::text, stage::text, error from job where id = $1")
            .bind(id)
            .fetch_one(&rig.pool)
            .await?;
    assert_eq!((status.as_str(), stage.as_str()), ("failed", "render"));
    assert!(
        error.starts_with("stage render failed: simulated replicate render"),
        "{error}"
    );
    assert!(
        error.ends_with("(gave up after the last attempt)"),
        "{error}"
    );
    let render: (String, i32) = sqlx::query_as(
        "select status::text, attempts from job_stage where job_id = $1 and stage = 'render'",
    )
    .bind(id)
    .fetch_one(&rig.pool)
    .await?;
    assert_eq!(render, ("failed".into(), 2));
    Ok(())
}
