//! Checkpoints on a real database: a batch fences every row on its own lease.

#![allow(missing_docs)]

use std::time::Duration;

use aiprod_domain::{JobId, JobSpec, Stage, TenantId};
use aiprod_store::{
    Checkpoint, CheckpointOutcome, JobPatch, claim_job, insert_job, save_checkpoints,
};
use aiprod_testkit::TestDb;
use serde_json::json;

/// Three new jobs, leased by `workers` in turn; each job's id and lease epoch.
async fn leased(pool: &sqlx::PgPool, workers: [&str; 3]) -> anyhow::Result<Vec<(JobId, i64)>> {
    let spec = JobSpec::parse(&json!({"prompt": "a fox"})).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut jobs = Vec::new();
    for worker in workers {
        let id = JobId::new();
        insert_job(pool, TenantId::DEFAULT, id, &spec, None).await?;
        let claim = claim_job(pool, id, worker, Duration::from_secs(60))
            .await?
            .expect("a fresh job is free");
        jobs.push((id, claim.lease_epoch));
    }
    Ok(jobs)
}

#[tokio::test]
async fn a_batch_writes_each_checkpoint_under_its_own_lease() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let jobs = leased(&pool, ["w1", "w1", "w2"]).await?;
    let ((good, g), (stale, s), (other, _)) = (jobs[0], jobs[1], jobs[2]);
    let out = json!({"ok": true});
    let cp = |job_id, lease_epoch| Checkpoint {
        job_id,
        lease_epoch,
        worker: "w1",
        stage: Stage::Sanitize,
        output: &out,
        retries: 0,
        patch: JobPatch::default(),
    };
    // `stale` carries an old epoch; `other` is leased by another worker.
    let outcomes =
        save_checkpoints(&pool, "w1", &[cp(good, g), cp(stale, s - 1), cp(other, 1)]).await?;
    assert_eq!(
        outcomes,
        vec![
            CheckpointOutcome::Advanced(Stage::Analysis),
            CheckpointOutcome::LeaseLost,
            CheckpointOutcome::LeaseLost
        ]
    );
    let rows: Vec<(JobId, String, i64)> = sqlx::query_as(
        "select j.id, j.stage::text, (select count(*) from job_stage s where s.job_id = j.id and s.status = 'succeeded')
           from job j order by j.id",
    )
    .fetch_all(&pool)
    .await?;
    assert_eq!(
        rows,
        vec![
            (good, "analysis".into(), 1),
            (stale, "sanitize".into(), 0),
            (other, "sanitize".into(), 0)
        ]
    );
    Ok(())
}

/// The checkpoints of stages a job ran one after the other, written in one statement: the job
/// advances once past the last, every stage is recorded with its output and tries, the latest
/// patch wins, and another job's lone checkpoint in the same statement is untouched by them.
#[tokio::test]
async fn a_jobs_stages_in_a_row_advance_it_once_and_each_is_recorded() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let jobs = leased(&pool, ["w1", "w1", "w1"]).await?;
    let ((run, r), (lone, l), (canceled, c)) = (jobs[0], jobs[1], jobs[2]);
    sqlx::query("update job set cancel_requested = true where id = $1")
        .bind(canceled)
        .execute(&pool)
        .await?;
    let outs: Vec<serde_json::Value> = (0..3).map(|k| json!({"k": k})).collect();
    let cp = |job_id, lease_epoch, stage, k: usize, retries, backend| Checkpoint {
        job_id,
        lease_epoch,
        worker: "w1",
        stage,
        output: &outs[k],
        retries,
        patch: JobPatch {
            backend,
            ..JobPatch::default()
        },
    };
    use aiprod_domain::BackendName::{Runway, Veo3};
    let outcomes = save_checkpoints(
        &pool,
        "w1",
        &[
            cp(run, r, Stage::Sanitize, 0, 0, Some(Veo3)),
            cp(lone, l, Stage::Sanitize, 0, 0, None),
            cp(canceled, c, Stage::Sanitize, 0, 0, None),
            cp(run, r, Stage::Analysis, 1, 2, None),
            cp(canceled, c, Stage::Analysis, 1, 0, Some(Runway)),
            cp(run, r, Stage::Creative, 2, 0, Some(Runway)),
        ],
    )
    .await?;
    use CheckpointOutcome::{Advanced, Canceled};
    assert_eq!(
        outcomes,
        vec![
            Advanced(Stage::Visual),
            Advanced(Stage::Analysis),
            Canceled,
            Advanced(Stage::Visual),
            Canceled,
            Advanced(Stage::Visual),
        ]
    );
    let job: (String, Option<String>, String) =
        sqlx::query_as("select stage::text, backend::text, status::text from job where id = $1")
            .bind(run)
            .fetch_one(&pool)
            .await?;
    assert_eq!(
        job,
        ("visual".into(), Some("runway".into()), "running".into())
    );
    let stages = |id: JobId| {
        let pool = pool.clone();
        async move {
            // In the pipeline's order (the enum's order is not: values were added later).
            sqlx::query_as::<_, (String, String, i32, Option<serde_json::Value>)>(
                "select stage::text, status::text, attempts, output from job_stage
                  where job_id = $1
                  order by array_position(array['sanitize', 'analysis', 'creative', 'visual',
                                                'financial', 'render', 'qa_technical',
                                                'qa_semantic', 'finalize'], stage::text)",
            )
            .bind(id)
            .fetch_all(&pool)
            .await
        }
    };
    assert_eq!(
        stages(run).await?,
        vec![
            (
                "sanitize".into(),
                "succeeded".into(),
                1,
                Some(json!({"k": 0}))
            ),
            (
                "analysis".into(),
                "succeeded".into(),
                3,
                Some(json!({"k": 1}))
            ),
            (
                "creative".into(),
                "succeeded".into(),
                1,
                Some(json!({"k": 2}))
            ),
            ("visual".into(), "running".into(), 1, None),
        ]
    );
    assert_eq!(
        stages(lone).await?,
        vec![
            (
                "sanitize".into(),
                "succeeded".into(),
                1,
                Some(json!({"k": 0}))
            ),
            ("analysis".into(), "running".into(), 1, None),
        ]
    );
    // A cancel found by the first checkpoint stops the job there: the stage after it is not
    // recorded, and neither are the columns it set, as when each checkpoint was its own
    // statement.
    let backend: Option<String> = sqlx::query_scalar("select backend::text from job where id = $1")
        .bind(canceled)
        .fetch_one(&pool)
        .await?;
    assert_eq!(backend, None);
    assert_eq!(
        stages(canceled).await?,
        vec![(
            "sanitize".into(),
            "succeeded".into(),
            1,
            Some(json!({"k": 0}))
        )]
    );
    Ok(())
}

/// A cancel that waits for a run of checkpoints ending with `finalize` stops the job at the
/// first of them: the job is canceled, not succeeded, and the result is not published.
#[tokio::test]
async fn a_run_of_checkpoints_to_the_end_still_finds_a_pending_cancel() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let jobs = leased(&pool, ["w1", "w1", "w1"]).await?;
    let (job, epoch) = jobs[0];
    sqlx::query("update job set stage = 'qa_semantic', cancel_requested = true where id = $1")
        .bind(job)
        .execute(&pool)
        .await?;
    let out = json!({});
    let cp = |stage, patch| Checkpoint {
        job_id: job,
        lease_epoch: epoch,
        worker: "w1",
        stage,
        output: &out,
        retries: 0,
        patch,
    };
    let outcomes = save_checkpoints(
        &pool,
        "w1",
        &[
            cp(
                Stage::QaSemantic,
                JobPatch {
                    quality_score: Some(0.9),
                    ..JobPatch::default()
                },
            ),
            cp(
                Stage::Finalize,
                JobPatch {
                    result_uri: Some("file:///final.mp4".into()),
                    ..JobPatch::default()
                },
            ),
        ],
    )
    .await?;
    assert_eq!(
        outcomes,
        vec![CheckpointOutcome::Canceled, CheckpointOutcome::Canceled]
    );
    let row: (String, Option<f64>, Option<String>) =
        sqlx::query_as("select status::text, quality_score, result_uri from job where id = $1")
            .bind(job)
            .fetch_one(&pool)
            .await?;
    assert_eq!(row, ("canceled".into(), Some(0.9), None));
    Ok(())
}
