//! Group commit of a worker's writes: the checkpoints of finished stages and the steps of the
//! render protocol (intents, provider ids, downloads, costs) of many jobs, in one transaction.
//! A job may have several writes in a group (stages run while their checkpoints commit): they
//! go in successive rounds, each round the batched statements, so they land in order.
//! Each statement is the batched form of the one a single write runs, fenced the same way, so a
//! write in a group means what it means alone; the group only shares the commit.
//!
//! Before any statement the transaction locks every row it may write, in the order every
//! statement that moves money keeps (ARCHITECTURE.md, "Invariants"): jobs by id, their render
//! rows by id, then the stripes of their tenants' days, then the stripes of the fleet's days.
//! Two groups, or a group and a single write, therefore wait for each other and never deadlock.
//! A group of checkpoints that move no money takes no lock first: its first round's statement
//! locks all its jobs in id order (a job in a later round is in the first too), and it locks
//! nothing else.

use aiprod_domain::{FailureClass, JobId, Money, RenderState};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::checkpoint::{Checkpoint, CheckpointOutcome, save_checkpoints};
use crate::render_task::{Intent, RenderTask, RenderUpdate, insert_intents};

/// A step of one render, taken from state `from` (`update_render` in a group).
#[derive(Clone, Copy, Debug)]
pub struct RenderStep<'a> {
    /// The render.
    pub id: Uuid,
    /// The state it must still be in.
    pub from: RenderState,
    /// What to set.
    pub update: &'a RenderUpdate,
}

/// A round of writes of one worker. Within a round a job has at most one intent, and a render
/// at most one step, because each statement reads a job's money once; a job's later writes go
/// into later rounds (`commit_rounds`). A job's checkpoints may share a round when they are
/// stages it ran one after the other (`save_checkpoints` advances it once for them all).
#[derive(Clone, Copy, Debug, Default)]
pub struct Group<'a> {
    /// Finished stages.
    pub checkpoints: &'a [Checkpoint<'a>],
    /// Intents to write before their POSTs.
    pub intents: &'a [Intent<'a>],
    /// Steps of renders under way.
    pub steps: &'a [RenderStep<'a>],
}

/// What each write of a group did, in the group's order.
#[derive(Debug, Default)]
pub struct GroupOutcome {
    /// As `save_checkpoints` answers.
    pub checkpoints: Vec<CheckpointOutcome>,
    /// The intent written, with its money reserved from the job's stripe; `None`: not written,
    /// because the job's stripe was short or its lease is gone. Such an intent is asked again
    /// alone (`insert_intent`), which looks at the whole day and tells the two apart.
    pub intents: Vec<Option<RenderTask>>,
    /// Whether each step was taken (false: the render had left `from`).
    pub steps: Vec<bool>,
}

/// Writes `group` for `worker` in one transaction.
pub async fn commit_group(
    pool: &PgPool,
    worker: &str,
    group: Group<'_>,
) -> sqlx::Result<GroupOutcome> {
    let mut out = commit_rounds(pool, worker, std::slice::from_ref(&group)).await?;
    Ok(out.pop().unwrap_or_default())
}

/// Writes `rounds` for `worker` in one transaction, one round after the other, and answers
/// each round's writes. A job may have a write in several rounds (its next stages'
/// checkpoints, say): each round's statements see the rounds before them, so its writes
/// land in the order it made them, and the group still takes one commit.
pub async fn commit_rounds(
    pool: &PgPool,
    worker: &str,
    rounds: &[Group<'_>],
) -> sqlx::Result<Vec<GroupOutcome>> {
    // Most groups are the checkpoints of stages that move no money. Their statement locks
    // its jobs in id order itself, so such a group needs no lock of its own, and one round
    // of them is one statement, committed on its own: one round trip instead of four.
    let moves_nothing = |g: &Group<'_>| {
        g.intents.is_empty()
            && g.steps.is_empty()
            && g.checkpoints.iter().all(|c| c.stage.next().is_some())
    };
    let plain = rounds.iter().all(moves_nothing);
    if plain && let [round] = rounds {
        let checkpoints = save_checkpoints(pool, worker, round.checkpoints).await?;
        return Ok(vec![GroupOutcome {
            checkpoints,
            ..GroupOutcome::default()
        }]);
    }
    let mut tx = pool.begin().await?;
    if !plain {
        lock_group(&mut tx, rounds).await?;
    }
    let mut outcomes = Vec::with_capacity(rounds.len());
    for round in rounds {
        let checkpoints = save_checkpoints(&mut *tx, worker, round.checkpoints).await?;
        let intents = if round.intents.is_empty() {
            Vec::new()
        } else {
            insert_intents(&mut *tx, worker, round.intents, false).await?
        };
        let steps = take_steps(&mut tx, round.steps).await?;
        outcomes.push(GroupOutcome {
            checkpoints,
            intents,
            steps,
        });
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Locks what the rounds may write, all at once and in the lock order (see the module's
/// documentation). The stripes locked are those of the jobs whose money can move: an intent's,
/// a final checkpoint's (its release), and a step's that sets a cost (its settlement).
async fn lock_group(conn: &mut PgConnection, rounds: &[Group<'_>]) -> sqlx::Result<()> {
    let cps = || rounds.iter().flat_map(|g| g.checkpoints);
    let intents = || rounds.iter().flat_map(|g| g.intents);
    let steps = || rounds.iter().flat_map(|g| g.steps);
    let mut jobs: Vec<JobId> = cps().map(|c| c.job_id).collect();
    jobs.extend(intents().map(|i| i.job_id));
    // A job with writes in several rounds is locked once.
    jobs.sort_unstable_by_key(|j| j.as_uuid());
    jobs.dedup();
    let mut money: Vec<JobId> = cps()
        .filter(|c| c.stage.next().is_none())
        .map(|c| c.job_id)
        .collect();
    money.extend(intents().map(|i| i.job_id));
    let mut renders: Vec<Uuid> = steps().map(|s| s.id).collect();
    renders.sort_unstable();
    renders.dedup();
    let settling: Vec<Uuid> = steps()
        .filter(|s| s.update.cost.is_some())
        .map(|s| s.id)
        .collect();
    // One call takes every lock in order (`lock_write_group`, migrations/20261207000001): the
    // stripes are held from then until the commit, and three round trips fewer is that much
    // less time another reservation waits for them.
    sqlx::query!(
        "select lock_write_group($1, $2, $3, $4) as done",
        &jobs as &[JobId],
        &renders,
        &money as &[JobId],
        &settling,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(())
}

/// The steps of a group (`update_render`, batched): each is taken only from its `from` state.
async fn take_steps(conn: &mut PgConnection, steps: &[RenderStep<'_>]) -> sqlx::Result<Vec<bool>> {
    if steps.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = steps.iter().map(|s| s.id).collect();
    let froms: Vec<RenderState> = steps.iter().map(|s| s.from).collect();
    let u = |f: fn(&RenderUpdate) -> Option<RenderState>| -> Vec<Option<RenderState>> {
        steps.iter().map(|s| f(s.update)).collect()
    };
    let states = u(|x| x.state);
    let remote: Vec<Option<&str>> = steps
        .iter()
        .map(|s| s.update.remote_id.as_deref())
        .collect();
    let outputs: Vec<Option<&Value>> = steps.iter().map(|s| s.update.outputs.as_ref()).collect();
    let artifacts: Vec<Option<&str>> = steps
        .iter()
        .map(|s| s.update.artifact_uri.as_deref())
        .collect();
    let costs: Vec<Option<i64>> = steps
        .iter()
        .map(|s| s.update.cost.map(Money::micros))
        .collect();
    let failures: Vec<Option<FailureClass>> = steps.iter().map(|s| s.update.failure).collect();
    let errors: Vec<Option<&str>> = steps.iter().map(|s| s.update.error.as_deref()).collect();
    let qa: Vec<Option<&Value>> = steps.iter().map(|s| s.update.qa.as_ref()).collect();
    let seconds: Vec<Option<String>> = steps
        .iter()
        .map(|s| s.update.provider_seconds.as_ref().map(ToString::to_string))
        .collect();
    let provider: Vec<Option<i64>> = steps
        .iter()
        .map(|s| s.update.provider_cost.map(Money::micros))
        .collect();
    // A step to `downloaded` is its backend's success: the same statement closes the circuits
    // (`close_circuits()`, migrations/20261208000001) instead of a statement per render. Most
    // groups download nothing, and then call nothing.
    let taken = sqlx::query_scalar!(
        r#"with stepped as (
               update render_task r
                  set state = coalesce(u.state, r.state),
                      remote_id = coalesce(u.remote_id, r.remote_id),
                      outputs = coalesce(u.outputs, r.outputs),
                      artifact_uri = coalesce(u.artifact_uri, r.artifact_uri),
                      cost_micros = coalesce(u.cost, r.cost_micros),
                      failure = coalesce(u.failure, r.failure),
                      error = coalesce(u.error, r.error),
                      qa = coalesce(u.qa, r.qa),
                      provider_seconds = coalesce(u.seconds::numeric, r.provider_seconds),
                      provider_cost_micros = coalesce(u.provider, r.provider_cost_micros),
                      submitted_at = case when u.remote_id is not null then now()
                                          else r.submitted_at end,
                      finished_at = case when u.state in ('downloaded', 'failed', 'canceled', 'orphaned')
                                         then now() else r.finished_at end,
                      updated_at = now()
                 from unnest($1::uuid[], $2::render_state[], $3::render_state[], $4::text[],
                             $5::jsonb[], $6::text[], $7::bigint[], $8::render_failure_class[],
                             $9::text[], $10::jsonb[], $11::text[], $12::bigint[])
                        as u(id, from_state, state, remote_id, outputs, artifact_uri, cost, failure,
                             error, qa, seconds, provider)
                where r.id = u.id and r.state = u.from_state
               returning r.id, r.backend, r.state
           ),
           closed as materialized (
               select case when exists (select 1 from stepped where state = 'downloaded')
                           then close_circuits(array(select distinct backend from stepped
                                                      where state = 'downloaded'))
                           else 0 end as n
           )
           select stepped.id as "id!" from closed cross join stepped"#,
        &ids,
        &froms as &[RenderState],
        &states as &[Option<RenderState>],
        &remote as &[Option<&str>],
        &outputs as &[Option<&Value>],
        &artifacts as &[Option<&str>],
        &costs as &[Option<i64>],
        &failures as &[Option<FailureClass>],
        &errors as &[Option<&str>],
        &qa as &[Option<&Value>],
        &seconds as &[Option<String>],
        &provider as &[Option<i64>],
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(ids.iter().map(|id| taken.contains(id)).collect())
}
