//! Tenants sharing the fleet: a job whose tenant is at its in-flight limit waits in the queue,
//! is deferred (neither lost nor received again at once) if another worker took the last slot
//! between its receive and its claim, and runs once a slot frees; a tenant's lone job is claimed
//! at the next free slot behind a burst of another tenant's, by a real worker on the Postgres
//! queue; and a job its tenant's day cannot cover waits, naming that day, while other tenants'
//! jobs run.

use std::time::{Duration, Instant};

use aiprod_domain::{JobId, JobSpec, Stage, TenantId};
use aiprod_store::{claim_job, fail_job, insert_job};
use aiprod_worker::{JobOutcome, Outcome};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{Rig, test_settings};

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

/// Accepts a job of `tenant` as the API does, without relaying it.
async fn insert_for(pool: &PgPool, tenant: TenantId, prompt: &str) -> anyhow::Result<JobId> {
    let spec = JobSpec::parse(&json!({"prompt": prompt, "duration_s": 2}))
        .map_err(|e| anyhow::anyhow!("bad spec: {e:?}"))?;
    let id = JobId::new();
    insert_job(pool, tenant, id, &spec, None).await?;
    Ok(id)
}

/// Runs the worker until it handles a message, for at most 30 s.
async fn next_outcome(rig: &Rig) -> anyhow::Result<Outcome> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(o) = rig.drain().await?.pop() {
            return Ok(o);
        }
        anyhow::ensure!(Instant::now() < deadline, "no message came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn end(rig: &Rig, id: JobId, epoch: i64) -> anyhow::Result<()> {
    let ended = fail_job(
        &rig.pool,
        id,
        epoch,
        "elsewhere",
        Stage::Sanitize,
        "done",
        0,
    )
    .await?;
    anyhow::ensure!(ended, "the job was not held");
    Ok(())
}

#[tokio::test]
async fn a_job_of_a_tenant_at_its_limit_waits_is_deferred_if_raced_and_runs_once_a_slot_frees()
-> anyhow::Result<()> {
    let rig = Rig::new(test_settings()).await?;
    let t = tenant(&rig.pool, "one-at-a-time", 1).await?;
    // The tenant's one slot is taken by a job another worker runs.
    let busy = insert_for(&rig.pool, t, "A fox runs.").await?;
    let held = claim_job(&rig.pool, busy, "elsewhere", Duration::from_secs(60))
        .await?
        .expect("free");
    let waiting = insert_for(&rig.pool, t, "A fox sleeps.").await?;
    let racer = insert_for(&rig.pool, t, "A fox hunts.").await?;
    // Only the waiting job's dispatch reaches the queue: the others are other workers' business.
    sqlx::query("delete from outbox where job_id = any($1)")
        .bind([busy, racer])
        .execute(&rig.pool)
        .await?;
    rig.relay().await?;
    // While the tenant is full its message is not even received: it waits in the queue.
    assert_eq!(rig.drain().await?, vec![]);
    assert_eq!(rig.queue_len().await?, 1);
    assert_eq!(rig.job_status(waiting).await?.0, "queued");

    // The slot frees, and another worker takes it between this worker's receive and its
    // claim (a trigger plays that worker): the claim is refused and the message put back for
    // later, not lost (still in the queue) and not delivered again at once.
    end(&rig, busy, held.lease_epoch).await?;
    sqlx::raw_sql(&format!(
        "create function test_race() returns trigger language plpgsql as $$
         begin
             update job set status = 'running', locked_by = 'elsewhere', lease_epoch = 1,
                    locked_until = now() + interval '1 minute'
              where id = '{racer}';
             return new;
         end $$;
         create trigger test_race before update on queue_message
             for each row when (new.job_id = '{waiting}') execute function test_race();"
    ))
    .execute(&rig.pool)
    .await?;
    assert_eq!(rig.drain().await?, vec![Outcome::Worked(None)]);
    sqlx::raw_sql("drop trigger test_race on queue_message")
        .execute(&rig.pool)
        .await?;
    assert_eq!(rig.queue_len().await?, 1);
    assert_eq!(rig.job_status(waiting).await?.0, "queued");
    let hidden: bool =
        sqlx::query_scalar("select visible_at > now() from queue_message where job_id = $1")
            .bind(waiting)
            .fetch_one(&rig.pool)
            .await?;
    assert!(hidden, "a deferred message waits before it comes back");

    // The racer ends: the message comes back after its delay and the job runs to the end.
    end(&rig, racer, 1).await?;
    assert_eq!(
        next_outcome(&rig).await?,
        Outcome::Worked(Some(JobOutcome::Succeeded))
    );
    assert_eq!(rig.job_status(waiting).await?.0, "succeeded");
    assert_eq!(rig.queue_len().await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_job_its_tenants_day_cannot_cover_waits_naming_it_while_others_run() -> anyhow::Result<()>
{
    use aiprod_store::{
        audit_budget_day, audit_tenant_budget_day, set_tenant_budget_limit, wake_budget_waiters,
    };
    let settings = test_settings();
    let today = settings.budget.calendar().day_at(chrono::Utc::now());
    let rig = Rig::new(settings).await?;
    let capped = tenant(&rig.pool, "capped", 10).await?;
    sqlx::query("update tenant set daily_budget_micros = 300000 where id = $1")
        .bind(capped)
        .execute(&rig.pool)
        .await?;
    let body =
        |_| json!({"prompt": "A fox runs.", "duration_s": 5, "quality_min": 0, "cache": false});
    // A first job takes $0.26 of the tenant's $0.30; the fleet's $100 is far from spent.
    let first = insert_for_body(&rig.pool, capped, body(1)).await?;
    rig.relay().await?;
    assert_eq!(
        rig.drain().await?,
        vec![Outcome::Worked(Some(JobOutcome::Succeeded))]
    );
    let waits = insert_for_body(&rig.pool, capped, body(2)).await?;
    let other = insert_for_body(&rig.pool, TenantId::DEFAULT, body(3)).await?;
    rig.relay().await?;
    let outcomes = rig.drain().await?;
    assert!(
        outcomes.contains(&Outcome::Worked(Some(JobOutcome::WaitingBudget))),
        "{outcomes:?}"
    );
    assert_eq!(rig.job_status(other).await?.0, "succeeded");
    assert_eq!(rig.job_status(waits).await?.0, "waiting_budget");
    let reason: String = sqlx::query_scalar("select waiting_reason from job where id = $1")
        .bind(waits)
        .fetch_one(&rig.pool)
        .await?;
    assert!(reason.contains("tenant's budget"), "{reason}");
    // Only the tenant's day holds it back: the fleet's wake-up leaves it waiting.
    assert_eq!(wake_budget_waiters(&rig.pool, today, 10).await?, []);
    // An admin raises the tenant's day to $1: it wakes and runs.
    set_tenant_budget_limit(&rig.pool, capped, today, "1".parse()?, "test").await?;
    assert_eq!(wake_budget_waiters(&rig.pool, today, 10).await?, [waits]);
    rig.relay().await?;
    assert_eq!(
        rig.drain().await?,
        vec![Outcome::Worked(Some(JobOutcome::Succeeded))]
    );
    let t = audit_tenant_budget_day(&rig.pool, capped, today)
        .await?
        .expect("open");
    assert!(t.balanced, "{t:?}");
    assert_eq!(t.spent_micros, 520_000, "two jobs of the tenant at $0.26");
    let fleet = audit_budget_day(&rig.pool, today).await?.expect("open");
    assert!(fleet.balanced, "{fleet:?}");
    assert_eq!(fleet.spent_micros, 780_000, "and the other tenant's");
    assert_eq!(rig.job_status(first).await?.0, "succeeded");
    Ok(())
}

/// Accepts a job of `tenant` with this body, without relaying it.
async fn insert_for_body(
    pool: &PgPool,
    tenant: TenantId,
    body: serde_json::Value,
) -> anyhow::Result<JobId> {
    let spec = JobSpec::parse(&body).map_err(|e| anyhow::anyhow!("bad spec: {e:?}"))?;
    let id = JobId::new();
    insert_job(pool, tenant, id, &spec, None).await?;
    Ok(id)
}

/// Jobs of tenant A accepted in a burst before tenant B's one job.
const BURST: usize = 1000;
/// A worker with `slots` slots busy with a burst of `BURST` jobs of tenant A (limited to
/// `a_limit` in flight), once `started` of them have begun; then tenant B's one job, run to its
/// end. Returns B's waits from acceptance to claim and to its end in ms, A's mean stage and mean
/// job times in ms, and how many of A's jobs were claimed after B's was accepted and before it.
async fn lone_job_behind_a_burst(slots: u32, a_limit: i32, started: i64) -> anyhow::Result<Wait> {
    let mut settings = test_settings();
    settings.worker.worker_concurrency = slots;
    settings.worker.lease_ttl = Duration::from_secs(10);
    settings.worker.shutdown_grace = Duration::from_millis(200);
    let rig = Rig::new(settings).await?;
    let a = tenant(&rig.pool, "burst", a_limit).await?;
    let b = tenant(&rig.pool, "lone", 1_000_000).await?;
    let prompts = ["A fox runs.", "A fox sleeps."];
    for chunk in (0..BURST).collect::<Vec<_>>().chunks(16) {
        let inserts = chunk
            .iter()
            .map(|i| insert_for(&rig.pool, a, prompts[i % 2]));
        futures::future::try_join_all(inserts).await?;
    }
    assert_eq!(rig.relay().await?, BURST);
    let stop = CancellationToken::new();
    let worker = tokio::spawn(aiprod_worker::run(rig.ctx.clone(), stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&rig.pool, a, "started_at is not null").await? < started {
        anyhow::ensure!(Instant::now() < deadline, "the burst does not progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // With slots to spare, the worker waits for new messages, listening from its first idle
    // wait on: a message enqueued before that would be found only by its next poll, a second
    // later. (With every slot busy it never waits: a slot that frees receives at once.)
    let listening = "select exists (select 1 from pg_stat_activity
                      where datname = current_database() and query ilike 'listen%')";
    while i64::from(a_limit) < i64::from(slots)
        && !sqlx::query_scalar::<_, bool>(listening)
            .fetch_one(&rig.pool)
            .await?
    {
        anyhow::ensure!(Instant::now() < deadline, "the worker never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lone = insert_for(&rig.pool, b, "An owl watches.").await?;
    assert_eq!(rig.relay().await?, 1);
    // To its end, so that A's stages finished meanwhile give the stage time to compare with.
    while rig.job_status(lone).await?.0 != "succeeded" {
        anyhow::ensure!(Instant::now() < deadline, "the lone job never finished");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    worker.await??;
    let (claim_ms, finish_ms): (f64, f64) = sqlx::query_as(
        "select (extract(epoch from started_at - created_at) * 1000)::float8,
                (extract(epoch from finished_at - created_at) * 1000)::float8
           from job where id = $1",
    )
    .bind(lone)
    .fetch_one(&rig.pool)
    .await?;
    let (stage_ms, job_ms): (f64, f64) = sqlx::query_as(
        "select (select avg(s.duration_ms)::float8 from job_stage s join job j on j.id = s.job_id
                  where j.tenant_id = $1 and s.status = 'succeeded'),
                (select avg(extract(epoch from finished_at - started_at) * 1000)::float8
                   from job where tenant_id = $1 and status = 'succeeded')",
    )
    .bind(a)
    .fetch_one(&rig.pool)
    .await?;
    let ahead = count(
        &rig.pool,
        a,
        &format!(
            "started_at > (select created_at from job where id = '{lone}')
             and started_at < (select started_at from job where id = '{lone}')"
        ),
    )
    .await?;
    Ok(Wait {
        claim_ms,
        finish_ms,
        stage_ms,
        job_ms,
        ahead,
    })
}

/// What `lone_job_behind_a_burst` measured.
#[derive(Debug)]
struct Wait {
    claim_ms: f64,
    finish_ms: f64,
    stage_ms: f64,
    job_ms: f64,
    ahead: i64,
}

async fn count(pool: &PgPool, tenant: TenantId, filter: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(&format!(
        "select count(*) from job where tenant_id = $1 and {filter}"
    ))
    .bind(tenant)
    .fetch_one(pool)
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_job_goes_before_the_rest_of_another_tenants_burst_at_the_next_free_slot()
-> anyhow::Result<()> {
    // A is not limited below the worker's slots: every slot runs one of A's jobs, and B's job
    // waits for the first to free (a slot is held for a whole job), but for no more of A's
    // backlog. The jobs drift apart after the first round, as a steady backlog's do.
    let w = lone_job_behind_a_burst(4, 1_000_000, 8).await?;
    eprintln!(
        "fairness (A unlimited, 4 slots all busy): burst of {BURST} jobs of tenant A; \
         tenant B's lone job claimed {:.0} ms after it was accepted = {:.1} mean stage times of \
         {:.0} ms ({:.2} of A's mean job of {:.0} ms), finished {:.0} ms after; A jobs claimed in \
         between: {}",
        w.claim_ms,
        w.claim_ms / w.stage_ms,
        w.stage_ms,
        w.claim_ms / w.job_ms,
        w.job_ms,
        w.finish_ms,
        w.ahead
    );
    // In id order it would have waited for the whole backlog: about 250 rounds of jobs.
    assert!(w.ahead <= 4, "{w:?}");
    assert!(w.claim_ms <= 1.5 * w.job_ms, "{w:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_job_is_claimed_at_once_when_the_burst_is_held_to_its_in_flight_limit()
-> anyhow::Result<()> {
    // A may run 6 jobs at once on 8 slots: B's job finds a free slot and is received before the
    // rest of A's backlog.
    let w = lone_job_behind_a_burst(8, 6, 6).await?;
    eprintln!(
        "fairness (A limited to 6 in flight, 8 slots): burst of {BURST} jobs of tenant A; \
         tenant B's lone job claimed {:.0} ms after it was accepted = {:.2} mean stage times of \
         {:.0} ms, finished {:.0} ms after; A jobs claimed in between: {}",
        w.claim_ms,
        w.claim_ms / w.stage_ms,
        w.stage_ms,
        w.finish_ms,
        w.ahead
    );
    assert_eq!(w.ahead, 0, "{w:?}");
    assert!(w.claim_ms <= w.stage_ms, "{w:?}");
    Ok(())
}
