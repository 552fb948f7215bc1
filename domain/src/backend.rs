//! The video backends, and what a client may ask for.

use crate::wire::{pg_enum, wire_enum};

wire_enum! {
    /// A video-generation backend. Declaration order is the default fallback order.
    pub enum BackendName in "backend_name" {
        /// Runway gen4_turbo.
        Runway,
        /// Veo 3 on Vertex AI.
        Veo3,
        /// Stable Video Diffusion on Replicate.
        Replicate,
    }
}

impl BackendName {
    /// Every backend, in the default fallback order.
    pub const ALL: &'static [BackendName] = <BackendName as strum::VariantArray>::VARIANTS;
}

/// What the client asked for: automatic selection, or one named backend. On the wire it is
/// `auto` or the backend's own name, so adding a backend adds a choice with no list to keep.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    serde_with::SerializeDisplay,
    serde_with::DeserializeFromStr,
)]
pub enum BackendChoice {
    /// Let the router choose by budget, quality and speed.
    Auto,
    /// This backend only.
    Named(BackendName),
}

pg_enum!(BackendChoice, "backend_choice");

/// The wire name of automatic selection.
const AUTO: &str = "auto";

impl BackendChoice {
    /// The named backend, or `None` for automatic selection.
    pub fn named(self) -> Option<BackendName> {
        match self {
            BackendChoice::Auto => None,
            BackendChoice::Named(b) => Some(b),
        }
    }

    /// The wire name: `auto`, or the backend's.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendChoice::Auto => AUTO,
            BackendChoice::Named(b) => b.as_str(),
        }
    }

    /// Every wire name: `auto`, then every backend's.
    pub fn names() -> impl Iterator<Item = &'static str> {
        std::iter::once(AUTO).chain(BackendName::names())
    }

    /// Every wire name, joined for a message: `auto, runway, …`.
    pub fn one_of() -> String {
        BackendChoice::names().collect::<Vec<_>>().join(", ")
    }
}

impl std::fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackendChoice {
    type Err = strum::ParseError;

    fn from_str(s: &str) -> Result<BackendChoice, strum::ParseError> {
        if s == AUTO {
            Ok(BackendChoice::Auto)
        } else {
            s.parse().map(BackendChoice::Named)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{BackendChoice, BackendName};

    #[test]
    fn a_choice_is_auto_or_a_backends_own_name() {
        assert_eq!(
            BackendChoice::names().collect::<Vec<_>>(),
            ["auto", "runway", "veo3", "replicate"]
        );
        for name in BackendChoice::names() {
            let choice: BackendChoice = name.parse().expect("a wire name");
            assert_eq!(choice.as_str(), name);
        }
        assert_eq!(
            "veo3".parse::<BackendChoice>().expect("veo3"),
            BackendChoice::Named(BackendName::Veo3)
        );
        assert!("sora".parse::<BackendChoice>().is_err());
    }
}
