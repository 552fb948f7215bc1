//! How the writer's queue becomes a group: a job's writes in successive rounds, in the order it
//! made them, and what the job may no longer write.

use std::collections::{HashMap, VecDeque};

use aiprod_domain::{JobId, Stage};

use super::{MAX_BATCH, MAX_ROUNDS, Op, Refused, fail};

/// Takes the next group's writes from the front of `queue`, in rounds; what does not fit stays
/// in `queue`, in order. A write of a job with a refusal on record is failed here.
pub(super) fn next_group(queue: &mut VecDeque<Op>, refused: &Refused) -> Vec<Vec<Op>> {
    // A job's writes go into successive rounds, in order, except that checkpoints one
    // after the other share a round: the stages it ran while the first one's write waited
    // advance it in one statement. Once one of its writes is held back for the next group,
    // so are all its later ones: its writes land in order.
    let mut rounds: Vec<Vec<Op>> = Vec::new();
    // A job's next round, and its last write's lease and stage when it was a checkpoint
    // (in round - 1): the next checkpoint joins it only if it is the next stage of the
    // same run (a run that lost its lease may have left writes behind it in the queue).
    let mut depth: HashMap<JobId, (usize, Option<(i64, Stage)>)> = HashMap::new();
    let mut taken = 0;
    let mut rest = VecDeque::new();
    while let Some(op) = queue.pop_front() {
        // A step queued without a wait was refused: nothing the job queued after it may
        // land (its checkpoint would say the render was downloaded and paid for).
        if let Some(why) = refusal_of(refused, op.job()) {
            fail(op, &why, refused);
            continue;
        }
        let (round, last) = depth.entry(op.job()).or_insert((0, None));
        let this = match &op {
            Op::Checkpoint(c, _) => Some((c.lease_epoch, c.stage)),
            _ => None,
        };
        let joins = matches!((*last, this), (Some((e0, s0)), Some((e1, s1)))
            if e0 == e1 && s0.next() == Some(s1))
            && *round <= MAX_ROUNDS;
        if taken < MAX_BATCH && (joins || *round < MAX_ROUNDS) {
            let at = if joins { *round - 1 } else { *round };
            if rounds.len() <= at {
                rounds.push(Vec::new());
            }
            rounds[at].push(op);
            *round = at + 1;
            *last = this;
            taken += 1;
        } else {
            *round = MAX_ROUNDS + 1;
            rest.push_back(op);
        }
    }
    *queue = rest;
    rounds
}

/// Why a step of `job` queued without a wait was not taken, if one was and the job's run has
/// not heard it yet.
pub(super) fn refusal_of(refused: &Refused, job: JobId) -> Option<String> {
    refused
        .lock()
        .expect("never poisoned")
        .values()
        .find(|(j, _)| *j == job)
        .map(|(_, why)| why.clone())
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;

    use super::super::PendingCheckpoint;
    use super::*;
    use aiprod_store::JobPatch;

    fn cp(job: JobId, epoch: i64, stage: Stage) -> Op {
        let (reply, _) = oneshot::channel();
        Op::Checkpoint(
            PendingCheckpoint {
                job_id: job,
                lease_epoch: epoch,
                stage,
                output: serde_json::Value::Null,
                retries: 0,
                patch: JobPatch::default(),
            },
            reply,
        )
    }

    fn flush(job: JobId) -> Op {
        Op::Flush(job, oneshot::channel().0)
    }

    /// Each round as (job, stage or none) pairs.
    fn shape(rounds: &[Vec<Op>]) -> Vec<Vec<(JobId, Option<Stage>)>> {
        rounds
            .iter()
            .map(|r| {
                r.iter()
                    .map(|op| match op {
                        Op::Checkpoint(c, _) => (c.job_id, Some(c.stage)),
                        other => (other.job(), None),
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_jobs_next_stages_share_a_round_and_anything_else_starts_the_next() {
        let (a, b) = (JobId::new(), JobId::new());
        let mut queue = VecDeque::from([
            cp(a, 1, Stage::Sanitize),
            cp(b, 1, Stage::Visual),
            cp(a, 1, Stage::Analysis),
            flush(a),
            cp(a, 1, Stage::Creative),
            // Another run's checkpoint: a round of its own.
            cp(b, 2, Stage::Financial),
        ]);
        let rounds = next_group(&mut queue, &Refused::default());
        assert!(queue.is_empty());
        assert_eq!(
            shape(&rounds),
            vec![
                vec![
                    (a, Some(Stage::Sanitize)),
                    (b, Some(Stage::Visual)),
                    (a, Some(Stage::Analysis)),
                ],
                vec![(a, None), (b, Some(Stage::Financial))],
                vec![(a, Some(Stage::Creative))],
            ]
        );
    }

    #[test]
    fn a_job_with_a_refusal_on_record_writes_nothing_more() {
        let (a, b) = (JobId::new(), JobId::new());
        let refused = Refused::default();
        refused
            .lock()
            .expect("never poisoned")
            .insert(uuid::Uuid::new_v4(), (a, "taken over".into()));
        let mut queue = VecDeque::from([cp(a, 1, Stage::Render), cp(b, 1, Stage::Render)]);
        let rounds = next_group(&mut queue, &refused);
        assert_eq!(shape(&rounds), vec![vec![(b, Some(Stage::Render))]]);
        assert_eq!(refusal_of(&refused, a).as_deref(), Some("taken over"));
        assert_eq!(refusal_of(&refused, b), None);
    }
}
