//! Planning with Gemini through the worker, over a real database, against the Vertex stub: the
//! stub's shots are the shots rendered (each prompt asserted at the video provider's stub); a
//! plan that breaks the rules is repaired once, then rejected; with Gemini down the rules
//! planner takes over and the job says so; every Gemini call is a paid row settled in the
//! ledger.

use aiprod_domain::JobId;
use aiprod_platform::Settings;
use aiprod_platform::config::{KeyframeKind, PlannerKind};
use aiprod_tests::stubs::{GeminiStep, Provider, Stub};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::protocol::Rig;
use crate::settings_for;

/// Settings with Gemini planning on the Vertex stub at `vertex` and Runway at `runway`.
pub(crate) fn gemini_settings(vertex: &Stub, runway: &Stub) -> Settings {
    let mut s = settings_for(Provider::Runway, &runway.uri());
    s.vertex.vertex_base_url = Some(vertex.uri());
    s.vertex.vertex_project = Some("proj".into());
    s.vertex.vertex_access_token = Some(SecretString::from("ya29.test"));
    s.models.planner = PlannerKind::Gemini;
    s
}

/// Which of our calls a request body is: by the properties its response schema asks for.
pub(crate) fn asks_for(body: &Value, key: &str) -> bool {
    body["generationConfig"]["responseSchema"]["properties"]
        .get(key)
        .is_some()
}

const SHOTS: [&str; 3] = [
    "A red fox trots across a snowy meadow at dawn",
    "The fox leaps over a frozen stream, ice glinting",
    "The fox curls up beneath a pine as snow falls",
];

fn brief() -> Value {
    json!({
        "scenes": ["A fox crosses a meadow.", "It leaps a stream.", "It rests under a pine."],
        "style": "35mm film, soft winter light",
        "consistency": "the same red fox with a white-tipped tail",
        "negative_prompt": "text, watermark",
    })
}

fn shots(durations: [i64; 3]) -> Value {
    json!({"shots": SHOTS.iter().zip(durations).enumerate().map(|(i, (p, d))| json!({
        "scene": i, "prompt": p, "camera": "tracking shot", "motion": "snow drifting",
        "duration_s": d,
    })).collect::<Vec<_>>()})
}

/// The stage output `stage` of job `id`.
pub(crate) async fn output(rig: &Rig, id: JobId, stage: &str) -> anyhow::Result<Value> {
    Ok(sqlx::query_scalar(
        "select output from job_stage where job_id = $1 and stage = $2::text::stage_name",
    )
    .bind(id)
    .bind(stage)
    .fetch_one(&rig.pool)
    .await?)
}

/// `(step, state, cost)` of every model call of a job.
pub(crate) async fn calls(rig: &Rig, id: JobId) -> anyhow::Result<Vec<(String, String, i64)>> {
    Ok(sqlx::query_as(
        "select step, state::text, coalesce(cost_micros, -1) from model_call
          where job_id = $1 order by created_at, step",
    )
    .bind(id)
    .fetch_all(&rig.pool)
    .await?)
}

#[tokio::test]
async fn three_sentences_become_the_stubs_three_shots_and_each_prompt_reaches_the_backend()
-> anyhow::Result<()> {
    let vertex = Stub::start(Provider::Veo).await;
    let runway = Stub::start(Provider::Runway).await;
    vertex.on_generate(|body| {
        if asks_for(body, "shots") {
            shots([3, 3, 3])
        } else if asks_for(body, "keyframes") {
            json!({"keyframes": (0..3).map(|i| json!({"shot": i,
                "prompt": format!("KEYFRAME {i}: a red fox, still, 35mm")})).collect::<Vec<_>>()})
        } else {
            brief()
        }
    });
    let mut settings = gemini_settings(&vertex, &runway);
    settings.models.keyframes = KeyframeKind::Imagen;
    let rig = Rig::new(settings).await?;
    let (id, status, error) = rig
        .run(
            json!({"prompt": "A fox crosses a meadow. It leaps a stream. It rests under a pine.",
                    "duration_s": 9, "backend": "runway", "quality_min": 0}),
        )
        .await?;
    assert_eq!(status, "succeeded", "{error:?}");

    let sent: Vec<String> = runway
        .bodies("/v1/image_to_video")
        .await
        .into_iter()
        .map(|(_, b)| b["promptText"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
    for shot in SHOTS {
        assert!(
            sent.iter().any(|p| p.starts_with(shot)),
            "{shot:?} never reached Runway: {sent:?}"
        );
    }
    let creative = output(&rig, id, "creative").await?;
    assert_eq!(creative["planner"], "gemini");
    assert_eq!(creative["shots"].as_array().map(Vec::len), Some(3));

    // Gemini wrote each keyframe's prompt, a still's description, and Imagen drew each one,
    // at its price, once.
    let visual = output(&rig, id, "visual").await?;
    assert_eq!(visual["prompts_by"], "gemini");
    let mut drawn: Vec<String> = vertex
        .bodies(":predict")
        .await
        .into_iter()
        .map(|(_, b)| {
            b["instances"][0]["prompt"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    drawn.sort();
    let expected: Vec<String> = (0..3)
        .map(|i| format!("KEYFRAME {i}: a red fox, still, 35mm"))
        .collect();
    assert_eq!(drawn, expected);
    let rows = calls(&rig, id).await?;
    let keyframes: Vec<i64> = rows
        .iter()
        .filter(|r| r.0.starts_with("keyframe"))
        .map(|r| r.2)
        .collect();
    assert_eq!(keyframes, [20_000; 3], "three Imagen images at $0.02");
    // The three planning calls were paid rows, settled in the ledger with their tokens' cost.
    let plans: Vec<_> = rows
        .iter()
        .filter(|r| ["analysis", "creative", "visual"].contains(&r.0.as_str()))
        .collect();
    assert_eq!(plans.len(), 3, "{rows:?}");
    assert!(plans.iter().all(|r| r.1 == "done" && r.2 > 0), "{rows:?}");
    let settled: i64 = sqlx::query_scalar(
        "select coalesce(sum(spent_delta_micros), 0)::bigint from budget_entry
          where job_id = $1 and model_call_id is not null",
    )
    .bind(id)
    .fetch_one(&rig.pool)
    .await?;
    let paid: i64 = rows.iter().map(|r| r.2.max(0)).sum();
    assert_eq!(settled, paid);
    // And the day's books balance with renders and model calls both.
    let day: chrono::NaiveDate = sqlx::query_scalar("select budget_day from job where id = $1")
        .bind(id)
        .fetch_one(&rig.pool)
        .await?;
    let audit = aiprod_store::audit_budget_day(&rig.pool, day)
        .await?
        .expect("the day is open");
    assert!(audit.balanced, "{audit:?}");
    assert_eq!(audit.model_cost_micros, paid);
    // The analysis call carried the brief; the creative call the rules of the length.
    let asked = vertex.bodies(":generateContent").await;
    let creative_ask = asked
        .iter()
        .find(|(_, b)| asks_for(b, "shots"))
        .expect("a creative call");
    assert!(creative_ask.0.as_deref() == Some("Bearer ya29.test"));
    assert!(
        creative_ask.1.to_string().contains("exactly 9 s"),
        "{}",
        creative_ask.1
    );
    Ok(())
}

#[tokio::test]
async fn a_plan_that_breaks_the_rules_is_repaired_once() -> anyhow::Result<()> {
    let vertex = Stub::start(Provider::Veo).await;
    let runway = Stub::start(Provider::Runway).await;
    // Lengths adding up to 10 for a 9 s video, then a mended answer.
    vertex.script_gemini([
        GeminiStep::Json(brief()),
        GeminiStep::Json(shots([4, 3, 3])),
        GeminiStep::Json(shots([3, 3, 3])),
    ]);
    let rig = Rig::new(gemini_settings(&vertex, &runway)).await?;
    let (id, status, error) = rig
        .run(
            json!({"prompt": "A fox. A stream. A pine.", "duration_s": 9,
                    "backend": "runway", "quality_min": 0}),
        )
        .await?;
    assert_eq!(status, "succeeded", "{error:?}");
    let steps: Vec<String> = calls(&rig, id).await?.into_iter().map(|r| r.0).collect();
    assert_eq!(steps[..3], ["analysis", "creative", "creative-repair"]);
    // The third call is the repair (Gemini then wrote no keyframe prompts: the rules did).
    let repair = vertex.bodies(":generateContent").await.swap_remove(2).1;
    assert!(asks_for(&repair, "shots"));
    assert!(
        repair.to_string().contains("add up to 10 s"),
        "the repair must say what broke: {repair}"
    );
    assert_eq!(output(&rig, id, "creative").await?["planner"], "gemini");
    Ok(())
}

#[tokio::test]
async fn a_plan_broken_twice_is_rejected_with_the_rules_it_broke() -> anyhow::Result<()> {
    let vertex = Stub::start(Provider::Veo).await;
    let runway = Stub::start(Provider::Runway).await;
    vertex.script_gemini([
        GeminiStep::Json(brief()),
        GeminiStep::Json(shots([4, 3, 3])),
        GeminiStep::Text("{\"shots\": [".into()),
    ]);
    let rig = Rig::new(gemini_settings(&vertex, &runway)).await?;
    let (_, status, error) = rig
        .run(
            json!({"prompt": "A fox. A stream. A pine.", "duration_s": 9,
                    "backend": "runway", "quality_min": 0}),
        )
        .await?;
    assert_eq!(status, "failed");
    let error = error.unwrap_or_default();
    assert!(error.contains("creative"), "{error}");
    assert!(error.contains("broke its rules twice"), "{error}");
    assert!(error.contains("not JSON"), "{error}");
    assert_eq!(runway.count("POST", "/v1/image_to_video").await, 0);
    Ok(())
}

#[tokio::test]
async fn with_gemini_down_the_rules_planner_takes_over_and_the_job_says_so() -> anyhow::Result<()> {
    let vertex = Stub::start(Provider::Veo).await;
    let runway = Stub::start(Provider::Runway).await;
    // No answer set: every generateContent is a 500.
    let rig = Rig::new(gemini_settings(&vertex, &runway)).await?;
    let (id, status, error) = rig
        .run(
            json!({"prompt": "A fox. A stream.", "duration_s": 8, "backend": "runway",
                    "quality_min": 0}),
        )
        .await?;
    assert_eq!(status, "succeeded", "{error:?}");
    let creative = output(&rig, id, "creative").await?;
    assert_eq!(creative["planner"], "rules");
    let note = creative["note"].as_str().unwrap_or_default();
    assert!(note.contains("Gemini could not be used"), "{creative}");
    assert_eq!(output(&rig, id, "analysis").await?["planner"], "rules");
    // Asked twice (a 500 is tried once more), neither billed; creative did not ask again.
    let rows: Vec<_> = calls(&rig, id)
        .await?
        .into_iter()
        .filter(|r| !r.0.starts_with("keyframe"))
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r.0 == "analysis" && r.1 == "failed" && r.2 == 0),
        "{rows:?}"
    );
    // The job's first run skips reading a step's history only on the step's first ask: the
    // second ask read the first and numbered itself after it.
    let attempts: Vec<i32> = sqlx::query_scalar(
        "select attempt from model_call where job_id = $1 and step = 'analysis' order by attempt",
    )
    .bind(id)
    .fetch_all(&rig.pool)
    .await?;
    assert_eq!(attempts, [1, 2]);
    Ok(())
}
