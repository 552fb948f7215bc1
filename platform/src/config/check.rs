//! The checks every section repeats, each failing with one line that names the setting, the
//! rule and the value: `AIPROD_LEASE_TTL_MS must be 300–3600000, got 5`.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::time::Duration;

/// `value` lies in `range`.
pub(super) fn within<T: PartialOrd + Display>(
    name: &str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<(), String> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{name} must be {}–{}, got {value}",
            range.start(),
            range.end()
        ))
    }
}

/// A duration set in milliseconds lies in `range` (milliseconds).
pub(super) fn within_ms(
    name: &str,
    value: Duration,
    range: RangeInclusive<u64>,
) -> Result<(), String> {
    within(name, as_millis(value), range)
}

/// A duration set in seconds lies in `range` (seconds).
pub(super) fn within_s(
    name: &str,
    value: Duration,
    range: RangeInclusive<u64>,
) -> Result<(), String> {
    within(name, value.as_secs(), range)
}

/// A share from 0 to 1.
pub(super) fn share(name: &str, value: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(format!("{name} must be between 0 and 1, got {value}"))
    }
}

/// An http(s) URL.
pub(super) fn http_url(name: &str, value: &str) -> Result<(), String> {
    if value.starts_with("http://") || value.starts_with("https://") {
        Ok(())
    } else {
        Err(format!("{name} must be an http(s) URL, got {value}"))
    }
}

fn as_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_out_of_range_is_one_line_naming_the_setting() {
        assert_eq!(
            within_ms("AIPROD_X_MS", Duration::from_millis(5), 10..=20),
            Err("AIPROD_X_MS must be 10–20, got 5".into())
        );
        assert_eq!(
            within_s("AIPROD_Y_S", Duration::from_secs(15), 10..=20),
            Ok(())
        );
        assert!(http_url("AIPROD_URL", "ftp://x").is_err());
        assert!(share("AIPROD_RATE", 1.5).is_err());
    }
}
