//! Gemini on Vertex AI: `:generateContent` with a response schema, so the model writes JSON we
//! parse (ARCHITECTURE.md, "The providers"). The answer's text is joined, parsed, and counted
//! in tokens; a blocked prompt, a safety stop and a truncated answer are told apart, because the
//! worker retries none of them the same way.

use std::time::Duration;

use aiprod_platform::config::VertexSettings;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::call::Call;
use super::{GenerateRequest, Generated, ModelError, Part};
use crate::vertex::Vertex;

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
    call: Call,
    vertex: Vertex,
    model: String,
    url: String,
}

impl Gemini {
    /// A client for `model` in the configured project; each call gives up after `timeout`.
    pub fn new(vertex: &VertexSettings, model: &str, timeout: Duration) -> anyhow::Result<Gemini> {
        let vertex = Vertex::new(vertex)?;
        Ok(Gemini {
            call: Call::new("gemini", timeout)?,
            url: format!("{}:generateContent", vertex.model_url(model)),
            vertex,
            model: model.to_owned(),
        })
    }

    /// The model id.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The exact JSON body sent for `req` (also what a cache key is made of).
    pub fn body(&self, req: &GenerateRequest) -> Value {
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

    /// Asks for JSON to `req.schema`, and parses what the model wrote.
    pub async fn generate(&self, req: &GenerateRequest) -> Result<Generated, ModelError> {
        let token = self.vertex.bearer().await.map_err(|e| {
            if e.transient {
                ModelError::Transient(format!("gemini: {}", e.message))
            } else {
                ModelError::Unauthorized(format!("gemini: {}", e.message))
            }
        })?;
        let request = self
            .call
            .http()
            .post(&self.url)
            .bearer_auth(token)
            .json(&self.body(req));
        let answer: Answer = self.call.json(request).await?;
        answer.generated()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    #[serde(default)]
    candidates: Vec<Candidate>,
    prompt_feedback: Option<PromptFeedback>,
    usage_metadata: Option<Usage>,
    model_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    content: Option<Content>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<TextPart>,
}

#[derive(Deserialize)]
struct TextPart {
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    block_reason: Option<String>,
    block_reason_message: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Usage {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
}

impl Answer {
    fn generated(self) -> Result<Generated, ModelError> {
        if let Some(reason) = self
            .prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.as_ref())
        {
            let more = self
                .prompt_feedback
                .as_ref()
                .and_then(|f| f.block_reason_message.as_deref())
                .unwrap_or("");
            return Err(ModelError::Blocked(
                format!("gemini: prompt blocked ({reason}) {more}")
                    .trim()
                    .to_owned(),
            ));
        }
        let Some(candidate) = self.candidates.into_iter().next() else {
            return Err(ModelError::Malformed("gemini: no candidate".into()));
        };
        let finish = candidate.finish_reason.unwrap_or_default();
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
            .map(|c| c.parts.into_iter().filter_map(|p| p.text).collect())
            .unwrap_or_default();
        let value = parse_json(&text).ok_or_else(|| {
            ModelError::Malformed(format!(
                "gemini: the answer is not JSON ({} characters, finishReason {})",
                text.chars().count(),
                if finish.is_empty() { "none" } else { &finish }
            ))
        })?;
        let usage = self.usage_metadata.unwrap_or_default();
        Ok(Generated {
            value,
            prompt_tokens: usage.prompt_token_count,
            output_tokens: usage.candidates_token_count,
            model_version: self.model_version,
        })
    }
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

    fn answer(v: Value) -> Result<Generated, ModelError> {
        serde_json::from_value::<Answer>(v)
            .expect("an answer")
            .generated()
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
}
