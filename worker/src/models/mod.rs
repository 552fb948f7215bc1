//! The content models as the worker uses them (README, "Models"): Gemini for the plan and as
//! the judge of semantic QA, and an image model for keyframes, each call through the
//! write-ahead protocol of `call` (paid once, cached, behind a fleet-wide breaker).
//!
//! - `call`: one paid call: earlier answer, cache, breaker, money, intent, answer.
//! - `judge`: a shot's frames scored by Gemini vision in four dimensions.

mod call;
pub(crate) mod judge;
mod settle;

use std::sync::Arc;
use std::time::Duration;

use aiprod_backends::models::{
    Gemini, GenerateRequest, ImageModel, ImageRequest, ModelError, Part, gemini_cost,
};
use aiprod_domain::{CacheTier, ModelCallKind, ModelCallState, Money, StepError};
use aiprod_platform::Settings;
use aiprod_platform::config::ModelSettings;
use aiprod_platform::storage::ArtifactStore;
use aiprod_store::{ModelCall, ModelUpdate};
use serde_json::{Value, json};

use call::{Answer, CallSpec, Start, classify};
pub(crate) use call::{CallError, ModelCaller, digest};

/// The models one worker process calls.
pub struct Models {
    /// Gemini on Vertex AI, when a project is configured.
    pub gemini: Option<Arc<Gemini>>,
    /// What draws keyframes (`AIPROD_KEYFRAMES`).
    pub images: Arc<dyn ImageModel>,
}

impl Models {
    /// The clients the settings configure. Fails when credentials cannot be found (ADC), so a
    /// worker's start says so in one line instead of failing every job.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Models> {
        let m = &settings.models;
        let wanted = m.planner == aiprod_platform::config::PlannerKind::Gemini
            || m.qa_semantic == aiprod_platform::config::SemanticQaKind::Gemini;
        let gemini = if wanted {
            aiprod_backends::models::gemini(settings)?.map(Arc::new)
        } else {
            None
        };
        Ok(Models {
            gemini,
            images: aiprod_backends::models::image_model(settings)?,
        })
    }

    /// The offline models: no Gemini, simulated keyframes.
    pub fn offline(settings: &Settings) -> Models {
        let mut s = settings.clone();
        s.models.keyframes = aiprod_platform::config::KeyframeKind::Simulated;
        Models {
            gemini: None,
            images: aiprod_backends::models::image_model(&s)
                .expect("the simulated image model needs no credentials"),
        }
    }
}

/// The breaker's row of an image provider.
fn image_service(provider: &str) -> &str {
    match provider {
        "replicate" => "replicate_image",
        other => other,
    }
}

/// Tokens an image costs Gemini as input (Vertex bills each image at a fixed count).
const IMAGE_TOKENS: u64 = 258;

impl ModelCaller<'_> {
    /// Asks Gemini for the JSON `req`'s schema describes, through the protocol: waits out
    /// throttling up to `throttle_max`, and caches the answer for the settings' TTL.
    pub async fn ask(
        &self,
        gemini: &Gemini,
        settings: &ModelSettings,
        kind: ModelCallKind,
        step: &str,
        req: &GenerateRequest,
        throttle_max: Duration,
    ) -> Result<Value, CallError> {
        let body = gemini.body(req);
        let text = body.to_string();
        let images = req
            .parts
            .iter()
            .filter(|p| matches!(p, Part::Image { .. }))
            .count() as u64;
        let text_tokens = req
            .parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.len() as u64 / 4 + 1,
                Part::Image { .. } => 0,
            })
            .sum::<u64>()
            + req.system.len() as u64 / 4
            + 1;
        let estimate = gemini_cost(
            settings,
            text_tokens + images * IMAGE_TOKENS,
            u64::from(req.max_output_tokens),
        );
        let ttl = Some(settings.model_cache_ttl).filter(|t| !t.is_zero() && self.spec.cache());
        let spec = CallSpec {
            kind,
            step,
            service: "gemini",
            provider: "gemini",
            model: gemini.model(),
            hash: digest(&[b"gemini", gemini.model().as_bytes(), text.as_bytes()]),
            seed: None,
            estimate,
            cache: ttl.map(|t| (CacheTier::Model, Some(t))),
        };
        let mut waited = Duration::ZERO;
        let mut retried = false;
        loop {
            let (call, claimed) = match self.start(&spec, async |_| None).await? {
                Start::Answered(a) => return Ok(a.value),
                // Gemini answers in the call; a saved id cannot be followed.
                Start::Follow { call, .. } => {
                    self.lose(&call).await?;
                    continue;
                }
                Start::Call { call, claimed } => (call, claimed),
            };
            match gemini.generate(req).await {
                Ok(g) => {
                    let cost = gemini_cost(settings, g.prompt_tokens, g.output_tokens);
                    let answer = Answer {
                        value: g.value.clone(),
                        artifact_uri: None,
                    };
                    let tokens = Some((g.prompt_tokens, g.output_tokens));
                    self.succeed(&spec, &call, claimed, &answer, cost, tokens)
                        .await?;
                    return Ok(g.value);
                }
                Err(e) => {
                    self.fail(&spec, &call, claimed, &e, Money::ZERO).await?;
                    let wait = match &e {
                        ModelError::Throttled { retry_after, .. } => {
                            retry_after.unwrap_or(Duration::from_secs(2))
                        }
                        // A passing fault is tried once more before anyone falls back.
                        ModelError::Transient(_) | ModelError::Timeout(_) if !retried => {
                            retried = true;
                            Duration::from_secs(1)
                        }
                        _ => return Err(classify(e)),
                    };
                    if waited + wait > throttle_max {
                        return Err(classify(e));
                    }
                    tracing::info!(step, wait_ms = wait.as_millis() as u64, error = %e, "Gemini did not answer; asking again");
                    waited += wait;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Draws the keyframe `req` with `model` and stores it as `name` (an extension is added);
    /// returns its URI and sha256. Keyframes are cached (tier `keyframe`) unless `cache` is
    /// false. A crash between the start and saving the provider's id is recovered by finding
    /// the prediction by its seed, never by starting another.
    #[allow(clippy::too_many_arguments)]
    pub async fn draw(
        &self,
        model: &dyn ImageModel,
        step: &str,
        req: &ImageRequest,
        store: &ArtifactStore,
        name: &str,
        cache: bool,
        throttle_max: Duration,
        poll_every: Duration,
    ) -> Result<(String, String), CallError> {
        let hash = digest(&[
            model.provider().as_bytes(),
            model.model().as_bytes(),
            req.prompt.as_bytes(),
            req.negative_prompt.as_deref().unwrap_or("").as_bytes(),
            &req.seed.to_be_bytes(),
            &req.width.to_be_bytes(),
            &req.height.to_be_bytes(),
        ]);
        let spec = CallSpec {
            kind: ModelCallKind::Keyframe,
            step,
            service: image_service(model.provider()),
            provider: model.provider(),
            model: model.model(),
            hash,
            seed: Some(i64::from(req.seed)),
            estimate: model.price(),
            cache: cache.then_some((CacheTier::Keyframe, None)),
        };
        let mut waited = Duration::ZERO;
        loop {
            let adopt = async |c: &ModelCall| {
                let since = c.created_at - chrono::Duration::seconds(60);
                model.find(since, req.seed).await.ok().flatten()
            };
            let (call, claimed, image) = match self.start(&spec, adopt).await? {
                Start::Answered(a) => return keyframe_of(a),
                Start::Follow { call, claimed } => (call, claimed, None),
                Start::Call { call, claimed } => match model.start(req).await {
                    Ok(started) => {
                        if let Some(id) = started.id {
                            let saved = ModelUpdate {
                                state: Some(ModelCallState::Submitted),
                                remote_id: Some(id.clone()),
                                ..ModelUpdate::default()
                            };
                            self.update(&call, saved).await?;
                            let mut c = *call;
                            c.state = ModelCallState::Submitted;
                            c.remote_id = Some(id);
                            (Box::new(c), claimed, started.image)
                        } else {
                            (call, claimed, started.image)
                        }
                    }
                    Err(e) => {
                        self.fail(&spec, &call, claimed, &e, Money::ZERO).await?;
                        if let ModelError::Throttled { retry_after, .. } = &e {
                            let wait = retry_after.unwrap_or(poll_every);
                            if waited + wait <= throttle_max {
                                waited += wait;
                                tokio::time::sleep(wait).await;
                                continue;
                            }
                        }
                        return Err(classify(e));
                    }
                },
            };
            let image = match image {
                Some(i) => i,
                None => {
                    let id = call.remote_id.clone().unwrap_or_default();
                    match poll_image(model, &id, poll_every).await {
                        Ok(i) => i,
                        Err(e) => {
                            // Started at the provider: billed whatever its end.
                            self.fail(&spec, &call, claimed, &e, model.price()).await?;
                            return Err(classify(e));
                        }
                    }
                }
            };
            let ext = match image.mime.as_str() {
                "image/jpeg" => "jpg",
                "image/webp" => "webp",
                _ => "png",
            };
            let sha256 = digest(&[&image.data]);
            let uri = store
                .put(self.job_id, &format!("{name}.{ext}"), &image.data)
                .await
                .map_err(|e| StepError::Retryable(format!("cannot store a keyframe: {e}")))?;
            let answer = Answer {
                value: json!({"sha256": sha256, "mime": image.mime}),
                artifact_uri: Some(uri),
            };
            self.succeed(&spec, &call, claimed, &answer, model.price(), None)
                .await?;
            return keyframe_of(answer);
        }
    }
}

fn keyframe_of(a: Answer) -> Result<(String, String), CallError> {
    let sha = a.value["sha256"].as_str().unwrap_or_default().to_owned();
    match a.artifact_uri {
        Some(uri) => Ok((uri, sha)),
        None => Err(CallError::Malformed(
            "a keyframe answer has no image".into(),
        )),
    }
}

/// Polls a started image until it is done. Gives up after an hour: a keyframe that long is
/// lost at the provider.
async fn poll_image(
    model: &dyn ImageModel,
    id: &str,
    every: Duration,
) -> Result<aiprod_backends::models::GeneratedImage, ModelError> {
    let until = std::time::Instant::now() + Duration::from_secs(3600);
    loop {
        match model.poll(id).await {
            Ok(Some(image)) => return Ok(image),
            Ok(None) if std::time::Instant::now() < until => tokio::time::sleep(every).await,
            Ok(None) => return Err(ModelError::Timeout(format!("image {id} never finished"))),
            Err(ModelError::Transient(_) | ModelError::Throttled { .. })
                if std::time::Instant::now() < until =>
            {
                tokio::time::sleep(every).await;
            }
            Err(e) => return Err(e),
        }
    }
}

impl ModelCaller<'_> {
    /// `ask`, with the answer read by `read`, which lists every rule it breaks: a broken answer
    /// is sent back once with those rules (step `{step}-repair`); a second broken answer is
    /// `Malformed`, never passed on half-valid.
    #[allow(clippy::too_many_arguments)]
    pub async fn ask_checked<T>(
        &self,
        gemini: &Gemini,
        settings: &ModelSettings,
        kind: ModelCallKind,
        step: &str,
        mut req: GenerateRequest,
        throttle_max: Duration,
        read: impl Fn(Value) -> Result<T, Vec<String>>,
    ) -> Result<T, CallError> {
        let mut broken = Vec::new();
        for round in 0..2 {
            let step = if round == 0 {
                step.to_owned()
            } else {
                format!("{step}-repair")
            };
            let answer = match self
                .ask(gemini, settings, kind, &step, &req, throttle_max)
                .await
            {
                // An answer that is not JSON at all breaks the schema too: it is sent back.
                Err(CallError::Malformed(m)) => Err((String::from("(not JSON)"), vec![m])),
                Err(e) => return Err(e),
                Ok(value) => read(value.clone()).map_err(|e| (value.to_string(), e)),
            };
            match answer {
                Ok(t) => return Ok(t),
                Err((value, e)) => {
                    tracing::warn!(step, broken = ?e, "Gemini's answer broke its rules");
                    req.parts.push(Part::Text(format!(
                        "Your previous answer was:\n{value}\nIt breaks these rules:\n- {}\n\
                         Answer again, keeping every rule and the schema.",
                        e.join("\n- ")
                    )));
                    broken = e;
                }
            }
        }
        Err(CallError::Malformed(format!(
            "Gemini's answer broke its rules twice: {}",
            broken.join("; ")
        )))
    }
}
