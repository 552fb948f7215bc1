//! The keyframe as the providers take it: our stored frame sent inline, a client's data URI
//! decoded, a client's URL passed as is.

use aiprod_backends::Image;
use aiprod_domain::StepError;
use base64::Engine as _;

use super::ShotRenderer;

impl ShotRenderer<'_> {
    /// The keyframe as the providers take it: our stored frame inline, a client's URL as is.
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
            return Ok(Image::Url(keyframe.to_owned()));
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
