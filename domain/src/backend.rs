//! The video backends, and what a client may ask for.

use serde_with::{DeserializeFromStr, SerializeDisplay};
use strum::{Display, EnumString, IntoStaticStr, VariantArray};

use crate::wire::wire_name;

/// A video-generation backend. Declaration order is the default fallback order.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Display,
    EnumString,
    IntoStaticStr,
    VariantArray,
    SerializeDisplay,
    DeserializeFromStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum BackendName {
    /// Runway gen4_turbo.
    Runway,
    /// Veo 3 on Vertex AI.
    Veo3,
    /// Stable Video Diffusion on Replicate.
    Replicate,
}

wire_name!(BackendName, pg = "backend_name");

impl BackendName {
    /// Every backend, in the default fallback order.
    pub const ALL: &'static [BackendName] = <BackendName as VariantArray>::VARIANTS;
}

/// What the client asked for: a named backend or automatic selection.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Display,
    EnumString,
    IntoStaticStr,
    VariantArray,
    SerializeDisplay,
    DeserializeFromStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum BackendChoice {
    /// Let the router choose by budget, quality and speed.
    Auto,
    /// Runway only.
    Runway,
    /// Veo 3 only.
    Veo3,
    /// Replicate only.
    Replicate,
}

wire_name!(BackendChoice, pg = "backend_choice");

impl BackendChoice {
    /// The named backend, or `None` for automatic selection.
    pub fn named(self) -> Option<BackendName> {
        match self {
            BackendChoice::Auto => None,
            BackendChoice::Runway => Some(BackendName::Runway),
            BackendChoice::Veo3 => Some(BackendName::Veo3),
            BackendChoice::Replicate => Some(BackendName::Replicate),
        }
    }
}
