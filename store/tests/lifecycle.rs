//! The job's state machine, walked: every row of `job_transition` is brought about by the real
//! store function of its event, on a job set up in the row's starting state, and ends in the
//! row's status. A status change outside the table is refused. ARCHITECTURE.md's diagram draws
//! exactly the table, and the Rust enums name exactly the PostgreSQL enum types' labels.

#![allow(missing_docs)]

use std::collections::BTreeSet;
use std::time::Duration;

use aiprod_domain::{
    AlertRule, Availability, BackendChoice, BackendName, CircuitState, FailureClass, JobEvent,
    JobId, JobSpec, JobStatus, Money, Priority, RenderState, Severity, Stage, StageStatus,
    TenantId,
};
use aiprod_store::{
    Checkpoint, CheckpointOutcome, JobPatch, claim_job, delete_relayed, fail_job, get_job,
    insert_job, open_budget_day, outbox_batch, park_for_budget, redispatch_stranded, release_lease,
    request_cancel, requeue_expired_leases, save_checkpoint, wake_budget_waiters,
};
use aiprod_testkit::TestDb;
use serde_json::json;
use sqlx::PgPool;

const WORKER: &str = "lifecycle-test";
const LEASE: Duration = Duration::from_secs(600);

/// One row of `job_transition`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Transition {
    from: JobStatus,
    event: JobEvent,
    when_cancel_requested: Option<bool>,
    to: JobStatus,
}

async fn transitions(pool: &PgPool) -> anyhow::Result<Vec<Transition>> {
    let rows: Vec<(JobStatus, JobEvent, Option<bool>, JobStatus)> = sqlx::query_as(
        "select from_status, event, when_cancel_requested, to_status from job_transition
          order by from_status, event, when_cancel_requested nulls first",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(from, event, when_cancel_requested, to)| Transition {
            from,
            event,
            when_cancel_requested,
            to,
        })
        .collect())
}

/// A job being worked on: its id and the lease its worker holds (if any).
struct Job {
    id: JobId,
    epoch: i64,
}

async fn accept(pool: &PgPool) -> anyhow::Result<Job> {
    let spec = JobSpec::parse(&json!({"prompt": "A fox.", "quality_min": 0}))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let id = JobId::new();
    insert_job(pool, TenantId::DEFAULT, id, &spec, None).await?;
    Ok(Job { id, epoch: 0 })
}

async fn claim(pool: &PgPool, job: &mut Job, ttl: Duration) -> anyhow::Result<JobStatus> {
    let c = claim_job(pool, job.id, WORKER, ttl)
        .await?
        .ok_or_else(|| anyhow::anyhow!("job {} could not be claimed", job.id))?;
    job.epoch = c.lease_epoch;
    Ok(c.job.status)
}

async fn checkpoint(pool: &PgPool, job: &Job, stage: Stage) -> anyhow::Result<CheckpointOutcome> {
    let output = json!({"stage": stage});
    Ok(save_checkpoint(
        pool,
        &Checkpoint {
            job_id: job.id,
            lease_epoch: job.epoch,
            worker: WORKER,
            stage,
            output: &output,
            retries: 0,
            patch: JobPatch::default(),
        },
    )
    .await?)
}

/// Checkpoints every stage before `stage`, so that `stage` is the job's current one.
async fn advance_to(pool: &PgPool, job: &Job, stage: Stage) -> anyhow::Result<()> {
    for s in &Stage::ALL[..stage.index()] {
        checkpoint(pool, job, *s).await?;
    }
    Ok(())
}

async fn status(pool: &PgPool, id: JobId) -> anyhow::Result<JobStatus> {
    Ok(get_job(pool, id).await?.expect("the job exists").status)
}

async fn ask_cancel(pool: &PgPool, job: &Job) -> anyhow::Result<()> {
    request_cancel(pool, TenantId::DEFAULT, job.id).await?;
    Ok(())
}

/// A job in the row's starting state, made by the store functions a worker and a client use,
/// where `event` can happen next. Returns it with its lease.
async fn set_up(pool: &PgPool, t: &Transition) -> anyhow::Result<Job> {
    let mut job = accept(pool).await?;
    match (t.from, t.event) {
        (JobStatus::Queued, JobEvent::Redispatch) => {
            // Its dispatch was relayed, and its message is gone since.
            let relayed: Vec<i64> = outbox_batch(pool, 1000)
                .await?
                .iter()
                .map(|r| r.id)
                .collect();
            delete_relayed(pool, &relayed).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (JobStatus::Queued, _) => {}
        (JobStatus::Running, JobEvent::Claim) => {
            // A dead worker's job: running, with an expired lease.
            claim(pool, &mut job, Duration::from_millis(1)).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (JobStatus::Running, JobEvent::Reap) => {
            claim(pool, &mut job, Duration::from_millis(1)).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (JobStatus::Running, JobEvent::Finish) => {
            claim(pool, &mut job, LEASE).await?;
            advance_to(pool, &job, Stage::Finalize).await?;
        }
        (JobStatus::Running, JobEvent::Park) => {
            claim(pool, &mut job, LEASE).await?;
            advance_to(pool, &job, Stage::Financial).await?;
        }
        (JobStatus::Running, _) => {
            claim(pool, &mut job, LEASE).await?;
        }
        (JobStatus::WaitingBudget, _) => {
            claim(pool, &mut job, LEASE).await?;
            advance_to(pool, &job, Stage::Financial).await?;
            let need = Money::from_usd(1);
            assert!(park_for_budget(pool, job.id, job.epoch, WORKER, "no money", need).await?);
        }
        (from, event) => anyhow::bail!("no set-up for a {from} job and {event}"),
    }
    if t.when_cancel_requested == Some(true) {
        ask_cancel(pool, &job).await?;
    }
    assert_eq!(status(pool, job.id).await?, t.from, "set-up for {t:?}");
    Ok(job)
}

/// Brings about `event` on `job` with the store function that the fleet uses for it.
async fn happen(pool: &PgPool, event: JobEvent, job: &mut Job) -> anyhow::Result<()> {
    match event {
        JobEvent::Claim => {
            claim(pool, job, LEASE).await?;
        }
        JobEvent::Advance => {
            checkpoint(pool, job, Stage::Sanitize).await?;
        }
        JobEvent::Finish => {
            assert_eq!(
                checkpoint(pool, job, Stage::Finalize).await?,
                CheckpointOutcome::Succeeded
            );
        }
        JobEvent::Fail => {
            let stage = get_job(pool, job.id).await?.and_then(|j| j.stage);
            let stage = stage.expect("a running job has a stage");
            assert!(fail_job(pool, job.id, job.epoch, WORKER, stage, "broken", 0).await?);
        }
        JobEvent::Park => {
            let need = Money::from_usd(1);
            assert!(park_for_budget(pool, job.id, job.epoch, WORKER, "no money", need).await?);
        }
        JobEvent::Wake => {
            let day = chrono::Utc::now().date_naive();
            open_budget_day(pool, day, "UTC", Money::from_usd(100)).await?;
            assert!(wake_budget_waiters(pool, day, 10).await?.contains(&job.id));
        }
        JobEvent::Cancel => ask_cancel(pool, job).await?,
        JobEvent::Reap => {
            assert!(requeue_expired_leases(pool).await?.contains(&job.id));
        }
        JobEvent::Release => {
            assert!(release_lease(pool, job.id, job.epoch, WORKER).await?);
        }
        JobEvent::Redispatch => {
            let again = redispatch_stranded(pool, Duration::from_millis(1)).await?;
            assert!(again.contains(&job.id));
        }
    }
    Ok(())
}

#[tokio::test]
async fn every_transition_of_the_table_is_what_its_event_does() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let table = transitions(&pool).await?;
    let events: BTreeSet<String> = table.iter().map(|t| t.event.to_string()).collect();
    assert_eq!(
        events,
        JobEvent::names().map(str::to_owned).collect(),
        "every event has at least one row"
    );
    for t in &table {
        let mut job = set_up(&pool, t).await?;
        happen(&pool, t.event, &mut job).await?;
        assert_eq!(status(&pool, job.id).await?, t.to, "{t:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_status_change_the_table_does_not_have_is_refused() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let job = accept(&pool).await?;
    for to in ["succeeded", "waiting_budget", "failed"] {
        let refused = sqlx::query("update job set status = $2::job_status where id = $1")
            .bind(job.id)
            .bind(to)
            .execute(&pool)
            .await
            .expect_err("queued cannot jump there");
        assert!(
            refused
                .to_string()
                .contains(&format!("cannot go from queued to {to}")),
            "{refused}"
        );
    }
    assert_eq!(status(&pool, job.id).await?, JobStatus::Queued);
    Ok(())
}

#[tokio::test]
async fn an_ended_job_has_its_end_time_and_no_lease_whatever_ended_it() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let mut job = accept(&pool).await?;
    claim(&pool, &mut job, LEASE).await?;
    ask_cancel(&pool, &job).await?;
    assert_eq!(
        checkpoint(&pool, &job, Stage::Sanitize).await?,
        CheckpointOutcome::Canceled
    );
    let (finished, locked_by, stage): (bool, Option<String>, Option<Stage>) =
        sqlx::query_as("select finished_at is not null, locked_by, stage from job where id = $1")
            .bind(job.id)
            .fetch_one(&pool)
            .await?;
    assert_eq!((finished, locked_by, stage), (true, None, None));
    Ok(())
}

#[tokio::test]
async fn terminal_statuses_are_those_no_transition_leaves() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    for name in JobStatus::names() {
        let status: JobStatus = name.parse()?;
        let terminal: bool = sqlx::query_scalar("select job_status_is_terminal($1)")
            .bind(status)
            .fetch_one(&pool)
            .await?;
        assert_eq!(terminal, status.is_terminal(), "{status}");
    }
    Ok(())
}

#[tokio::test]
async fn architecture_md_draws_exactly_the_table() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    let drawn: BTreeSet<String> = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md"),
    )?
    .lines()
    .map(str::trim)
    .filter(|l| l.contains(" --> ") && !l.starts_with("[*]"))
    .map(str::to_owned)
    .collect();
    let table: BTreeSet<String> = transitions(&pool)
        .await?
        .iter()
        .map(|t| {
            let when = match t.when_cancel_requested {
                None => "",
                Some(true) => " [cancel requested]",
                Some(false) => " [no cancel]",
            };
            format!("{} --> {}: {}{when}", t.from, t.to, t.event)
        })
        .collect();
    assert_eq!(
        drawn, table,
        "ARCHITECTURE.md's state diagram and job_transition differ"
    );
    Ok(())
}

/// The labels of PostgreSQL enum type `pg`, in order.
async fn labels(pool: &PgPool, pg: &str) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "select e.enumlabel::text from pg_enum e join pg_type t on t.oid = e.enumtypid
          where t.typname = $1 order by e.enumsortorder",
    )
    .bind(pg)
    .fetch_all(pool)
    .await?)
}

#[tokio::test]
async fn each_postgres_enum_has_exactly_the_rust_names_in_order() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let pool = db.pool().await?;
    fn names(it: impl Iterator<Item = &'static str>) -> Vec<String> {
        it.map(str::to_owned).collect()
    }
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("job_status", names(JobStatus::names())),
        ("stage_name", names(Stage::names())),
        ("stage_status", names(StageStatus::names())),
        ("job_priority", names(Priority::names())),
        ("backend_name", names(BackendName::names())),
        ("backend_choice", names(BackendChoice::names())),
        ("render_state", names(RenderState::names())),
        ("render_failure_class", names(FailureClass::names())),
        ("circuit_state", names(CircuitState::names())),
        ("backend_availability", names(Availability::names())),
        ("alert_rule", names(AlertRule::names())),
        ("alert_severity", names(Severity::names())),
        ("job_event", names(JobEvent::names())),
    ];
    for (pg, rust) in cases {
        assert_eq!(labels(&pool, pg).await?, rust, "enum type {pg}");
    }
    Ok(())
}
