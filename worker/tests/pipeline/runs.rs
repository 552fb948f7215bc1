//! A job run to the end: all nine stages and their artifacts, and duplicate deliveries that
//! run no stage twice.

use aiprod_domain::Priority;
use aiprod_platform::queue::{Dispatch, Queue};
use aiprod_worker::{JobOutcome, Outcome};
use serde_json::{Value, json};

use super::{Rig, path_of, test_settings};

#[tokio::test]
async fn a_job_runs_all_nine_stages_and_leaves_real_artifacts() -> anyhow::Result<()> {
    let rig = Rig::new(test_settings()).await?;
    let id = rig
        .submit(json!({"prompt": "A fox runs. It jumps. Snow falls.", "duration_s": 9}))
        .await?;
    assert_eq!(
        rig.drain().await?,
        vec![Outcome::Worked(Some(JobOutcome::Succeeded))]
    );
    let stages = rig.stages(id).await?;
    assert_eq!(stages.len(), 9);
    assert!(
        stages
            .iter()
            .all(|s| s.status == "succeeded" && s.attempts == 1),
        "{stages:?}"
    );
    let (backend, est, cost, score, uri): (String, i64, i64, Option<f64>, String) = sqlx::query_as(
        "select backend::text, estimated_cost_micros, cost_micros, quality_score, result_uri from job where id = $1",
    )
    .bind(id)
    .fetch_one(&rig.pool)
    .await?;
    // Three 3-second shots on replicate: 3 × (0.01 + 0.05 × 3) = 0.48 exactly. No judge is
    // configured: the job is unscored, not given Replicate's prior.
    assert_eq!(
        (backend.as_str(), est, cost, score),
        ("replicate", 480_000, 480_000, None)
    );
    // The result is one assembled video of the asked length, with sound, and a poster.
    assert!(uri.ends_with("/final.mp4"), "{uri}");
    let media = aiprod_media::Media::new(&rig.ctx.settings.media);
    let fin = media.probe(&path_of(&uri)).await?;
    let length = fin.length_s().expect("a length");
    assert!((length - 9.0).abs() < 0.05, "final video lasts {length} s");
    assert!(fin.audio.is_some(), "the final video carries a sound track");
    let manifest: Value = serde_json::from_slice(&std::fs::read(
        path_of(&uri).with_file_name("manifest.json"),
    )?)?;
    let shots = manifest["shots"].as_array().expect("shots");
    assert_eq!(shots.len(), 3);
    for shot in shots {
        let p = media
            .probe(std::path::Path::new(
                shot["uri"]
                    .as_str()
                    .expect("uri")
                    .trim_start_matches("file://"),
            ))
            .await?;
        // Stable Video Diffusion's own size and length: 1024x576, 3 s within 5 %.
        let v = p.video.as_ref().expect("a picture");
        assert_eq!((v.width, v.height), (1024, 576));
        assert!((p.length_s().expect("a length") - 3.0).abs() <= 0.15);
    }
    assert_eq!(manifest["cost_usd"], "0.48");
    assert_eq!(manifest["assembly"], "reencode");
    assert!(
        path_of(&uri).with_file_name("poster.jpg").is_file(),
        "a poster beside the video"
    );
    Ok(())
}

#[tokio::test]
async fn a_duplicate_delivery_runs_no_stage_twice() -> anyhow::Result<()> {
    let rig = Rig::new(test_settings()).await?;
    let id = rig.submit(json!({"prompt": "A fox."})).await?;
    // The same dispatch delivered twice more, as an at-least-once queue may.
    let dup = Dispatch {
        job_id: id,
        attempt: 1,
        priority: Priority::Normal,
    };
    rig.queue.publish(&[dup.clone(), dup]).await?;
    let outcomes = rig.drain().await?;
    assert_eq!(
        outcomes,
        vec![
            Outcome::Worked(Some(JobOutcome::Succeeded)),
            Outcome::Worked(None),
            Outcome::Worked(None)
        ]
    );
    let stages = rig.stages(id).await?;
    assert_eq!(stages.len(), 9);
    assert!(
        stages.iter().all(|s| s.attempts == 1),
        "a stage ran twice: {stages:?}"
    );
    assert_eq!(rig.queue_len().await?, 0, "every delivery was acked");
    Ok(())
}
