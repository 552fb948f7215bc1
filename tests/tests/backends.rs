//! The provider clients against local stubs that answer as BACKENDS.md documents, first call by
//! call, then through the worker's render protocol over a real database.

#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use aiprod_backends::Fleet;
use aiprod_backends::mp4;
use aiprod_backends::{
    Api, Backend, BackendError, FailureClass, Image, Poll, RemoteHandle, Replicate, Runway,
    ShotRequest, Veo3,
};
use aiprod_domain::{BackendName, JobId, JobSpec};
use aiprod_platform::Settings;
use aiprod_platform::queue::PgQueue;
use aiprod_platform::storage::ArtifactStore;
use aiprod_store::insert_job;
use aiprod_testkit::TestDb;
use aiprod_tests::stubs::{Provider, Step, Stub};
use aiprod_worker::{Outcome, WorkerContext, run_once};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;

fn settings_for(provider: Provider, uri: &str) -> Settings {
    let mut s = Settings::default();
    match provider {
        Provider::Runway => {
            s.runway.runway_base_url = uri.into();
            s.runway.runway_api_key = Some(SecretString::from("key_test"));
            s.runway.runway_poll = Duration::from_millis(10);
        }
        Provider::Veo => {
            s.veo.veo_base_url = Some(uri.into());
            s.veo.veo_project = Some("proj".into());
            s.veo.veo_access_token = Some(SecretString::from("ya29.test"));
            s.veo.veo_poll = Duration::from_millis(10);
        }
        Provider::Replicate => {
            s.replicate.replicate_base_url = uri.into();
            s.replicate.replicate_api_token = Some(SecretString::from("r8_test"));
            s.replicate.replicate_poll = Duration::from_millis(10);
        }
    }
    s
}

fn client(provider: Provider, stub: &Stub, timeout: Duration) -> Arc<dyn Backend> {
    let s = settings_for(provider, &stub.uri());
    match provider {
        Provider::Runway => Arc::new(Runway::new(
            Api::new(BackendName::Runway, timeout).expect("client"),
            &s.runway,
            &s.backends.prices.runway.model,
        )),
        Provider::Veo => Arc::new(
            Veo3::new(
                Api::new(BackendName::Veo3, timeout).expect("client"),
                &s.veo,
                &s.backends.prices.veo3.model,
            )
            .expect("veo client"),
        ),
        Provider::Replicate => Arc::new(Replicate::new(
            Api::new(BackendName::Replicate, timeout).expect("client"),
            &s.replicate,
        )),
    }
}

fn shot(seconds: u32) -> ShotRequest {
    ShotRequest {
        prompt: "A fox runs through snow.".into(),
        duration_s: seconds,
        image: Image::Inline {
            mime: "image/png".into(),
            data: vec![0x89, b'P', b'N', b'G'],
        },
        seed: 42,
        cancel_after: Some(Duration::from_secs(600)),
    }
}

const ALL: [Provider; 3] = [Provider::Runway, Provider::Veo, Provider::Replicate];

async fn poll_to_end(b: &dyn Backend, h: &RemoteHandle) -> Vec<Poll> {
    let mut seen = Vec::new();
    for _ in 0..20 {
        let p = b.poll(h).await.expect("a poll answer");
        let end = matches!(p, Poll::Done(_) | Poll::Failed(..));
        seen.push(p);
        if end {
            break;
        }
    }
    seen
}

#[tokio::test]
async fn each_client_renders_polls_and_downloads_the_happy_path() {
    for provider in ALL {
        let stub = Stub::start(provider).await;
        let b = client(provider, &stub, Duration::from_secs(5));
        let want = b.render_seconds(5);
        let h = b.submit(&shot(5)).await.expect("submitted");
        let polls = poll_to_end(b.as_ref(), &h).await;
        let Some(Poll::Done(outputs)) = polls.last() else {
            panic!("{provider:?}: {polls:?}");
        };
        let bytes = b.download(&outputs[0]).await.expect("downloaded");
        let got = mp4::read_duration(&bytes).expect("an mp4");
        let want_ms = f64::from(want) * 1000.0;
        assert!(
            (got.as_millis() as f64 - want_ms).abs() <= want_ms * 0.05,
            "{provider:?}: {got:?} for {want} s"
        );
        // Fresh output locations for the same render, without a second submit.
        assert!(!b.fetch_output(&h).await.expect("fresh").is_empty());
        b.cancel(&h).await.expect("cancel answers");
        let posts = match provider {
            Provider::Runway => stub.count("POST", "/v1/image_to_video").await,
            Provider::Veo => stub.count("POST", ":predictLongRunning").await,
            Provider::Replicate => {
                stub.count("POST", "/v1/predictions").await - stub.count("POST", "/cancel").await
            }
        };
        assert_eq!(posts, 1, "{provider:?}");
    }
}

#[tokio::test]
async fn throttling_is_capacity_and_then_the_render_succeeds() {
    // Runway: THROTTLED tasks are queued over our concurrency, not failed.
    let stub = Stub::start(Provider::Runway).await;
    let b = client(Provider::Runway, &stub, Duration::from_secs(5));
    stub.script_polls([Step::Status("THROTTLED"), Step::Status("THROTTLED")]);
    let h = b.submit(&shot(5)).await.expect("submitted");
    let polls = poll_to_end(b.as_ref(), &h).await;
    assert_eq!(polls[..2], [Poll::Throttled, Poll::Throttled]);
    assert!(matches!(polls[2], Poll::Done(_)), "{polls:?}");

    // Replicate and Vertex throttle with a 429 on create; the next create goes through.
    for (provider, body) in [
        (
            Provider::Replicate,
            r#"{"detail":"Request was throttled. Your rate limit resets in ~30s."}"#,
        ),
        (
            Provider::Veo,
            r#"{"error":{"code":429,"message":"Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model","status":"RESOURCE_EXHAUSTED"}}"#,
        ),
    ] {
        let stub = Stub::start(provider).await;
        let b = client(provider, &stub, Duration::from_secs(5));
        stub.script_submits([Step::Http(429, None, body)]);
        let e = b.submit(&shot(5)).await.expect_err("throttled");
        assert!(
            matches!(e, BackendError::Throttled { .. }),
            "{provider:?}: {e:?}"
        );
        if provider == Provider::Replicate {
            assert_eq!(
                e,
                BackendError::Throttled {
                    message: format!("replicate: HTTP 429: {body}"),
                    retry_after: Some(Duration::from_secs(30)),
                }
            );
        }
        let h = b
            .submit(&shot(5))
            .await
            .expect("the next submit goes through");
        assert!(matches!(
            poll_to_end(b.as_ref(), &h).await.last(),
            Some(Poll::Done(_))
        ));
    }
}

#[tokio::test]
async fn a_429_carries_its_retry_after_on_submit_and_on_poll() {
    for provider in ALL {
        let stub = Stub::start(provider).await;
        let b = client(provider, &stub, Duration::from_secs(5));
        stub.script_submits([Step::Http(429, Some(7), r#"{"error":"daily quota"}"#)]);
        match b.submit(&shot(5)).await {
            Err(BackendError::Throttled { retry_after, .. }) => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)), "{provider:?}");
            }
            other => panic!("{provider:?}: {other:?}"),
        }
        let h = b.submit(&shot(5)).await.expect("submitted");
        stub.script_polls([Step::Http(429, Some(3), "{}")]);
        assert!(matches!(
            b.poll(&h).await,
            Err(BackendError::Throttled { retry_after: Some(d), .. }) if d == Duration::from_secs(3)
        ));
    }
}

#[tokio::test]
async fn permanent_failures_are_classified_as_final() {
    // Runway: input safety is final (and charged).
    let stub = Stub::start(Provider::Runway).await;
    let b = client(Provider::Runway, &stub, Duration::from_secs(5));
    stub.script_polls([Step::Fail("SAFETY.INPUT.TEXT")]);
    let h = b.submit(&shot(5)).await.expect("submitted");
    match b.poll(&h).await {
        Ok(Poll::Failed(class, msg)) => {
            assert_eq!(class, FailureClass::InputSafety);
            assert!(!class.retryable() && b.charged_on_failure(class));
            assert!(msg.contains("SAFETY.INPUT.TEXT"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    // Runway: an invalid asset needs another input.
    stub.script_polls([Step::Fail("ASSET.INVALID")]);
    assert!(matches!(
        b.poll(&h).await,
        Ok(Poll::Failed(FailureClass::InvalidAsset, _))
    ));
    // A 400 or 401 is never retried.
    stub.script_submits([Step::Http(400, None, r#"{"error":"Invalid ratio"}"#)]);
    assert!(
        matches!(b.submit(&shot(5)).await, Err(BackendError::Rejected(m)) if m.contains("Invalid ratio"))
    );
    stub.script_submits([Step::Http(401, None, r#"{"error":"bad key"}"#)]);
    assert!(matches!(
        b.submit(&shot(5)).await,
        Err(BackendError::Unauthorized(_))
    ));

    // Replicate: an unprocessable create.
    let stub = Stub::start(Provider::Replicate).await;
    let b = client(Provider::Replicate, &stub, Duration::from_secs(5));
    stub.script_submits([Step::Http(
        422,
        None,
        r#"{"detail":"input_image is required"}"#,
    )]);
    assert!(matches!(
        b.submit(&shot(5)).await,
        Err(BackendError::Rejected(_))
    ));

    // Vertex: an INVALID_ARGUMENT operation error.
    let stub = Stub::start(Provider::Veo).await;
    let b = client(Provider::Veo, &stub, Duration::from_secs(5));
    let h = b.submit(&shot(5)).await.expect("submitted");
    stub.script_polls([Step::Fail("Image could not be decoded.")]);
    assert!(matches!(
        b.poll(&h).await,
        Ok(Poll::Failed(FailureClass::InvalidAsset, _))
    ));
}

#[tokio::test]
async fn retryable_failures_are_classified_as_worth_another_try() {
    let stub = Stub::start(Provider::Runway).await;
    let b = client(Provider::Runway, &stub, Duration::from_secs(5));
    let h = b.submit(&shot(5)).await.expect("submitted");
    stub.script_polls([Step::Fail("internal"), Step::Fail("SAFETY.OUTPUT.VIDEO")]);
    assert!(matches!(
        b.poll(&h).await,
        Ok(Poll::Failed(FailureClass::Internal, _))
    ));
    assert!(matches!(
        b.poll(&h).await,
        Ok(Poll::Failed(FailureClass::OutputSafety, _))
    ));
    stub.script_submits([Step::Http(503, None, "upstream unavailable")]);
    assert!(matches!(
        b.submit(&shot(5)).await,
        Err(BackendError::Transient(_))
    ));

    let stub = Stub::start(Provider::Replicate).await;
    let b = client(Provider::Replicate, &stub, Duration::from_secs(5));
    let h = b.submit(&shot(5)).await.expect("submitted");
    stub.script_polls([Step::Fail("internal"), Step::Http(502, None, "bad gateway")]);
    let p = b.poll(&h).await;
    assert!(
        matches!(&p, Ok(Poll::Failed(c, _)) if c.retryable()),
        "{p:?}"
    );
    assert!(matches!(b.poll(&h).await, Err(BackendError::Transient(_))));

    let stub = Stub::start(Provider::Veo).await;
    let b = client(Provider::Veo, &stub, Duration::from_secs(5));
    let h = b.submit(&shot(5)).await.expect("submitted");
    stub.script_polls([Step::Fail("filtered"), Step::Fail("internal")]);
    // Safety-filtered samples are simply missing: output safety, worth another try.
    assert!(matches!(
        b.poll(&h).await,
        Ok(Poll::Failed(FailureClass::OutputSafety, _))
    ));
    assert!(matches!(
        b.poll(&h).await,
        Ok(Poll::Failed(FailureClass::Internal, _))
    ));
}

#[tokio::test]
async fn a_call_with_no_answer_in_time_is_a_timeout() {
    for provider in ALL {
        let stub = Stub::start(provider).await;
        let b = client(provider, &stub, Duration::from_millis(300));
        stub.script_submits([Step::Slow(3_000)]);
        let t0 = Instant::now();
        let e = b.submit(&shot(5)).await.expect_err("no answer in time");
        assert!(matches!(e, BackendError::Timeout(_)), "{provider:?}: {e:?}");
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{provider:?} waited for the answer"
        );
        let h = b.submit(&shot(5)).await.expect("submitted");
        stub.script_polls([Step::Slow(3_000)]);
        assert!(
            matches!(b.poll(&h).await, Err(BackendError::Timeout(_))),
            "{provider:?}"
        );
    }
}

/// A worker over a database of its own, with real clients pointed at stubs.
struct Rig {
    ctx: WorkerContext,
    pool: PgPool,
    queue: Arc<PgQueue>,
    _artifacts: tempfile::TempDir,
    _db: TestDb,
}

impl Rig {
    async fn new(mut settings: Settings) -> anyhow::Result<Rig> {
        settings.worker.lease_ttl = Duration::from_millis(5_000);
        settings.worker.retry.initial = Duration::from_millis(1);
        settings.worker.retry.max_interval = Duration::from_millis(10);
        settings.validate()?;
        let db = TestDb::new().await?;
        let pool = db.pool().await?;
        let artifacts = tempfile::tempdir()?;
        let store = ArtifactStore::local(artifacts.path())?;
        let fleet = Fleet::from_settings(&settings, false)?;
        let queue = Arc::new(PgQueue::new(pool.clone(), Duration::from_secs(30)));
        let ctx = WorkerContext::new(
            pool.clone(),
            queue.clone(),
            store,
            fleet,
            Arc::new(settings),
        );
        Ok(Rig {
            ctx,
            pool,
            queue,
            _artifacts: artifacts,
            _db: db,
        })
    }

    async fn run(&self, body: Value) -> anyhow::Result<(JobId, String, Option<String>)> {
        let spec = JobSpec::parse(&body).map_err(|e| anyhow::anyhow!("bad spec: {e:?}"))?;
        let id = JobId::new();
        insert_job(&self.pool, id, &spec, None).await?;
        aiprod_scheduler::relay_once(&self.pool, self.queue.as_ref()).await?;
        while !matches!(run_once(&self.ctx).await?, Outcome::Idle) {}
        let (status, error): (String, Option<String>) =
            sqlx::query_as("select status::text, error from job where id = $1")
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
        Ok((id, status, error))
    }

    async fn tries(
        &self,
        id: JobId,
    ) -> anyhow::Result<Vec<(String, String, Option<String>, Option<i64>)>> {
        Ok(sqlx::query_as(
            "select backend::text, state::text, failure_class, cost_micros from render_task
              where job_id = $1 order by shot, attempt",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }
}

#[tokio::test]
async fn a_submit_429_is_waited_out_for_its_retry_after_and_the_shot_renders_once()
-> anyhow::Result<()> {
    let stub = Stub::start(Provider::Runway).await;
    let rig = Rig::new(settings_for(Provider::Runway, &stub.uri())).await?;
    stub.script_submits([Step::Http(429, Some(1), r#"{"error":"Too many requests"}"#)]);
    let t0 = Instant::now();
    let (id, status, error) = rig
        .run(json!({"prompt": "A fox.", "duration_s": 5, "quality_min": 0}))
        .await?;
    assert_eq!(status, "succeeded", "{error:?}");
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
    assert_eq!(stub.count("POST", "/v1/image_to_video").await, 2);
    assert_eq!(
        rig.tries(id).await?,
        [(
            "runway".to_owned(),
            "downloaded".to_owned(),
            None,
            Some(30_000_000)
        )]
    );
    Ok(())
}

#[tokio::test]
async fn an_expired_output_url_is_fetched_again_without_a_second_render() -> anyhow::Result<()> {
    let stub = Stub::start(Provider::Runway).await;
    let rig = Rig::new(settings_for(Provider::Runway, &stub.uri())).await?;
    stub.expire_next_download();
    let (id, status, error) = rig
        .run(json!({"prompt": "A fox.", "duration_s": 5, "quality_min": 0}))
        .await?;
    assert_eq!(status, "succeeded", "{error:?}");
    assert_eq!(stub.count("POST", "/v1/image_to_video").await, 1);
    // Once to learn it finished, once more for fresh URLs.
    assert_eq!(stub.count("GET", "/files/").await, 2);
    assert_eq!(rig.tries(id).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn input_safety_fails_the_job_charged_and_falls_back_nowhere() -> anyhow::Result<()> {
    let runway = Stub::start(Provider::Runway).await;
    let veo = Stub::start(Provider::Veo).await;
    let mut s = settings_for(Provider::Runway, &runway.uri());
    let v = settings_for(Provider::Veo, &veo.uri());
    s.veo = v.veo;
    let rig = Rig::new(s).await?;
    runway.script_polls([Step::Fail("SAFETY.INPUT.TEXT")]);
    let (id, status, error) = rig
        .run(json!({"prompt": "A fox.", "duration_s": 5, "speed_priority": true, "quality_min": 0}))
        .await?;
    assert_eq!(status, "failed");
    let error = error.unwrap_or_default();
    assert!(
        error.contains("runway refused the input of shot 0"),
        "{error}"
    );
    assert_eq!(
        rig.tries(id).await?,
        [(
            "runway".to_owned(),
            "failed".to_owned(),
            Some("input_safety".to_owned()),
            Some(30_000_000)
        )]
    );
    assert_eq!(veo.count("POST", ":predictLongRunning").await, 0);
    Ok(())
}

#[tokio::test]
async fn a_failed_render_falls_back_down_the_order_and_the_job_shows_each_try() -> anyhow::Result<()>
{
    let runway = Stub::start(Provider::Runway).await;
    let veo = Stub::start(Provider::Veo).await;
    let mut s = settings_for(Provider::Runway, &runway.uri());
    s.veo = settings_for(Provider::Veo, &veo.uri()).veo;
    let rig = Rig::new(s).await?;
    runway.script_polls([Step::Fail("internal")]);
    let (id, status, error) = rig
        .run(json!({"prompt": "A fox.", "duration_s": 5, "speed_priority": true, "quality_min": 0}))
        .await?;
    assert_eq!(status, "succeeded", "{error:?}");
    assert_eq!(
        rig.tries(id).await?,
        [
            (
                "runway".to_owned(),
                "failed".to_owned(),
                Some("internal".to_owned()),
                Some(0)
            ),
            // Veo renders 6 s for a 5 s shot: 0.10 + 6 × 0.50.
            (
                "veo3".to_owned(),
                "downloaded".to_owned(),
                None,
                Some(3_100_000)
            ),
        ]
    );
    let health: (String, i32) = sqlx::query_as(
        "select state::text, consecutive_failures from backend_health where backend = 'runway'",
    )
    .fetch_one(&rig.pool)
    .await?;
    assert_eq!(health, ("closed".to_owned(), 1));
    let cost: i64 = sqlx::query_scalar("select cost_micros from job where id = $1")
        .bind(id)
        .fetch_one(&rig.pool)
        .await?;
    assert_eq!(cost, 3_100_000);
    Ok(())
}

#[tokio::test]
async fn a_render_past_the_jobs_deadline_is_canceled_at_the_provider() -> anyhow::Result<()> {
    let stub = Stub::start(Provider::Replicate).await;
    let mut s = settings_for(Provider::Replicate, &stub.uri());
    s.worker.job_deadline = Duration::from_secs(2);
    let rig = Rig::new(s).await?;
    stub.hold();
    let (id, status, error) = rig
        .run(json!({"prompt": "A fox.", "duration_s": 5}))
        .await?;
    assert_eq!(status, "failed");
    assert!(
        error
            .unwrap_or_default()
            .contains("passed the job's deadline")
    );
    assert_eq!(stub.canceled().len(), 1);
    let tries = rig.tries(id).await?;
    assert_eq!(
        tries,
        [(
            "replicate".to_owned(),
            "canceled".to_owned(),
            Some("deadline".to_owned()),
            Some(0)
        )]
    );
    Ok(())
}

#[tokio::test]
async fn the_reconciler_finds_a_replicate_orphan_by_its_seed_and_cancels_it() -> anyhow::Result<()>
{
    use aiprod_domain::Money;
    use aiprod_store::{Intent, IntentOutcome, claim_job, insert_intent};

    let stub = Stub::start(Provider::Replicate).await;
    let rig = Rig::new(settings_for(Provider::Replicate, &stub.uri())).await?;
    stub.hold();
    // A worker wrote its intent and POSTed, then died before saving the id.
    let spec =
        JobSpec::parse(&json!({"prompt": "A fox."})).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let id = JobId::new();
    insert_job(&rig.pool, id, &spec, None).await?;
    let claim = claim_job(&rig.pool, id, "doomed", Duration::from_secs(30))
        .await?
        .expect("free");
    let task = insert_intent(
        &rig.pool,
        &Intent {
            job_id: id,
            lease_epoch: claim.lease_epoch,
            worker_id: "doomed",
            shot: 0,
            attempt: 1,
            backend: BackendName::Replicate,
            duration_s: 5,
            estimate: "0.26".parse::<Money>()?,
            baseline: None,
        },
    )
    .await?;
    let IntentOutcome::Written(task) = task else {
        panic!("the lease is held and the job has no budget day: {task:?}");
    };
    // Other predictions on the account, created around the same time, must not be mistaken
    // for it.
    let b = client(Provider::Replicate, &stub, Duration::from_secs(5));
    let mut other = shot(5);
    other.seed = 7;
    b.submit(&other).await.expect("another prediction");
    let mut ours = shot(5);
    ours.seed = u32::try_from(task.seed)?;
    let lost = b.submit(&ours).await.expect("the orphan");
    sqlx::query("update job set locked_until = now() - interval '1 second' where id = $1")
        .bind(id)
        .execute(&rig.pool)
        .await?;

    let found =
        aiprod_scheduler::reconcile_orphans(&rig.pool, &rig.ctx.backends, Duration::ZERO).await?;
    assert_eq!(found, 1);
    let row: (String, Option<String>, Option<i64>) =
        sqlx::query_as("select state::text, remote_id, cost_micros from render_task where id = $1")
            .bind(task.id)
            .fetch_one(&rig.pool)
            .await?;
    assert_eq!(
        row,
        ("orphaned".to_owned(), Some(lost.0.clone()), Some(260_000))
    );
    assert_eq!(stub.canceled(), [lost.0]);
    // Found once: the next pass has nothing to do.
    assert_eq!(
        aiprod_scheduler::reconcile_orphans(&rig.pool, &rig.ctx.backends, Duration::ZERO).await?,
        0
    );
    Ok(())
}
