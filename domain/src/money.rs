//! Exact money: integer micro-dollars. Floats never hold an amount, so sums and budgets are exact
//! whatever the number of jobs.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, Mul, Sub};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Micro-dollars in one dollar.
const MICROS_PER_USD: i64 = 1_000_000;

/// An amount of US dollars, held as integer micro-dollars (1e-6 USD).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(i64);

/// Why a decimal string is not an amount of money.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    /// The text is not a plain decimal number such as `12.345`.
    #[error("`{0}` is not a decimal amount of dollars such as 12.50")]
    Syntax(String),
    /// More than six decimals would need rounding, which money never does silently.
    #[error("`{0}` has more than 6 decimals (money is counted in micro-dollars)")]
    TooPrecise(String),
    /// The amount does not fit in 64-bit micro-dollars.
    #[error("`{0}` is too large")]
    Overflow(String),
}

impl Money {
    /// Zero dollars.
    pub const ZERO: Money = Money(0);

    /// An amount from integer micro-dollars.
    pub const fn from_micros(micros: i64) -> Self {
        Money(micros)
    }

    /// An amount from whole dollars.
    pub const fn from_usd(usd: i64) -> Self {
        Money(usd * MICROS_PER_USD)
    }

    /// The amount in micro-dollars.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// Adds, or `None` on overflow.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    /// Multiplies by a whole count (seconds, shots), or `None` on overflow.
    pub fn checked_mul(self, n: i64) -> Option<Money> {
        self.0.checked_mul(n).map(Money)
    }
}

impl FromStr for Money {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let is_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() && frac.is_empty() || !is_digits(whole) || !is_digits(frac) {
            return Err(MoneyError::Syntax(s.to_owned()));
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > 6 {
            return Err(MoneyError::TooPrecise(s.to_owned()));
        }
        let overflow = || MoneyError::Overflow(s.to_owned());
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| overflow())?
        };
        let frac_micros: i64 = format!("{frac:0<6}")
            .parse()
            .map_err(|_| MoneyError::Syntax(s.to_owned()))?;
        let micros = whole
            .checked_mul(MICROS_PER_USD)
            .and_then(|w| w.checked_add(frac_micros))
            .ok_or_else(overflow)?;
        Ok(Money(if negative { -micros } else { micros }))
    }
}

impl fmt::Display for Money {
    /// Dollars with at least two decimals and no trailing zeros past them: `0.26`, `30.00`,
    /// `0.000001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / MICROS_PER_USD as u64;
        let frac = format!("{:06}", abs % MICROS_PER_USD as u64);
        let trimmed = frac.trim_end_matches('0');
        let shown = if trimmed.len() < 2 {
            &frac[..2]
        } else {
            trimmed
        };
        write!(f, "{sign}{whole}.{shown}")
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        Money(self.0 + rhs.0)
    }
}

impl Sub for Money {
    type Output = Money;
    fn sub(self, rhs: Money) -> Money {
        Money(self.0 - rhs.0)
    }
}

impl Mul<i64> for Money {
    type Output = Money;
    fn mul(self, rhs: i64) -> Money {
        Money(self.0 * rhs)
    }
}

impl Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, |a, b| a + b)
    }
}

impl Serialize for Money {
    /// Money leaves the process as a decimal string, never a JSON number that a client might
    /// read into a float.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    /// Accepts a decimal string or an integer. A float (which configuration loaders produce
    /// for `0.05`) is taken through its shortest round-trip text, which is exact for any
    /// amount written with six decimals or fewer.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Money;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an amount of dollars such as \"12.50\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Money, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Money, E> {
                Money::from_usd(1)
                    .checked_mul(v)
                    .ok_or_else(|| E::custom("amount too large"))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Money, E> {
                let v = i64::try_from(v).map_err(|_| E::custom("amount too large"))?;
                self.visit_i64(v)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Money, E> {
                self.visit_str(&v.to_string())
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_exact_amounts() {
        let cases = [
            ("0.26", 260_000, "0.26"),
            ("30", 30_000_000, "30.00"),
            ("2.6", 2_600_000, "2.60"),
            ("0.000001", 1, "0.000001"),
            ("-1.5", -1_500_000, "-1.50"),
            (".5", 500_000, "0.50"),
            ("12.340000", 12_340_000, "12.34"),
        ];
        for (text, micros, shown) in cases {
            let m: Money = text.parse().expect(text);
            assert_eq!(m.micros(), micros, "{text}");
            assert_eq!(m.to_string(), shown, "{text}");
        }
    }

    #[test]
    fn rejects_what_is_not_exact_money() {
        assert!(matches!(
            "0.0000001".parse::<Money>(),
            Err(MoneyError::TooPrecise(_))
        ));
        assert!(matches!("1e3".parse::<Money>(), Err(MoneyError::Syntax(_))));
        assert!(matches!("".parse::<Money>(), Err(MoneyError::Syntax(_))));
        assert!(matches!(".".parse::<Money>(), Err(MoneyError::Syntax(_))));
        assert!(matches!(
            "99999999999999999".parse::<Money>(),
            Err(MoneyError::Overflow(_))
        ));
    }

    #[test]
    fn floats_from_config_become_exact_amounts() {
        let m: Money = serde_json::from_str("0.05").expect("float");
        assert_eq!(m.micros(), 50_000);
        let m: Money = serde_json::from_str("\"0.1\"").expect("string");
        assert_eq!((m * 3).micros(), 300_000);
    }
}
