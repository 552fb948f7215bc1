//! An official image model on Replicate (FLUX schnell by default): `POST
//! /v1/models/{owner}/{name}/predictions` with `Prefer: wait`, which usually answers with the
//! image's link already; else the prediction is polled by id. Outputs are deleted after an
//! hour, so the image is downloaded at once. The paginated prediction list finds a try by its
//! seed after a crash between the create and saving its id.

use std::time::Duration;

use aiprod_domain::Money;
use aiprod_platform::config::ReplicateSettings;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use super::call::Call;
use super::{GeneratedImage, ImageModel, ImageRequest, ImageStart, ModelError};
use crate::guess_mime;

/// The largest image downloaded: a keyframe is a few megabytes at most.
const IMAGE_CAP: u64 = 20 * 1024 * 1024;
/// The most list pages read looking for a try.
const MAX_PAGES: usize = 20;

/// The Replicate image client.
pub struct ReplicateImage {
    call: Call,
    base: String,
    token: SecretString,
    model: String,
    wait: Duration,
    price: Money,
}

impl ReplicateImage {
    /// A client for `model` (`owner/name`) at `price` per image, with the configured base URL,
    /// token and `Prefer: wait`.
    pub fn new(
        s: &ReplicateSettings,
        model: &str,
        price: Money,
        timeout: Duration,
    ) -> anyhow::Result<ReplicateImage> {
        let token = s
            .replicate_api_token
            .clone()
            .ok_or_else(|| anyhow::anyhow!("AIPROD_REPLICATE_API_TOKEN is not set"))?;
        if model.split('/').count() != 2 {
            anyhow::bail!("AIPROD_REPLICATE_IMAGE_MODEL must be owner/name, got {model}");
        }
        Ok(ReplicateImage {
            // The wait is part of the call: the timeout must outlast it.
            call: Call::new(
                "replicate",
                timeout.max(s.replicate_wait + Duration::from_secs(5)),
            )?,
            base: s.replicate_base_url.trim_end_matches('/').to_owned(),
            token,
            model: model.to_owned(),
            wait: s.replicate_wait,
            price,
        })
    }

    /// The exact JSON body sent for `req`.
    pub fn body(&self, req: &ImageRequest) -> Value {
        json!({"input": {
            "prompt": req.prompt,
            "seed": req.seed,
            "aspect_ratio": super::imagen::aspect_ratio(req.width, req.height),
            "output_format": "png",
            "num_outputs": 1,
        }})
    }

    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.call
            .http()
            .get(url)
            .bearer_auth(self.token.expose_secret())
    }

    async fn prediction(&self, id: &str) -> Result<Prediction, ModelError> {
        self.call
            .json(self.get(&format!("{}/v1/predictions/{id}", self.base)))
            .await
    }

    /// The prediction's image once it succeeded, `None` while it runs.
    async fn outcome(&self, p: &Prediction) -> Result<Option<GeneratedImage>, ModelError> {
        match p.status.as_str() {
            "starting" | "processing" => Ok(None),
            "succeeded" => self.download(p).await.map(Some),
            "failed" => {
                let why = p.error.as_str().unwrap_or("failed");
                let lower = why.to_ascii_lowercase();
                if lower.contains("nsfw") || lower.contains("safety") {
                    Err(ModelError::Blocked(format!("replicate: {why}")))
                } else {
                    Err(ModelError::Transient(format!(
                        "replicate: prediction failed: {why}"
                    )))
                }
            }
            other => Err(ModelError::Transient(format!(
                "replicate: prediction {} is {other}",
                p.id
            ))),
        }
    }

    /// Downloads the first output. Its link is the provider's (https), or on our base URL's
    /// origin (a local stand-in); nothing else is fetched, and the token is never sent.
    async fn download(&self, p: &Prediction) -> Result<GeneratedImage, ModelError> {
        let url = match &p.output {
            Value::String(u) => Some(u.as_str()),
            Value::Array(items) => items.first().and_then(Value::as_str),
            _ => None,
        }
        .ok_or_else(|| ModelError::Malformed("replicate: a success without an output".into()))?;
        if !(url.starts_with("https://") || url.starts_with(&format!("{}/", self.base))) {
            return Err(ModelError::Malformed(
                "replicate: the output is not an https link".into(),
            ));
        }
        let resp = self.call.send(self.call.http().get(url)).await?;
        let mime = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|m| m.starts_with("image/"))
            .map_or_else(|| guess_mime(url).to_owned(), str::to_owned);
        let data = self.call.bytes_capped(resp, IMAGE_CAP).await?;
        Ok(GeneratedImage { mime, data })
    }
}

#[derive(Deserialize)]
struct Prediction {
    id: String,
    status: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    output: Value,
    #[serde(default)]
    error: Value,
    #[serde(default)]
    input: Value,
    created_at: Option<DateTime<Utc>>,
}

#[async_trait]
impl ImageModel for ReplicateImage {
    fn provider(&self) -> &'static str {
        "replicate"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn price(&self) -> Money {
        self.price
    }

    async fn start(&self, req: &ImageRequest) -> Result<ImageStart, ModelError> {
        let mut request = self
            .call
            .http()
            .post(format!(
                "{}/v1/models/{}/predictions",
                self.base, self.model
            ))
            .bearer_auth(self.token.expose_secret())
            .json(&self.body(req));
        if !self.wait.is_zero() {
            request = request.header("Prefer", format!("wait={}", self.wait.as_secs()));
        }
        let p: Prediction = self.call.json(request).await?;
        let image = self.outcome(&p).await?;
        Ok(ImageStart {
            id: Some(p.id),
            image,
        })
    }

    async fn poll(&self, id: &str) -> Result<Option<GeneratedImage>, ModelError> {
        let p = self.prediction(id).await?;
        self.outcome(&p).await
    }

    async fn find(&self, since: DateTime<Utc>, seed: u32) -> Result<Option<String>, ModelError> {
        #[derive(Deserialize)]
        struct Page {
            next: Option<String>,
            #[serde(default)]
            results: Vec<Prediction>,
        }
        let mut url = format!("{}/v1/predictions", self.base);
        // Newest first; stop after the page that reaches back past `since`.
        for _ in 0..MAX_PAGES {
            let page: Page = self.call.json(self.get(&url)).await?;
            let mut older = false;
            for p in page.results {
                match p.created_at {
                    Some(created) if created >= since => {}
                    Some(_) => {
                        older = true;
                        continue;
                    }
                    None => continue,
                }
                // The listing may leave out the input or the model; the prediction has them.
                let p = if p.input.is_null() || p.model.is_none() {
                    self.prediction(&p.id).await?
                } else {
                    p
                };
                let same_seed =
                    p.input.get("seed").and_then(Value::as_u64) == Some(u64::from(seed));
                if same_seed && p.model.as_deref() == Some(self.model.as_str()) {
                    return Ok(Some(p.id));
                }
            }
            let next = match page.next {
                Some(next) if next.starts_with('/') => format!("{}{next}", self.base),
                Some(next) => next,
                None => break,
            };
            // Only links on our base are followed: the token goes nowhere else.
            if older || !next.starts_with(&format!("{}/", self.base)) {
                break;
            }
            url = next;
        }
        Ok(None)
    }
}
