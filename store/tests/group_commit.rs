//! Group commit over a real PostgreSQL: four workers each write their jobs' checkpoints,
//! intents and render costs in groups (two of them a job's checkpoints before and after its
//! render each in one group of rounds), all at once and against one tight budget day. No group
//! deadlocks with another, no intent is written beyond the day's money, and the books balance
//! to the micro-dollar once every job has ended.

#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use aiprod_domain::{BackendName, JobId, JobSpec, Money, RenderState, Stage, TenantId};
use aiprod_store::{
    Checkpoint, CheckpointOutcome, Group, Intent, IntentOutcome, JobPatch, RenderStep,
    RenderUpdate, Reservation, ReserveOutcome, audit_budget_day, claim_job, commit_group,
    commit_rounds, get_budget_day, insert_intent, insert_job, open_budget_day, reserve_budget,
};
use aiprod_testkit::TestDb;
use chrono::NaiveDate;
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::Barrier;

const WORKERS: usize = 4;
const JOBS_PER_WORKER: usize = 15;

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 3).expect("a date")
}

fn usd(s: &str) -> Money {
    s.parse().expect("money")
}

/// What one worker did: intents written, intents refused for money, and what it charged.
#[derive(Debug, Default)]
struct Tally {
    written: usize,
    refused: usize,
    charged: Money,
}

/// One worker's jobs: leased, booked on the day with $0.10 each.
async fn jobs(pool: &PgPool, worker: &str) -> anyhow::Result<Vec<(JobId, i64)>> {
    let spec = JobSpec::parse(&json!({"prompt": "a fox", "quality_min": 0}))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut out = Vec::new();
    for _ in 0..JOBS_PER_WORKER {
        let id = JobId::new();
        insert_job(pool, TenantId::DEFAULT, id, &spec, None).await?;
        let claim = claim_job(pool, id, worker, Duration::from_secs(600))
            .await?
            .expect("a fresh job is free");
        let r = Reservation {
            job_id: id,
            lease_epoch: claim.lease_epoch,
            worker,
            day: day(),
            amount: usd("0.10"),
            note: "test",
        };
        assert!(matches!(
            reserve_budget(pool, &r).await?,
            ReserveOutcome::Reserved { .. }
        ));
        out.push((id, claim.lease_epoch));
    }
    Ok(out)
}

/// The worker's life, as the pipeline orders it: the checkpoints of every job up to
/// `financial`, one group of intents once the jobs are at `render` (those its stripes cannot
/// cover asked again alone, as the worker does), one group of costs, then the checkpoints from
/// `render` on. Each run of checkpoints is a group per stage or (`rounds`) one group of a round
/// per stage.
async fn work(
    pool: PgPool,
    worker: String,
    jobs: Vec<(JobId, i64)>,
    intents_done: Arc<Barrier>,
    rounds: bool,
) -> anyhow::Result<Tally> {
    let (before, after) = Stage::ALL.split_at(Stage::Render.index());
    checkpoints(&pool, &worker, &jobs, before, rounds).await?;
    let mut tally = Tally::default();
    let intents: Vec<Intent<'_>> = jobs
        .iter()
        .map(|&(job_id, lease_epoch)| Intent {
            job_id,
            lease_epoch,
            worker_id: &worker,
            shot: 0,
            attempt: 1,
            backend: BackendName::Runway,
            duration_s: 5,
            estimate: usd("0.25"),
            baseline: None,
            seed: None,
            spec_key: None,
        })
        .collect();
    let grouped = commit_group(
        &pool,
        &worker,
        Group {
            intents: &intents,
            ..Group::default()
        },
    )
    .await?;
    let mut tasks = Vec::new();
    for (intent, written) in intents.iter().zip(grouped.intents) {
        match written {
            Some(task) => tasks.push(task),
            None => match insert_intent(&pool, intent).await? {
                IntentOutcome::Written(task) => tasks.push(*task),
                IntentOutcome::OverBudget => tally.refused += 1,
                IntentOutcome::LeaseLost => anyhow::bail!("every lease is held"),
            },
        }
    }
    tally.written = tasks.len();
    // A job that ends gives its hold back; waiting for every worker's intents first keeps that
    // money out of the count below.
    intents_done.wait().await;
    let costs: Vec<RenderUpdate> = tasks
        .iter()
        .map(|_| RenderUpdate {
            state: Some(RenderState::Failed),
            cost: Some(usd("0.25")),
            error: Some("test".into()),
            ..RenderUpdate::default()
        })
        .collect();
    let steps: Vec<RenderStep<'_>> = tasks
        .iter()
        .zip(&costs)
        .map(|(t, update)| RenderStep {
            id: t.id,
            from: RenderState::Intent,
            update,
        })
        .collect();
    let taken = commit_group(
        &pool,
        &worker,
        Group {
            steps: &steps,
            ..Group::default()
        },
    )
    .await?;
    assert!(taken.steps.iter().all(|t| *t), "{:?}", taken.steps);
    tally.charged = usd("0.25") * tasks.len() as i64;
    checkpoints(&pool, &worker, &jobs, after, rounds).await?;
    Ok(tally)
}

/// Every job's checkpoints of `stages`, in order: a group per stage, or (`rounds`) one
/// transaction of a round per stage, as a worker's writer sends them when its jobs run stages
/// while their checkpoints commit. Each round sees the ones before it: every job advances stage
/// by stage, and the last stage ends it.
async fn checkpoints(
    pool: &PgPool,
    worker: &str,
    jobs: &[(JobId, i64)],
    stages: &[Stage],
    rounds: bool,
) -> anyhow::Result<()> {
    let out = json!({"ok": true});
    let cps: Vec<Vec<Checkpoint<'_>>> = stages
        .iter()
        .map(|&stage| {
            jobs.iter()
                .map(|&(job_id, lease_epoch)| Checkpoint {
                    job_id,
                    lease_epoch,
                    worker,
                    stage,
                    output: &out,
                    retries: 0,
                    patch: JobPatch::default(),
                })
                .collect()
        })
        .collect();
    let groups: Vec<Group<'_>> = cps
        .iter()
        .map(|c| Group {
            checkpoints: c,
            ..Group::default()
        })
        .collect();
    let done = if rounds {
        commit_rounds(pool, worker, &groups).await?
    } else {
        let mut done = Vec::with_capacity(groups.len());
        for group in groups {
            done.push(commit_group(pool, worker, group).await?);
        }
        done
    };
    assert_eq!(done.len(), stages.len());
    for (&stage, round) in stages.iter().zip(&done) {
        let want = match stage.next() {
            Some(next) => CheckpointOutcome::Advanced(next),
            None => CheckpointOutcome::Succeeded,
        };
        assert!(
            round.checkpoints.len() == jobs.len() && round.checkpoints.iter().all(|o| *o == want),
            "{stage}: {:?}",
            round.checkpoints
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_groups_never_deadlock_nor_overspend_and_the_books_balance()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    // 60 jobs × $0.10 booked = $6.00; each intent of $0.25 takes $0.15 more, and 60 of those
    // would need $9.00: the $12 day covers only some of them.
    assert!(open_budget_day(&pool, day(), "UTC", usd("12")).await?);
    // Every job is booked before any worker starts, so the intents alone compete for the rest.
    let mut booked = Vec::new();
    for w in 0..WORKERS {
        let worker = format!("group-worker-{w}");
        let jobs = jobs(&pool, &worker).await?;
        booked.push((worker, jobs));
    }
    let barrier = Arc::new(Barrier::new(WORKERS));
    // Half the workers write their checkpoints a group per stage, half in one group of rounds.
    let runs: Vec<_> = booked
        .into_iter()
        .enumerate()
        .map(|(w, (worker, jobs))| {
            tokio::spawn(work(
                pool.clone(),
                worker,
                jobs,
                barrier.clone(),
                w % 2 == 1,
            ))
        })
        .collect();
    let mut total = Tally::default();
    for run in runs {
        // A worker that failed before the barrier leaves the others waiting at it.
        let t = tokio::time::timeout(Duration::from_secs(120), run).await???;
        total.written += t.written;
        total.refused += t.refused;
        total.charged = total.charged + t.charged;
    }
    // Every intent was asked of the whole day before it was refused, and each try is charged
    // its estimate (settling frees nothing), so the written ones fill the day exactly:
    // (12 - 6) / 0.15 = 40.
    assert_eq!(total.written, 40, "{total:?}");
    assert_eq!(total.refused, WORKERS * JOBS_PER_WORKER - 40);
    let d = get_budget_day(&pool, day()).await?.expect("open");
    assert_eq!(
        d.reserved,
        Money::ZERO,
        "every job ended and gave back its hold"
    );
    assert_eq!(d.spent, total.charged);
    assert!(d.committed() <= d.limit);
    let audit = audit_budget_day(&pool, day()).await?.expect("audited");
    assert!(audit.balanced, "{audit:?}");
    Ok(())
}
