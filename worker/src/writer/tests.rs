//! The writer against a real PostgreSQL: a step nobody waited for, its refusal, a flush.

use std::time::Duration;

use aiprod_domain::{BackendName, JobSpec, Money, Stage, TenantId};
use aiprod_store::JobPatch;
use aiprod_store::{
    CancelOutcome, IntentOutcome, Reservation, ReserveOutcome, claim_job, insert_intent,
    insert_job, open_budget_day, render_tasks, request_cancel, reserve_budget,
};
use aiprod_testkit::{TestDb, skip_to_render};
use serde_json::Value;

use super::*;

const WORKER: &str = "writer-test";

/// A new job leased by `WORKER`: its id and lease epoch.
async fn a_leased_job(pool: &PgPool) -> anyhow::Result<(JobId, i64)> {
    let spec = JobSpec::parse(&serde_json::json!({"prompt": "a fox"}))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let job = JobId::new();
    insert_job(pool, TenantId::DEFAULT, job, &spec, None).await?;
    let claim = claim_job(pool, job, WORKER, Duration::from_secs(600))
        .await?
        .expect("a fresh job is free");
    Ok((job, claim.lease_epoch))
}

/// The checkpoint of `stage` of `job`'s run under `lease_epoch`, with `output`.
fn checkpoint(job: JobId, lease_epoch: i64, stage: Stage, output: Value) -> PendingCheckpoint {
    PendingCheckpoint {
        job_id: job,
        lease_epoch,
        stage,
        output,
        retries: 0,
        patch: JobPatch::default(),
    }
}

/// `job`'s stage, as its row says.
async fn stage_of(pool: &PgPool, job: JobId) -> anyhow::Result<Option<Stage>> {
    Ok(sqlx::query_scalar!(
        r#"select stage as "stage: Stage" from job where id = $1"#,
        job as JobId
    )
    .fetch_one(pool)
    .await?)
}

/// The first intent of `job`'s render under `lease_epoch` (no budget day: it reserves nothing).
fn first_intent(job: JobId, lease_epoch: i64) -> Intent<'static> {
    Intent {
        job_id: job,
        lease_epoch,
        worker_id: WORKER,
        shot: 0,
        attempt: 1,
        backend: BackendName::Runway,
        duration_s: 5,
        estimate: Money::ZERO,
        baseline: None,
        seed: None,
        spec_key: None,
    }
}

/// A leased job (its id and lease epoch) with one render in `intent`.
async fn a_render(pool: &PgPool) -> anyhow::Result<(JobId, i64, RenderTask)> {
    let day = chrono::Utc::now().date_naive();
    let usd = |s: &str| s.parse::<Money>().expect("money");
    assert!(open_budget_day(pool, day, "UTC", usd("10")).await?);
    let (job, lease_epoch) = a_leased_job(pool).await?;
    let reservation = Reservation {
        job_id: job,
        lease_epoch,
        worker: WORKER,
        day,
        amount: usd("0.50"),
        note: "test",
    };
    assert!(matches!(
        reserve_budget(pool, &reservation).await?,
        ReserveOutcome::Reserved { .. }
    ));
    skip_to_render(pool, job.as_uuid()).await?;
    let intent = Intent {
        estimate: usd("0.25"),
        ..first_intent(job, lease_epoch)
    };
    match insert_intent(pool, &intent).await? {
        IntentOutcome::Written(task) => Ok((job, lease_epoch, *task)),
        other => anyhow::bail!("the intent was not written: {other:?}"),
    }
}

async fn state(pool: &PgPool, job: JobId) -> anyhow::Result<RenderState> {
    let tasks = render_tasks(pool, job).await?;
    Ok(tasks.first().expect("the job's render").state)
}

#[tokio::test]
async fn a_step_nobody_waited_for_lands_before_the_next_and_a_refusal_reaches_it()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let (writer, writes) = Writer::start(pool.clone(), WORKER.into())?;
    let (job, _, task) = a_render(&pool).await?;
    let submitted = RenderUpdate {
        state: Some(RenderState::Submitted),
        remote_id: Some("remote-1".into()),
        ..RenderUpdate::default()
    };
    let rendered = RenderUpdate {
        state: Some(RenderState::Rendered),
        ..RenderUpdate::default()
    };
    // Queued one after the other without waiting: the second is taken from the state the
    // first left, so the first landed first.
    writer
        .step_behind(job, task.id, RenderState::Intent, submitted)
        .map_err(anyhow::Error::msg)?;
    let taken = writer
        .step(job, task.id, RenderState::Submitted, rendered)
        .await;
    assert_eq!(taken, Ok(true));
    assert_eq!(state(&pool, job).await?, RenderState::Rendered);

    // A step taken from a state the render has left is refused; its caller went on, so
    // the render's next awaited step reports it, once.
    let stale = RenderUpdate {
        state: Some(RenderState::Submitted),
        ..RenderUpdate::default()
    };
    writer
        .step_behind(job, task.id, RenderState::Intent, stale)
        .map_err(anyhow::Error::msg)?;
    let outputs = RenderUpdate {
        outputs: Some(serde_json::json!(["sim://clip"])),
        ..RenderUpdate::default()
    };
    let next = writer
        .step(job, task.id, RenderState::Rendered, outputs.clone())
        .await;
    assert_eq!(next, Err(TAKEN_OVER.to_owned()));
    assert_eq!(
        state(&pool, job).await?,
        RenderState::Rendered,
        "nothing went back"
    );
    let again = writer
        .step(job, task.id, RenderState::Rendered, outputs)
        .await;
    assert_eq!(again, Ok(true), "a refusal is told once");

    // A flush waits for what the job queued, and a refusal it leaves is forgotten: the
    // stage that runs again reads the rows afresh.
    let stale = RenderUpdate {
        state: Some(RenderState::Submitted),
        ..RenderUpdate::default()
    };
    writer
        .step_behind(job, task.id, RenderState::Intent, stale)
        .map_err(anyhow::Error::msg)?;
    writer.flush(job).await;
    assert!(writer.refused.lock().expect("never poisoned").is_empty());
    let last = RenderUpdate {
        qa: Some(serde_json::json!({"verdict": "pass"})),
        ..RenderUpdate::default()
    };
    assert_eq!(
        writer.step(job, task.id, RenderState::Rendered, last).await,
        Ok(true)
    );

    drop(writer);
    writes.await?;
    Ok(())
}

/// Checkpoints a job queued one after the other, while nothing was written yet, go in one
/// group: each is answered with the job's advance past the last, and every stage's output is
/// kept.
#[tokio::test]
async fn checkpoints_queued_in_a_row_advance_the_job_once() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let (job, epoch) = a_leased_job(&pool).await?;
    let (writer, writes) = Writer::start(pool.clone(), WORKER.into())?;
    // The writer's task runs only once this test's task waits: the three are queued together.
    let sent: Vec<Committing> = [Stage::Sanitize, Stage::Analysis, Stage::Creative]
        .into_iter()
        .enumerate()
        .map(|(k, stage)| writer.send(checkpoint(job, epoch, stage, serde_json::json!({ "k": k }))))
        .collect();
    for committing in sent {
        assert_eq!(
            committing.outcome().await,
            Ok(CheckpointOutcome::Advanced(Stage::Visual))
        );
    }
    drop(writer);
    writes.await?;
    let outputs = sqlx::query!(
        r#"select stage as "stage: Stage", output from job_stage
            where job_id = $1 and status = 'succeeded' order by output->>'k'"#,
        job as JobId
    )
    .fetch_all(&pool)
    .await?;
    let outputs: Vec<(Stage, Option<Value>)> =
        outputs.into_iter().map(|r| (r.stage, r.output)).collect();
    assert_eq!(
        outputs,
        vec![
            (Stage::Sanitize, Some(serde_json::json!({"k": 0}))),
            (Stage::Analysis, Some(serde_json::json!({"k": 1}))),
            (Stage::Creative, Some(serde_json::json!({"k": 2}))),
        ]
    );
    Ok(())
}

/// A checkpoint of another run of the job (another lease) never joins the round of the one
/// before it: each is fenced on its own lease, so a stale run's write cannot refuse the new
/// run's, nor the other way round.
#[tokio::test]
async fn checkpoints_of_two_runs_of_a_job_are_fenced_each_on_its_own_lease() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let (job, epoch) = a_leased_job(&pool).await?;
    let (writer, writes) = Writer::start(pool.clone(), WORKER.into())?;
    // Queued together: the current run's sanitize, then analysis from a run whose lease is gone.
    let current = writer.send(checkpoint(job, epoch, Stage::Sanitize, Value::Null));
    let stale = writer.send(checkpoint(job, epoch - 1, Stage::Analysis, Value::Null));
    assert_eq!(
        current.outcome().await,
        Ok(CheckpointOutcome::Advanced(Stage::Analysis))
    );
    assert_eq!(stale.outcome().await, Ok(CheckpointOutcome::LeaseLost));
    drop(writer);
    writes.await?;
    Ok(())
}

/// A step queued without a wait and refused fails what the job queued after it: the stage's
/// checkpoint does not land without the step (a download's cost, say), and the job's next run
/// starts clean once this one forgets it.
#[tokio::test]
async fn a_refused_step_keeps_the_jobs_later_checkpoint_from_landing() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let (writer, writes) = Writer::start(pool.clone(), WORKER.into())?;
    let (job, epoch, task) = a_render(&pool).await?;
    // Taken from a state the render is not in: refused.
    let stale = RenderUpdate {
        state: Some(RenderState::Downloaded),
        ..RenderUpdate::default()
    };
    writer
        .step_behind(job, task.id, RenderState::Rendered, stale)
        .map_err(anyhow::Error::msg)?;
    // The step's group commits before the checkpoint is queued: they are two groups.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while refusal_of(&writer.refused, job).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the step was never refused"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cp = || checkpoint(job, epoch, Stage::Render, Value::Null);
    assert_eq!(
        writer.send(cp()).outcome().await,
        Err(TAKEN_OVER.to_owned())
    );
    assert_eq!(
        stage_of(&pool, job).await?,
        Some(Stage::Render),
        "the checkpoint did not land"
    );

    writer.forget(job);
    assert_eq!(
        writer.send(cp()).outcome().await,
        Ok(CheckpointOutcome::Advanced(Stage::QaTechnical))
    );
    drop(writer);
    writes.await?;
    Ok(())
}

/// `render` starts while the job's `financial` checkpoint commits, and its intent queues behind
/// it (`stages::settles_first`). The two share a group, and the intent is written only if the
/// checkpoint advanced the job to `render`: one that found a cancel leaves no intent, so no POST
/// follows, and a job that was not moved there takes none either.
#[tokio::test]
async fn an_intent_queued_behind_a_checkpoint_that_finds_a_cancel_is_not_written()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let (writer, writes) = Writer::start(pool.clone(), WORKER.into())?;
    let free = [
        Stage::Sanitize,
        Stage::Analysis,
        Stage::Creative,
        Stage::Visual,
    ];
    let mut jobs = Vec::new();
    for _ in 0..2 {
        let (job, epoch) = a_leased_job(&pool).await?;
        for stage in free {
            writer
                .send(checkpoint(job, epoch, stage, Value::Null))
                .outcome()
                .await
                .map_err(anyhow::Error::msg)?;
        }
        assert_eq!(stage_of(&pool, job).await?, Some(Stage::Financial));
        jobs.push((job, epoch));
    }
    let [(canceled, canceled_epoch), (running, running_epoch)] = jobs[..] else {
        unreachable!("two jobs")
    };
    assert_eq!(
        request_cancel(&pool, TenantId::DEFAULT, canceled).await?,
        CancelOutcome::Requested
    );

    // An intent for a job whose row is not at `render` yet is refused, whoever writes it.
    let early = writer.intent(&first_intent(running, running_epoch)).await;
    assert!(matches!(early, Ok(None)), "{early:?}");
    assert!(matches!(
        insert_intent(&pool, &first_intent(running, running_epoch)).await?,
        IntentOutcome::LeaseLost
    ));

    // Each job's checkpoint, and then its intent, queued without waiting for the checkpoint.
    let mut answers = Vec::new();
    for (job, epoch) in [(canceled, canceled_epoch), (running, running_epoch)] {
        let cp = writer.send(checkpoint(job, epoch, Stage::Financial, Value::Null));
        let w = writer.clone();
        let intent = first_intent(job, epoch);
        answers.push((cp, tokio::spawn(async move { w.intent(&intent).await })));
    }
    let mut outcomes = Vec::new();
    for (cp, intent) in answers {
        outcomes.push((cp.outcome().await, intent.await?.map(|t| t.is_some())));
    }
    assert_eq!(
        outcomes,
        vec![
            (Ok(CheckpointOutcome::Canceled), Ok(false)),
            (Ok(CheckpointOutcome::Advanced(Stage::Render)), Ok(true)),
        ]
    );
    assert!(
        render_tasks(&pool, canceled).await?.is_empty(),
        "no intent, no POST"
    );
    assert_eq!(render_tasks(&pool, running).await?.len(), 1);
    drop(writer);
    writes.await?;
    Ok(())
}
