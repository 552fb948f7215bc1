//! What a provider says a render used, and what that costs. Replicate reports the seconds its
//! hardware ran a prediction (`metrics.predict_time`, a JSON number) and bills them at the
//! hardware's price per second. The number is read from its text as an exact decimal, never
//! through a float, so the figure we charge is the one the provider's own arithmetic gives.

use std::fmt;

use rust_decimal::Decimal;

use crate::Money;

/// Seconds of a provider's hardware, exactly as the provider wrote them: a decimal of up to
/// 28 significant digits, never negative.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HardwareSeconds(Decimal);

/// Why a provider's figure cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsageError {
    /// The text is not a plain JSON number (`NaN`, a quoted string, an empty value…).
    #[error("`{0}` is not a number of seconds")]
    Syntax(String),
    /// Time does not run backwards: a provider's negative figure is a bug, not a refund.
    #[error("`{0}` seconds is negative")]
    Negative(String),
    /// More digits than an exact decimal holds, or a cost past 64-bit micro-dollars.
    #[error("`{0}` is too large or too precise to cost exactly")]
    Overflow(String),
}

impl HardwareSeconds {
    /// Reads a JSON number's text (`41.2`, `2.0000005`, `1e-7`, `1.5E+2`) exactly. A figure
    /// with more than 28 significant digits is refused rather than rounded.
    pub fn parse(text: &str) -> Result<HardwareSeconds, UsageError> {
        let text = text.trim();
        let syntax = || UsageError::Syntax(text.to_owned());
        let number_chars = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || b"+-.".contains(&b));
        let (base, exponent) = match text.split_once(['e', 'E']) {
            Some((b, e)) => (b, Some(e)),
            None => (text, None),
        };
        if base.is_empty() || !number_chars(base) || !exponent.is_none_or(number_chars) {
            return Err(syntax());
        }
        let overflow = || UsageError::Overflow(text.to_owned());
        let mut seconds = Decimal::from_str_exact(base).map_err(|e| match e {
            rust_decimal::Error::ErrorString(_) => syntax(),
            _ => overflow(),
        })?;
        if let Some(exponent) = exponent {
            let exponent: i64 = exponent.parse().map_err(|_| syntax())?;
            // value = mantissa × 10^(exponent − scale): a smaller scale, or whole tens.
            let scale = i64::from(seconds.scale()) - exponent;
            if scale >= 0 {
                let scale = u32::try_from(scale).map_err(|_| overflow())?;
                seconds.set_scale(scale).map_err(|_| overflow())?;
            } else {
                let tens = u32::try_from(-scale)
                    .ok()
                    .and_then(|k| 10i128.checked_pow(k))
                    .and_then(|p| Decimal::try_from_i128_with_scale(p, 0).ok())
                    .ok_or_else(overflow)?;
                seconds.set_scale(0).map_err(|_| overflow())?;
                seconds = seconds.checked_mul(tens).ok_or_else(overflow)?;
            }
        }
        if seconds.is_sign_negative() && !seconds.is_zero() {
            return Err(UsageError::Negative(text.to_owned()));
        }
        Ok(HardwareSeconds(seconds.abs()))
    }

    /// What these seconds cost at `per_second`, rounded up to the next micro-dollar: the
    /// provider bills whole units of its own, and an estimate of a bill should never come in
    /// under it. The product is taken in 128-bit integers, so no digit is lost before the one
    /// rounding.
    pub fn cost(&self, per_second: Money) -> Result<Money, UsageError> {
        let overflow = || UsageError::Overflow(self.to_string());
        if per_second < Money::ZERO {
            return Err(UsageError::Negative(per_second.to_string()));
        }
        let product = self
            .0
            .mantissa()
            .checked_mul(i128::from(per_second.micros()))
            .ok_or_else(overflow)?;
        // The scale is at most 28, so its power of ten fits.
        let unit = 10i128.pow(self.0.scale());
        let micros = product / unit + i128::from(product % unit != 0);
        i64::try_from(micros)
            .map(Money::from_micros)
            .map_err(|_| overflow())
    }
}

impl fmt::Display for HardwareSeconds {
    /// The plain decimal, as PostgreSQL's `numeric` reads it: `0.0000001`, never `1e-7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(seconds: &str, per_second_micros: i64) -> Result<i64, UsageError> {
        HardwareSeconds::parse(seconds)?
            .cost(Money::from_micros(per_second_micros))
            .map(Money::micros)
    }

    #[test]
    fn awkward_figures_cost_exactly_and_round_up_once() {
        // (seconds, price per second in micro-dollars, micro-dollars charged)
        let cases = [
            ("41.2", 1_400, 57_680),
            // 0.1 is not a float here: 0.1 × 3 = 0.3 exactly, not 0.30000000000000004.
            ("0.1", 3, 1),
            ("0.1", 10, 1),
            ("0.3", 10, 3),
            // 2.0000005 × 1400 = 2800.0007: rounded up to 2801.
            ("2.0000005", 1_400, 2_801),
            // 1e-7 of a second still costs one micro-dollar; zero costs nothing.
            ("1e-7", 1_400, 1),
            ("1E-7", 1, 1),
            ("0", 1_400, 0),
            ("0.000", 1_400, 0),
            ("-0", 1_400, 0),
            ("1.5e+2", 1_400, 210_000),
            ("15e1", 1_400, 210_000),
            ("36000", 1_400, 50_400_000),
            // The whole 28 digits are kept: 0.1234567890123456789012345678 × 1400.
            ("0.1234567890123456789012345678", 1_400, 173),
            // A week of hardware at $1000 a second still fits.
            ("604800", 1_000_000_000, 604_800_000_000_000),
        ];
        for (seconds, price, want) in cases {
            assert_eq!(
                cost(seconds, price),
                Ok(want),
                "{seconds} s at {price} µ$/s"
            );
        }
    }

    #[test]
    fn what_is_not_a_usable_figure_is_refused() {
        for text in [
            "NaN", "nan", "inf", "-inf", "", "\"41.2\"", "1_000", "e5", "1e", "null",
        ] {
            assert!(
                matches!(HardwareSeconds::parse(text), Err(UsageError::Syntax(_))),
                "{text}: {:?}",
                HardwareSeconds::parse(text)
            );
        }
        for text in ["-0.5", "-1e-7", "-41.2"] {
            assert!(
                matches!(HardwareSeconds::parse(text), Err(UsageError::Negative(_))),
                "{text}"
            );
        }
        // Past 28 significant digits, or past what an exact decimal holds: refused, not rounded.
        for text in ["1e29", "1e-29", "0.12345678901234567890123456789", "1e400"] {
            assert!(
                matches!(HardwareSeconds::parse(text), Err(UsageError::Overflow(_))),
                "{text}: {:?}",
                HardwareSeconds::parse(text)
            );
        }
        // Parsed, but the bill would not fit in 64-bit micro-dollars.
        assert!(matches!(
            cost("79228162514264337593543950335", 1_400),
            Err(UsageError::Overflow(_))
        ));
        assert!(matches!(cost("1e20", 1_400), Err(UsageError::Overflow(_))));
        assert!(matches!(
            HardwareSeconds::parse("1").and_then(|s| s.cost(Money::from_micros(-1))),
            Err(UsageError::Negative(_))
        ));
    }

    #[test]
    fn the_text_kept_is_the_plain_decimal() {
        for (text, shown) in [("1e-7", "0.0000001"), ("41.2", "41.2"), ("1.5e+2", "150")] {
            assert_eq!(
                HardwareSeconds::parse(text).map(|s| s.to_string()),
                Ok(shown.to_owned())
            );
        }
    }
}
