//! Leases: checkpoints under a stale epoch, the reaper re-dispatching an expired lease, a
//! delivery for a job leased elsewhere, and a job whose lease keeps expiring failed as poison.

use std::time::Duration;

use aiprod_domain::Stage;
use aiprod_platform::queue::Queue;
use aiprod_store::{
    Checkpoint, CheckpointOutcome, JobPatch, claim_job, fail_job, get_job, save_checkpoint,
};
use aiprod_worker::{JobOutcome, Outcome};
use serde_json::{Value, json};

use super::{Rig, checkpoint, path_of, test_settings};

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
    assert_eq!(aiprod_scheduler::reap_once(&rig.pool, 5).await?, 0);
    assert_eq!(rig.drain().await?, vec![], "nothing is queued for it yet");
    sqlx::query("update job set locked_until = now() - interval '1 millisecond' where id = $1")
        .bind(id)
        .execute(&rig.pool)
        .await?;
    assert_eq!(aiprod_scheduler::reap_once(&rig.pool, 5).await?, 1);
    assert_eq!(aiprod_scheduler::reap_once(&rig.pool, 5).await?, 0);
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
async fn a_job_whose_lease_keeps_expiring_fails_as_poison_and_gives_its_money_back()
-> anyhow::Result<()> {
    const MAX_REAPS: u32 = 2;
    let mut settings = test_settings();
    // Renders that take a minute: the job is in `render`, its money reserved, when its worker
    // dies.
    settings.backends.sim_latency = Duration::from_secs(60);
    let rig = Rig::new(settings).await?;
    let id = rig
        .submit(json!({"prompt": "A fox runs. It jumps.", "duration_s": 6}))
        .await?;
    let ctx = rig.ctx.clone();
    let worker = tokio::spawn(async move { aiprod_worker::run_once(&ctx).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let rendering: bool = sqlx::query_scalar(
            "select j.stage = 'render' and exists (select 1 from render_task r
                                                    where r.job_id = j.id and r.state = 'submitted')
               from job j where j.id = $1",
        )
        .bind(id)
        .fetch_one(&rig.pool)
        .await?;
        if rendering {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job never rendered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The worker dies mid-render.
    worker.abort();
    let _ = worker.await;
    // Money the job still holds for tries it has not made (the shots are rendering, so what
    // `financial` reserved went to their tries; the fixture puts one dollar back on the job).
    sqlx::query(
        "with j as (update job set budget_held_micros = budget_held_micros + 1000000
                     where id = $1 returning budget_day, budget_stripe)
         update budget_stripe s set reserved_micros = reserved_micros + 1000000
           from j where s.day = j.budget_day and s.tenant_id is null and s.stripe = j.budget_stripe",
    )
    .bind(id)
    .execute(&rig.pool)
    .await?;
    // What the job holds now: the fixture's dollar, plus whatever a shot that had not yet
    // taken its try's money still held when the worker died (a race the test does not fix).
    let held_before: i64 = sqlx::query_scalar("select budget_held_micros from job where id = $1")
        .bind(id)
        .fetch_one(&rig.pool)
        .await?;
    assert!(held_before >= 1_000_000);
    let reserved_before: i64 = sqlx::query_scalar(
        "select d.reserved_micros from budget_day d join job j on j.budget_day = d.day where j.id = $1",
    )
    .bind(id)
    .fetch_one(&rig.pool)
    .await?;
    let expire = || async {
        sqlx::query("update job set locked_until = now() - interval '1 millisecond' where id = $1")
            .bind(id)
            .execute(&rig.pool)
            .await
    };
    let ttl = rig.ctx.settings.worker.lease_ttl;
    for n in 1..=MAX_REAPS {
        expire().await?;
        assert_eq!(aiprod_scheduler::reap_once(&rig.pool, MAX_REAPS).await?, 1);
        let (status, reaps): (String, i32) =
            sqlx::query_as("select status::text, reap_count from job where id = $1")
                .bind(id)
                .fetch_one(&rig.pool)
                .await?;
        assert_eq!((status.as_str(), reaps), ("running", n as i32), "reap {n}");
        // The next worker takes the job and dies too.
        claim_job(&rig.pool, id, &format!("worker-{n}"), ttl)
            .await?
            .expect("a reaped job is free");
    }
    let dispatches: i64 = sqlx::query_scalar("select count(*) from outbox where job_id = $1")
        .bind(id)
        .fetch_one(&rig.pool)
        .await?;
    let poisoned = aiprod_platform::metrics::Metrics::global()
        .jobs_poisoned
        .get();
    expire().await?;
    assert_eq!(aiprod_scheduler::reap_once(&rig.pool, MAX_REAPS).await?, 1);

    let reason = "poison: reaped 2 times and its lease expired again (its worker died or stalled \
                  each time); last stage render";
    let (status, error, stage, held, holder): (String, Option<String>, Option<String>, i64, Option<String>) =
        sqlx::query_as(
            "select status::text, error, stage::text, budget_held_micros, locked_by from job where id = $1",
        )
        .bind(id)
        .fetch_one(&rig.pool)
        .await?;
    assert_eq!(status, "failed");
    assert_eq!(error.as_deref(), Some(reason));
    assert_eq!(
        stage.as_deref(),
        Some("render"),
        "a failed job keeps its stage"
    );
    assert_eq!((held, holder), (0, None), "money given back, lease gone");
    let (stage_status, stage_error): (String, Option<String>) = sqlx::query_as(
        "select status::text, error from job_stage where job_id = $1 and stage = 'render'",
    )
    .bind(id)
    .fetch_one(&rig.pool)
    .await?;
    assert_eq!(
        (stage_status.as_str(), stage_error.as_deref()),
        ("failed", Some(reason))
    );
    let (released, reserved_after): (i64, i64) = sqlx::query_as(
        "select (select coalesce(sum(-reserved_delta_micros), 0)::bigint from budget_entry
                  where job_id = $1 and kind = 'release'),
                (select d.reserved_micros from budget_day d join job j on j.budget_day = d.day
                  where j.id = $1)",
    )
    .bind(id)
    .fetch_one(&rig.pool)
    .await?;
    assert_eq!(
        released, held_before,
        "the release trigger gave back all the job held"
    );
    assert_eq!(reserved_after, reserved_before - held_before);
    let after: i64 = sqlx::query_scalar("select count(*) from outbox where job_id = $1")
        .bind(id)
        .fetch_one(&rig.pool)
        .await?;
    assert_eq!(after, dispatches, "a poison job is not dispatched again");
    assert!(
        aiprod_platform::metrics::Metrics::global()
            .jobs_poisoned
            .get()
            > poisoned
    );
    assert_eq!(aiprod_scheduler::reap_once(&rig.pool, MAX_REAPS).await?, 0);
    Ok(())
}
