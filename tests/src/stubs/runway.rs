//! The Runway stub: `POST /v1/image_to_video` starts a task, `GET /v1/tasks/{id}` polls it
//! (`THROTTLED`, `RUNNING`, `SUCCEEDED` with output URLs, or `FAILED` with a failure code) and
//! `DELETE` cancels it; every call must carry `X-Runway-Version`.

use serde_json::{Value, json};
use wiremock::{Request, ResponseTemplate};

use aiprod_media::ClipSpec;

use super::{Responder, Step, canned, http};

impl Responder {
    pub(super) fn runway(&self, req: &Request, path: &str) -> ResponseTemplate {
        if req.headers.get("x-runway-version").is_none() {
            return http(
                400,
                None,
                r#"{"error":"X-Runway-Version header is required"}"#,
            );
        }
        let method = req.method.as_str();
        if method == "POST" && path == "/v1/image_to_video" {
            if let Some(t) = self.lock().submits.pop_front().as_ref().and_then(canned) {
                return t;
            }
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            if body["model"] != "gen4_turbo" || !body["promptImage"].is_string() {
                return http(
                    400,
                    None,
                    r#"{"error":"model and promptImage are required"}"#,
                );
            }
            let secs = body["duration"].as_u64().unwrap_or(5);
            let clip = ClipSpec::moving(
                secs as f64,
                1280,
                720,
                24,
                body["promptText"].as_str().unwrap_or("runway"),
            );
            let id = self.new_render(clip, body["seed"].as_u64().unwrap_or(0));
            return ResponseTemplate::new(200).set_body_json(json!({"id": id}));
        }
        let Some(id) = path.strip_prefix("/v1/tasks/") else {
            return http(404, None, "{}");
        };
        if !self.lock().renders.contains_key(id) {
            return http(404, None, r#"{"error":"Task not found"}"#);
        }
        if method == "DELETE" {
            self.lock().canceled.push(id.to_owned());
            return ResponseTemplate::new(204);
        }
        let created = "2026-11-22T00:00:00.000Z";
        match self.next_poll() {
            Some(step @ (Step::Http(..) | Step::Slow(_) | Step::Late(_))) => {
                canned(&step).unwrap_or_else(|| http(500, None, ""))
            }
            Some(Step::Status("running")) => ResponseTemplate::new(200).set_body_json(
                json!({"id": id, "createdAt": created, "status": "RUNNING", "progress": 0.4}),
            ),
            Some(Step::Status(s)) => ResponseTemplate::new(200)
                .set_body_json(json!({"id": id, "createdAt": created, "status": s})),
            Some(Step::Fail(code)) => {
                let code = if code == "internal" {
                    "INTERNAL.BAD_OUTPUT.CODE01"
                } else {
                    code
                };
                ResponseTemplate::new(200).set_body_json(json!({
                    "id": id, "createdAt": created, "status": "FAILED",
                    "failure": "The task failed.", "failureCode": code,
                }))
            }
            None => ResponseTemplate::new(200).set_body_json(json!({
                "id": id, "createdAt": created, "status": "SUCCEEDED",
                "output": [format!("{}/files/{id}.mp4", self.base)],
            })),
        }
    }
}
