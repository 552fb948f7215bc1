//! Media work, done by the real tools of the field: the system's `ffmpeg` and `ffprobe`, run as
//! processes behind this one typed module (README, "Media").
//!
//! - [`probe`]: what a file holds, from ffprobe's JSON; a full decode's findings; and
//!   `inspect`, which probes, decodes and judges a file.
//! - [`qa`]: technical QA, the ten checks and three more, each with its measured value, its
//!   limit, and what a failure means for a provider's clip.
//! - [`synth`]: the simulated backends' clips: real, moving H.264 with the shot's text drawn on
//!   it, cached by what they show.
//! - `frames`: a few JPEG frames of a clip, for the vision judge of semantic QA.
//! - [`assemble`]: the shots normalised to the output profile, trimmed to plan and joined into
//!   one `final.mp4` with a poster.
//!
//! Every ffmpeg and ffprobe runs on a bounded pool sized to the machine's cores: the work is
//! in child processes, awaited without holding a runtime thread, and never more of them at once
//! than there are cores, so one job's encode cannot starve another job's lease renewals.

pub mod assemble;
mod frames;
mod making;
mod memo;
pub mod probe;
pub mod qa;
pub mod synth;
mod tool;

pub use assemble::{Assembly, Repair, ShotInput};
pub use probe::Probe;
pub use qa::{Check, Expect, Report, Verdict};
pub use synth::{ClipSpec, Picture};
pub use tool::{Media, MediaError};
