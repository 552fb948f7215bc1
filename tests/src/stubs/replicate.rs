//! The Replicate stub: predictions are created, listed (how orphans are found, by their seed),
//! polled until `succeeded`, `failed` or `canceled`, and canceled, with Stable Video
//! Diffusion's input rules deciding each render's length. An official image model's
//! predictions (`/v1/models/{owner}/{name}/predictions`) are kept beside them, so the same list
//! finds them by seed; they succeed at once (or, on hold, after a poll) with a PNG's link.

use serde_json::{Value, json};
use wiremock::{Request, ResponseTemplate};

use aiprod_media::ClipSpec;

use super::{Responder, Step, canned, http};

impl Responder {
    fn prediction(&self, id: &str, status: &str, extra: Value) -> Value {
        let st = self.lock();
        let (_, seed, created) = st.renders.get(id).cloned().unwrap_or_default();
        let (model, version) = match st.image_models.get(id) {
            Some(m) => (m.clone(), Value::Null),
            None => (
                "stability-ai/stable-video-diffusion".to_owned(),
                json!("3f0457e4"),
            ),
        };
        let mut p = json!({
            "id": id, "model": model, "version": version,
            "status": status, "output": null, "error": null,
            "input": {"seed": seed},
            "created_at": created.to_rfc3339(),
            "urls": {
                "get": format!("{}/v1/predictions/{id}", self.base),
                "cancel": format!("{}/v1/predictions/{id}/cancel", self.base),
            },
        });
        if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        p
    }

    pub(super) fn replicate(&self, req: &Request, path: &str) -> ResponseTemplate {
        let method = req.method.as_str();
        if method == "POST" && path == "/v1/predictions" {
            if let Some(t) = self.lock().submits.pop_front().as_ref().and_then(canned) {
                return t;
            }
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            let input = &body["input"];
            if !body["version"].is_string() || !input["input_image"].is_string() {
                return http(
                    422,
                    None,
                    r#"{"detail":"version and input.input_image are required"}"#,
                );
            }
            let frames = if input["video_length"] == "14_frames_with_svd" {
                14
            } else {
                25
            };
            let fps = input["frames_per_second"].as_u64().unwrap_or(6).max(1);
            let clip = ClipSpec {
                frames: frames as u32,
                fps: fps as u32,
                ..ClipSpec::moving(0.0, 1024, 576, fps as u32, "stable video diffusion")
            };
            let id = self.new_render(clip, input["seed"].as_u64().unwrap_or(0));
            return ResponseTemplate::new(201).set_body_json(self.prediction(
                &id,
                "starting",
                json!({}),
            ));
        }
        if method == "POST"
            && let Some(model) = path
                .strip_prefix("/v1/models/")
                .and_then(|m| m.strip_suffix("/predictions"))
        {
            return self.create_image(req, model);
        }
        if method == "GET" && path == "/v1/predictions" {
            let ids: Vec<String> = {
                let st = self.lock();
                let mut v: Vec<_> = st.renders.iter().map(|(k, r)| (r.2, k.clone())).collect();
                v.sort();
                v.into_iter().rev().map(|(_, k)| k).collect()
            };
            let results: Vec<Value> = ids
                .iter()
                .map(|id| {
                    let mut p = self.prediction(id, "processing", json!({}));
                    p.as_object_mut().map(|o| o.remove("input"));
                    p
                })
                .collect();
            return ResponseTemplate::new(200)
                .set_body_json(json!({"next": null, "previous": null, "results": results}));
        }
        let Some(rest) = path.strip_prefix("/v1/predictions/") else {
            return http(404, None, r#"{"detail":"Not found."}"#);
        };
        let (id, cancel) = match rest.strip_suffix("/cancel") {
            Some(id) => (id, true),
            None => (rest, false),
        };
        if !self.lock().renders.contains_key(id) {
            return http(404, None, r#"{"detail":"Not found."}"#);
        }
        if cancel {
            self.lock().canceled.push(id.to_owned());
            return ResponseTemplate::new(200).set_body_json(self.prediction(
                id,
                "canceled",
                json!({}),
            ));
        }
        if self.lock().canceled.iter().any(|c| c == id) {
            return ResponseTemplate::new(200).set_body_json(self.prediction(
                id,
                "canceled",
                json!({}),
            ));
        }
        match self.next_poll() {
            Some(step @ (Step::Http(..) | Step::Slow(_) | Step::Late(_))) => canned(&step).unwrap_or_else(|| http(500, None, "")),
            Some(Step::Status("running")) => {
                ResponseTemplate::new(200).set_body_json(self.prediction(id, "processing", json!({})))
            }
            Some(Step::Status(s)) => ResponseTemplate::new(200).set_body_json(self.prediction(id, s, json!({}))),
            Some(Step::Fail(text)) => ResponseTemplate::new(200).set_body_json(self.prediction(
                id,
                "failed",
                json!({"error": if text == "internal" { "CUDA error: an illegal memory access was encountered" } else { text }}),
            )),
            None if self.lock().image_models.contains_key(id) => ResponseTemplate::new(200)
                .set_body_json(self.image_done(id)),
            None => self.succeeded(id),
        }
    }
}

impl Responder {
    /// A finished video prediction, with its hardware seconds written as the test set them:
    /// spliced in as text, since a JSON value would hold them as a float.
    fn succeeded(&self, id: &str) -> ResponseTemplate {
        const MARK: &str = "\"predict_time_text\"";
        let text = self
            .lock()
            .predict_time
            .clone()
            .unwrap_or_else(|| "41.2".to_owned());
        let body = self
            .prediction(
                id,
                "succeeded",
                json!({"output": format!("{}/files/{id}.mp4", self.base),
                       "metrics": {"predict_time": "predict_time_text"}}),
            )
            .to_string()
            .replace(MARK, &text);
        ResponseTemplate::new(200).set_body_raw(body, "application/json")
    }

    /// A finished image prediction: one PNG's link, as FLUX answers.
    fn image_done(&self, id: &str) -> Value {
        self.prediction(
            id,
            "succeeded",
            json!({"output": [format!("{}/files/{id}.png", self.base)],
                   "metrics": {"predict_time": 0.6}}),
        )
    }

    /// `POST /v1/models/{owner}/{name}/predictions`: an official model, run by name.
    fn create_image(&self, req: &Request, model: &str) -> ResponseTemplate {
        let step = self.lock().submits.pop_front();
        if let Some(t) = step.as_ref().and_then(canned) {
            return t;
        }
        let late = match step {
            Some(Step::Late(ms)) => std::time::Duration::from_millis(ms),
            _ => std::time::Duration::ZERO,
        };
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let input = &body["input"];
        if model.split('/').count() != 2 || !input["prompt"].is_string() {
            return http(422, None, r#"{"detail":"input.prompt is required"}"#);
        }
        let id = self.new_render(ClipSpec::default(), input["seed"].as_u64().unwrap_or(0));
        self.lock()
            .image_models
            .insert(id.clone(), model.to_owned());
        if self.hold.load(std::sync::atomic::Ordering::SeqCst) {
            return ResponseTemplate::new(201)
                .set_body_json(self.prediction(&id, "starting", json!({})))
                .set_delay(late);
        }
        ResponseTemplate::new(201)
            .set_body_json(self.image_done(&id))
            .set_delay(late)
    }
}
