//! Cancels: requested mid-stage, during a paid render, while queued, and found by the claim
//! that follows a dead worker.

use std::time::Duration;

use aiprod_domain::{Stage, TenantId};
use aiprod_store::{
    CancelOutcome, CheckpointOutcome, claim_job, get_job, request_cancel, save_checkpoint,
};
use aiprod_worker::{JobOutcome, Outcome, run_once};
use serde_json::json;

use super::{Rig, checkpoint, test_settings};

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
        request_cancel(&rig.pool, TenantId::DEFAULT, id).await?,
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
        request_cancel(&rig.pool, TenantId::DEFAULT, id).await?,
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
        request_cancel(&rig.pool, TenantId::DEFAULT, id).await?,
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
        request_cancel(&rig.pool, TenantId::DEFAULT, id).await?,
        CancelOutcome::Requested
    );
    sqlx::query("update job set locked_until = now() - interval '1 second' where id = $1")
        .bind(id)
        .execute(&rig.pool)
        .await?;
    assert_eq!(aiprod_scheduler::reap_once(&rig.pool, 5).await?, 1);
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
