//! The cost model: per backend, a base price per shot plus a per-second rate, with the quality
//! prior and relative speed that routing reads. Every number is configuration; the defaults are
//! the figures in the README's settings table.

use serde::{Deserialize, Serialize};

use crate::{BackendName, Money};

/// What one backend costs and how good and fast it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendProfile {
    /// The provider's model id.
    pub model: String,
    /// Charged once per shot.
    pub base_usd: Money,
    /// Charged per second of video.
    pub per_second_usd: Money,
    /// The quality prior, 0–1.
    pub quality: f64,
    /// Latency relative to the fastest backend (1.0); scales the simulated render time.
    pub latency_factor: f64,
}

impl BackendProfile {
    /// The estimated price of one shot of `seconds` seconds.
    pub fn shot_cost(&self, seconds: i64) -> Money {
        self.base_usd + self.per_second_usd * seconds
    }

    /// Checks what the types alone do not; the error names the setting.
    pub fn validate(&self, name: BackendName) -> Result<(), String> {
        if self.base_usd < Money::ZERO || self.per_second_usd < Money::ZERO {
            return Err(format!(
                "AIPROD_BACKENDS__{}: prices must not be negative",
                name.as_str().to_uppercase()
            ));
        }
        if !(0.0..=1.0).contains(&self.quality) {
            return Err(format!(
                "AIPROD_BACKENDS__{}__QUALITY must be between 0 and 1",
                name.as_str().to_uppercase()
            ));
        }
        if !(self.latency_factor > 0.0 && self.latency_factor <= 100.0) {
            return Err(format!(
                "AIPROD_BACKENDS__{}__LATENCY_FACTOR must be in (0, 100]",
                name.as_str().to_uppercase()
            ));
        }
        Ok(())
    }
}

/// The profile of every backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// Runway gen4_turbo.
    pub runway: BackendProfile,
    /// Veo 3 on Vertex AI.
    pub veo3: BackendProfile,
    /// Replicate Stable Video Diffusion.
    pub replicate: BackendProfile,
}

impl PriceTable {
    /// The profile of one backend.
    pub fn profile(&self, name: BackendName) -> &BackendProfile {
        match name {
            BackendName::Runway => &self.runway,
            BackendName::Veo3 => &self.veo3,
            BackendName::Replicate => &self.replicate,
        }
    }

    /// The estimated price of rendering shots of the given lengths on one backend, each at the
    /// length the provider will be asked for (and bill).
    pub fn estimate(&self, name: BackendName, shot_seconds: &[i64]) -> Money {
        let p = self.profile(name);
        shot_seconds
            .iter()
            .map(|s| p.shot_cost(billed_seconds(name, *s)))
            .sum()
    }
}

/// The length a provider renders (and bills) for a shot of `seconds`: Veo renders only 4, 6 or
/// 8 seconds, so a shot is asked for the shortest of those that covers it.
pub fn billed_seconds(name: BackendName, seconds: i64) -> i64 {
    match name {
        BackendName::Veo3 => match seconds {
            ..=4 => 4,
            5..=6 => 6,
            _ => 8,
        },
        BackendName::Runway | BackendName::Replicate => seconds,
    }
}

impl Default for PriceTable {
    fn default() -> Self {
        let usd = |s: &str| s.parse::<Money>().expect("seed prices are valid");
        PriceTable {
            runway: BackendProfile {
                model: "gen4_turbo".into(),
                base_usd: usd("5"),
                per_second_usd: usd("5"),
                quality: 0.95,
                latency_factor: 1.0,
            },
            veo3: BackendProfile {
                model: "veo-3.0-generate-001".into(),
                base_usd: usd("0.10"),
                per_second_usd: usd("0.50"),
                quality: 0.92,
                latency_factor: 1.5,
            },
            replicate: BackendProfile {
                model: "stability-ai/stable-video-diffusion".into(),
                base_usd: usd("0.01"),
                per_second_usd: usd("0.05"),
                quality: 0.75,
                latency_factor: 2.0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_prices_for_a_five_second_shot() {
        let t = PriceTable::default();
        assert_eq!(t.estimate(BackendName::Runway, &[5]).to_string(), "30.00");
        // Veo renders 4, 6 or 8 s: a 5 s shot is billed as 6 s (0.10 + 0.50 × 6).
        assert_eq!(t.estimate(BackendName::Veo3, &[5]).to_string(), "3.10");
        assert_eq!(t.estimate(BackendName::Veo3, &[4]).to_string(), "2.10");
        assert_eq!(t.estimate(BackendName::Replicate, &[5]).to_string(), "0.26");
        assert_eq!(
            t.estimate(BackendName::Replicate, &[3, 2]).to_string(),
            "0.27"
        );
    }
}
