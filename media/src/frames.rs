//! Frames sampled from a clip for a vision judge: a few JPEGs spread evenly over the clip,
//! scaled down to what a judge needs (a vision model bills each image at a fixed token count,
//! whatever its size, and reads 512 px wide as well as 1280).

use std::path::Path;

use crate::tool::{Media, MediaError};

/// The width of a sampled frame.
const FRAME_WIDTH: u32 = 512;

impl Media {
    /// `count` JPEG frames of `file`, evenly spread over its `seconds` (each in the middle of
    /// its share of the clip, so neither a fade-in nor the last frame stands for the shot).
    pub async fn sample_frames(
        &self,
        file: &Path,
        seconds: f64,
        count: u32,
    ) -> Result<Vec<Vec<u8>>, MediaError> {
        let count = count.max(1);
        match &self.memo {
            Some(memo) => {
                let sample = self.sample_now(file, seconds, count);
                memo.frames(file, seconds, count, sample).await
            }
            None => self.sample_now(file, seconds, count).await,
        }
    }

    async fn sample_now(
        &self,
        file: &Path,
        seconds: f64,
        count: u32,
    ) -> Result<Vec<Vec<u8>>, MediaError> {
        let dir = self.scratch_dir()?;
        let pattern = dir.path().join("frame-%02d.jpg");
        let rate = f64::from(count) / seconds.max(0.1);
        let filter = format!("fps={rate:.6}:start_time=0,scale={FRAME_WIDTH}:-2");
        let args: Vec<String> = vec![
            "-nostdin".into(),
            "-v".into(),
            "error".into(),
            "-i".into(),
            file.display().to_string(),
            "-vf".into(),
            filter,
            "-frames:v".into(),
            count.to_string(),
            "-q:v".into(),
            "5".into(),
            "-y".into(),
            pattern.display().to_string(),
        ];
        self.ffmpeg("sample frames", &args, None)
            .await?
            .ok("ffmpeg", "sample frames")?;
        let mut frames = Vec::new();
        for i in 1..=count {
            let path = dir.path().join(format!("frame-{i:02}.jpg"));
            match tokio::fs::read(&path).await {
                Ok(b) => frames.push(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(MediaError::io(&path, e)),
            }
        }
        if frames.is_empty() {
            return Err(MediaError::Failed {
                tool: "ffmpeg",
                what: "sample frames".into(),
                detail: "the clip gave no frame".into(),
            });
        }
        Ok(frames)
    }
}
