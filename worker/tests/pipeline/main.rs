//! The worker's pipeline, step by step (`run_once`), over a real database, the Postgres queue,
//! a local artifact store and the simulated backends: what each scenario leaves in the job and
//! job_stage rows, in the queue and on disk.

#![allow(missing_docs)]

mod budget;
mod cancels;
mod failures;
mod images;
mod leases;
mod runs;
mod tenants;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aiprod_backends::Fleet;
use aiprod_domain::{JobId, JobSpec, Stage, TenantId};
use aiprod_platform::Settings;
use aiprod_platform::queue::PgQueue;
use aiprod_platform::storage::ArtifactStore;
use aiprod_store::{Checkpoint, JobPatch, insert_job};
use aiprod_testkit::TestDb;
use aiprod_worker::{Outcome, WorkerContext, run_once};
use serde_json::Value;
use sqlx::PgPool;

/// A worker over a database, a queue and an artifact directory of its own.
struct Rig {
    ctx: WorkerContext,
    pool: PgPool,
    queue: Arc<PgQueue>,
    artifacts: tempfile::TempDir,
    _db: TestDb,
}

/// One job_stage row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct StageRow {
    stage: String,
    status: String,
    attempts: i32,
    finished_at: Option<String>,
    has_output: bool,
}

/// Settings for tests: a short lease, zero simulated latency, quick retries.
fn test_settings() -> Settings {
    let mut s = Settings::default();
    s.worker.lease_ttl = Duration::from_secs(2);
    s.backends.sim_latency = Duration::ZERO;
    s.worker.retry.initial = Duration::from_millis(1);
    s.worker.retry.max_interval = Duration::from_millis(10);
    s
}

impl Rig {
    async fn new(settings: Settings) -> anyhow::Result<Rig> {
        settings.validate()?;
        let db = TestDb::new().await?;
        let pool = db.pool().await?;
        let artifacts = tempfile::tempdir()?;
        let store = ArtifactStore::local(artifacts.path())?;
        let backends = Fleet::from_settings(&settings, true)?;
        let queue = Arc::new(PgQueue::new(
            pool.clone(),
            settings.queue.queue_ack_deadline,
        ));
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
            artifacts,
            _db: db,
        })
    }

    /// Accepts a job as the API does (job row plus outbox row), without relaying it.
    async fn insert(&self, body: Value) -> anyhow::Result<JobId> {
        let spec = JobSpec::parse(&body).map_err(|e| anyhow::anyhow!("bad spec: {e:?}"))?;
        let id = JobId::new();
        insert_job(&self.pool, TenantId::DEFAULT, id, &spec, None).await?;
        Ok(id)
    }

    /// Relays the outbox to the queue, as the scheduler's leader does.
    async fn relay(&self) -> anyhow::Result<usize> {
        aiprod_scheduler::relay_once(&self.pool, self.queue.as_ref()).await
    }

    /// Accepts a job and relays its dispatch.
    async fn submit(&self, body: Value) -> anyhow::Result<JobId> {
        let id = self.insert(body).await?;
        assert_eq!(self.relay().await?, 1);
        Ok(id)
    }

    /// Runs the worker until the queue is empty; the outcome of every message handled.
    async fn drain(&self) -> anyhow::Result<Vec<Outcome>> {
        let mut outcomes = Vec::new();
        loop {
            match run_once(&self.ctx).await? {
                Outcome::Idle => return Ok(outcomes),
                o => outcomes.push(o),
            }
            assert!(outcomes.len() < 50, "the queue does not drain");
        }
    }

    async fn stages(&self, id: JobId) -> anyhow::Result<Vec<StageRow>> {
        Ok(sqlx::query_as(
            "select stage::text as stage, status::text as status, attempts,
                    finished_at::text as finished_at, output is not null as has_output
               from job_stage where job_id = $1 order by job_stage.stage",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn job_status(&self, id: JobId) -> anyhow::Result<(String, Option<String>)> {
        Ok(
            sqlx::query_as("select status::text, stage::text from job where id = $1")
                .bind(id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn queue_len(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("select count(*) from queue_message")
            .fetch_one(&self.pool)
            .await?)
    }

    /// The job's files in the artifact store.
    fn artifact_names(&self, id: JobId) -> anyhow::Result<Vec<String>> {
        let dir = self.artifacts.path().join("jobs").join(id.to_string());
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut names = std::fs::read_dir(dir)?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }
}

fn path_of(uri: &str) -> PathBuf {
    PathBuf::from(uri.strip_prefix("file://").expect("a file:// URI"))
}

fn checkpoint<'a>(
    id: JobId,
    epoch: i64,
    worker: &'a str,
    stage: Stage,
    output: &'a Value,
) -> Checkpoint<'a> {
    Checkpoint {
        job_id: id,
        lease_epoch: epoch,
        worker,
        stage,
        output,
        retries: 0,
        patch: JobPatch::default(),
    }
}
