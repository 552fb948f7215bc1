//! Gemini on Vertex AI: `:generateContent` with a response schema, so the model writes JSON we
//! parse (ARCHITECTURE.md, "The providers"). The answer's text is joined, parsed, and counted
//! in tokens; a blocked prompt, a safety stop and a truncated answer are told apart, because the
//! worker retries none of them the same way.
//!
//! The call goes through Google's `PredictionService` client (`crate::vertex::Predictions`). The
//! request is written in Vertex's documented REST JSON and read into the client's typed request;
//! `Gemini::body` is that request as the client puts it on the wire (enums as numbers, 64-bit
//! integers as strings, as `$alt=json;enum-encoding=int` has them), so the cache key is what is
//! sent.

use std::time::Duration;

use aiprod_platform::config::VertexSettings;
use base64::Engine as _;
use google_cloud_aiplatform_v1::model::candidate::FinishReason;
use google_cloud_aiplatform_v1::model::generate_content_response::prompt_feedback::BlockedReason;
use google_cloud_aiplatform_v1::model::{GenerateContentRequest, GenerateContentResponse};
use google_cloud_gax::options::RequestOptionsBuilder as _;
use serde_json::{Value, json};

use super::call;
use super::{GenerateRequest, Generated, ModelError, Part};
use crate::vertex::{Predictions, Vertex};

/// Finish reasons that mean the answer was stopped for safety or policy.
const BLOCKING: [&str; 6] = [
    "SAFETY",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "RECITATION",
    "SPII",
    "IMAGE_SAFETY",
];

/// The Gemini client for one model.
pub struct Gemini {
    predictions: Predictions,
    model: String,
    /// `projects/…/publishers/google/models/{model}`: where `:generateContent` goes.
    name: String,
}

impl Gemini {
    /// A client for `model` in the configured project; each call gives up after `timeout`.
    pub fn new(vertex: &VertexSettings, model: &str, timeout: Duration) -> anyhow::Result<Gemini> {
        let vertex = Vertex::new(vertex)?;
        Ok(Gemini {
            name: vertex.model_name(model),
            predictions: Predictions::new(vertex, timeout),
            model: model.to_owned(),
        })
    }

    /// The model id.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The exact JSON body sent for `req` (also what a cache key is made of). A request the
    /// client cannot take (a schema that is not Vertex's) is never sent: its body is then the
    /// REST JSON as written, and `generate` refuses it.
    pub fn body(&self, req: &GenerateRequest) -> Value {
        match typed(req) {
            Ok(request) => wire(&request).unwrap_or_else(|_| rest(req)),
            Err(_) => rest(req),
        }
    }

    /// Asks for JSON to `req.schema`, and parses what the model wrote.
    pub async fn generate(&self, req: &GenerateRequest) -> Result<Generated, ModelError> {
        let mut request = typed(req)
            .map_err(|e| ModelError::Rejected(format!("gemini: cannot build the request: {e}")))?;
        let client = self
            .predictions
            .client()
            .await
            .map_err(|m| ModelError::Unauthorized(format!("gemini: {m}")))?;
        request.model.clone_from(&self.name);
        let answer = client
            .generate_content()
            .with_request(request)
            .with_user_agent(call::USER_AGENT)
            .send()
            .await
            .map_err(|e| call::google("gemini", &e))?;
        generated(answer)
    }
}

/// `req` in Vertex's documented REST JSON.
fn rest(req: &GenerateRequest) -> Value {
    let parts: Vec<Value> = req
        .parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => json!({"text": t}),
            Part::Image { mime, data } => json!({"inlineData": {
                "mimeType": mime,
                "data": base64::engine::general_purpose::STANDARD.encode(data),
            }}),
        })
        .collect();
    json!({
        "contents": [{"role": "user", "parts": parts}],
        "systemInstruction": {"parts": [{"text": req.system}]},
        "generationConfig": {
            "responseMimeType": "application/json",
            "responseSchema": req.schema,
            "temperature": req.temperature,
            "maxOutputTokens": req.max_output_tokens,
        },
    })
}

/// `req` as the client's typed request (without the model, which the call sets).
fn typed(req: &GenerateRequest) -> Result<GenerateContentRequest, serde_json::Error> {
    serde_json::from_value(rest(req))
}

/// The JSON the client sends for `request`: it serializes the request with serde_json, so
/// this is those bytes read back (the model goes in the path, not the body).
fn wire(request: &GenerateContentRequest) -> Result<Value, serde_json::Error> {
    serde_json::from_slice(&serde_json::to_vec(request)?)
}

/// A proto enum's name, or its number when this client does not know it; "" when unset.
fn reason(name: Option<&str>, value: Option<i32>, unspecified: bool) -> String {
    if unspecified {
        return String::new();
    }
    name.map(str::to_owned)
        .or_else(|| value.map(|v| v.to_string()))
        .unwrap_or_default()
}

/// What the model wrote, or why there is nothing to use.
fn generated(answer: GenerateContentResponse) -> Result<Generated, ModelError> {
    if let Some(f) = &answer.prompt_feedback {
        let blocked = &f.block_reason;
        let why = reason(
            blocked.name(),
            blocked.value(),
            *blocked == BlockedReason::Unspecified,
        );
        if !why.is_empty() {
            return Err(ModelError::Blocked(
                format!("gemini: prompt blocked ({why}) {}", f.block_reason_message)
                    .trim()
                    .to_owned(),
            ));
        }
    }
    let Some(candidate) = answer.candidates.into_iter().next() else {
        return Err(ModelError::Malformed("gemini: no candidate".into()));
    };
    let f = &candidate.finish_reason;
    let finish = reason(f.name(), f.value(), *f == FinishReason::Unspecified);
    if BLOCKING.contains(&finish.as_str()) {
        return Err(ModelError::Blocked(format!(
            "gemini: answer stopped ({finish})"
        )));
    }
    if finish == "MAX_TOKENS" {
        return Err(ModelError::Malformed(
            "gemini: answer cut short at maxOutputTokens (MAX_TOKENS)".into(),
        ));
    }
    let text: String = candidate
        .content
        .map(|c| c.parts.iter().filter_map(|p| p.text().cloned()).collect())
        .unwrap_or_default();
    let value = parse_json(&text).ok_or_else(|| {
        ModelError::Malformed(format!(
            "gemini: the answer is not JSON ({} characters, finishReason {})",
            text.chars().count(),
            if finish.is_empty() { "none" } else { &finish }
        ))
    })?;
    let (prompt_tokens, output_tokens) = answer.usage_metadata.map_or((0, 0), |u| {
        (
            u64::try_from(u.prompt_token_count).unwrap_or(0),
            u64::try_from(u.candidates_token_count).unwrap_or(0),
        )
    });
    Ok(Generated {
        value,
        prompt_tokens,
        output_tokens,
        model_version: Some(answer.model_version).filter(|v| !v.is_empty()),
    })
}

/// The JSON in `text`; a Markdown code fence around it is tolerated (older models add one
/// even in JSON mode).
fn parse_json(text: &str) -> Option<Value> {
    let t = text.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|rest| rest.trim_end().strip_suffix("```"))
        .unwrap_or(t);
    serde_json::from_str(t.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read as the client reads an answer: Vertex's REST JSON, enums by name or number.
    fn answer(v: Value) -> Result<Generated, ModelError> {
        generated(serde_json::from_value(v).expect("an answer"))
    }

    #[test]
    fn answers_are_parsed_or_classified() {
        let ok = answer(json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": "{\"a\":"}, {"text": "1}"}]},
                            "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 3},
            "modelVersion": "gemini-2.5-flash-001",
        }))
        .expect("parsed");
        assert_eq!(ok.value, json!({"a": 1}));
        assert_eq!((ok.prompt_tokens, ok.output_tokens), (12, 3));
        assert!(matches!(
            answer(json!({"promptFeedback": {"blockReason": "SAFETY"}})),
            Err(ModelError::Blocked(_))
        ));
        assert!(matches!(
            answer(json!({"candidates": [{"finishReason": "RECITATION"}]})),
            Err(ModelError::Blocked(_))
        ));
        assert!(matches!(
            answer(json!({"candidates": []})),
            Err(ModelError::Malformed(_))
        ));
        assert_eq!(
            parse_json("```json\n{\"b\": 2}\n```"),
            Some(json!({"b": 2}))
        );
    }

    #[test]
    fn enums_by_number_are_read_as_by_name() {
        // What Vertex answers under `$alt=json;enum-encoding=int`: MAX_TOKENS is 2, SAFETY 3.
        assert!(matches!(
            answer(json!({"candidates": [{"finishReason": 2}]})),
            Err(ModelError::Malformed(m)) if m.contains("MAX_TOKENS")
        ));
        assert!(matches!(
            answer(json!({"candidates": [{"finishReason": 3}]})),
            Err(ModelError::Blocked(m)) if m.contains("SAFETY")
        ));
        assert!(matches!(
            answer(json!({"promptFeedback": {"blockReason": 1}})),
            Err(ModelError::Blocked(m)) if m.contains("SAFETY")
        ));
    }

    #[test]
    fn the_body_is_the_typed_request_on_the_wire() {
        let req = GenerateRequest {
            system: "Plan.".into(),
            parts: vec![Part::Text("A fox.".into())],
            schema: json!({"type": "OBJECT", "properties": {
                "shots": {"type": "ARRAY", "minItems": 1, "items": {"type": "STRING"}}}}),
            temperature: 0.2,
            max_output_tokens: 64,
        };
        let request = typed(&req).expect("a typed request");
        let body = wire(&request).expect("its JSON");
        let schema = &body["generationConfig"]["responseSchema"];
        // Enums as numbers, int64 as strings, f32 as written: what the client sends.
        assert_eq!(schema["type"], 6);
        assert_eq!(schema["properties"]["shots"]["minItems"], "1");
        assert_eq!(body["generationConfig"]["temperature"], 0.2);
        assert_eq!(body["contents"][0]["parts"][0]["text"], "A fox.");
        assert!(body.get("model").is_none(), "{body}");
        // Read back, it is the same request: the cache key names one request only.
        let again: GenerateContentRequest = serde_json::from_value(body).expect("read back");
        assert_eq!(again, request);
    }
}
