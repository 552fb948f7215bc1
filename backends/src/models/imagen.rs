//! Imagen on Vertex AI: `:predict` draws one image and answers with its bytes (ARCHITECTURE.md,
//! "The providers"; "Imagen on Vertex AI"). It is synchronous: there is no id to save and nothing
//! to poll, and a filtered image comes back missing or with only its reason. The call goes through
//! Google's `PredictionService` client (`crate::vertex::Predictions`); `instances` and
//! `parameters` are free-form JSON there, so what it sends is `Imagen::body` as it is.

use std::time::Duration;

use aiprod_domain::Money;
use aiprod_platform::config::VertexSettings;
use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use google_cloud_aiplatform_v1::model::PredictRequest;
use google_cloud_gax::options::RequestOptionsBuilder as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::call;
use super::{GeneratedImage, ImageModel, ImageRequest, ImageStart, ModelError};
use crate::vertex::{Predictions, Vertex};

/// The aspect ratios Imagen draws, as (name, width, height).
const RATIOS: [(&str, u32, u32); 5] = [
    ("1:1", 1, 1),
    ("16:9", 16, 9),
    ("9:16", 9, 16),
    ("4:3", 4, 3),
    ("3:4", 3, 4),
];

/// The ratio Imagen draws that is closest to `width`×`height`.
pub(crate) fn aspect_ratio(width: u32, height: u32) -> &'static str {
    let want = f64::from(width.max(1)) / f64::from(height.max(1));
    RATIOS
        .iter()
        .min_by(|a, b| {
            let d = |r: &(&str, u32, u32)| (f64::from(r.1) / f64::from(r.2) - want).abs();
            d(a).total_cmp(&d(b))
        })
        .map_or("16:9", |r| r.0)
}

/// The Imagen client for one model.
pub struct Imagen {
    predictions: Predictions,
    model: String,
    /// `projects/…/publishers/google/models/{model}`: where `:predict` goes.
    name: String,
    price: Money,
}

impl Imagen {
    /// A client for `model` in the configured project, at `price` per image.
    pub fn new(
        vertex: &VertexSettings,
        model: &str,
        price: Money,
        timeout: Duration,
    ) -> anyhow::Result<Imagen> {
        let vertex = Vertex::new(vertex)?;
        Ok(Imagen {
            name: vertex.model_name(model),
            predictions: Predictions::new(vertex, timeout),
            model: model.to_owned(),
            price,
        })
    }

    /// The exact JSON body sent for `req`. The seed only works without a watermark, which is
    /// why there is none: the seed is how a try is told from another.
    pub fn body(&self, req: &ImageRequest) -> Value {
        let mut parameters = json!({
            "sampleCount": 1,
            "aspectRatio": aspect_ratio(req.width, req.height),
            "seed": req.seed,
            "addWatermark": false,
            "personGeneration": "allow_adult",
            "safetySetting": "block_medium_and_above",
            "includeRaiReason": true,
        });
        if let Some(n) = &req.negative_prompt {
            parameters["negativePrompt"] = json!(n);
        }
        json!({"instances": [{"prompt": req.prompt}], "parameters": parameters})
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Prediction {
    bytes_base64_encoded: Option<String>,
    mime_type: Option<String>,
    rai_filtered_reason: Option<String>,
}

/// The image of `:predict`'s first prediction, or why there is none.
fn image(predictions: Vec<Value>) -> Result<GeneratedImage, ModelError> {
    let Some(first) = predictions.into_iter().next() else {
        return Err(ModelError::Blocked(
            "imagen: no image came back (filtered)".into(),
        ));
    };
    let p: Prediction = serde_json::from_value(first)
        .map_err(|e| ModelError::Malformed(format!("imagen: unreadable prediction: {e}")))?;
    match (p.bytes_base64_encoded, p.rai_filtered_reason) {
        (Some(b64), _) => {
            let data = base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| ModelError::Malformed(format!("imagen: bad image bytes: {e}")))?;
            Ok(GeneratedImage {
                mime: p.mime_type.unwrap_or_else(|| "image/png".into()),
                data,
            })
        }
        (None, Some(reason)) => Err(ModelError::Blocked(format!("imagen: {reason}"))),
        (None, None) => Err(ModelError::Blocked("imagen: the image was filtered".into())),
    }
}

#[async_trait]
impl ImageModel for Imagen {
    fn provider(&self) -> &'static str {
        "imagen"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn price(&self) -> Money {
        self.price
    }

    async fn start(&self, req: &ImageRequest) -> Result<ImageStart, ModelError> {
        let client = self
            .predictions
            .client()
            .await
            .map_err(|m| ModelError::Unauthorized(format!("imagen: {m}")))?;
        // `body` is `{instances, parameters}` in the request's own JSON form.
        let mut request: PredictRequest = serde_json::from_value(self.body(req))
            .map_err(|e| ModelError::Rejected(format!("imagen: cannot build the request: {e}")))?;
        request.endpoint.clone_from(&self.name);
        let answer = client
            .predict()
            .with_request(request)
            .with_user_agent(call::USER_AGENT)
            .send()
            .await
            .map_err(|e| call::google("imagen", &e))?;
        Ok(ImageStart {
            id: None,
            image: Some(image(answer.predictions)?),
        })
    }

    /// Imagen answers at once: there is never anything to poll.
    async fn poll(&self, id: &str) -> Result<Option<GeneratedImage>, ModelError> {
        Err(ModelError::Rejected(format!(
            "imagen: nothing to poll ({id}): Imagen answers synchronously"
        )))
    }

    /// Imagen keeps no list of past calls.
    async fn find(&self, _since: DateTime<Utc>, _seed: u32) -> Result<Option<String>, ModelError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_map_to_imagens_ratios() {
        assert_eq!(aspect_ratio(1280, 720), "16:9");
        assert_eq!(aspect_ratio(720, 1280), "9:16");
        assert_eq!(aspect_ratio(960, 960), "1:1");
        assert_eq!(aspect_ratio(1024, 768), "4:3");
    }
}
