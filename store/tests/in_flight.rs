//! Each tenant's limit on jobs in flight, and the Postgres queue's order across tenants, over a
//! real PostgreSQL: concurrent claims never start more of a tenant's jobs than its limit, a
//! refused job stays claimable, and a tenant's lone message is received before the rest of
//! another tenant's burst.

#![allow(missing_docs)]

use std::time::Duration;

use aiprod_domain::{JobId, JobSpec, Priority, Stage, TenantId};
use aiprod_store::{
    ClaimOutcome, defer_messages, enqueue_messages, fail_job, insert_job, receive_messages,
    release_lease, try_claim_job, try_claim_jobs,
};
use aiprod_testkit::TestDb;
use serde_json::json;
use sqlx::PgPool;

const TTL: Duration = Duration::from_secs(600);

async fn tenant(pool: &PgPool, name: &str, max_in_flight: i32) -> anyhow::Result<TenantId> {
    let id = TenantId::new();
    sqlx::query("insert into tenant (id, name, max_in_flight) values ($1, $2, $3)")
        .bind(id)
        .bind(name)
        .bind(max_in_flight)
        .execute(pool)
        .await?;
    Ok(id)
}

async fn jobs(pool: &PgPool, tenant: TenantId, n: usize) -> anyhow::Result<Vec<JobId>> {
    let spec = JobSpec::parse(&json!({"prompt": "a fox"})).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = JobId::new();
        insert_job(pool, tenant, id, &spec, None).await?;
        ids.push(id);
    }
    Ok(ids)
}

async fn claim(pool: &PgPool, id: JobId, worker: &str) -> ClaimOutcome {
    try_claim_job(pool, id, worker, TTL)
        .await
        .expect("the claim runs")
}

#[tokio::test]
async fn concurrent_claims_start_no_more_of_a_tenants_jobs_than_its_limit() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let a = tenant(&pool, "a", 3).await?;
    let b = tenant(&pool, "b", 3).await?;
    let of_a = jobs(&pool, a, 40).await?;
    let of_b = jobs(&pool, b, 2).await?;
    // Forty claims at once, each from a worker of its own.
    let outcomes = futures::future::join_all(of_a.iter().enumerate().map(|(i, id)| {
        let pool = pool.clone();
        async move { claim(&pool, *id, &format!("w{i}")).await }
    }))
    .await;
    let mut claimed = Vec::new();
    for (o, id) in outcomes.into_iter().zip(&of_a) {
        match o {
            ClaimOutcome::Claimed(c) => claimed.push((*id, c.lease_epoch, c.job.id)),
            ClaimOutcome::TenantAtLimit { in_flight, limit } => {
                assert_eq!((in_flight, limit), (3, 3));
            }
            ClaimOutcome::Duplicate => panic!("every job was free"),
        }
    }
    assert_eq!(
        claimed.len(),
        3,
        "exactly the limit, whatever the interleaving"
    );
    let running: i64 = sqlx::query_scalar(
        "select count(*) from job where tenant_id = $1 and status = 'running' and locked_until > now()",
    )
    .bind(a)
    .fetch_one(&pool)
    .await?;
    assert_eq!(running, 3);
    // Another tenant is not held back by a's limit.
    for id in &of_b {
        assert!(matches!(
            claim(&pool, *id, "wb").await,
            ClaimOutcome::Claimed(_)
        ));
    }
    // A job a's limit refused is still queued, and claimable once a slot frees: a job that
    // ends, and one that is handed back (it is dispatched again, and takes a slot again only
    // when claimed).
    let refused = *of_a
        .iter()
        .find(|id| !claimed.iter().any(|c| c.0 == **id))
        .expect("refused jobs");
    let status: String = sqlx::query_scalar("select status::text from job where id = $1")
        .bind(refused)
        .fetch_one(&pool)
        .await?;
    assert_eq!(status, "queued");
    let (ended, epoch, _) = claimed[0];
    let worker: String = sqlx::query_scalar("select locked_by from job where id = $1")
        .bind(ended)
        .fetch_one(&pool)
        .await?;
    assert!(fail_job(&pool, ended, epoch, &worker, Stage::Sanitize, "done", 0).await?);
    assert!(matches!(
        claim(&pool, refused, "w-late").await,
        ClaimOutcome::Claimed(_)
    ));
    let (handed_back, epoch, _) = claimed[1];
    let worker: String = sqlx::query_scalar("select locked_by from job where id = $1")
        .bind(handed_back)
        .fetch_one(&pool)
        .await?;
    assert!(release_lease(&pool, handed_back, epoch, &worker).await?);
    let next = of_a
        .iter()
        .copied()
        .find(|id| *id != refused && !claimed.iter().any(|c| c.0 == *id))
        .expect("refused jobs");
    assert!(matches!(
        claim(&pool, next, "w-next").await,
        ClaimOutcome::Claimed(_)
    ));
    assert!(matches!(
        claim(&pool, handed_back, "w-back").await,
        ClaimOutcome::TenantAtLimit { .. }
    ));
    // A job leased elsewhere is a duplicate, not a refusal.
    assert!(matches!(
        claim(&pool, next, "w-dup").await,
        ClaimOutcome::Duplicate
    ));
    Ok(())
}

async fn enqueue(pool: &PgPool, ids: &[JobId]) -> anyhow::Result<()> {
    let attempts = vec![1; ids.len()];
    let priorities = vec![Priority::Normal; ids.len()];
    enqueue_messages(pool, ids, &attempts, &priorities).await?;
    Ok(())
}

#[tokio::test]
async fn a_tenants_lone_message_is_received_before_another_tenants_burst() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let a = tenant(&pool, "a", 1000).await?;
    let b = tenant(&pool, "b", 1000).await?;
    let burst = jobs(&pool, a, 200).await?;
    // The burst in relay batches, then b's one job.
    enqueue(&pool, &burst[..120]).await?;
    enqueue(&pool, &burst[120..]).await?;
    let lone = jobs(&pool, b, 1).await?;
    enqueue(&pool, &lone).await?;
    let ranks: Vec<i32> = sqlx::query_scalar(
        "select tenant_rank from queue_message where tenant_id = $1 order by id",
    )
    .bind(a)
    .fetch_all(&pool)
    .await?;
    assert_eq!(ranks, (0..200).collect::<Vec<i32>>());
    // Only a's first message ranks with b's: b's job is the second one out.
    let first = receive_messages(&pool, 2, TTL).await?;
    let got: Vec<JobId> = first.iter().map(|m| m.job_id).collect();
    assert_eq!(got, vec![burst[0], lone[0]]);
    // A higher priority still goes first.
    let urgent = jobs(&pool, a, 1).await?;
    enqueue_messages(&pool, &urgent, &[1], &[Priority::High]).await?;
    let next = receive_messages(&pool, 1, TTL).await?;
    assert_eq!(next[0].job_id, urgent[0]);
    Ok(())
}

#[tokio::test]
async fn messages_of_a_tenant_at_its_limit_wait_in_the_queue_and_a_deferred_one_comes_back_later()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let a = tenant(&pool, "a", 1).await?;
    let b = tenant(&pool, "b", 5).await?;
    let of_a = jobs(&pool, a, 3).await?;
    let of_b = jobs(&pool, b, 1).await?;
    enqueue(&pool, &of_a).await?;
    enqueue(&pool, &of_b).await?;
    let first = receive_messages(&pool, 1, TTL).await?;
    assert_eq!(first[0].job_id, of_a[0]);
    assert!(matches!(
        claim(&pool, of_a[0], "w").await,
        ClaimOutcome::Claimed(_)
    ));
    // a runs its one job: its other messages stay in the queue, b's is received.
    let next = receive_messages(&pool, 10, TTL).await?;
    assert_eq!(
        next.iter().map(|m| m.job_id).collect::<Vec<_>>(),
        vec![of_b[0]]
    );
    let waiting: i64 = sqlx::query_scalar(
        "select count(*) from queue_message where tenant_id = $1 and visible_at <= now()",
    )
    .bind(a)
    .fetch_one(&pool)
    .await?;
    assert_eq!(waiting, 2);
    // A message deferred (its claim refused) is invisible for the delay, then delivered again.
    sqlx::query("update tenant set max_in_flight = 5 where id = $1")
        .bind(a)
        .execute(&pool)
        .await?;
    let again = receive_messages(&pool, 1, TTL).await?;
    defer_messages(&pool, &[again[0].id], Duration::from_millis(300)).await?;
    let during = receive_messages(&pool, 10, TTL).await?;
    assert!(during.iter().all(|m| m.id != again[0].id));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = receive_messages(&pool, 10, TTL).await?;
    let back = after.iter().find(|m| m.id == again[0].id).expect("back");
    assert_eq!(back.deliveries, 2);
    Ok(())
}

#[tokio::test]
async fn batched_claims_from_several_workers_keep_each_tenants_limit_and_drop_duplicates()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let a = tenant(&pool, "a", 3).await?;
    let b = tenant(&pool, "b", 1000).await?;
    let mut all = jobs(&pool, a, 12).await?;
    all.extend(jobs(&pool, b, 12).await?);
    // Four workers each claim a batch of twelve (each job is in two batches: every delivery is
    // duplicated), the batches interleaving tenants so that their lock orders would cross.
    let batches: Vec<Vec<JobId>> = (0..4)
        .map(|w| {
            (0..12)
                .map(|k| all[(w * 6 + k * 2 + w % 2) % all.len()])
                .collect()
        })
        .collect();
    let results = futures::future::join_all(batches.iter().enumerate().map(|(w, ids)| {
        let pool = pool.clone();
        async move { try_claim_jobs(&pool, ids, &format!("w{w}"), TTL).await }
    }))
    .await;
    let mut claimed = std::collections::HashMap::new();
    for (ids, outcomes) in batches.iter().zip(results) {
        let outcomes = outcomes?;
        assert_eq!(
            outcomes.len(),
            ids.len(),
            "one outcome per delivery, in order"
        );
        for (id, o) in ids.iter().zip(outcomes) {
            if let ClaimOutcome::Claimed(c) = o {
                assert_eq!(c.job.id, *id);
                *claimed.entry(*id).or_insert(0) += 1;
            }
        }
    }
    assert!(claimed.values().all(|n| *n == 1), "no job claimed twice");
    let running: Vec<(TenantId, i64)> = sqlx::query_as(
        "select tenant_id, count(*) from job where status = 'running' group by 1 order by 1",
    )
    .fetch_all(&pool)
    .await?;
    let of = |t: TenantId| running.iter().find(|r| r.0 == t).map_or(0, |r| r.1);
    assert_eq!(of(a), 3, "tenant a at its limit, never past it");
    let delivered_b = all[12..]
        .iter()
        .filter(|id| batches.iter().flatten().any(|d| d == *id))
        .count() as i64;
    assert_eq!(of(b), delivered_b, "every delivered job of b started");
    assert_eq!(claimed.len() as i64, 3 + delivered_b);
    Ok(())
}

#[tokio::test]
async fn a_batch_of_one_answers_as_a_single_claim() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let t = tenant(&pool, "one", 1).await?;
    let ids = jobs(&pool, t, 2).await?;
    // A batch of one takes the single claim's path (no transaction of its own): every outcome
    // must still be the one `try_claim_job` gives.
    let first = try_claim_jobs(&pool, &ids[..1], "w1", TTL).await?;
    assert!(
        matches!(&first[..], [ClaimOutcome::Claimed(c)] if c.job.id == ids[0] && c.lease_epoch == 1),
        "the free job is claimed: {first:?}"
    );
    let again = try_claim_jobs(&pool, &ids[..1], "w2", TTL).await?;
    assert!(
        matches!(&again[..], [ClaimOutcome::Duplicate]),
        "a second delivery of a leased job is a duplicate: {again:?}"
    );
    let full = try_claim_jobs(&pool, &ids[1..], "w2", TTL).await?;
    assert!(
        matches!(
            &full[..],
            [ClaimOutcome::TenantAtLimit {
                in_flight: 1,
                limit: 1
            }]
        ),
        "the tenant's one slot is taken: {full:?}"
    );
    Ok(())
}
