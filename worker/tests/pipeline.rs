//! The worker's pipeline, step by step (`run_once`), over a real database, the Postgres queue,
//! a local artifact store and the simulated backends: what each scenario leaves in the job and
//! job_stage rows, in the queue and on disk.

#![allow(missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aiprod_backends::Fleet;
use aiprod_domain::{JobId, JobSpec, Priority, Stage};
use aiprod_platform::Settings;
use aiprod_platform::queue::{Dispatch, PgQueue, Queue};
use aiprod_platform::storage::ArtifactStore;
use aiprod_store::{
    CancelOutcome, Checkpoint, CheckpointOutcome, JobPatch, claim_job, fail_job, get_job,
    insert_job, request_cancel, save_checkpoint,
};
use aiprod_testkit::TestDb;
use aiprod_worker::{JobOutcome, Outcome, WorkerContext, run_once};
use serde_json::{Value, json};
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
        insert_job(&self.pool, id, &spec, None).await?;
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

#[tokio::test]
async fn a_cancel_requested_mid_run_ends_the_job_at_its_next_checkpoint() -> anyhow::Result<()> {
    let rig = Rig::new(test_settings()).await?;
    let id = rig.insert(json!({"prompt": "A fox."})).await?;
    let ttl = rig.ctx.settings.worker.lease_ttl;
    let claim = claim_job(&rig.pool, id, "worker-a", ttl)
        .await?
        .expect("the job is free");
    assert_eq!(claim.job.status.as_str(), "running");

    assert_eq!(
        request_cancel(&rig.pool, id).await?,
        CancelOutcome::Requested
    );
    // The cancel waits for the stage in flight: the job still runs.
    assert_eq!(
        rig.job_status(id).await?,
        ("running".into(), Some("sanitize".into()))
    );

    let output = json!({"prompt": "A fox.", "duration_s": 5});
    let outcome = save_checkpoint(
        &rig.pool,
        &checkpoint(id, claim.lease_epoch, "worker-a", Stage::Sanitize, &output),
    )
    .await?;
    assert_eq!(outcome, CheckpointOutcome::Canceled);

    let job = get_job(&rig.pool, id).await?.expect("the job");
    assert_eq!(
        (job.status.as_str(), job.stage, job.cancel_requested),
        ("canceled", None, true)
    );
    assert!(job.finished_at.is_some());
    let lock: (Option<String>, Option<String>) =
        sqlx::query_as("select locked_by, locked_until::text from job where id = $1")
            .bind(id)
            .fetch_one(&rig.pool)
            .await?;
    assert_eq!(lock, (None, None), "the lease is released");
    let stages = rig.stages(id).await?;
    assert_eq!(stages.len(), 1, "no further stage began: {stages:#?}");
    assert_eq!(
        (stages[0].stage.as_str(), stages[0].status.as_str()),
        ("sanitize", "succeeded")
    );

    // The job's dispatch, relayed late, is dropped without running anything.
    assert_eq!(rig.relay().await?, 1);
    assert_eq!(rig.drain().await?, vec![Outcome::Worked(None)]);
    assert_eq!(rig.stages(id).await?, stages);
    assert_eq!(rig.queue_len().await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_worker_stops_a_job_canceled_during_render_after_that_stage() -> anyhow::Result<()> {
    // Simulated renders that take a while, so the cancel lands while `render` is in flight.
    let mut settings = test_settings();
    settings.backends.sim_latency = Duration::from_millis(500);
    let rig = Rig::new(settings).await?;
    let id = rig.submit(json!({"prompt": "A fox."})).await?;
    let ctx = rig.ctx.clone();
    let worker = tokio::spawn(async move { run_once(&ctx).await });

    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (_, stage) = rig.job_status(id).await?;
            if stage.as_deref() == Some("render") {
                return anyhow::Ok(());
            }
            assert!(
                !worker.is_finished(),
                "the job ended before render was seen"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    waited.map_err(|_| anyhow::anyhow!("render never began"))??;
    assert_eq!(
        request_cancel(&rig.pool, id).await?,
        CancelOutcome::Requested
    );

    assert_eq!(worker.await??, Outcome::Worked(Some(JobOutcome::Canceled)));
    assert_eq!(rig.job_status(id).await?, ("canceled".into(), None));
    let stages = rig.stages(id).await?;
    let names: Vec<&str> = stages.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(
        names,
        [
            "sanitize",
            "analysis",
            "creative",
            "visual",
            "financial",
            "render"
        ],
        "nothing after render began"
    );
    assert!(
        stages
            .iter()
            .all(|s| s.status == "succeeded" && s.attempts == 1),
        "the paid render was kept: {stages:#?}"
    );
    assert_eq!(rig.drain().await?, vec![], "nothing is left to run");
    Ok(())
}

#[tokio::test]
async fn a_job_canceled_while_queued_is_dropped_without_running_a_stage() -> anyhow::Result<()> {
    let rig = Rig::new(test_settings()).await?;
    let id = rig.submit(json!({"prompt": "A fox."})).await?;
    assert_eq!(
        request_cancel(&rig.pool, id).await?,
        CancelOutcome::Canceled
    );

    assert_eq!(rig.drain().await?, vec![Outcome::Worked(None)]);
    assert_eq!(rig.job_status(id).await?, ("canceled".into(), None));
    assert!(rig.stages(id).await?.is_empty(), "no stage ran");
    assert!(rig.artifact_names(id)?.is_empty(), "nothing was written");
    assert_eq!(rig.queue_len().await?, 0, "the message was acked");
    let epoch: i64 = sqlx::query_scalar("select lease_epoch from job where id = $1")
        .bind(id)
        .fetch_one(&rig.pool)
        .await?;
    assert_eq!(epoch, 0, "the job was never leased");
    Ok(())
}

#[tokio::test]
async fn a_checkpoint_under_a_stale_lease_epoch_writes_nothing() -> anyhow::Result<()> {
    let rig = Rig::new(test_settings()).await?;
    let id = rig.insert(json!({"prompt": "A fox."})).await?;
    let ttl = rig.ctx.settings.worker.lease_ttl;
    let old = claim_job(&rig.pool, id, "worker-a", ttl)
        .await?
        .expect("the job is free");
    // worker-a stalls past its lease; worker-b takes the job over under a new epoch.
    sqlx::query("update job set locked_until = now() - interval '1 second' where id = $1")
        .bind(id)
        .execute(&rig.pool)
        .await?;
    let new = claim_job(&rig.pool, id, "worker-b", ttl)
        .await?
        .expect("an expired lease can be taken over");
    assert_eq!(new.lease_epoch, old.lease_epoch + 1);

    let output = json!({"prompt": "A fox.", "duration_s": 5});
    let stale_patch = JobPatch {
        quality_score: Some(0.99),
        result_uri: Some("file:///stale".into()),
        ..JobPatch::default()
    };
    // The old holder, and even the new holder's name under the old epoch, are refused.
    for worker in ["worker-a", "worker-b"] {
        let cp = Checkpoint {
            patch: stale_patch.clone(),
            ..checkpoint(id, old.lease_epoch, worker, Stage::Sanitize, &output)
        };
        assert_eq!(
            save_checkpoint(&rig.pool, &cp).await?,
            CheckpointOutcome::LeaseLost,
            "{worker}"
        );
    }
    assert!(
        !fail_job(
            &rig.pool,
            id,
            old.lease_epoch,
            "worker-a",
            Stage::Sanitize,
            "stale",
            0
        )
        .await?,
        "a stale failure is refused too"
    );

    let job = get_job(&rig.pool, id).await?.expect("the job");
    assert_eq!(
        (
            job.status.as_str(),
            job.stage,
            job.quality_score,
            job.result_uri,
            job.error
        ),
        ("running", Some(Stage::Sanitize), None, None, None)
    );
    let owner: Option<String> = sqlx::query_scalar("select locked_by from job where id = $1")
        .bind(id)
        .fetch_one(&rig.pool)
        .await?;
    assert_eq!(owner.as_deref(), Some("worker-b"));
    let stages = rig.stages(id).await?;
    assert_eq!(stages.len(), 1);
    assert_eq!(
        (
            stages[0].status.as_str(),
            stages[0].attempts,
            stages[0].has_output
        ),
        ("running", 2, false),
        "the stale writes left the stage as the take-over began it"
    );

    // The current holder's checkpoint goes through.
    assert_eq!(
        save_checkpoint(
            &rig.pool,
            &checkpoint(id, new.lease_epoch, "worker-b", Stage::Sanitize, &output)
        )
        .await?,
        CheckpointOutcome::Advanced(Stage::Analysis)
    );
    Ok(())
}

#[tokio::test]
async fn the_reaper_redispatches_an_expired_lease_and_the_job_resumes_where_it_stopped()
-> anyhow::Result<()> {
    let rig = Rig::new(test_settings()).await?;
    let prompt = json!({"prompt": "A fox runs. It jumps.", "duration_s": 6});

    // A reference job, run to the end, supplies the outputs a real worker writes.
    let reference = rig.submit(prompt.clone()).await?;
    assert_eq!(
        rig.drain().await?,
        vec![Outcome::Worked(Some(JobOutcome::Succeeded))]
    );
    let outputs: Vec<(Stage, Value)> = sqlx::query_as(
        "select stage, output from job_stage where job_id = $1 and stage <= 'creative' order by stage",
    )
    .bind(reference)
    .fetch_all(&rig.pool)
    .await?;
    assert_eq!(outputs.len(), 3);

    // A worker receives the job, leases it, acks, checkpoints three stages and dies in `visual`.
    let id = rig.submit(prompt).await?;
    let delivery = rig.queue.receive(1).await?.pop().expect("the dispatch");
    assert_eq!(delivery.job_id, id);
    let ttl = rig.ctx.settings.worker.lease_ttl;
    let claim = claim_job(&rig.pool, id, "dead-worker", ttl)
        .await?
        .expect("the job is free");
    rig.queue.ack(&[delivery.ack_id]).await?;
    for (stage, output) in &outputs {
        let outcome = save_checkpoint(
            &rig.pool,
            &checkpoint(id, claim.lease_epoch, "dead-worker", *stage, output),
        )
        .await?;
        assert_eq!(
            outcome,
            CheckpointOutcome::Advanced(stage.next().expect("not the last stage"))
        );
    }
    let before = rig.stages(id).await?;
    assert_eq!(before.len(), 4, "three finished, visual begun: {before:#?}");

    // A live lease is left alone; an expired one is re-dispatched once.
    assert_eq!(aiprod_scheduler::reap_once(&rig.pool).await?, 0);
    assert_eq!(rig.drain().await?, vec![], "nothing is queued for it yet");
    sqlx::query("update job set locked_until = now() - interval '1 millisecond' where id = $1")
        .bind(id)
        .execute(&rig.pool)
        .await?;
    assert_eq!(aiprod_scheduler::reap_once(&rig.pool).await?, 1);
    assert_eq!(aiprod_scheduler::reap_once(&rig.pool).await?, 0);
    let lock: (Option<String>, i32, i32) = sqlx::query_as(
        "select j.locked_by, j.reap_count, o.attempt from job j join outbox o on o.job_id = j.id where j.id = $1",
    )
    .bind(id)
    .fetch_one(&rig.pool)
    .await?;
    assert_eq!(lock, (None, 1, 2), "lease cleared, dispatch attempt 2");
    assert_eq!(rig.relay().await?, 1);

    assert_eq!(
        rig.drain().await?,
        vec![Outcome::Worked(Some(JobOutcome::Succeeded))]
    );
    let after = rig.stages(id).await?;
    assert_eq!(after.len(), 9);
    assert_eq!(
        after[..3],
        before[..3],
        "the finished stages were not run again"
    );
    let attempts: Vec<i32> = after.iter().map(|s| s.attempts).collect();
    assert_eq!(
        attempts,
        [1, 1, 1, 2, 1, 1, 1, 1, 1],
        "only the stage in flight at the crash started twice"
    );
    assert!(after.iter().all(|s| s.status == "succeeded"), "{after:#?}");
    let job = get_job(&rig.pool, id).await?.expect("the job");
    assert_eq!(job.status.as_str(), "succeeded");
    assert!(job.result_uri.is_some_and(|u| path_of(&u).exists()));
    Ok(())
}

#[tokio::test]
async fn a_cancel_found_by_the_next_claim_closes_the_stage_a_dead_worker_left_running()
-> anyhow::Result<()> {
    let rig = Rig::new(test_settings()).await?;
    let id = rig.submit(json!({"prompt": "A fox."})).await?;
    // Worker A takes the message and the lease, begins sanitize, and dies.
    sqlx::query("delete from queue_message")
        .execute(&rig.pool)
        .await?;
    claim_job(&rig.pool, id, "worker-a", rig.ctx.settings.worker.lease_ttl)
        .await?
        .expect("the job is free");
    assert_eq!(
        request_cancel(&rig.pool, id).await?,
        CancelOutcome::Requested
    );
    sqlx::query("update job set locked_until = now() - interval '1 second' where id = $1")
        .bind(id)
        .execute(&rig.pool)
        .await?;
    assert_eq!(aiprod_scheduler::reap_once(&rig.pool).await?, 1);
    assert_eq!(rig.relay().await?, 1);

    assert_eq!(
        rig.drain().await?,
        vec![Outcome::Worked(Some(JobOutcome::Canceled))]
    );
    assert_eq!(rig.job_status(id).await?, ("canceled".into(), None));
    let stages = rig.stages(id).await?;
    assert_eq!(stages.len(), 1, "{stages:#?}");
    assert_eq!(
        (stages[0].stage.as_str(), stages[0].status.as_str()),
        ("sanitize", "canceled")
    );
    assert!(
        stages[0].finished_at.is_some(),
        "the interrupted stage is closed"
    );
    Ok(())
}

#[tokio::test]
async fn a_job_runs_all_nine_stages_and_leaves_real_artifacts() -> anyhow::Result<()> {
    let rig = Rig::new(test_settings()).await?;
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
            .all(|s| s.status == "succeeded" && s.attempts == 1),
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
    let manifest: Value = serde_json::from_slice(&std::fs::read(path_of(&uri))?)?;
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
            aiprod_backends::mp4::read_duration(&bytes),
            Some(Duration::from_secs(3))
        );
    }
    assert_eq!(manifest["cost_usd"], "0.48");
    Ok(())
}

#[tokio::test]
async fn a_duplicate_delivery_runs_no_stage_twice() -> anyhow::Result<()> {
    let rig = Rig::new(test_settings()).await?;
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
        stages.iter().all(|s| s.attempts == 1),
        "a stage ran twice: {stages:?}"
    );
    assert_eq!(rig.queue_len().await?, 0, "every delivery was acked");
    Ok(())
}

#[tokio::test]
async fn a_delivery_for_a_job_leased_elsewhere_is_dropped() -> anyhow::Result<()> {
    let rig = Rig::new(test_settings()).await?;
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
    let stages = rig.stages(id).await?;
    assert_eq!(stages.len(), 1, "{stages:#?}");
    assert_eq!(
        (
            stages[0].stage.as_str(),
            stages[0].status.as_str(),
            stages[0].attempts
        ),
        ("sanitize", "running", 1)
    );
    Ok(())
}

#[tokio::test]
async fn a_stage_that_keeps_failing_fails_the_job_naming_the_stage() -> anyhow::Result<()> {
    let mut settings = test_settings();
    settings.backends.sim_failure_rate = 1.0;
    settings.worker.retry.max_attempts = 2;
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
        error.starts_with("stage render failed: shot 0: no backend rendered it (replicate: simulated replicate render failed (internal); runway: "),
        "{error}"
    );
    // Each stage try began with the cheapest, then walked the configured fallback order
    // (runway, veo3): every try is a row.
    let tries: Vec<(i32, String, String, String)> = sqlx::query_as(
        "select attempt, backend::text, state::text, failure_class from render_task
          where job_id = $1 order by attempt",
    )
    .bind(id)
    .fetch_all(&rig.pool)
    .await?;
    let order: Vec<&str> = tries.iter().map(|t| t.1.as_str()).collect();
    assert_eq!(
        order,
        ["replicate", "runway", "veo3", "replicate", "runway", "veo3"]
    );
    assert!(
        tries.iter().all(|t| t.2 == "failed" && t.3 == "internal"),
        "{tries:?}"
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

#[tokio::test]
async fn a_job_the_budget_cannot_cover_waits_then_runs_when_the_limit_is_raised()
-> anyhow::Result<()> {
    use aiprod_store::{audit_budget_day, set_budget_limit, wake_budget_waiters};
    let mut settings = test_settings();
    settings.budget.daily_budget_usd = "0.30".parse()?;
    let today = settings.budget.calendar().day_at(chrono::Utc::now());
    let rig = Rig::new(settings).await?;
    // A first job takes $0.26 of today's $0.30.
    rig.submit(json!({"prompt": "A fox runs.", "duration_s": 5, "quality_min": 0}))
        .await?;
    assert_eq!(
        rig.drain().await?,
        vec![Outcome::Worked(Some(JobOutcome::Succeeded))]
    );
    let waits = rig
        .submit(json!({"prompt": "A fox runs.", "duration_s": 5, "quality_min": 0}))
        .await?;
    let fails = rig
        .submit(json!({"prompt": "A fox runs.", "duration_s": 5, "quality_min": 0, "over_budget": "fail"}))
        .await?;
    let outcomes = rig.drain().await?;
    assert!(
        outcomes.contains(&Outcome::Worked(Some(JobOutcome::WaitingBudget))),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&Outcome::Worked(Some(JobOutcome::Failed))),
        "{outcomes:?}"
    );
    assert_eq!(
        rig.job_status(waits).await?,
        ("waiting_budget".into(), Some("financial".into()))
    );
    let (reason, need): (String, i64) =
        sqlx::query_as("select waiting_reason, waiting_need_micros from job where id = $1")
            .bind(waits)
            .fetch_one(&rig.pool)
            .await?;
    assert!(
        reason.contains("today's budget does not cover this job"),
        "{reason}"
    );
    assert_eq!(
        need, 260_000,
        "the cheapest backend that qualifies: replicate, $0.26"
    );
    let error: String = sqlx::query_scalar("select error from job where id = $1")
        .bind(fails)
        .fetch_one(&rig.pool)
        .await?;
    assert!(error.contains("asked to fail, not wait"), "{error}");
    assert!(
        rig.drain().await?.is_empty(),
        "a waiting job is not redelivered"
    );

    // An admin raises today's limit to $1: the job wakes and renders on replicate.
    set_budget_limit(&rig.pool, today, "1".parse()?, "test").await?;
    assert_eq!(wake_budget_waiters(&rig.pool, today, 10).await?, [waits]);
    assert_eq!(rig.relay().await?, 1);
    assert_eq!(
        rig.drain().await?,
        vec![Outcome::Worked(Some(JobOutcome::Succeeded))]
    );
    let (backend, cost): (String, i64) =
        sqlx::query_as("select backend::text, cost_micros from job where id = $1")
            .bind(waits)
            .fetch_one(&rig.pool)
            .await?;
    assert_eq!((backend.as_str(), cost), ("replicate", 260_000));
    let audit = audit_budget_day(&rig.pool, today)
        .await?
        .expect("the day is open");
    assert!(audit.balanced, "{audit:?}");
    assert_eq!((audit.spent_micros, audit.reserved_micros), (520_000, 0));
    Ok(())
}
