//! The caches and the keyframes' write-ahead protocol through the worker: two identical jobs
//! submitted together render once, the second at $0 with a cache hit on its render row; a job
//! that opts out renders afresh; a crash between a keyframe's POST and saving its id never pays
//! for the keyframe twice.

use std::time::Duration;

use aiprod_platform::config::KeyframeKind;
use aiprod_tests::stubs::{Provider, Step, Stub};
use serde_json::json;

use crate::planning::calls;
use crate::protocol::Rig;
use crate::settings_for;

const JOB: &str = r#"{"prompt": "A lighthouse in a storm.", "duration_s": 5, "backend": "runway", "quality_min": 0}"#;

/// Waits until `stub` has received `n` requests matching `method` and `path`.
async fn received(stub: &Stub, method: &str, path: &str, n: usize) {
    for _ in 0..200 {
        if stub.count(method, path).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{method} {path} never reached {n}");
}

#[tokio::test]
async fn two_identical_jobs_submitted_together_render_once() -> anyhow::Result<()> {
    let runway = Stub::start(Provider::Runway).await;
    let rig = Rig::new(settings_for(Provider::Runway, &runway.uri())).await?;
    runway.hold();
    let first = rig.submit(serde_json::from_str(JOB)?).await?;
    let second = rig.submit(serde_json::from_str(JOB)?).await?;
    // Two workers of one fleet, each on one job.
    let a = tokio::spawn({
        let ctx = rig.ctx.clone();
        async move { aiprod_worker::run_once(&ctx).await }
    });
    received(&runway, "POST", "/v1/image_to_video", 1).await;
    let b = tokio::spawn({
        let ctx = rig.ctx.clone();
        async move { aiprod_worker::run_once(&ctx).await }
    });
    // The second job reaches the shot while the first renders it, and waits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    runway.release();
    a.await??;
    b.await??;
    rig.drain().await?;
    for id in [first, second] {
        let (status, error) = rig.status(id).await?;
        assert_eq!(status, "succeeded", "{error:?}");
    }
    assert_eq!(runway.count("POST", "/v1/image_to_video").await, 1);
    let rows: Vec<(bool, i64, i64, String)> = sqlx::query_as(
        "select cache_hit, cost_micros, saved_micros, artifact_uri from render_task
          where job_id = any($1) order by cache_hit",
    )
    .bind(vec![first.as_uuid(), second.as_uuid()])
    .fetch_all(&rig.pool)
    .await?;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (paid, hit) = (&rows[0], &rows[1]);
    assert!(!paid.0 && paid.1 > 0, "{rows:?}");
    assert!(hit.0 && hit.1 == 0 && hit.2 == paid.1, "{rows:?}");
    assert_eq!(hit.3, paid.3, "the hit reuses the artifact");
    let costs: Vec<Option<i64>> =
        sqlx::query_scalar("select cost_micros from job where id = any($1) order by cost_micros")
            .bind(vec![first.as_uuid(), second.as_uuid()])
            .fetch_all(&rig.pool)
            .await?;
    assert_eq!(costs, [Some(0), Some(paid.1)]);
    let (hits, saved): (i64, String) = sqlx::query_as(
        "select hits, saved_usd::text from cache_savings_daily where tier = 'render'",
    )
    .fetch_one(&rig.pool)
    .await?;
    assert_eq!((hits, saved), (1, format!("{:.6}", paid.1 as f64 / 1e6)));
    Ok(())
}

#[tokio::test]
async fn a_job_that_opts_out_renders_afresh() -> anyhow::Result<()> {
    let runway = Stub::start(Provider::Runway).await;
    let rig = Rig::new(settings_for(Provider::Runway, &runway.uri())).await?;
    let (_, status, _) = rig.run(serde_json::from_str(JOB)?).await?;
    assert_eq!(status, "succeeded");
    let mut body: serde_json::Value = serde_json::from_str(JOB)?;
    body["cache"] = json!(false);
    let (id, status, error) = rig.run(body).await?;
    assert_eq!(status, "succeeded", "{error:?}");
    assert_eq!(runway.count("POST", "/v1/image_to_video").await, 2);
    let hit: bool = sqlx::query_scalar("select cache_hit from render_task where job_id = $1")
        .bind(id)
        .fetch_one(&rig.pool)
        .await?;
    assert!(!hit);
    // And the same job with the cache on is answered from it.
    let (id, status, _) = rig.run(serde_json::from_str(JOB)?).await?;
    assert_eq!(status, "succeeded");
    assert_eq!(runway.count("POST", "/v1/image_to_video").await, 2);
    let hit: bool = sqlx::query_scalar("select cache_hit from render_task where job_id = $1")
        .bind(id)
        .fetch_one(&rig.pool)
        .await?;
    assert!(hit);
    Ok(())
}

#[tokio::test]
async fn a_crash_between_the_keyframe_post_and_saving_its_id_never_pays_twice() -> anyhow::Result<()>
{
    let runway = Stub::start(Provider::Runway).await;
    let replicate = Stub::start(Provider::Replicate).await;
    let mut s = settings_for(Provider::Runway, &runway.uri());
    s.replicate = settings_for(Provider::Replicate, &replicate.uri()).replicate;
    s.models.keyframes = KeyframeKind::Replicate;
    let rig = Rig::new(s).await?;
    let path = "/v1/models/black-forest-labs/flux-schnell/predictions";
    // The provider makes the image, but its answer comes too late for the worker that asked.
    replicate.script_submits([Step::Late(60_000)]);
    let id = rig.submit(serde_json::from_str(JOB)?).await?;
    let doomed = tokio::spawn({
        let ctx = rig.ctx.clone();
        async move { aiprod_worker::run_once(&ctx).await }
    });
    received(&replicate, "POST", path, 1).await;
    doomed.abort();
    let _ = doomed.await;
    // The dead worker's lease runs out and the reaper dispatches the job again.
    sqlx::query("update job set locked_until = now() - interval '1 second' where id = $1")
        .bind(id)
        .execute(&rig.pool)
        .await?;
    aiprod_scheduler::reap_once(&rig.pool, 5).await?;
    aiprod_scheduler::relay_once(&rig.pool, rig.queue.as_ref()).await?;
    rig.drain().await?;
    let (status, error) = rig.status(id).await?;
    assert_eq!(status, "succeeded", "{error:?}");
    assert_eq!(
        replicate.count("POST", path).await,
        1,
        "the keyframe was started twice"
    );
    let keyframes: Vec<_> = calls(&rig, id)
        .await?
        .into_iter()
        .filter(|c| c.0.starts_with("keyframe"))
        .collect();
    assert_eq!(keyframes.len(), 1, "{keyframes:?}");
    assert_eq!(keyframes[0].1, "done");
    let price: i64 = 3_000;
    assert_eq!(keyframes[0].2, price);
    let spent: i64 = sqlx::query_scalar(
        "select coalesce(sum(e.spent_delta_micros), 0)::bigint from budget_entry e
           join model_call m on m.id = e.model_call_id
          where m.job_id = $1 and m.kind = 'keyframe'",
    )
    .bind(id)
    .fetch_one(&rig.pool)
    .await?;
    assert_eq!(spent, price, "the keyframe is in the ledger once");
    Ok(())
}
