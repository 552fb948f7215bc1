//! Semantic QA with Gemini vision through the worker: a shot the judge scores 4/10 goes to the
//! next backend within the budget and the ledger shows both tries; under `fail` the job fails
//! with the scores; with no judge the job is unscored, never given a prior.

use aiprod_platform::config::{OnSemanticFail, PlannerKind, SemanticQaKind};
use aiprod_tests::stubs::{GeminiStep, Provider, Stub};
use serde_json::{Value, json};

use crate::planning::{asks_for, gemini_settings, output};
use crate::protocol::Rig;
use crate::settings_for;

/// A render try: backend, state, failure class, cost, error.
type Try = (String, String, Option<String>, i64, Option<String>);

fn scores(v: f64) -> Value {
    json!({"visual_quality": v, "prompt_adherence": v, "technical_excellence": v, "overall": v,
           "reasoning": "stub"})
}

/// Judging on; the rules plan; Runway and Replicate at their stubs.
async fn judged(on_fail: OnSemanticFail) -> anyhow::Result<(Rig, Stub, Stub, Stub)> {
    let vertex = Stub::start(Provider::Veo).await;
    let runway = Stub::start(Provider::Runway).await;
    let replicate = Stub::start(Provider::Replicate).await;
    let mut s = gemini_settings(&vertex, &runway);
    let r = settings_for(Provider::Replicate, &replicate.uri());
    s.replicate = r.replicate;
    s.models.planner = PlannerKind::Rules;
    s.models.qa_semantic = SemanticQaKind::Gemini;
    s.models.qa_semantic_on_fail = on_fail;
    let rig = Rig::new(s).await?;
    Ok((rig, vertex, runway, replicate))
}

#[tokio::test]
async fn a_shot_scored_4_is_rendered_again_on_the_next_backend_and_the_ledger_shows_both()
-> anyhow::Result<()> {
    let (rig, vertex, runway, replicate) = judged(OnSemanticFail::Rerender).await?;
    vertex.script_gemini([GeminiStep::Json(scores(4.0)), GeminiStep::Json(scores(9.0))]);
    // Auto routing picks the cheapest, Replicate, with Runway next in the order.
    let (id, status, error) = rig
        .run(json!({"prompt": "A fox runs through snow.", "duration_s": 5, "quality_min": 0}))
        .await?;
    assert_eq!(status, "succeeded", "{error:?}");
    let tries: Vec<Try> = sqlx::query_as(
        "select backend::text, state::text, failure_class, cost_micros, error from render_task
          where job_id = $1 order by attempt",
    )
    .bind(id)
    .fetch_all(&rig.pool)
    .await?;
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert_eq!(
        (tries[0].0.as_str(), tries[0].1.as_str()),
        ("replicate", "failed")
    );
    assert_eq!(tries[0].2.as_deref(), Some("qa_rejected"));
    assert!(tries[0].3 > 0, "the rejected render was paid: {tries:?}");
    assert!(
        tries[0].4.as_deref().unwrap_or_default().contains("4.0/10"),
        "{tries:?}"
    );
    assert_eq!(
        (tries[1].0.as_str(), tries[1].1.as_str()),
        ("runway", "downloaded")
    );
    assert_eq!(replicate.count("POST", "/v1/predictions").await, 1);
    assert_eq!(runway.count("POST", "/v1/image_to_video").await, 1);
    // Both tries settled in the ledger; the job's cost is their sum plus the judge's calls.
    let settles: Vec<i64> = sqlx::query_scalar(
        "select spent_delta_micros from budget_entry
          where job_id = $1 and kind = 'settle' and render_task_id is not null order by id",
    )
    .bind(id)
    .fetch_all(&rig.pool)
    .await?;
    assert_eq!(settles, [tries[0].3, tries[1].3]);
    // The frames went to the judge as JPEGs beside the shot's prompt.
    let judged = vertex.bodies(":generateContent").await;
    assert_eq!(judged.len(), 2);
    let parts = &judged[0].1["contents"][0]["parts"];
    assert!(
        parts[0]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("A fox runs through snow")
    );
    assert_eq!(parts[1]["inlineData"]["mimeType"], "image/jpeg");
    assert!(asks_for(&judged[0].1, "prompt_adherence"));
    // The measured score, not a prior: 9/10.
    let q: Option<f64> = sqlx::query_scalar("select quality_score from job where id = $1")
        .bind(id)
        .fetch_one(&rig.pool)
        .await?;
    assert_eq!(q, Some(0.9));
    assert_eq!(output(&rig, id, "qa_semantic").await?["scored"], true);
    Ok(())
}

#[tokio::test]
async fn under_fail_a_low_score_fails_the_job_with_the_scores() -> anyhow::Result<()> {
    let (rig, vertex, _runway, replicate) = judged(OnSemanticFail::Fail).await?;
    vertex.script_gemini([GeminiStep::Json(scores(4.0))]);
    let (_, status, error) = rig
        .run(json!({"prompt": "A fox runs through snow.", "duration_s": 5, "quality_min": 0}))
        .await?;
    assert_eq!(status, "failed");
    let error = error.unwrap_or_default();
    assert!(
        error.contains("semantic QA") && error.contains("4.0/10"),
        "{error}"
    );
    assert_eq!(replicate.count("POST", "/v1/predictions").await, 1);
    Ok(())
}

#[tokio::test]
async fn under_accept_a_low_score_is_kept_and_flagged() -> anyhow::Result<()> {
    let (rig, vertex, _runway, _replicate) = judged(OnSemanticFail::Accept).await?;
    vertex.script_gemini([GeminiStep::Json(scores(5.0))]);
    let (id, status, error) = rig
        .run(json!({"prompt": "A fox runs through snow.", "duration_s": 5, "quality_min": 0}))
        .await?;
    assert_eq!(status, "succeeded", "{error:?}");
    let qa = output(&rig, id, "qa_semantic").await?;
    assert_eq!(qa["flagged"], json!([0]));
    assert_eq!(qa["score"], json!(0.5));
    Ok(())
}

#[tokio::test]
async fn with_no_judge_the_job_is_unscored_not_given_a_prior() -> anyhow::Result<()> {
    let runway = Stub::start(Provider::Runway).await;
    let rig = Rig::new(settings_for(Provider::Runway, &runway.uri())).await?;
    let (id, status, error) = rig
        .run(json!({"prompt": "A fox.", "duration_s": 5, "quality_min": 0.9}))
        .await?;
    assert_eq!(status, "succeeded", "{error:?}");
    let q: Option<f64> = sqlx::query_scalar("select quality_score from job where id = $1")
        .bind(id)
        .fetch_one(&rig.pool)
        .await?;
    assert_eq!(q, None);
    let qa = output(&rig, id, "qa_semantic").await?;
    assert_eq!(
        (qa["scored"].clone(), qa["scorer"].clone()),
        (json!(false), json!("off"))
    );
    Ok(())
}
