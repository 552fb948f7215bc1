//! The poll scheduler against the Runway client and a local stub of Runway's task endpoint,
//! which answers a scripted sequence and records when each poll came.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiprod_backends::{Api, Backend, FailureClass, Output, RemoteHandle, Runway, Simulated};
use aiprod_domain::BackendName;
use aiprod_platform::Settings;
use serde_json::json;
use tokio::time::Instant;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::{Pollers, Verdict};

/// Runway's task endpoint, answering `steps` in order and then `RUNNING` forever.
struct Stub {
    /// Kept for its lifetime: the stub stops when dropped.
    _server: MockServer,
    polls: Arc<Mutex<Vec<Instant>>>,
    backend: Arc<dyn Backend>,
}

fn running() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"id": "t", "status": "RUNNING"}))
}

fn status(s: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"id": "t", "status": s}))
}

fn succeeded() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(
        json!({"id": "t", "status": "SUCCEEDED", "output": ["https://cdn.example/t.mp4"]}),
    )
}

fn http(code: u16) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_string("{}")
}

impl Stub {
    async fn new(cadence: Duration, steps: Vec<ResponseTemplate>) -> anyhow::Result<Stub> {
        let server = MockServer::start().await;
        let polls = Arc::new(Mutex::new(Vec::new()));
        let script = Mutex::new(VecDeque::from(steps));
        let seen = polls.clone();
        Mock::given(method("GET"))
            .and(path_regex("^/v1/tasks/"))
            .respond_with(move |_: &Request| {
                seen.lock().expect("poll log").push(Instant::now());
                script
                    .lock()
                    .expect("script")
                    .pop_front()
                    .unwrap_or_else(running)
            })
            .mount(&server)
            .await;
        let mut s = Settings::default().runway;
        s.runway_base_url = server.uri();
        s.runway_poll = cadence;
        let api = Api::new(BackendName::Runway, Duration::from_secs(5))?;
        let backend: Arc<dyn Backend> = Arc::new(Runway::new(api, &s, "gen4_turbo"));
        Ok(Stub {
            _server: server,
            polls,
            backend,
        })
    }

    fn polls(&self) -> Vec<Instant> {
        self.polls.lock().expect("poll log").clone()
    }

    async fn follow(&self, pollers: &Pollers, deadline: Duration) -> Verdict {
        let handle = RemoteHandle("t".into());
        pollers
            .follow(&self.backend, handle, Instant::now() + deadline)
            .await
    }
}

/// The shortest time between two polls in a row.
fn shortest_gap(polls: &[Instant]) -> Duration {
    polls
        .windows(2)
        .map(|w| w[1] - w[0])
        .min()
        .unwrap_or(Duration::MAX)
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn a_render_is_polled_at_the_providers_cadence_until_it_is_done() -> anyhow::Result<()> {
    let cadence = Duration::from_millis(100);
    let stub = Stub::new(
        cadence,
        vec![running(), status("PENDING"), running(), succeeded()],
    )
    .await?;
    let verdict = stub.follow(&Pollers::default(), HOUR).await;
    let Verdict::Done(outputs, _) = verdict else {
        panic!("expected the render done, got {verdict:?}");
    };
    assert_eq!(outputs, [Output::Url("https://cdn.example/t.mp4".into())]);
    let polls = stub.polls();
    assert_eq!(polls.len(), 4, "one poll per answer, none after the end");
    // The cadence less its jitter (±20 %) is the least a render waits between polls.
    assert!(shortest_gap(&polls) >= cadence.mul_f64(0.8), "{polls:?}");
    Ok(())
}

#[tokio::test]
async fn throttling_waits_out_retry_after_and_counts_no_failure() -> anyhow::Result<()> {
    let throttled = || http(429).insert_header("retry-after", "1");
    let steps = vec![
        http(500),
        http(500),
        throttled(),
        throttled(),
        http(500),
        http(500),
        succeeded(),
    ];
    let stub = Stub::new(Duration::from_millis(20), steps).await?;
    let verdict = stub.follow(&Pollers::default(), HOUR).await;
    assert!(matches!(verdict, Verdict::Done(..)), "{verdict:?}");
    let polls = stub.polls();
    assert_eq!(polls.len(), 7);
    // After each 429, the next poll waited for its Retry-After.
    for i in [2, 3] {
        assert!(
            polls[i + 1] - polls[i] >= Duration::from_secs(1),
            "poll {i}: {polls:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn five_failed_polls_in_a_row_hand_the_render_off() -> anyhow::Result<()> {
    let steps = vec![
        http(500),
        http(502),
        http(503),
        http(500),
        http(504),
        succeeded(),
    ];
    let stub = Stub::new(Duration::from_millis(20), steps).await?;
    let verdict = stub.follow(&Pollers::default(), HOUR).await;
    assert!(
        matches!(&verdict, Verdict::Unreachable(e) if e.to_string().contains("504")),
        "{verdict:?}"
    );
    assert_eq!(
        stub.polls().len(),
        5,
        "the render is not polled after its hand-off"
    );
    Ok(())
}

#[tokio::test]
async fn an_answer_between_failed_polls_starts_the_count_again() -> anyhow::Result<()> {
    let mut steps: Vec<ResponseTemplate> = (0..4).map(|_| http(500)).collect();
    steps.push(status("THROTTLED"));
    steps.extend((0..4).map(|_| http(500)));
    steps.push(running());
    steps.extend((0..4).map(|_| http(500)));
    steps.push(succeeded());
    let stub = Stub::new(Duration::from_millis(10), steps).await?;
    let verdict = stub.follow(&Pollers::default(), HOUR).await;
    assert!(matches!(verdict, Verdict::Done(..)), "{verdict:?}");
    assert_eq!(stub.polls().len(), 15);
    Ok(())
}

#[tokio::test]
async fn a_failure_at_the_provider_and_a_forgotten_render_are_answered_as_such()
-> anyhow::Result<()> {
    let failed = ResponseTemplate::new(200).set_body_json(json!({
        "id": "t", "status": "FAILED", "failure": "nope", "failureCode": "SAFETY.INPUT.TEXT",
    }));
    let stub = Stub::new(Duration::from_millis(10), vec![running(), failed]).await?;
    let verdict = stub.follow(&Pollers::default(), HOUR).await;
    assert!(
        matches!(&verdict, Verdict::Failed(FailureClass::InputSafety, m) if m.contains("nope")),
        "{verdict:?}"
    );
    let stub = Stub::new(Duration::from_millis(10), vec![http(404)]).await?;
    let verdict = stub.follow(&Pollers::default(), HOUR).await;
    assert!(matches!(verdict, Verdict::Expired(_)), "{verdict:?}");
    assert_eq!(stub.polls().len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_render_still_running_at_the_deadline_is_answered_deadline() -> anyhow::Result<()> {
    let stub = Stub::new(Duration::from_millis(50), Vec::new()).await?;
    let pollers = Pollers::default();
    let t0 = Instant::now();
    let verdict = stub.follow(&pollers, Duration::from_millis(400)).await;
    assert!(matches!(verdict, Verdict::Deadline), "{verdict:?}");
    assert!(t0.elapsed() >= Duration::from_millis(400));
    let polled = stub.polls().len();
    assert!(polled >= 2, "polled until the deadline: {polled}");

    // A render whose deadline has already passed is not polled at all.
    let verdict = stub.follow(&pollers, Duration::ZERO).await;
    assert!(matches!(verdict, Verdict::Deadline), "{verdict:?}");
    assert_eq!(stub.polls().len(), polled);
    Ok(())
}

#[tokio::test]
async fn a_render_nobody_waits_for_any_more_is_no_longer_polled() -> anyhow::Result<()> {
    let stub = Arc::new(Stub::new(Duration::from_millis(20), Vec::new()).await?);
    let pollers = Arc::new(Pollers::default());
    let waiting = tokio::spawn({
        let (stub, pollers) = (stub.clone(), pollers.clone());
        async move { stub.follow(&pollers, HOUR).await }
    });
    while stub.polls().len() < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // What a lost lease does: the stage's future, and the render's wait with it, is dropped.
    waiting.abort();
    let _ = waiting.await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_abort = stub.polls().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stub.polls().len(), after_abort);
    Ok(())
}

#[tokio::test]
async fn many_simulated_renders_are_answered_each_with_its_own_end() -> anyhow::Result<()> {
    let media = aiprod_media::Media::new(&Settings::default().media);
    let sim = Simulated::new(BackendName::Runway, Duration::ZERO, 0.0, media.clone());
    let failing = Simulated::new(BackendName::Runway, Duration::ZERO, 1.0, media);
    let pollers = Pollers::default();
    let backend: Arc<dyn Backend> = Arc::new(sim);
    let mut handles = Vec::new();
    for i in 0..300 {
        let b: &dyn Backend = if i % 3 == 0 {
            &failing
        } else {
            backend.as_ref()
        };
        handles.push(b.submit(&request(i)).await?);
    }
    let verdicts = futures::future::join_all(
        handles
            .iter()
            .map(|h| pollers.follow(&backend, h.clone(), Instant::now() + HOUR)),
    )
    .await;
    for (i, v) in verdicts.iter().enumerate() {
        if i % 3 == 0 {
            assert!(
                matches!(v, Verdict::Failed(FailureClass::Internal, _)),
                "{i}: {v:?}"
            );
        } else {
            let expected = [Output::Url(format!("sim://{}", handles[i].0))];
            assert!(
                matches!(v, Verdict::Done(o, _) if o[..] == expected[..]),
                "{i}: {v:?}"
            );
        }
    }
    Ok(())
}

fn request(shot: usize) -> aiprod_backends::ShotRequest {
    aiprod_backends::ShotRequest {
        shot,
        prompt: "a fox".into(),
        duration_s: 5,
        image: aiprod_backends::Image::Url("gs://b/k.png".into()),
        seed: 1,
        cancel_after: None,
    }
}
