//! Budget days: which day a moment belongs to, in the budget's time zone, and when the next one
//! opens. The money itself is the store's ledger.

use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use crate::Money;

/// The calendar of budget days and the limit a new day opens with.
#[derive(Clone, Copy, Debug)]
pub struct BudgetCalendar {
    /// The zone whose local midnight starts a day.
    pub zone: Tz,
    /// The limit of a new day.
    pub daily_limit: Money,
}

impl BudgetCalendar {
    /// Days that start at `zone`'s local midnight and open with `daily_limit`.
    pub fn new(zone: Tz, daily_limit: Money) -> BudgetCalendar {
        BudgetCalendar { zone, daily_limit }
    }

    /// The budget day `t` falls in.
    pub fn day_at(&self, t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&self.zone).date_naive()
    }

    /// The moment the day after `t`'s opens: the next local midnight. Where a DST change skips
    /// midnight, the first moment of that local day.
    pub fn next_open(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let next = self
            .day_at(t)
            .checked_add_days(Days::new(1))
            .expect("dates this close to now do not overflow");
        let mut local = next.and_hms_opt(0, 0, 0).expect("midnight exists");
        for _ in 0..4 {
            if let Some(at) = self.zone.from_local_datetime(&local).earliest() {
                return at.with_timezone(&Utc);
            }
            local += chrono::Duration::minutes(30);
        }
        t + chrono::Duration::days(1)
    }

    /// The zone's name, as stored with each day.
    pub fn zone_name(&self) -> &'static str {
        self.zone.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal(zone: &str) -> BudgetCalendar {
        BudgetCalendar {
            zone: zone.parse().expect("zone"),
            daily_limit: Money::from_usd(100),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[test]
    fn a_day_is_local_to_the_budget_zone() {
        let t = at("2026-11-23T23:30:00Z");
        assert_eq!(cal("UTC").day_at(t).to_string(), "2026-11-23");
        assert_eq!(cal("Europe/Paris").day_at(t).to_string(), "2026-11-24");
        assert_eq!(cal("America/New_York").day_at(t).to_string(), "2026-11-23");
        assert_eq!(
            cal("Europe/Paris").next_open(t),
            at("2026-11-24T23:00:00Z"),
            "Paris is UTC+1 in November"
        );
        assert_eq!(cal("UTC").next_open(t), at("2026-11-24T00:00:00Z"));
    }

    #[test]
    fn the_next_day_opens_at_the_first_local_moment_even_when_dst_skips_midnight() {
        // Santiago springs forward at local midnight: 2026-09-06 00:00 does not exist.
        let c = cal("America/Santiago");
        let open = c.next_open(at("2026-09-05T12:00:00Z"));
        assert_eq!(c.day_at(open).to_string(), "2026-09-06");
        assert!(c.day_at(open - chrono::Duration::seconds(1)).to_string() == "2026-09-05");
    }
}
