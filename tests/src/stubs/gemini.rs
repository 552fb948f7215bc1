//! Gemini on Vertex AI, inside the Vertex stub: `:generateContent` answers as ARCHITECTURE.md ("The
//! providers") describes it, with candidates, `usageMetadata` and `modelVersion`. A test queues
//! answers (`GeminiStep`) or sets an answerer for every request (`Stub::on_generate`); with
//! neither, the model fails with a 500, so a test never passes on an answer it did not choose.

use std::sync::Arc;

use serde_json::{Value, json};
use wiremock::{Request, ResponseTemplate};

use super::{Responder, Stub, http};

/// Answers a request body with the JSON the model writes.
pub type Generate = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

/// One canned Gemini answer.
#[derive(Clone, Debug)]
pub enum GeminiStep {
    /// The model writes this JSON (finishReason STOP).
    Json(Value),
    /// The model writes this text, e.g. JSON that does not parse.
    Text(String),
    /// The prompt is blocked: no candidates, `promptFeedback.blockReason` SAFETY.
    BlockedPrompt,
    /// A candidate that stopped for this reason (SAFETY, RECITATION, MAX_TOKENS with
    /// truncated JSON…).
    FinishReason(&'static str),
    /// A raw HTTP answer: status, `Retry-After` seconds, body.
    Http(u16, Option<u64>, &'static str),
}

impl Stub {
    /// Queues answers for the next `:generateContent` calls.
    pub fn script_gemini(&self, steps: impl IntoIterator<Item = GeminiStep>) {
        self.lock().gemini.extend(steps);
    }

    /// Answers every `:generateContent` call the queue does not: `f` gets the request body and
    /// returns the JSON the model writes.
    pub fn on_generate(&self, f: impl Fn(&Value) -> Value + Send + Sync + 'static) {
        self.lock().on_generate = Some(Arc::new(f));
    }
}

fn invalid(message: &str) -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(
        json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}),
    )
}

/// `/v1/projects/{P}/locations/{L}/publishers/google/models/{MODEL}`: the model, if the path
/// has that shape.
pub(super) fn model_of(path: &str) -> Option<&str> {
    let model_path = path.split(':').next()?;
    let s: Vec<&str> = model_path.trim_start_matches('/').split('/').collect();
    match s.as_slice() {
        [
            "v1",
            "projects",
            p,
            "locations",
            l,
            "publishers",
            "google",
            "models",
            m,
        ] if !p.is_empty() && !l.is_empty() && !m.is_empty() => Some(m),
        _ => None,
    }
}

/// Rough tokens: about four characters each.
fn tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

impl Responder {
    pub(super) fn gemini(&self, req: &Request, path: &str) -> ResponseTemplate {
        let Some(model) = model_of(path) else {
            return http(
                404,
                None,
                r#"{"error":{"code":404,"message":"Not found","status":"NOT_FOUND"}}"#,
            );
        };
        let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
            return invalid("Invalid JSON payload received.");
        };
        if !body["contents"][0]["parts"].is_array() {
            return invalid("contents[0].parts is required");
        }
        let config = &body["generationConfig"];
        if config["responseMimeType"] != "application/json" {
            return invalid("generationConfig.responseMimeType must be application/json");
        }
        if !config["responseSchema"].is_object() {
            return invalid("generationConfig.responseSchema must be an object");
        }
        let step = self.lock().gemini.pop_front();
        let answerer = self.lock().on_generate.clone();
        let prompt_tokens =
            tokens(&body["contents"].to_string()) + tokens(&body["systemInstruction"].to_string());
        let candidate = |text: &str, reason: &str| json!({"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": reason});
        let (candidates, feedback, out_text) = match step {
            Some(GeminiStep::Http(status, retry_after, body)) => {
                return http(status, retry_after, body);
            }
            Some(GeminiStep::Json(v)) => {
                let t = v.to_string();
                (vec![candidate(&t, "STOP")], None, t)
            }
            Some(GeminiStep::Text(t)) => (vec![candidate(&t, "STOP")], None, t),
            Some(GeminiStep::BlockedPrompt) => (
                Vec::new(),
                Some(json!({"blockReason": "SAFETY",
                            "blockReasonMessage": "The prompt was blocked due to safety."})),
                String::new(),
            ),
            Some(GeminiStep::FinishReason("MAX_TOKENS")) => {
                let t = r#"{"shots": [{"prompt": "A fox runs thro"#.to_owned();
                (vec![candidate(&t, "MAX_TOKENS")], None, t)
            }
            Some(GeminiStep::FinishReason(reason)) => (
                vec![json!({"finishReason": reason,
                            "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                                               "probability": "HIGH", "blocked": true}]})],
                None,
                String::new(),
            ),
            None => match answerer {
                Some(f) => {
                    let t = f(&body).to_string();
                    (vec![candidate(&t, "STOP")], None, t)
                }
                None => {
                    return http(
                        500,
                        None,
                        r#"{"error":{"code":500,"message":"Internal error encountered.","status":"INTERNAL"}}"#,
                    );
                }
            },
        };
        let output_tokens = if out_text.is_empty() {
            0
        } else {
            tokens(&out_text)
        };
        let mut answer = json!({
            "candidates": candidates,
            "usageMetadata": {"promptTokenCount": prompt_tokens,
                              "candidatesTokenCount": output_tokens,
                              "totalTokenCount": prompt_tokens + output_tokens},
            "modelVersion": format!("{model}-001"),
        });
        if let Some(f) = feedback {
            answer["promptFeedback"] = f;
        }
        ResponseTemplate::new(200).set_body_json(answer)
    }
}
