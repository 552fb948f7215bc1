//! Local HTTP stand-ins for the paid providers, answering as ARCHITECTURE.md's section on the
//! providers describes them: the same paths, headers, bodies and statuses. Each keeps the
//! renders it accepted, serves a real clip (`aiprod_media::synth`) of the length, size and frame
//! rate the provider returns as the output (or a flawed one a test queued), and can be
//! scripted: canned answers for the next submits and polls, a hold that keeps renders running
//! until released, and a mode that fails every render.
//!
//! One responder serves every provider: the shared machinery is here, and each provider's
//! paths and answers are in a file of its own. The Vertex AI stub also answers Gemini
//! (`:generateContent`) and Imagen (`:predict`), and the Replicate stub an image model.

mod gemini;
mod imagen;
mod replicate;
mod runway;
mod veo;

pub use gemini::{GeminiStep, Generate};
pub use imagen::{ImagenStep, png_bytes};

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aiprod_media::ClipSpec;
use aiprod_platform::config::MediaSettings;
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
    /// The provider acts on the request (a prediction is created), but its answer arrives only
    /// after this many milliseconds: the window in which a worker that dies has made the call
    /// without learning its id. Image creates on the Replicate stub honour it; as a poll it is
    /// a 500.
    Late(u64),
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
    /// Render id → (the clip it delivers, seed, created).
    renders: HashMap<String, (ClipSpec, u64, chrono::DateTime<chrono::Utc>)>,
    /// Files served in place of the next outputs, in order.
    next_files: VecDeque<Vec<u8>>,
    submits: VecDeque<Step>,
    polls: VecDeque<Step>,
    canceled: Vec<String>,
    expire_next_download: bool,
    /// The text of `metrics.predict_time` in Replicate's finished video predictions, as the
    /// provider would write it (`None`: 41.2).
    predict_time: Option<String>,
    /// Replicate image predictions: id → the model that made it.
    image_models: HashMap<String, String>,
    gemini: VecDeque<GeminiStep>,
    on_generate: Option<Generate>,
    imagen: VecDeque<ImagenStep>,
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

    /// Serves `bytes` as the next render output downloaded (or inlined), in place of the
    /// render's own clip: a flawed clip for technical QA.
    pub fn serve_next(&self, bytes: Vec<u8>) {
        self.lock().next_files.push_back(bytes);
    }

    /// Replicate reports `text`, verbatim, as the hardware seconds of each finished video
    /// prediction from now on: any JSON value, number or not.
    pub fn report_predict_time(&self, text: &str) {
        self.lock().predict_time = Some(text.to_owned());
    }

    /// Renders canceled through the API.
    pub fn canceled(&self) -> Vec<String> {
        self.lock().canceled.clone()
    }

    /// The JSON bodies of the requests whose path contains `path`, oldest first, with their
    /// `Authorization` header.
    pub async fn bodies(&self, path: &str) -> Vec<(Option<String>, serde_json::Value)> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path().contains(path))
            .map(|r| {
                let auth = r
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                (auth, serde_json::from_slice(&r.body).unwrap_or_default())
            })
            .collect()
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
            if self.provider == Provider::Veo {
                return http(
                    401,
                    None,
                    r#"{"error":{"code":401,"message":"Request is missing required authentication credential.","status":"UNAUTHENTICATED"}}"#,
                );
            }
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

    fn new_render(&self, clip: ClipSpec, seed: u64) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.lock()
            .renders
            .insert(id.clone(), (clip, seed, chrono::Utc::now()));
        id
    }

    /// The bytes a finished render delivers: a queued file, else its own clip.
    fn output(&self, clip: &ClipSpec) -> Vec<u8> {
        if let Some(bytes) = self.lock().next_files.pop_front() {
            return bytes;
        }
        clip_bytes(clip)
    }

    fn file(&self, path: &str) -> ResponseTemplate {
        let id = path.trim_start_matches("/files/").trim_end_matches(".mp4");
        let mut st = self.lock();
        if std::mem::take(&mut st.expire_next_download) {
            return http(404, None, "expired");
        }
        if let Some(image) = id.strip_suffix(".png") {
            let known = st.image_models.contains_key(image);
            drop(st);
            return if known {
                ResponseTemplate::new(200).set_body_raw(png_bytes(), "image/png")
            } else {
                http(404, None, "no such file")
            };
        }
        let clip = st.renders.get(id).map(|r| r.0.clone());
        drop(st);
        match clip {
            Some(clip) => ResponseTemplate::new(200).set_body_raw(self.output(&clip), "video/mp4"),
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
}

/// The clip `spec` describes, made (once, then cached) by the real ffmpeg.
pub fn clip_bytes(spec: &ClipSpec) -> Vec<u8> {
    let path = aiprod_media::synth::clip_blocking(&MediaSettings::default(), spec)
        .unwrap_or_else(|e| panic!("the stub cannot make its clip: {e}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}
