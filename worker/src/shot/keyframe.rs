//! The keyframe as the providers take it: our stored frame sent inline, a client's data URI
//! decoded. A client's link is never passed on: it is fetched by the hardened fetcher and sent
//! inline too.

use aiprod_backends::Image;
use aiprod_domain::StepError;
use base64::Engine as _;

use super::ShotRenderer;
use crate::image_fetch::ImageFetcher;

impl ShotRenderer<'_> {
    /// The keyframe as the providers take it: always inline.
    pub(super) async fn image(&self, keyframe: &str) -> Result<Image, StepError> {
        if let Some(rest) = keyframe.strip_prefix("data:") {
            let (meta, data) = rest.split_once(',').unwrap_or(("", rest));
            let mime = meta.trim_end_matches(";base64").to_owned();
            let data = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| StepError::Permanent(format!("image_url is not valid base64: {e}")))?;
            return Ok(Image::Inline { mime, data });
        }
        if keyframe.starts_with("http://") || keyframe.starts_with("https://") {
            // Only a `visual` checkpoint written before client images were copied in holds a
            // link. It is fetched here, under the same rules, before any backend is called: a
            // backend never fetches a client's link, so a bad one never counts against its
            // health.
            let scratch = self
                .media
                .scratch_dir()
                .map_err(|e| StepError::Retryable(e.to_string()))?;
            let image = ImageFetcher::new(self.media.settings())
                .fetch(keyframe, scratch.path())
                .await?;
            let data = tokio::fs::read(&image.path).await.map_err(|e| {
                StepError::Retryable(format!("cannot read the client's image: {e}"))
            })?;
            return Ok(Image::Inline {
                mime: image.mime.into(),
                data,
            });
        }
        let data = self
            .store
            .get(keyframe)
            .await
            .map_err(|e| StepError::Retryable(format!("cannot read the keyframe: {e}")))?;
        let mime = match keyframe.rsplit_once('.').map(|(_, e)| e) {
            Some("png") => "image/png",
            Some("jpg" | "jpeg") => "image/jpeg",
            Some("webp") => "image/webp",
            _ => "image/x-portable-pixmap",
        };
        Ok(Image::Inline {
            mime: mime.into(),
            data,
        })
    }
}
