//! The cost model: per backend, a base price per shot plus a per-second rate, with the quality
//! prior and relative speed that routing reads, and how the provider really bills (`Billing`).
//! Every number is configuration; the defaults are the figures in the README's settings table.

use serde::{Deserialize, Serialize};

use crate::usage::{HardwareSeconds, UsageError};
use crate::{BackendName, Money};

/// How a provider bills a render.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Billing {
    /// Per second of video delivered (Runway, Veo): the estimate is the bill.
    VideoSecond,
    /// Per second of the hardware the model ran on (Replicate), at `per_hardware_second_usd`:
    /// the provider reports the seconds when the render ends, and the estimate is only a guess.
    HardwareSecond,
}

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
    /// How the provider bills: the estimate above is reserved either way, and a try billed per
    /// hardware second is charged what the provider reports it used.
    pub billing: Billing,
    /// The price of one second of the hardware the model runs on, when billed so.
    pub per_hardware_second_usd: Money,
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

    /// What a try costs by the provider's own figure: `None` when this backend is not billed
    /// per hardware second, so the estimate stands. Rounded up to the micro-dollar
    /// (`HardwareSeconds::cost`).
    pub fn hardware_cost(&self, used: &HardwareSeconds) -> Option<Result<Money, UsageError>> {
        (self.billing == Billing::HardwareSecond).then(|| used.cost(self.per_hardware_second_usd))
    }

    /// Checks what the types alone do not; the error names the setting.
    pub fn validate(&self, name: BackendName) -> Result<(), String> {
        if self.base_usd < Money::ZERO
            || self.per_second_usd < Money::ZERO
            || self.per_hardware_second_usd < Money::ZERO
        {
            return Err(format!(
                "AIPROD_BACKENDS__{}: prices must not be negative",
                name.as_str().to_uppercase()
            ));
        }
        if self.billing == Billing::HardwareSecond {
            // Only Replicate tells how long its hardware ran; another backend so billed would be
            // charged its estimate forever without anyone noticing.
            if name != BackendName::Replicate {
                return Err(format!(
                    "AIPROD_BACKENDS__{}__BILLING=hardware_second: only replicate reports the \
                     hardware time it used",
                    name.as_str().to_uppercase()
                ));
            }
            if self.per_hardware_second_usd == Money::ZERO {
                return Err(format!(
                    "AIPROD_BACKENDS__{}__PER_HARDWARE_SECOND_USD must be set when billed per \
                     hardware second",
                    name.as_str().to_uppercase()
                ));
            }
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
                billing: Billing::VideoSecond,
                per_hardware_second_usd: Money::ZERO,
                quality: 0.95,
                latency_factor: 1.0,
            },
            veo3: BackendProfile {
                model: "veo-3.0-generate-001".into(),
                base_usd: usd("0.10"),
                per_second_usd: usd("0.50"),
                billing: Billing::VideoSecond,
                per_hardware_second_usd: Money::ZERO,
                quality: 0.92,
                latency_factor: 1.5,
            },
            replicate: BackendProfile {
                model: "stability-ai/stable-video-diffusion".into(),
                base_usd: usd("0.01"),
                per_second_usd: usd("0.05"),
                // Stable Video Diffusion runs on an Nvidia A100 (80 GB): $0.0014 a second.
                billing: Billing::HardwareSecond,
                per_hardware_second_usd: usd("0.0014"),
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

    #[test]
    fn only_a_backend_billed_per_hardware_second_is_charged_the_providers_figure() {
        let t = PriceTable::default();
        let used = HardwareSeconds::parse("41.2").expect("a number");
        // 41.2 s × $0.0014 = $0.05768.
        assert_eq!(
            t.replicate.hardware_cost(&used),
            Some(Ok(Money::from_micros(57_680)))
        );
        assert_eq!(t.runway.hardware_cost(&used), None);
        assert_eq!(t.veo3.hardware_cost(&used), None);
    }

    #[test]
    fn hardware_billing_is_refused_where_it_cannot_work() {
        let mut t = PriceTable::default();
        for name in BackendName::ALL {
            assert_eq!(t.profile(*name).validate(*name), Ok(()), "{name}");
        }
        t.runway.billing = Billing::HardwareSecond;
        t.runway.per_hardware_second_usd = Money::from_micros(1_000);
        let e = t.runway.validate(BackendName::Runway).expect_err("refused");
        assert!(e.contains("AIPROD_BACKENDS__RUNWAY__BILLING"), "{e}");
        t.replicate.per_hardware_second_usd = Money::ZERO;
        let e = t
            .replicate
            .validate(BackendName::Replicate)
            .expect_err("refused");
        assert!(e.contains("PER_HARDWARE_SECOND_USD"), "{e}");
        t.replicate.per_hardware_second_usd = Money::from_micros(-1);
        assert!(t.replicate.validate(BackendName::Replicate).is_err());
    }
}
