//! Veo 3 on Vertex AI: `predictLongRunning` starts an operation, `fetchPredictOperation`
//! polls it. Authentication and the model's URL are `Vertex`'s, shared with the other Google
//! models. Videos
//! come back inline, or as `gs://` objects when a storage URI is configured, which are read
//! through the Cloud Storage JSON API with the same token.

use std::time::Duration;

use aiprod_domain::BackendName;
use aiprod_platform::Settings;
use aiprod_platform::config::{VeoSettings, VertexSettings};
use async_trait::async_trait;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Api, Backend, BackendError, FailureClass, Image, Output, Poll, RemoteHandle, ShotRequest,
};
use crate::guess_mime;
use crate::vertex::Vertex;

/// The Veo 3 client.
pub struct Veo3 {
    api: Api,
    model_url: String,
    gcs_base: String,
    vertex: Vertex,
    storage_uri: Option<String>,
    resolution: String,
    audio: bool,
    poll: Duration,
}

/// The client, when `AIPROD_VERTEX_PROJECT` is set.
pub(crate) fn client(
    api: Api,
    s: &Settings,
) -> anyhow::Result<Option<std::sync::Arc<dyn Backend>>> {
    if s.vertex.vertex_project.is_none() {
        return Ok(None);
    }
    Ok(Some(std::sync::Arc::new(Veo3::new(
        api,
        &s.vertex,
        &s.veo,
        &s.backends.prices.veo3.model,
    )?)))
}

impl Veo3 {
    /// A client for the configured Vertex AI project and location, rendering with `model` (the
    /// price table's).
    pub fn new(
        api: Api,
        vertex: &VertexSettings,
        s: &VeoSettings,
        model: &str,
    ) -> anyhow::Result<Veo3> {
        let vertex = Vertex::new(vertex)?;
        Ok(Veo3 {
            api,
            model_url: vertex.model_url(model),
            gcs_base: s.veo_gcs_base_url.trim_end_matches('/').to_owned(),
            vertex,
            storage_uri: s.veo_storage_uri.clone(),
            resolution: s.veo_resolution.clone(),
            audio: s.veo_generate_audio,
            poll: s.veo_poll,
        })
    }

    async fn bearer(&self) -> Result<String, BackendError> {
        self.vertex.bearer().await.map_err(|e| {
            if e.transient {
                BackendError::Transient(format!("veo3: {}", e.message))
            } else {
                BackendError::Unauthorized(format!("veo3: {}", e.message))
            }
        })
    }

    async fn operation(&self, handle: &RemoteHandle) -> Result<Operation, BackendError> {
        let req = self
            .api
            .http()
            .post(format!("{}:fetchPredictOperation", self.model_url))
            .bearer_auth(self.bearer().await?)
            .json(&json!({"operationName": handle.0}));
        self.api.json(req).await
    }

    async fn image(&self, image: &Image) -> Result<Value, BackendError> {
        let (mime, data) = match image {
            Image::Inline { mime, data } => (mime.clone(), data.clone()),
            Image::Url(u) if u.starts_with("gs://") => {
                return Ok(json!({"gcsUri": u, "mimeType": guess_mime(u)}));
            }
            // Fetching a client's link is the worker's hardened fetcher's work (a refused or
            // failing link is the client's fault, never counted against Veo's health); this
            // client only sends bytes it was given.
            Image::Url(_) => {
                return Err(BackendError::Rejected(
                    "veo3: takes the keyframe inline or from gs://, and fetches no other link"
                        .into(),
                ));
            }
        };
        Ok(json!({
            "bytesBase64Encoded": base64::engine::general_purpose::STANDARD.encode(data),
            "mimeType": mime,
        }))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Operation {
    #[serde(default)]
    done: bool,
    error: Option<OpError>,
    response: Option<OpResponse>,
}

#[derive(Deserialize)]
struct OpError {
    code: Option<i64>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpResponse {
    #[serde(default)]
    videos: Vec<Video>,
    #[serde(default)]
    rai_media_filtered_count: Option<i64>,
    #[serde(default)]
    rai_media_filtered_reasons: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Video {
    gcs_uri: Option<String>,
    bytes_base64_encoded: Option<String>,
}

impl Operation {
    fn outcome(self) -> Result<Poll, BackendError> {
        if !self.done {
            return Ok(Poll::Pending(None));
        }
        if let Some(e) = self.error {
            let message = e.message.unwrap_or_else(|| "operation failed".into());
            // google.rpc codes: 3 INVALID_ARGUMENT (our input), 8 RESOURCE_EXHAUSTED (quota).
            let class = match e.code {
                Some(3)
                    if message.to_ascii_lowercase().contains("safety")
                        || message.to_ascii_lowercase().contains("responsible ai") =>
                {
                    FailureClass::InputSafety
                }
                Some(3) => FailureClass::InvalidAsset,
                _ => FailureClass::Internal,
            };
            return Ok(Poll::Failed(class, message));
        }
        let resp = self.response.unwrap_or(OpResponse {
            videos: Vec::new(),
            rai_media_filtered_count: None,
            rai_media_filtered_reasons: Vec::new(),
        });
        let mut outputs = Vec::new();
        for v in resp.videos {
            if let Some(uri) = v.gcs_uri {
                outputs.push(Output::Gcs(uri));
            } else if let Some(b64) = v.bytes_base64_encoded {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|e| BackendError::Transient(format!("veo3: bad video bytes: {e}")))?;
                outputs.push(Output::Inline(bytes));
            }
        }
        if outputs.is_empty() {
            // Safety-filtered samples are simply missing.
            return Ok(Poll::Failed(
                FailureClass::OutputSafety,
                format!(
                    "every sample was filtered ({} filtered: {})",
                    resp.rai_media_filtered_count.unwrap_or(0),
                    resp.rai_media_filtered_reasons.join("; ")
                ),
            ));
        }
        Ok(Poll::Done(outputs, None))
    }
}

#[async_trait]
impl Backend for Veo3 {
    fn name(&self) -> BackendName {
        BackendName::Veo3
    }

    fn poll_interval(&self) -> Duration {
        self.poll
    }

    /// Veo renders 4, 6 or 8 seconds: the shortest that covers the shot.
    fn render_seconds(&self, seconds: u32) -> u32 {
        aiprod_domain::billed_seconds(BackendName::Veo3, i64::from(seconds)) as u32
    }

    async fn submit(&self, shot: &ShotRequest) -> Result<RemoteHandle, BackendError> {
        #[derive(Deserialize)]
        struct Started {
            name: String,
        }
        let mut parameters = json!({
            "aspectRatio": "16:9",
            "durationSeconds": self.render_seconds(shot.duration_s),
            "resolution": self.resolution,
            "generateAudio": self.audio,
            "sampleCount": 1,
            "seed": shot.seed,
        });
        if let Some(uri) = &self.storage_uri {
            parameters["storageUri"] = json!(uri);
        }
        let body = json!({
            "instances": [{"prompt": shot.prompt, "image": self.image(&shot.image).await?}],
            "parameters": parameters,
        });
        let req = self
            .api
            .http()
            .post(format!("{}:predictLongRunning", self.model_url))
            .bearer_auth(self.bearer().await?)
            .json(&body);
        let started: Started = self.api.json(req).await?;
        Ok(RemoteHandle(started.name))
    }

    async fn poll(&self, handle: &RemoteHandle) -> Result<Poll, BackendError> {
        self.operation(handle).await?.outcome()
    }

    /// Vertex documents no cancel for Veo operations: the operation runs to its end, and its
    /// output is simply not used.
    async fn cancel(&self, handle: &RemoteHandle) -> Result<(), BackendError> {
        tracing::info!(operation = %handle.0, "veo3 has no cancel; the operation runs to its end");
        Ok(())
    }

    async fn fetch_output(&self, handle: &RemoteHandle) -> Result<Vec<Output>, BackendError> {
        match self.operation(handle).await?.outcome()? {
            Poll::Done(outputs, _) => Ok(outputs),
            other => Err(BackendError::Rejected(format!(
                "veo3: operation {} has no output ({other:?})",
                handle.0
            ))),
        }
    }

    async fn download(
        &self,
        output: &Output,
        dest: &std::path::Path,
        cap: u64,
    ) -> Result<u64, BackendError> {
        match output {
            // Vertex sent the video inside its JSON answer: it is in memory already.
            Output::Inline(bytes) => crate::write_inline(BackendName::Veo3, bytes, dest, cap).await,
            Output::Gcs(uri) => {
                let rest = uri.strip_prefix("gs://").ok_or_else(|| {
                    BackendError::Rejected(format!("veo3: not a gs:// URI: {uri}"))
                })?;
                let (bucket, object) = rest
                    .split_once('/')
                    .ok_or_else(|| BackendError::Rejected(format!("veo3: no object in {uri}")))?;
                let mut url = url::Url::parse(&format!("{}/storage/v1/b/", self.gcs_base))
                    .map_err(|e| BackendError::Rejected(format!("veo3: bad GCS URL: {e}")))?;
                url.path_segments_mut()
                    .map_err(|()| BackendError::Rejected("veo3: bad GCS URL".into()))?
                    .pop_if_empty()
                    .extend([bucket, "o", object]);
                url.query_pairs_mut().append_pair("alt", "media");
                let req = self.api.http().get(url).bearer_auth(self.bearer().await?);
                let resp = self.api.send(req).await?;
                self.api.stream_to(resp, dest, cap).await
            }
            Output::Url(_) => self.api.download_url(output, dest, cap).await,
        }
    }
}
