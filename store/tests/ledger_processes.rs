//! The striped ledger across worker processes: four OS processes (this test binary, started
//! again as "ledger workers") reserve, render and settle for 200 jobs of three tenants against
//! one fleet day, while the parent watches that no day ever holds more than its limit. One
//! worker is SIGKILLed part-way; the money its jobs held comes back when they end, and the books
//! balance to the micro-dollar.

#![allow(missing_docs)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aiprod_domain::{BackendName, JobId, JobSpec, Money, RenderState, Stage, TenantId};
use aiprod_store::{
    Intent, IntentOutcome, RenderUpdate, Reservation, ReserveOutcome, audit_budget_day,
    audit_tenant_budget_day, claim_job, fail_job, get_budget_day, insert_intent, insert_job,
    open_budget_day, reserve_budget, update_render,
};
use aiprod_testkit::{TestDb, skip_to_render};
use chrono::NaiveDate;
use futures::StreamExt;
use serde_json::json;
use sqlx::PgPool;

/// Set in a child's environment: the job list file it works through.
const CHILD_JOBS: &str = "AIPROD_LEDGER_CHILD_JOBS";
const CHILD_DB: &str = "AIPROD_LEDGER_CHILD_DB";
const CHILD_WORKER: &str = "AIPROD_LEDGER_CHILD_WORKER";
/// Each job reserves this much, and its one try is billed a little less.
const RESERVE: &str = "0.26";
const BILLED: &str = "0.20";

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 6).expect("a date")
}

fn usd(s: &str) -> Money {
    s.parse().expect("money")
}

/// A ledger worker: works through its jobs 16 at a time. For each: reserve; when granted, write
/// a render try's intent (taking the reservation), settle it at its billed cost and finish the
/// job's stage. One line per job on stdout, so the parent can kill it part-way.
#[tokio::test]
#[ignore = "a worker process of `four_processes_never_overspend_and_a_killed_workers_money_comes_back`"]
async fn ledger_worker_process() -> anyhow::Result<()> {
    let jobs: Vec<(JobId, i64)> = serde_json::from_str(&std::env::var(CHILD_JOBS)?)?;
    let worker = std::env::var(CHILD_WORKER)?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(&std::env::var(CHILD_DB)?)
        .await?;
    let worker = worker.as_str();
    let pool = &pool;
    let lines = futures::stream::iter(jobs)
        .map(|(id, epoch)| async move {
            let outcome = reserve_budget(
                pool,
                &Reservation {
                    job_id: id,
                    lease_epoch: epoch,
                    worker,
                    day: day(),
                    amount: usd(RESERVE),
                    note: "ledger worker",
                },
            )
            .await?;
            let word = match outcome {
                ReserveOutcome::Reserved { .. } => {
                    let intent = Intent {
                        job_id: id,
                        lease_epoch: epoch,
                        worker_id: worker,
                        shot: 0,
                        attempt: 1,
                        backend: BackendName::Replicate,
                        duration_s: 5,
                        estimate: usd(RESERVE),
                        baseline: None,
                        seed: None,
                        spec_key: None,
                    };
                    let IntentOutcome::Written(task) = insert_intent(pool, &intent).await? else {
                        anyhow::bail!("the reservation covers the try");
                    };
                    let update = RenderUpdate {
                        state: Some(RenderState::Failed),
                        cost: Some(usd(BILLED)),
                        ..RenderUpdate::default()
                    };
                    anyhow::ensure!(
                        update_render(pool, task.id, RenderState::Intent, &update).await?,
                        "the try settles"
                    );
                    "reserved"
                }
                ReserveOutcome::Short { .. } => "short",
                ReserveOutcome::LeaseLost => "lost",
            };
            println!("{}", json!({"job": id, "outcome": word}));
            anyhow::Ok(())
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    lines.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(())
}

/// A tenant with this daily budget (`None`: no cap of its own).
async fn tenant(pool: &PgPool, name: &str, budget: Option<&str>) -> anyhow::Result<TenantId> {
    let id = TenantId::new();
    sqlx::query(
        "insert into tenant (id, name, daily_budget_micros, max_in_flight) values ($1, $2, $3, 1000)",
    )
    .bind(id)
    .bind(name)
    .bind(budget.map(|b| usd(b).micros()))
    .execute(pool)
    .await?;
    Ok(id)
}

/// Starts one worker process over `jobs`.
fn spawn_worker(db: &TestDb, worker: &str, jobs: &[(JobId, i64)]) -> anyhow::Result<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "ledger_worker_process",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_JOBS, serde_json::to_string(jobs)?)
        .env(CHILD_DB, &db.url)
        .env(CHILD_WORKER, worker)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?)
}

/// The outcome lines a worker printed, read on a thread of their own; `kill_after`: SIGKILL the
/// worker once it has printed that many.
fn collect(mut child: Child, kill_after: Option<usize>) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let out = child.stdout.take().expect("piped");
        let mut seen = Vec::new();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            // The harness writes "test … " before the test's first line, on the same line.
            if let Some(at) = line.find("{\"job\"") {
                seen.push(line[at..].to_owned());
            }
            if kill_after.is_some_and(|n| seen.len() >= n) {
                // SIGKILL: no clean-up in the worker, its connections simply drop.
                let _ = child.kill();
                break;
            }
        }
        let _ = child.wait();
        seen
    })
}

#[tokio::test]
async fn four_processes_never_overspend_and_a_killed_workers_money_comes_back() -> anyhow::Result<()>
{
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    // $52 of demand (200 × $0.26) on a $30 fleet day; tenant a is capped at $8, b at $10, c not.
    assert!(open_budget_day(&pool, day(), "UTC", usd("30")).await?);
    let tenants = [
        (tenant(&pool, "a", Some("8")).await?, Some(usd("8"))),
        (tenant(&pool, "b", Some("10")).await?, Some(usd("10"))),
        (tenant(&pool, "c", None).await?, None),
    ];
    let mut per_worker: Vec<Vec<(JobId, i64)>> = vec![Vec::new(); 4];
    for i in 0..200 {
        let (t, _) = tenants[i % 3];
        let spec = JobSpec::parse(&json!({"prompt": "a fox", "quality_min": 0}))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let id = JobId::new();
        insert_job(&pool, t, id, &spec, None).await?;
        let w = i % 4;
        let claim = claim_job(
            &pool,
            id,
            &format!("ledger-worker-{w}"),
            Duration::from_secs(600),
        )
        .await?
        .expect("a fresh job is free");
        skip_to_render(&pool, id.as_uuid()).await?;
        per_worker[w].push((id, claim.lease_epoch));
    }

    let mut readers = Vec::new();
    for (w, jobs) in per_worker.iter().enumerate() {
        let child = spawn_worker(&db, &format!("ledger-worker-{w}"), jobs)?;
        // Worker 3 is killed after ten of its jobs: mid-flight, with reservations held.
        readers.push(collect(child, (w == 3).then_some(10)));
    }
    // Watch every day while the workers run: committed never passes a limit.
    let mut samples = 0;
    while readers.iter().any(|r| !r.is_finished()) {
        assert_no_day_over(&pool).await?;
        samples += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let lines: Vec<Vec<String>> = readers
        .into_iter()
        .map(|r| r.join().expect("reader"))
        .collect();
    assert!(samples > 0);
    for (w, l) in lines.iter().enumerate().take(3) {
        assert_eq!(l.len(), 50, "worker {w} answered for each of its jobs");
    }
    let granted = lines
        .iter()
        .flatten()
        .filter(|l| l.contains("\"reserved\""))
        .count() as i64;
    let refused = lines
        .iter()
        .flatten()
        .filter(|l| l.contains("\"short\""))
        .count();
    assert!(refused > 0, "the day was contended: demand exceeded it");

    // The killed worker's jobs hold money they had not used yet (granted, killed before the
    // try), and a try it had written may be unsettled; nothing else is reserved. Its jobs end
    // (as the reaper's poison rule or a cancel would end them) and give their money back to the
    // stripes it was taken from; the unsettled tries keep theirs until the reconciler learns
    // their cost (nothing here: they were never sent).
    let fleet = get_budget_day(&pool, day()).await?.expect("open");
    let (held_by_killed, unsettled, settled_tries): (i64, i64, i64) = sqlx::query_as(
        "select (select coalesce(sum(budget_held_micros), 0)::bigint from job
                  where locked_by = 'ledger-worker-3'),
                (select coalesce(sum(reserved_micros), 0)::bigint from render_task
                  where cost_micros is null),
                (select count(*) from render_task where cost_micros is not null)",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!(fleet.spent, usd(BILLED) * settled_tries);
    assert_eq!(fleet.reserved.micros(), held_by_killed + unsettled);
    // Every grant a worker reported was settled before it said so; the killed worker may have
    // settled up to its 16 jobs in flight without saying so.
    assert!(
        (granted..=granted + 16).contains(&settled_tries),
        "{settled_tries} settled, {granted} reported"
    );
    for (id, epoch) in &per_worker[3] {
        assert!(
            fail_job(
                &pool,
                *id,
                *epoch,
                "ledger-worker-3",
                Stage::Render,
                "killed",
                0
            )
            .await?,
            "the killed worker's job ends"
        );
    }
    sqlx::query(
        "update render_task set state = 'failed', cost_micros = 0 where cost_micros is null",
    )
    .execute(&pool)
    .await?;
    let fleet = get_budget_day(&pool, day()).await?.expect("open");
    assert_eq!(
        fleet.reserved,
        Money::ZERO,
        "the killed worker's money came back"
    );
    assert!(fleet.committed() <= fleet.limit);

    // Every tenant's books and the fleet's balance, and the stripes still share out exactly the
    // limit.
    let audit = audit_budget_day(&pool, day()).await?.expect("audited");
    assert!(audit.balanced, "{audit:?}");
    for (t, cap) in &tenants {
        if let Some(cap) = cap {
            let a = audit_tenant_budget_day(&pool, *t, day())
                .await?
                .expect("opened");
            assert!(a.balanced, "{a:?}");
            let spent: i64 = sqlx::query_scalar(
                "select spent_micros from tenant_budget_day where tenant_id = $1 and day = $2",
            )
            .bind(t)
            .bind(day())
            .fetch_one(&pool)
            .await?;
            assert!(spent <= cap.micros());
        }
    }
    Ok(())
}

/// No budget day, the fleet's or a tenant's, holds more than its limit, and each day's stripes
/// share out exactly its limit.
async fn assert_no_day_over(pool: &PgPool) -> anyhow::Result<()> {
    let over: i64 = sqlx::query_scalar(
        "select (select count(*) from budget_day where reserved_micros + spent_micros > limit_micros)
              + (select count(*) from tenant_budget_day
                  where reserved_micros + spent_micros > limit_micros)
              + (select count(*) from budget_audit where stripe_limits_micros <> (
                    select limit_micros from budget_limit l where l.day = budget_audit.day))",
    )
    .fetch_one(pool)
    .await?;
    anyhow::ensure!(over == 0, "a day holds more than its limit");
    Ok(())
}
