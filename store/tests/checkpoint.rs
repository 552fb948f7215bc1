//! Checkpoints on a real database: a batch fences every row on its own lease.

#![allow(missing_docs)]

use std::time::Duration;

use aiprod_domain::{JobId, JobSpec, Stage, TenantId};
use aiprod_store::{
    Checkpoint, CheckpointOutcome, JobPatch, claim_job, insert_job, save_checkpoints,
};
use aiprod_testkit::TestDb;
use serde_json::json;

#[tokio::test]
async fn a_batch_writes_each_checkpoint_under_its_own_lease() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let spec = JobSpec::parse(&json!({"prompt": "a fox"})).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (good, stale, other) = (JobId::new(), JobId::new(), JobId::new());
    for id in [good, stale, other] {
        insert_job(&pool, TenantId::DEFAULT, id, &spec, None).await?;
    }
    let ttl = Duration::from_secs(60);
    let g = claim_job(&pool, good, "w1", ttl).await?.expect("claimed");
    let s = claim_job(&pool, stale, "w1", ttl).await?.expect("claimed");
    claim_job(&pool, other, "w2", ttl).await?.expect("claimed");
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
    let outcomes = save_checkpoints(
        &pool,
        "w1",
        &[
            cp(good, g.lease_epoch),
            cp(stale, s.lease_epoch - 1),
            cp(other, 1),
        ],
    )
    .await?;
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
