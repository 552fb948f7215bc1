//! Submissions in groups over a real PostgreSQL: a group counts each tenant's rate in the
//! order given, writes every accepted job with its dispatch and its audit row, and writes
//! nothing for a refused one; groups committed at once never let more through than the rate.

#![allow(missing_docs)]

use aiprod_domain::{JobId, JobSpec, TenantId};
use aiprod_store::{Submission, Submitted, submit_jobs};
use aiprod_testkit::TestDb;
use serde_json::json;
use sqlx::PgPool;

async fn tenant(pool: &PgPool, name: &str) -> anyhow::Result<TenantId> {
    let id = TenantId::new();
    sqlx::query("insert into tenant (id, name) values ($1, $2)")
        .bind(id)
        .bind(name)
        .execute(pool)
        .await?;
    Ok(id)
}

fn submission(tenant: TenantId, per_minute: u32, i: usize) -> anyhow::Result<Submission> {
    Ok(Submission {
        tenant,
        per_minute,
        id: JobId::new(),
        spec: JobSpec::parse(&json!({"prompt": format!("a fox, take {i}"), "duration_s": 5}))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        key_id: None,
        actor: format!("test:{i}"),
        remote_addr: Some("127.0.0.1".into()),
        request_id: Some(format!("req-{i}")),
    })
}

async fn count(pool: &PgPool, sql: &str, tenant: TenantId) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).bind(tenant).fetch_one(pool).await?)
}

#[tokio::test]
async fn a_group_counts_each_tenants_rate_in_order_and_writes_only_what_it_accepts()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let (slow, fast) = (tenant(&pool, "slow").await?, tenant(&pool, "fast").await?);
    // Interleaved: eight of `slow` (5 a minute) and four of `fast`.
    let mut subs = Vec::new();
    for i in 0..12 {
        subs.push(if i % 3 == 2 {
            submission(fast, 1000, i)?
        } else {
            submission(slow, 5, i)?
        });
    }
    let out = submit_jobs(&pool, &subs).await?;
    let mut slow_seen = 0;
    for (s, o) in subs.iter().zip(&out) {
        match o {
            Submitted::Accepted(job, rate) => {
                assert_eq!(job.id, s.id);
                assert_eq!(job.tenant_id, s.tenant);
                assert_eq!(job.spec, s.spec);
                assert!(rate.allowed);
                if s.tenant == slow {
                    slow_seen += 1;
                    assert!(slow_seen <= 5, "the sixth of slow's was let through");
                    assert_eq!(rate.remaining, 5 - slow_seen);
                }
            }
            Submitted::Limited(rate) => {
                assert_eq!(s.tenant, slow, "fast is far under its rate");
                assert!(!rate.allowed && rate.retry_after.is_some());
                slow_seen += 1;
                assert!(slow_seen > 5, "one of slow's first five was refused");
            }
        }
    }
    for (t, want) in [(slow, 5), (fast, 4)] {
        let jobs = count(&pool, "select count(*) from job where tenant_id = $1", t).await?;
        let queued = count(
            &pool,
            "select count(*) from outbox o join job j on j.id = o.job_id where j.tenant_id = $1",
            t,
        )
        .await?;
        let audited = count(
            &pool,
            "select count(*) from audit_log a join job j on j.id::text = a.target
              where a.action = 'job.create' and a.tenant_id = $1 and j.tenant_id = $1
                and a.request_id like 'req-%' and a.remote_addr = '127.0.0.1'",
            t,
        )
        .await?;
        assert_eq!((jobs, queued, audited), (want, want, want));
    }
    // The rate's state outlives the group: the next one of slow's is refused too.
    let again = submit_jobs(&pool, &[submission(slow, 5, 99)?]).await?;
    assert!(matches!(again[..], [Submitted::Limited(_)]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_committed_at_once_let_no_more_through_than_the_rate() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let t = tenant(&pool, "busy").await?;
    // Eight groups of 20 at once, as eight API replicas would send them, at 50 a minute.
    let groups = (0..8)
        .map(|g| {
            (0..20)
                .map(|i| submission(t, 50, g * 20 + i))
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let outs = futures::future::join_all(groups.iter().map(|g| submit_jobs(&pool, g))).await;
    let mut accepted = 0;
    for out in outs {
        accepted += out?
            .iter()
            .filter(|o| matches!(o, Submitted::Accepted(..)))
            .count();
    }
    assert_eq!(accepted, 50);
    let jobs = count(&pool, "select count(*) from job where tenant_id = $1", t).await?;
    assert_eq!(jobs, 50);
    Ok(())
}

#[tokio::test]
async fn a_row_the_database_refuses_fails_alone_and_its_group_is_written() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let (good, other) = (tenant(&pool, "good").await?, tenant(&pool, "other").await?);
    let writer = aiprod_store::Submitter::new(pool.clone());
    // A tenant the database does not know: the insert breaks a foreign key, as any row the
    // request's validation did not foresee would.
    let (a, b, c) = (
        submission(good, 1000, 0)?,
        submission(TenantId::new(), 1000, 1)?,
        submission(other, 1000, 2)?,
    );
    // On this test's one thread all three are queued before the writer's task runs, so they
    // reach the database as one group.
    let (ra, rb, rc) = tokio::join!(
        writer.submit(a.clone()),
        writer.submit(b.clone()),
        writer.submit(c.clone())
    );
    assert!(rb.is_err(), "the refused row is answered with its error");
    for (s, r) in [(&a, ra), (&c, rc)] {
        match r.map_err(|e| anyhow::anyhow!("{e}"))? {
            Submitted::Accepted(job, _) => assert_eq!(job.id, s.id),
            Submitted::Limited(_) => anyhow::bail!("far under the rate"),
        }
        let rows = count(
            &pool,
            "select count(*) from job where tenant_id = $1",
            s.tenant,
        )
        .await?;
        assert_eq!(rows, 1);
        let audited = count(
            &pool,
            "select count(*) from audit_log where tenant_id = $1 and action = 'job.create'",
            s.tenant,
        )
        .await?;
        assert_eq!(audited, 1);
    }
    let all: i64 = sqlx::query_scalar("select count(*) from job")
        .fetch_one(&pool)
        .await?;
    assert_eq!(all, 2, "nothing of the refused row was written");
    Ok(())
}
