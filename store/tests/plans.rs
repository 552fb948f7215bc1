//! Plans that do not depend on how full a table was when a connection first ran a statement.
//! A worker's connections keep one generic plan per statement (`Plans::Generic`); a plan made
//! on a nearly empty table must still find its rows by key once the table has grown, or every
//! call reads the whole table (README, "Performance").

#![allow(missing_docs)]

use std::time::Duration;

use aiprod_domain::{BackendName, JobId, JobSpec, Money, Priority, RenderState, TenantId};
use aiprod_store::db::{Plans, connect, keyed_pool};
use aiprod_store::{
    Group, Intent, IntentOutcome, RenderStep, RenderUpdate, claim_job, commit_group,
    enqueue_messages, insert_intent, insert_job, receive_messages,
};
use aiprod_testkit::{TestDb, skip_to_render};
use secrecy::SecretString;
use serde_json::json;
use sqlx::PgPool;

/// Sequential scans of `table` by this connection's open transaction so far.
async fn seq_scans(conn: &mut sqlx::PgConnection, table: &str) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("select pg_stat_get_xact_numscans($1::regclass)")
            .bind(table)
            .fetch_one(conn)
            .await?,
    )
}

#[tokio::test]
async fn a_receive_planned_on_an_empty_queue_never_reads_the_whole_queue() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let admin = db.pool().await?;
    // One connection, so that the receives below all use the plan the first one made.
    let worker = connect(&SecretString::from(db.url.clone()), 1, Plans::Generic).await?;
    let deadline = Duration::from_secs(60);
    assert!(receive_messages(&worker, 5, deadline).await?.is_empty());

    let tenant = TenantId::new();
    sqlx::query("insert into tenant (id, name) values ($1, 'plans')")
        .bind(tenant)
        .execute(&admin)
        .await?;
    let spec = JobSpec::parse(&json!({"prompt": "a fox"})).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut ids = Vec::new();
    for _ in 0..300 {
        let id = JobId::new();
        insert_job(&admin, tenant, id, &spec, None).await?;
        ids.push(id);
    }
    enqueue_messages(
        &admin,
        &ids,
        &vec![1; ids.len()],
        &vec![Priority::Normal; ids.len()],
    )
    .await?;

    let mut tx = worker.begin().await?;
    let got = receive_messages(&mut *tx, 5, deadline).await?;
    assert_eq!(got.len(), 5, "five of the 300 messages are handed out");
    assert_eq!(
        seq_scans(&mut tx, "queue_message").await?,
        0,
        "the receive found its messages through the queue's indexes"
    );
    tx.commit().await?;
    Ok(())
}

/// The sequential and the index scans of `table` that the server's statistics have counted.
async fn counted_scans(reader: &PgPool, table: &str) -> anyhow::Result<(i64, i64)> {
    let mut tx = reader.begin().await?;
    sqlx::query("select pg_stat_clear_snapshot()")
        .execute(&mut *tx)
        .await?;
    let (seq, idx): (Option<i64>, Option<i64>) =
        sqlx::query_as("select seq_scan, idx_scan from pg_stat_user_tables where relname = $1")
            .bind(table)
            .fetch_one(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok((seq.unwrap_or(0), idx.unwrap_or(0)))
}

/// Has the one connection of `pool` report its statistics as the statement ends.
async fn report_stats(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("select pg_stat_force_next_flush()")
        .execute(pool)
        .await?;
    Ok(())
}

/// A render of a new job, leased by `worker` and moved on to `render`, in `intent`.
async fn a_render(pool: &PgPool, worker: &str) -> anyhow::Result<uuid::Uuid> {
    let spec = JobSpec::parse(&json!({"prompt": "a fox"})).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let job = JobId::new();
    insert_job(pool, TenantId::DEFAULT, job, &spec, None).await?;
    let claim = claim_job(pool, job, worker, Duration::from_secs(600))
        .await?
        .expect("a fresh job is free");
    skip_to_render(pool, job.as_uuid()).await?;
    let intent = Intent {
        job_id: job,
        lease_epoch: claim.lease_epoch,
        worker_id: worker,
        shot: 0,
        attempt: 1,
        backend: BackendName::Runway,
        duration_s: 5,
        estimate: Money::ZERO,
        baseline: None,
        seed: None,
        spec_key: None,
    };
    match insert_intent(pool, &intent).await? {
        IntentOutcome::Written(task) => Ok(task.id),
        other => anyhow::bail!("the intent was not written: {other:?}"),
    }
}

#[tokio::test]
async fn the_writers_steps_planned_on_no_renders_never_read_them_all() -> anyhow::Result<()> {
    const WORKER: &str = "plans";
    let db = TestDb::new().await?;
    // Every connection that may scan `render_task` is a single one whose statistics are forced
    // out before the count: the renders' (`setup`) and the writer's. The counts are read on a
    // connection of their own that never touches the table.
    let one = || {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&db.url)
    };
    let (setup, reader) = (one().await?, one().await?);
    let generic = connect(&SecretString::from(db.url.clone()), 2, Plans::Generic).await?;
    // The writer's pool: one connection, so every group below runs on the plans the first made.
    let writer = keyed_pool(&generic, 1);
    let submitted = RenderUpdate {
        state: Some(RenderState::Submitted),
        remote_id: Some("remote".into()),
        ..RenderUpdate::default()
    };
    let step = |id| RenderStep {
        id,
        from: RenderState::Intent,
        update: &submitted,
    };
    let none = [step(uuid::Uuid::new_v4())];
    let group = Group {
        steps: &none,
        ..Group::default()
    };
    assert_eq!(commit_group(&writer, WORKER, group).await?.steps, [false]);

    let mut renders = Vec::new();
    for _ in 0..150 {
        renders.push(a_render(&setup, WORKER).await?);
    }
    report_stats(&setup).await?;
    report_stats(&writer).await?;
    let (seq, idx) = counted_scans(&reader, "render_task").await?;
    let some: Vec<RenderStep<'_>> = renders[..5].iter().map(|id| step(*id)).collect();
    let group = Group {
        steps: &some,
        ..Group::default()
    };
    assert_eq!(commit_group(&writer, WORKER, group).await?.steps, [true; 5]);
    report_stats(&writer).await?;
    let (seq_after, idx_after) = counted_scans(&reader, "render_task").await?;
    assert!(idx_after > idx, "the group's scans are counted");
    assert_eq!(seq_after, seq, "the steps found their renders by id");
    Ok(())
}
