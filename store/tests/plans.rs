//! Plans that do not depend on how full a table was when a connection first ran a statement.
//! A worker's connections keep one generic plan per statement (`Plans::Generic`); a plan made
//! on a nearly empty table must still find its rows by key once the table has grown, or every
//! call reads the whole table (README, "Performance").

#![allow(missing_docs)]

use std::time::Duration;

use aiprod_domain::{JobId, JobSpec, Priority, TenantId};
use aiprod_store::db::{Plans, connect};
use aiprod_store::{enqueue_messages, insert_job, receive_messages};
use aiprod_testkit::TestDb;
use secrecy::SecretString;
use serde_json::json;

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
