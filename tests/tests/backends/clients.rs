//! Each provider client called directly against its stub: the happy path from submit to
//! download, throttling and `Retry-After`, permanent and retryable failures each classified as
//! the worker needs them, and a call with no answer in time.

use std::time::{Duration, Instant};

use aiprod_backends::{BackendError, FailureClass, Poll};
use aiprod_tests::stubs::{Provider, Step, Stub};

use crate::{ALL, client, poll_to_end, shot};

#[tokio::test]
async fn each_client_renders_polls_and_downloads_the_happy_path() {
    for provider in ALL {
        let stub = Stub::start(provider).await;
        let b = client(provider, &stub, Duration::from_secs(5));
        let want = b.render_seconds(5);
        let h = b.submit(&shot(5)).await.expect("submitted");
        let polls = poll_to_end(b.as_ref(), &h).await;
        let Some(Poll::Done(outputs, _)) = polls.last() else {
            panic!("{provider:?}: {polls:?}");
        };
        let dir = tempfile::tempdir().expect("a scratch directory");
        let file = dir.path().join("out.mp4");
        let size = b
            .download(&outputs[0], &file, 64 * 1024 * 1024)
            .await
            .expect("downloaded");
        assert_eq!(size, std::fs::metadata(&file).expect("written").len());
        let media = aiprod_media::Media::new(&Default::default());
        let got = media.probe(&file).await.expect("a video").length_s();
        let got = got.expect("a length");
        assert!(
            (got - f64::from(want)).abs() <= f64::from(want) * 0.05,
            "{provider:?}: {got} s for {want} s"
        );
        // Under the size cap, nothing is kept.
        let capped = dir.path().join("capped.mp4");
        let refused = b.download(&outputs[0], &capped, 1024).await;
        assert!(
            matches!(&refused, Err(BackendError::Rejected(m)) if m.contains("larger than 1024 bytes")),
            "{provider:?}: {refused:?}"
        );
        assert!(
            !capped.exists(),
            "{provider:?}: a refused download leaves no file"
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
    assert!(matches!(polls[2], Poll::Done(..)), "{polls:?}");

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
            Some(Poll::Done(..))
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
