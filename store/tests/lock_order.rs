//! Statements that update several jobs lock them in id order (ARCHITECTURE.md, "Invariants"),
//! so the heartbeat's renewal and the checkpoint batch wait for each other and never deadlock.
//!
//! Each test holds the higher id's row from a transaction of its own, starts the statement with
//! the ids in descending order, and once the statement waits, asks for the lower id's row
//! without waiting: it must already be taken. A statement that followed its input's order would
//! wait on the higher id before touching the lower one.

#![allow(missing_docs)]

use std::future::Future;
use std::time::Duration;

use aiprod_domain::{JobId, JobSpec, Stage, TenantId};
use aiprod_store::{
    Checkpoint, CheckpointOutcome, JobPatch, claim_job, insert_job, renew_leases, save_checkpoints,
};
use aiprod_testkit::TestDb;
use serde_json::json;
use sqlx::PgPool;

const TTL: Duration = Duration::from_secs(60);

/// Two jobs leased by `w1`, lower id first, with their lease epochs. The higher id is written
/// first, so that neither a scan of the table nor the statements' input (both in descending
/// order) puts the rows in id order by accident.
async fn two_leased_jobs(pool: &PgPool) -> anyhow::Result<[(JobId, i64); 2]> {
    let spec = JobSpec::parse(&json!({"prompt": "a fox"})).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut ids = [JobId::new(), JobId::new()];
    ids.sort();
    let mut leased = [(ids[0], 0), (ids[1], 0)];
    for l in leased.iter_mut().rev() {
        insert_job(pool, TenantId::DEFAULT, l.0, &spec, None).await?;
        l.1 = claim_job(pool, l.0, "w1", TTL)
            .await?
            .expect("claimed")
            .lease_epoch;
    }
    Ok(leased)
}

/// Runs `statement` while `high` is held elsewhere, and asserts that, while it waits, `low` is
/// already locked. Returns what the statement returned once `high` was let go.
async fn locks_low_before_waiting_on_high<T: Send + 'static>(
    pool: &PgPool,
    low: JobId,
    high: JobId,
    statement: impl Future<Output = sqlx::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    let mut holder = pool.begin().await?;
    sqlx::query("select 1 from job where id = $1 for update")
        .bind(high)
        .execute(&mut *holder)
        .await?;
    let running = tokio::spawn(statement);
    // Until the statement is seen waiting for a lock; a generous bound, never a timing claim.
    let mut waiting = false;
    for _ in 0..500 {
        waiting = sqlx::query_scalar(
            "select exists (select 1 from pg_stat_activity
                             where datname = current_database() and wait_event_type = 'Lock')",
        )
        .fetch_one(pool)
        .await?;
        if waiting {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(waiting, "the statement never waited for the held row");
    let probe = sqlx::query("select 1 from job where id = $1 for update nowait")
        .bind(low)
        .execute(pool)
        .await;
    let code = probe.err().and_then(|e| {
        e.as_database_error()
            .and_then(|d| d.code().map(|c| c.into_owned()))
    });
    assert_eq!(
        code.as_deref(),
        Some("55P03"),
        "the lower id must be locked before the statement waits on the higher"
    );
    holder.commit().await?;
    Ok(running.await??)
}

#[tokio::test]
async fn a_lease_renewal_locks_its_jobs_in_id_order() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let [low, high] = two_leased_jobs(&pool).await?;
    let renewal = {
        let pool = pool.clone();
        async move { renew_leases(&pool, "w1", &[high, low], TTL).await }
    };
    let mut kept = locks_low_before_waiting_on_high(&pool, low.0, high.0, renewal).await?;
    kept.sort();
    assert_eq!(kept, vec![(low.0, false), (high.0, false)]);
    Ok(())
}

#[tokio::test]
async fn a_checkpoint_batch_locks_its_jobs_in_id_order() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let [low, high] = two_leased_jobs(&pool).await?;
    let batch = {
        let pool = pool.clone();
        async move {
            let out = json!({"ok": true});
            let cp = |(job_id, lease_epoch): (JobId, i64)| Checkpoint {
                job_id,
                lease_epoch,
                worker: "w1",
                stage: Stage::Sanitize,
                output: &out,
                retries: 0,
                patch: JobPatch::default(),
            };
            save_checkpoints(&pool, "w1", &[cp(high), cp(low)]).await
        }
    };
    let outcomes = locks_low_before_waiting_on_high(&pool, low.0, high.0, batch).await?;
    assert_eq!(
        outcomes,
        vec![
            CheckpointOutcome::Advanced(Stage::Analysis),
            CheckpointOutcome::Advanced(Stage::Analysis)
        ]
    );
    Ok(())
}
