//! Technical QA through the render protocol, with real ffmpeg on real files: a stub provider
//! serves a flawed clip, and the worker reaches the verdict README's "Technical QA" decides
//! for it, recording every check's value. Clips no transcode can save go to the next backend
//! (paid, recorded, never posted twice); clips normalisation can mend are used and the result
//! says what was done; a Veo clip longer than its shot is trimmed to the plan.

use aiprod_domain::JobId;
use aiprod_media::{ClipSpec, Picture};
use aiprod_tests::stubs::{Provider, Stub, clip_bytes};
use serde_json::{Value, json};

use crate::protocol::Rig;
use crate::settings_for;

/// One try: backend, state, failure, QA verdict, QA checks.
type Try = (String, String, Option<String>, Option<Value>);

async fn tries(rig: &Rig, id: JobId) -> anyhow::Result<Vec<Try>> {
    Ok(sqlx::query_as(
        "select backend::text, state::text, failure::text, qa from render_task
          where job_id = $1 order by shot, attempt",
    )
    .bind(id)
    .fetch_all(&rig.pool)
    .await?)
}

async fn finalize_output(rig: &Rig, id: JobId) -> anyhow::Result<Value> {
    Ok(
        sqlx::query_scalar("select output from job_stage where job_id = $1 and stage = 'finalize'")
            .bind(id)
            .fetch_one(&rig.pool)
            .await?,
    )
}

/// The check `name` in a recorded QA report.
fn check<'a>(qa: &'a Value, name: &str) -> &'a Value {
    qa["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name} in {qa}"))
}

fn runway_then_veo(runway: &Stub, veo: &Stub) -> aiprod_platform::Settings {
    let mut s = settings_for(Provider::Runway, &runway.uri());
    let v = settings_for(Provider::Veo, &veo.uri());
    (s.vertex, s.veo) = (v.vertex, v.veo);
    // Five paid Runway tries and five Veo renders: more than the default day.
    s.budget.daily_budget_usd = aiprod_domain::Money::from_usd(1_000);
    s
}

/// A 5 s shot's job, routed to Runway first (speed), with Veo behind it.
/// The same shot, every time a test asks: rendered afresh (`cache: false`), since each test
/// serves a different clip for it.
fn job() -> Value {
    json!({"prompt": "A fox runs through snow.", "duration_s": 5, "speed_priority": true,
           "quality_min": 0, "cache": false})
}

#[tokio::test]
async fn unusable_clips_are_rejected_paid_and_rendered_again_on_the_next_backend()
-> anyhow::Result<()> {
    let runway = Stub::start(Provider::Runway).await;
    let veo = Stub::start(Provider::Veo).await;
    let rig = Rig::new(runway_then_veo(&runway, &veo)).await?;
    let good = ClipSpec::moving(5.0, 1280, 720, 24, "a fox");
    let full = clip_bytes(&good);
    let cases: [(&str, Vec<u8>, &str, &str); 5] = [
        (
            "a black clip",
            clip_bytes(&ClipSpec {
                picture: Picture::Black,
                ..good.clone()
            }),
            "black_frames",
            "100 %",
        ),
        (
            "a frozen clip",
            clip_bytes(&ClipSpec {
                picture: Picture::Still,
                ..good.clone()
            }),
            "frozen_frames",
            "% (",
        ),
        (
            "a truncated file",
            full[..full.len() * 6 / 10].to_vec(),
            "decode",
            "error(s)",
        ),
        (
            "a clip 20 % too short",
            clip_bytes(&ClipSpec::moving(4.0, 1280, 720, 24, "short")),
            "duration",
            "4.00 s",
        ),
        (
            "a clip with no video stream",
            clip_bytes(&ClipSpec {
                picture: Picture::None,
                ..good.clone()
            }),
            "resolution",
            "no video stream",
        ),
    ];
    for (n, (what, bytes, failing, value)) in cases.into_iter().enumerate() {
        runway.serve_next(bytes);
        let (id, status, error) = rig.run(job()).await?;
        assert_eq!(status, "succeeded", "{what}: {error:?}");
        let t = tries(&rig, id).await?;
        assert_eq!(t.len(), 2, "{what}: {t:?}");
        let (backend, state, failure, qa) = &t[0];
        assert_eq!(
            (backend.as_str(), state.as_str(), failure.as_deref()),
            ("runway", "failed", Some("qa_rejected")),
            "{what}"
        );
        let qa = qa
            .as_ref()
            .expect("the rejected clip's checks are recorded");
        assert_eq!(qa["verdict"], "rerender", "{what}: {qa}");
        assert_eq!(qa["checks"].as_array().map(Vec::len), Some(13), "{what}");
        let c = check(qa, failing);
        assert_eq!(c["pass"], false, "{what}: {c}");
        assert_eq!(c["verdict"], "rerender", "{what}: {c}");
        assert!(
            c["value"].as_str().is_some_and(|v| v.contains(value)),
            "{what}: {c}"
        );
        // The rejected try was paid for (Runway billed it) and is in the job's cost.
        let paid: i64 = sqlx::query_scalar(
            "select cost_micros from render_task where job_id = $1 and backend = 'runway'",
        )
        .bind(id)
        .fetch_one(&rig.pool)
        .await?;
        assert!(paid > 0, "{what}");
        let (backend, state, _, qa) = &t[1];
        assert_eq!((backend.as_str(), state.as_str()), ("veo3", "downloaded"));
        assert_eq!(qa.as_ref().expect("checked")["verdict"], "pass", "{what}");
        // One POST per try: the rejected clip was not asked for again.
        assert_eq!(runway.count("POST", "/v1/image_to_video").await, n + 1);
        assert_eq!(veo.count("POST", ":predictLongRunning").await, n + 1);
    }
    Ok(())
}

#[tokio::test]
async fn a_rejected_clip_with_no_backend_left_fails_the_job_naming_the_checks() -> anyhow::Result<()>
{
    let runway = Stub::start(Provider::Runway).await;
    let rig = Rig::new(settings_for(Provider::Runway, &runway.uri())).await?;
    runway.serve_next(clip_bytes(&ClipSpec {
        picture: Picture::Black,
        ..ClipSpec::moving(5.0, 1280, 720, 24, "black")
    }));
    let (_, status, error) = rig.run(job()).await?;
    assert_eq!(status, "failed");
    let error = error.unwrap_or_default();
    assert!(
        error.contains("technical QA rejected its clip") && error.contains("black_frames"),
        "{error}"
    );
    assert_eq!(runway.count("POST", "/v1/image_to_video").await, 1);
    Ok(())
}

#[tokio::test]
async fn repairable_clips_are_used_and_the_result_says_what_was_done() -> anyhow::Result<()> {
    let runway = Stub::start(Provider::Runway).await;
    let veo = Stub::start(Provider::Veo).await;
    let rig = Rig::new(runway_then_veo(&runway, &veo)).await?;
    let cases = [
        (
            "a 480p clip",
            ClipSpec::moving(5.0, 854, 480, 24, "480p"),
            "resolution",
            "upscaled from 854x480 to 1280x720",
        ),
        (
            "a 15 fps clip",
            ClipSpec::moving(5.0, 1280, 720, 15, "15 fps"),
            "frame_rate",
            "frame rate conformed from 15.00 fps to 24 fps",
        ),
    ];
    for (what, spec, failing, repair) in cases {
        runway.serve_next(clip_bytes(&spec));
        let (id, status, error) = rig.run(job()).await?;
        assert_eq!(status, "succeeded", "{what}: {error:?}");
        let t = tries(&rig, id).await?;
        assert_eq!(t.len(), 1, "{what}: used, not rendered again: {t:?}");
        let qa = t[0].3.as_ref().expect("checked");
        assert_eq!(qa["verdict"], "repair", "{what}: {qa}");
        assert_eq!(check(qa, failing)["verdict"], "repair", "{what}");
        let fin = finalize_output(&rig, id).await?;
        assert_eq!(fin["assembly"]["path"], "reencode", "{what}");
        let repairs: Vec<&str> = fin["assembly"]["repairs"]
            .as_array()
            .map(|r| r.iter().filter_map(|x| x["what"].as_str()).collect())
            .unwrap_or_default();
        assert!(repairs.contains(&repair), "{what}: {repairs:?}");
        // The video itself passes every check.
        assert_eq!(fin["qa"]["verdict"], "pass", "{what}: {}", fin["qa"]);
        assert_eq!(fin["video"]["height"], 720, "{what}");
        assert_eq!(fin["video"]["fps"], 24.0, "{what}");
    }
    assert_eq!(veo.count("POST", ":predictLongRunning").await, 0);
    Ok(())
}

#[tokio::test]
async fn a_veo_clip_rendered_at_6_s_for_a_5_s_shot_is_trimmed_to_the_plan() -> anyhow::Result<()> {
    let veo = Stub::start(Provider::Veo).await;
    let rig = Rig::new(settings_for(Provider::Veo, &veo.uri())).await?;
    let (id, status, error) = rig.run(job()).await?;
    assert_eq!(status, "succeeded", "{error:?}");
    let body: Value = veo
        .server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .find(|r| r.url.path().ends_with(":predictLongRunning"))
        .map(|r| serde_json::from_slice(&r.body))
        .transpose()?
        .expect("a submit");
    assert_eq!(body["parameters"]["durationSeconds"], 6);
    let fin = finalize_output(&rig, id).await?;
    let got = fin["video"]["duration_s"].as_f64().expect("a length");
    assert!((got - 5.0).abs() < 0.01, "the final video lasts {got} s");
    let repairs = fin["assembly"]["repairs"].to_string();
    assert!(
        repairs.contains("trimmed from 6.00 s to 5.00 s"),
        "{repairs}"
    );
    // Measured again from the file itself, not from what the worker wrote.
    let uri = fin["result_uri"].as_str().expect("a result");
    assert!(uri.ends_with("/final.mp4"));
    let media = aiprod_media::Media::new(&Default::default());
    let probe = media
        .probe(std::path::Path::new(uri.trim_start_matches("file://")))
        .await?;
    let d = probe.length_s().expect("a length");
    assert!((d - 5.0).abs() < 0.01, "ffprobe says {d} s");
    Ok(())
}
