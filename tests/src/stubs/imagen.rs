//! Imagen on Vertex AI, inside the Vertex stub: `:predict` answers with one real PNG, or as a
//! test queued it (`ImagenStep`): an image filtered for safety, or an HTTP error. It refuses
//! what Imagen refuses: a seed while watermarking, more than the one sample we pay for.

use std::sync::OnceLock;

use base64::Engine as _;
use serde_json::{Value, json};
use wiremock::{Request, ResponseTemplate};

use super::{Responder, Stub, http};

/// The stub images' size: the keyframe size of a 16:9 shot.
const W: u32 = 1280;
const H: u32 = 720;

/// One canned Imagen answer.
#[derive(Clone, Debug)]
pub enum ImagenStep {
    /// The image was filtered: its prediction carries only this `raiFilteredReason`.
    Filtered(&'static str),
    /// A raw HTTP answer: status, `Retry-After` seconds, body.
    Http(u16, Option<u64>, &'static str),
}

impl Stub {
    /// Queues answers for the next `:predict` calls.
    pub fn script_imagen(&self, steps: impl IntoIterator<Item = ImagenStep>) {
        self.lock().imagen.extend(steps);
    }
}

/// A real 1280×720 PNG (a gradient), the image every stub serves.
pub fn png_bytes() -> Vec<u8> {
    static PNG: OnceLock<Vec<u8>> = OnceLock::new();
    PNG.get_or_init(|| {
        let mut pixels = Vec::with_capacity((W * H * 3) as usize);
        for y in 0..H {
            for x in 0..W {
                pixels.extend([(x * 255 / W) as u8, (y * 255 / H) as u8, 0x66]);
            }
        }
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, W, H);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Fast);
        let mut writer = enc.write_header().expect("a PNG header");
        writer.write_image_data(&pixels).expect("PNG data");
        writer.finish().expect("a whole PNG");
        out
    })
    .clone()
}

fn invalid(message: &str) -> ResponseTemplate {
    ResponseTemplate::new(400).set_body_json(
        json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}}),
    )
}

impl Responder {
    pub(super) fn imagen(&self, req: &Request, path: &str) -> ResponseTemplate {
        if super::gemini::model_of(path).is_none() {
            return http(
                404,
                None,
                r#"{"error":{"code":404,"message":"Not found","status":"NOT_FOUND"}}"#,
            );
        }
        let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
            return invalid("Invalid JSON payload received.");
        };
        if !body["instances"][0]["prompt"].is_string() {
            return invalid("instances[0].prompt is required");
        }
        let params = &body["parameters"];
        if params["sampleCount"] != 1 {
            return invalid("sampleCount must be 1 here");
        }
        if !params["seed"].is_null() && params["addWatermark"] != false {
            return invalid("Seed is not supported when watermark is enabled.");
        }
        let step = self.lock().imagen.pop_front();
        match step {
            Some(ImagenStep::Http(status, retry_after, body)) => http(status, retry_after, body),
            Some(ImagenStep::Filtered(reason)) => ResponseTemplate::new(200)
                .set_body_json(json!({"predictions": [{"raiFilteredReason": reason}]})),
            None => ResponseTemplate::new(200).set_body_json(json!({"predictions": [{
                "bytesBase64Encoded": base64::engine::general_purpose::STANDARD.encode(png_bytes()),
                "mimeType": "image/png",
            }]})),
        }
    }
}
