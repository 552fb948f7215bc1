//! The Veo 3 on Vertex AI stub: `:predictLongRunning` starts an operation (4, 6 or 8 s only) and
//! `:fetchPredictOperation` polls it until done, with the video inline, a safety-filtered empty
//! answer, or an operation error. Gemini's `:generateContent` and Imagen's `:predict`, on the
//! same Vertex paths, are handed to their own files.

use base64::Engine as _;
use serde_json::{Value, json};
use wiremock::{Request, ResponseTemplate};

use aiprod_media::ClipSpec;

use super::{Responder, Step, canned, http};

impl Responder {
    pub(super) fn veo(&self, req: &Request, path: &str) -> ResponseTemplate {
        if req.method.as_str() != "POST" || !path.starts_with("/v1/projects/") {
            return http(
                404,
                None,
                r#"{"error":{"code":404,"message":"Not found","status":"NOT_FOUND"}}"#,
            );
        }
        if path.ends_with(":generateContent") {
            return self.gemini(req, path);
        }
        if path.ends_with(":predict") {
            return self.imagen(req, path);
        }
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let model_path = path.split(':').next().unwrap_or("");
        if path.ends_with(":predictLongRunning") {
            if let Some(t) = self.lock().submits.pop_front().as_ref().and_then(canned) {
                return t;
            }
            let secs = body["parameters"]["durationSeconds"].as_u64().unwrap_or(0);
            if ![4, 6, 8].contains(&secs) || !body["instances"][0]["prompt"].is_string() {
                return http(
                    400,
                    None,
                    r#"{"error":{"code":400,"message":"durationSeconds must be 4, 6 or 8","status":"INVALID_ARGUMENT"}}"#,
                );
            }
            let clip = ClipSpec {
                audio: body["parameters"]["generateAudio"] == true,
                ..ClipSpec::moving(
                    secs as f64,
                    1280,
                    720,
                    24,
                    body["instances"][0]["prompt"].as_str().unwrap_or("veo"),
                )
            };
            let id = self.new_render(clip, body["parameters"]["seed"].as_u64().unwrap_or(0));
            return ResponseTemplate::new(200)
                .set_body_json(json!({"name": format!("{}/operations/{id}", model_path.trim_start_matches("/v1/"))}));
        }
        if !path.ends_with(":fetchPredictOperation") {
            return http(404, None, "{}");
        }
        let name = body["operationName"].as_str().unwrap_or("").to_owned();
        let id = name.rsplit('/').next().unwrap_or("").to_owned();
        let clip = match self.lock().renders.get(&id) {
            Some(r) => r.0.clone(),
            None => {
                return http(
                    404,
                    None,
                    r#"{"error":{"code":404,"message":"Operation not found","status":"NOT_FOUND"}}"#,
                );
            }
        };
        match self.next_poll() {
            Some(step @ (Step::Http(..) | Step::Slow(_) | Step::Late(_))) => {
                canned(&step).unwrap_or_else(|| http(500, None, ""))
            }
            Some(Step::Status(_)) => {
                ResponseTemplate::new(200).set_body_json(json!({"name": name, "done": false}))
            }
            Some(Step::Fail(msg)) => {
                if msg == "filtered" {
                    return ResponseTemplate::new(200).set_body_json(json!({
                        "name": name, "done": true,
                        "response": {"@type": "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse",
                                     "raiMediaFilteredCount": 1,
                                     "raiMediaFilteredReasons": ["The output was filtered by our safety policy."],
                                     "videos": []},
                    }));
                }
                let (code, message) = if msg == "internal" {
                    (13, "Internal error.")
                } else {
                    (3, msg)
                };
                ResponseTemplate::new(200).set_body_json(json!({
                    "name": name, "done": true, "error": {"code": code, "message": message},
                }))
            }
            None => {
                let bytes = self.output(&clip);
                ResponseTemplate::new(200).set_body_json(json!({
                    "name": name, "done": true,
                    "response": {"@type": "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse",
                                 "raiMediaFilteredCount": 0,
                                 "videos": [{"bytesBase64Encoded": base64::engine::general_purpose::STANDARD.encode(bytes),
                                             "mimeType": "video/mp4"}]},
                }))
            }
        }
    }
}
