//! The model clients called directly against the stubs: Gemini and Imagen on the Vertex stub, an
//! image model on the Replicate stub, and the simulated image model with the real ffmpeg
//! (`images`). Each sends what ARCHITECTURE.md ("The providers") describes and sorts every answer
//! into the `ModelError` the worker acts on.

mod images;

use std::time::Duration;

use aiprod_backends::models::{Gemini, GenerateRequest, ImageRequest, ModelError, Part};
use aiprod_tests::stubs::{GeminiStep, Provider, Stub};
use serde_json::{Value, json};

use crate::settings_for;

const TIMEOUT: Duration = Duration::from_secs(5);
const GEMINI_PATH: &str = "/v1/projects/proj/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent";

fn gemini(stub: &Stub) -> Gemini {
    let s = settings_for(Provider::Veo, &stub.uri());
    Gemini::new(&s.vertex, "gemini-2.5-flash", TIMEOUT).expect("a Gemini client")
}

fn plan_request() -> GenerateRequest {
    GenerateRequest {
        system: "You plan short videos.".into(),
        parts: vec![
            Part::Text("A fox runs through snow.".into()),
            Part::Image {
                mime: "image/jpeg".into(),
                data: vec![1, 2, 3],
            },
        ],
        schema: json!({"type": "OBJECT", "properties": {"title": {"type": "STRING"}},
                       "required": ["title"]}),
        temperature: 0.2,
        max_output_tokens: 1024,
    }
}

pub(crate) fn keyframe(seed: u32) -> ImageRequest {
    ImageRequest {
        prompt: "A fox in snow, golden hour.".into(),
        negative_prompt: Some("text, watermark".into()),
        seed,
        width: 1280,
        height: 720,
    }
}

/// The PNG's size, once it decodes whole.
pub(crate) fn png_size(data: &[u8]) -> (u32, u32) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(data))
        .read_info()
        .expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("a buffer size")];
    let info = reader
        .next_frame(&mut buf)
        .expect("the whole image decodes");
    (info.width, info.height)
}

#[tokio::test]
async fn gemini_sends_the_documented_request_and_parses_a_structured_answer() {
    let stub = Stub::start(Provider::Veo).await;
    stub.on_generate(
        |body| json!({"title": "Fox", "asked": body["contents"][0]["parts"][0]["text"]}),
    );
    let g = gemini(&stub);
    let req = plan_request();
    let got = g.generate(&req).await.expect("an answer");
    assert_eq!(
        got.value,
        json!({"title": "Fox", "asked": "A fox runs through snow."})
    );
    assert!(got.prompt_tokens > 0 && got.output_tokens > 0, "{got:?}");
    assert_eq!(got.model_version.as_deref(), Some("gemini-2.5-flash-001"));
    assert_eq!(g.model(), "gemini-2.5-flash");

    let sent = stub.bodies(":generateContent").await;
    assert_eq!(sent.len(), 1);
    let (auth, body) = &sent[0];
    assert_eq!(auth.as_deref(), Some("Bearer ya29.test"));
    assert_eq!(body, &g.body(&req));
    assert_eq!(body["contents"][0]["role"], "user");
    assert_eq!(
        body["contents"][0]["parts"][1],
        json!({"inlineData": {"mimeType": "image/jpeg", "data": "AQID"}})
    );
    assert_eq!(
        body["systemInstruction"]["parts"][0]["text"],
        "You plan short videos."
    );
    let config = &body["generationConfig"];
    assert_eq!(config["responseMimeType"], "application/json");
    // Google's client sends proto enums as numbers (`$alt=json;enum-encoding=int`, which Vertex
    // reads as it reads the names): OBJECT is 6.
    assert_eq!(config["responseSchema"]["type"], 6);
    assert_eq!(config["maxOutputTokens"], 1024);
    assert_eq!(stub.count("POST", GEMINI_PATH).await, 1);
}

#[tokio::test]
async fn gemini_throttling_is_capacity_with_the_providers_retry_after() {
    let stub = Stub::start(Provider::Veo).await;
    stub.script_gemini([GeminiStep::Http(
        429,
        Some(17),
        r#"{"error":{"code":429,"message":"Resource exhausted. Please try again later.","status":"RESOURCE_EXHAUSTED"}}"#,
    )]);
    let e = gemini(&stub)
        .generate(&plan_request())
        .await
        .expect_err("throttled");
    let ModelError::Throttled {
        retry_after,
        message,
    } = &e
    else {
        panic!("{e:?}");
    };
    assert_eq!(*retry_after, Some(Duration::from_secs(17)));
    assert!(message.contains("RESOURCE_EXHAUSTED"), "{message}");
    assert!(!e.counts_against_health());
}

#[tokio::test]
async fn gemini_safety_blocks_are_told_from_unusable_answers() {
    let stub = Stub::start(Provider::Veo).await;
    stub.script_gemini([
        GeminiStep::BlockedPrompt,
        GeminiStep::FinishReason("SAFETY"),
        GeminiStep::Text("{\"title\": \"Fox\"".into()),
        GeminiStep::FinishReason("MAX_TOKENS"),
        GeminiStep::Json(json!({"title": "after all that"})),
    ]);
    let g = gemini(&stub);
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(g.generate(&plan_request()).await);
    }
    assert!(
        matches!(&seen[0], Err(ModelError::Blocked(m)) if m.contains("SAFETY")),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[1], Err(ModelError::Blocked(m)) if m.contains("SAFETY")),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[2], Err(ModelError::Malformed(_))),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[3], Err(ModelError::Malformed(m)) if m.contains("MAX_TOKENS")),
        "{seen:?}"
    );
    assert_eq!(
        seen[4].as_ref().map(|g| g.value.clone()).ok(),
        Some(json!({"title": "after all that"}))
    );
    for e in seen[..2].iter().filter_map(|r| r.as_ref().err()) {
        assert!(!e.counts_against_health(), "{e:?}");
    }
    for e in seen[2..4].iter().filter_map(|r| r.as_ref().err()) {
        assert!(e.counts_against_health(), "{e:?}");
    }
}

#[tokio::test]
async fn gemini_server_errors_are_transient_and_never_quote_the_url() {
    let stub = Stub::start(Provider::Veo).await;
    // No answerer: the stub's model fails with a 500.
    let e = gemini(&stub)
        .generate(&plan_request())
        .await
        .expect_err("a 500");
    assert!(
        matches!(&e, ModelError::Transient(m) if m.contains("500")),
        "{e:?}"
    );
    assert!(!e.to_string().contains(&stub.uri()), "{e}");
    assert!(!e.to_string().contains("ya29"), "{e}");
    assert!(e.counts_against_health());

    // A request the stub finds malformed is refused, not retried.
    stub.on_generate(|_| json!({}));
    let mut bad = plan_request();
    bad.schema = Value::Null;
    let e = gemini(&stub).generate(&bad).await.expect_err("a 400");
    assert!(
        matches!(&e, ModelError::Rejected(m) if m.contains("INVALID_ARGUMENT")),
        "{e:?}"
    );

    // A refused token is our credentials, and the model is unusable until they are fixed.
    let mut s = settings_for(Provider::Veo, &stub.uri());
    s.vertex.vertex_access_token = Some(secrecy::SecretString::from(""));
    let no_token = Gemini::new(&s.vertex, "gemini-2.5-flash", TIMEOUT).expect("a client");
    let e = no_token.generate(&plan_request()).await.expect_err("a 401");
    assert!(
        matches!(&e, ModelError::Unauthorized(m) if m.contains("UNAUTHENTICATED")),
        "{e:?}"
    );
}
