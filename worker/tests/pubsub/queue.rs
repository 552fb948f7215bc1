//! The queue's own behaviour on the emulator: provisioning, publish and ack, nack, flow control,
//! shutdown and dead letters.

use std::time::{Duration, Instant};

use aiprod_domain::{JobId, Priority};
use aiprod_platform::config::QueueSettings;
use aiprod_platform::queue::{Dispatch, Queue, ensure_pubsub};
use aiprod_testkit::emulator::pubsub::pubsub_emulator;

use super::{connect, dispatch, fresh, receive_n};

#[tokio::test]
async fn migrate_creates_what_is_missing_and_is_safe_to_repeat() -> anyhow::Result<()> {
    let emulator = pubsub_emulator().await?;
    let settings = emulator.settings("migrate");
    let first = ensure_pubsub(&settings).await?;
    let names: Vec<&str> = first.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            settings.topic_path().as_str(),
            settings.dead_letter_topic_path().expect("set").as_str(),
            settings
                .dead_letter_subscription_path()
                .expect("set")
                .as_str(),
            settings.subscription_path().as_str(),
        ]
    );
    assert!(first.iter().all(|p| p.created), "{first:?}");
    let again = ensure_pubsub(&settings).await?;
    assert_eq!(again.len(), 4);
    assert!(again.iter().all(|p| !p.created), "{again:?}");
    Ok(())
}

#[tokio::test]
async fn a_published_dispatch_arrives_with_its_attributes_and_an_ack_ends_it() -> anyhow::Result<()>
{
    // The shortest ack deadline Pub/Sub allows, so that an ack that never arrived would show
    // as a redelivery within the test.
    let settings = fresh("ack", 10).await?;
    let q = connect(&settings, 4).await?;
    let job = JobId::new();
    q.publish(&[Dispatch {
        job_id: job,
        attempt: 3,
        priority: Priority::High,
    }])
    .await?;
    let got = receive_n(q.as_ref(), 1, Duration::from_secs(20)).await?;
    assert_eq!(got.len(), 1, "nothing arrived");
    assert_eq!((got[0].job_id, got[0].attempt), (job, 3));
    assert_eq!(got[0].deliveries, 1);
    q.ack(&[got[0].ack_id]).await?;
    q.close().await;

    // A fresh subscriber, well past the ack deadline, gets nothing more.
    let q2 = connect(&settings, 4).await?;
    let again = receive_n(q2.as_ref(), 1, Duration::from_secs(12)).await?;
    assert!(again.is_empty(), "an acked message came back: {again:?}");
    q2.close().await;
    Ok(())
}

#[tokio::test]
async fn a_nack_is_redelivered_at_once_with_its_delivery_count() -> anyhow::Result<()> {
    // A long deadline: a redelivery well inside it can only come from the nack.
    let settings = fresh("nack", 600).await?;
    let q = connect(&settings, 4).await?;
    let job = JobId::new();
    q.publish(&[dispatch(job)]).await?;
    let first = receive_n(q.as_ref(), 1, Duration::from_secs(20)).await?;
    assert_eq!(first.len(), 1);
    let started = Instant::now();
    q.nack(&[first[0].ack_id]).await?;
    let second = receive_n(q.as_ref(), 1, Duration::from_secs(30)).await?;
    assert_eq!(second.len(), 1, "the nacked message never came back");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(second[0].job_id, job);
    assert_eq!(second[0].deliveries, first[0].deliveries + 1);
    assert_ne!(second[0].ack_id, first[0].ack_id);
    q.ack(&[second[0].ack_id]).await?;
    q.close().await;
    Ok(())
}

#[tokio::test]
async fn a_worker_never_holds_more_messages_than_its_slots() -> anyhow::Result<()> {
    let settings = fresh("flow", 600).await?;
    let q = connect(&settings, 2).await?;
    let jobs: Vec<JobId> = (0..6).map(|_| JobId::new()).collect();
    q.publish(&jobs.iter().copied().map(dispatch).collect::<Vec<_>>())
        .await?;
    let mut held = receive_n(q.as_ref(), 6, Duration::from_secs(8)).await?;
    assert_eq!(held.len(), 2, "held {} messages with 2 slots", held.len());
    // Settling one lets exactly one more in.
    let first = held.remove(0);
    q.ack(&[first.ack_id]).await?;
    let more = receive_n(q.as_ref(), 6, Duration::from_secs(8)).await?;
    assert_eq!(more.len(), 1, "{more:?}");
    held.extend(more);
    // Drain the rest two at a time; every job arrives exactly once.
    let mut seen: Vec<JobId> = held.iter().map(|d| d.job_id).collect();
    seen.push(first.job_id);
    q.ack(&held.iter().map(|d| d.ack_id).collect::<Vec<_>>())
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < jobs.len() && Instant::now() < deadline {
        let batch = receive_n(q.as_ref(), 2, Duration::from_secs(5)).await?;
        assert!(batch.len() <= 2);
        seen.extend(batch.iter().map(|d| d.job_id));
        q.ack(&batch.iter().map(|d| d.ack_id).collect::<Vec<_>>())
            .await?;
    }
    seen.sort();
    let mut want = jobs.clone();
    want.sort();
    assert_eq!(seen, want);
    q.close().await;
    Ok(())
}

#[tokio::test]
async fn stopping_hands_out_nothing_more_and_lets_go_at_once() -> anyhow::Result<()> {
    // What the worker controls at a stop: nothing more is handed out, what waited is given
    // back, and the stream closes without waiting on messages the worker never saw (with
    // `WaitForProcessing` the client would extend those until `max_lease`). Where the given-back
    // messages go next is Pub/Sub's business; the emulator may keep routing them to the closed
    // stream for minutes, so the test does not time their redelivery. The leader's sweep
    // dispatches their jobs again if they never come (see the test after the next).
    let settings = fresh("stop", 10).await?;
    let a = connect(&settings, 3).await?;
    let jobs: Vec<JobId> = (0..3).map(|_| JobId::new()).collect();
    a.publish(&jobs.iter().copied().map(dispatch).collect::<Vec<_>>())
        .await?;
    // One is handed out and "started"; the others arrive and wait in A.
    let started = receive_n(a.as_ref(), 1, Duration::from_secs(20)).await?;
    assert_eq!(started.len(), 1, "nothing arrived");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = Instant::now();
    a.stop_receiving().await;
    assert!(
        receive_n(a.as_ref(), 1, Duration::from_secs(2))
            .await?
            .is_empty(),
        "a stopped queue hands nothing out"
    );
    // Settling the started one after the stop is harmless.
    a.ack(&[started[0].ack_id]).await?;
    a.close().await;
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "closing waited on held messages: {:?}",
        t.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn a_message_nacked_too_often_goes_to_the_dead_letter_topic() -> anyhow::Result<()> {
    let settings = fresh("dlq", 600).await?;
    let q = connect(&settings, 1).await?;
    let job = JobId::new();
    q.publish(&[dispatch(job)]).await?;
    for attempt in 1..=settings.pubsub_max_delivery_attempts {
        let d = receive_n(q.as_ref(), 1, Duration::from_secs(30)).await?;
        assert_eq!(d.len(), 1, "delivery {attempt} never came");
        assert_eq!(d[0].deliveries, attempt);
        q.nack(&[d[0].ack_id]).await?;
    }
    let dead = QueueSettings {
        pubsub_subscription: settings.pubsub_dead_letter_topic.clone(),
        ..settings.clone()
    };
    let dq = connect(&dead, 1).await?;
    let parked = receive_n(dq.as_ref(), 1, Duration::from_secs(30)).await?;
    assert_eq!(
        parked.len(),
        1,
        "nothing reached the dead-letter subscription"
    );
    assert_eq!(parked[0].job_id, job);
    dq.ack(&[parked[0].ack_id]).await?;
    assert!(
        receive_n(q.as_ref(), 1, Duration::from_secs(3))
            .await?
            .is_empty(),
        "the dead-lettered message is not delivered again"
    );
    q.close().await;
    dq.close().await;
    Ok(())
}
