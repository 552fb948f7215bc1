//! The stand-in image model for `aiprod dev` and tests: the shot's text drawn on a still frame
//! (`aiprod_media::Media::still`), as a PNG of the size asked for, free and at once.

use aiprod_domain::Money;
use aiprod_media::Media;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{GeneratedImage, ImageModel, ImageRequest, ImageStart, ModelError};

/// The simulated image model.
pub struct SimulatedImage {
    media: Media,
}

impl SimulatedImage {
    /// A model that draws with `media`'s ffmpeg.
    pub fn new(media: Media) -> SimulatedImage {
        SimulatedImage { media }
    }
}

#[async_trait]
impl ImageModel for SimulatedImage {
    fn provider(&self) -> &'static str {
        "simulated"
    }

    fn model(&self) -> &str {
        "simulated"
    }

    fn price(&self) -> Money {
        Money::ZERO
    }

    async fn start(&self, req: &ImageRequest) -> Result<ImageStart, ModelError> {
        let data = self
            .media
            .still(&req.prompt, req.width, req.height)
            .await
            .map_err(|e| ModelError::Transient(format!("simulated: {e}")))?;
        Ok(ImageStart {
            id: None,
            image: Some(GeneratedImage {
                mime: "image/png".into(),
                data,
            }),
        })
    }

    /// The simulation answers at once: there is never anything to poll.
    async fn poll(&self, id: &str) -> Result<Option<GeneratedImage>, ModelError> {
        Err(ModelError::Rejected(format!(
            "simulated: nothing to poll ({id})"
        )))
    }

    /// Nothing to list: a start is never lost.
    async fn find(&self, _since: DateTime<Utc>, _seed: u32) -> Result<Option<String>, ModelError> {
        Ok(None)
    }
}
