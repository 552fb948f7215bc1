//! Local HTTP stand-ins for the paid providers, answering as `../shared/BACKENDS.md` documents
//! them: the same paths, headers, bodies and statuses. Each keeps the renders it accepted,
//! serves a real MP4 of the requested length as the output, and can be scripted: canned
//! answers for the next submits and polls, a hold that keeps renders running until released,
//! and a mode that fails every render.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiprod_backends::mp4;
use base64::Engine as _;
use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// One canned poll answer.
#[derive(Clone, Debug)]
pub enum Step {
    /// A status word (`THROTTLED`, `processing`…) with nothing else.
    Status(&'static str),
    /// A failure: Runway's failure code, Replicate's error text, or Vertex's error message.
    Fail(&'static str),
    /// A raw HTTP answer: status, `Retry-After` seconds, body.
    Http(u16, Option<u64>, &'static str),
    /// No answer for this many milliseconds (a client with a shorter timeout gives up).
    Slow(u64),
}

fn canned(step: &Step) -> Option<ResponseTemplate> {
    match step {
        Step::Http(s, ra, b) => Some(http(*s, *ra, b)),
        Step::Slow(ms) => Some(ResponseTemplate::new(503).set_delay(Duration::from_millis(*ms))),
        _ => None,
    }
}

#[derive(Default)]
struct State {
    /// Render id → (length in ms, seed, created).
    renders: HashMap<String, (u64, u64, chrono::DateTime<chrono::Utc>)>,
    submits: VecDeque<Step>,
    polls: VecDeque<Step>,
    canceled: Vec<String>,
    expire_next_download: bool,
}

/// A provider stub on its own port.
pub struct Stub {
    /// The server; its `received_requests` are the ground truth of what was sent.
    pub server: MockServer,
    state: Arc<Mutex<State>>,
    hold: Arc<AtomicBool>,
    fail_all: Arc<AtomicBool>,
}

/// Which provider a stub plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Runway's developer API.
    Runway,
    /// Vertex AI's Veo 3.
    Veo,
    /// Replicate.
    Replicate,
}

impl Stub {
    /// Starts a stub of `provider`.
    pub async fn start(provider: Provider) -> Stub {
        let server = MockServer::start().await;
        let stub = Stub {
            state: Arc::default(),
            hold: Arc::default(),
            fail_all: Arc::default(),
            server,
        };
        let responder = Responder {
            provider,
            base: stub.server.uri(),
            state: stub.state.clone(),
            hold: stub.hold.clone(),
            fail_all: stub.fail_all.clone(),
        };
        Mock::given(any())
            .respond_with(responder)
            .mount(&stub.server)
            .await;
        stub
    }

    /// The base URL to configure.
    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// Queues answers for the next submits.
    pub fn script_submits(&self, steps: impl IntoIterator<Item = Step>) {
        self.lock().submits.extend(steps);
    }

    /// Queues answers for the next polls.
    pub fn script_polls(&self, steps: impl IntoIterator<Item = Step>) {
        self.lock().polls.extend(steps);
    }

    /// Keeps every render running until `release`.
    pub fn hold(&self) {
        self.hold.store(true, Ordering::SeqCst);
    }

    /// Lets held renders finish.
    pub fn release(&self) {
        self.hold.store(false, Ordering::SeqCst);
    }

    /// Makes every render fail (Runway `INTERNAL.BAD_OUTPUT`, Replicate `failed`, a Vertex
    /// error), or succeed again.
    pub fn fail_all(&self, on: bool) {
        self.fail_all.store(on, Ordering::SeqCst);
    }

    /// The next output download answers 404, as an expired signed URL does.
    pub fn expire_next_download(&self) {
        self.lock().expire_next_download = true;
    }

    /// Renders canceled through the API.
    pub fn canceled(&self) -> Vec<String> {
        self.lock().canceled.clone()
    }

    /// How many requests matched `method` and a path containing `path`.
    pub async fn count(&self, method: &str, path: &str) -> usize {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.method.as_str() == method && r.url.path().contains(path))
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Responder {
    provider: Provider,
    base: String,
    state: Arc<Mutex<State>>,
    hold: Arc<AtomicBool>,
    fail_all: Arc<AtomicBool>,
}

fn http(status: u16, retry_after: Option<u64>, body: &str) -> ResponseTemplate {
    let mut t = ResponseTemplate::new(status).set_body_raw(body.to_owned(), "application/json");
    if let Some(s) = retry_after {
        t = t.insert_header("Retry-After", s.to_string().as_str());
    }
    t
}

impl Respond for Responder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let auth = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let path = req.url.path().to_owned();
        if path.starts_with("/files/") {
            return self.file(&path);
        }
        if !auth.starts_with("Bearer ") || auth.len() <= "Bearer ".len() {
            return http(401, None, r#"{"error":"unauthorized"}"#);
        }
        match self.provider {
            Provider::Runway => self.runway(req, &path),
            Provider::Replicate => self.replicate(req, &path),
            Provider::Veo => self.veo(req, &path),
        }
    }
}

impl Responder {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_render(&self, ms: u64, seed: u64) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.lock()
            .renders
            .insert(id.clone(), (ms, seed, chrono::Utc::now()));
        id
    }

    fn file(&self, path: &str) -> ResponseTemplate {
        let id = path.trim_start_matches("/files/").trim_end_matches(".mp4");
        let mut st = self.lock();
        if std::mem::take(&mut st.expire_next_download) {
            return http(404, None, "expired");
        }
        match st.renders.get(id) {
            Some((ms, _, _)) => ResponseTemplate::new(200).set_body_raw(
                mp4::write_minimal(Duration::from_millis(*ms), id.as_bytes()),
                "video/mp4",
            ),
            None => http(404, None, "no such file"),
        }
    }

    /// The next scripted poll answer, the hold, the failure mode, or success.
    fn next_poll(&self) -> Option<Step> {
        if let Some(s) = self.lock().polls.pop_front() {
            return Some(s);
        }
        if self.hold.load(Ordering::SeqCst) {
            return Some(Step::Status("running"));
        }
        if self.fail_all.load(Ordering::SeqCst) {
            return Some(Step::Fail("internal"));
        }
        None
    }

    fn runway(&self, req: &Request, path: &str) -> ResponseTemplate {
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
            let id = self.new_render(secs * 1000, body["seed"].as_u64().unwrap_or(0));
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
            Some(step @ (Step::Http(..) | Step::Slow(_))) => {
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

    fn prediction(&self, id: &str, status: &str, extra: Value) -> Value {
        let st = self.lock();
        let (_, seed, created) = st.renders.get(id).cloned().unwrap_or_default();
        let mut p = json!({
            "id": id, "model": "stability-ai/stable-video-diffusion", "version": "3f0457e4",
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

    fn replicate(&self, req: &Request, path: &str) -> ResponseTemplate {
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
            let id = self.new_render(frames * 1000 / fps, input["seed"].as_u64().unwrap_or(0));
            return ResponseTemplate::new(201).set_body_json(self.prediction(
                &id,
                "starting",
                json!({}),
            ));
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
            Some(step @ (Step::Http(..) | Step::Slow(_))) => canned(&step).unwrap_or_else(|| http(500, None, "")),
            Some(Step::Status("running")) => {
                ResponseTemplate::new(200).set_body_json(self.prediction(id, "processing", json!({})))
            }
            Some(Step::Status(s)) => ResponseTemplate::new(200).set_body_json(self.prediction(id, s, json!({}))),
            Some(Step::Fail(text)) => ResponseTemplate::new(200).set_body_json(self.prediction(
                id,
                "failed",
                json!({"error": if text == "internal" { "CUDA error: an illegal memory access was encountered" } else { text }}),
            )),
            None => ResponseTemplate::new(200).set_body_json(self.prediction(
                id,
                "succeeded",
                json!({"output": format!("{}/files/{id}.mp4", self.base), "metrics": {"predict_time": 41.2}}),
            )),
        }
    }

    fn veo(&self, req: &Request, path: &str) -> ResponseTemplate {
        if req.method.as_str() != "POST" || !path.starts_with("/v1/projects/") {
            return http(
                404,
                None,
                r#"{"error":{"code":404,"message":"Not found","status":"NOT_FOUND"}}"#,
            );
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
            let id = self.new_render(
                secs * 1000,
                body["parameters"]["seed"].as_u64().unwrap_or(0),
            );
            return ResponseTemplate::new(200)
                .set_body_json(json!({"name": format!("{}/operations/{id}", model_path.trim_start_matches("/v1/"))}));
        }
        if !path.ends_with(":fetchPredictOperation") {
            return http(404, None, "{}");
        }
        let name = body["operationName"].as_str().unwrap_or("").to_owned();
        let id = name.rsplit('/').next().unwrap_or("").to_owned();
        let ms = match self.lock().renders.get(&id) {
            Some(r) => r.0,
            None => {
                return http(
                    404,
                    None,
                    r#"{"error":{"code":404,"message":"Operation not found","status":"NOT_FOUND"}}"#,
                );
            }
        };
        match self.next_poll() {
            Some(step @ (Step::Http(..) | Step::Slow(_))) => {
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
                let bytes = mp4::write_minimal(Duration::from_millis(ms), id.as_bytes());
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
