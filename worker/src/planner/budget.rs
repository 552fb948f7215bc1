//! How many shots a job can pay for. Each shot costs a keyframe, and most backends bill a
//! minimum per shot (Runway bills 5 s for a 2 s shot, Veo renders 4 s at least), so more shots
//! cost more for the same length. The planner is told the most shots whose cheapest render,
//! with their keyframes, fits what the job may spend: a cheap job gets fewer, longer shots.

use aiprod_domain::{BackendName, Money, PriceTable};

use super::shot_range;

/// What the job may spend and what a shot costs to make.
pub(crate) struct Purse<'a> {
    /// What the job may spend: the least of today's headroom and its tenant's cap per job;
    /// `None`: no limit applies.
    pub money: Option<Money>,
    /// The prices.
    pub prices: &'a PriceTable,
    /// The backends the job may render on.
    pub backends: &'a [BackendName],
    /// One keyframe.
    pub keyframe: Money,
}

/// `n` shots of as even lengths as add up to `duration_s`.
pub(crate) fn even_split(duration_s: i32, n: i32) -> Vec<i64> {
    let n = n.max(1);
    let (base, extra) = (duration_s / n, duration_s % n);
    (0..n)
        .map(|i| i64::from(base + i32::from(i < extra)))
        .collect()
}

impl Purse<'_> {
    /// The cheapest way to make `n` shots of `duration_s` in all.
    pub fn cost(&self, duration_s: i32, n: i32) -> Option<Money> {
        let split = even_split(duration_s, n);
        let keyframes = Money::from_micros(self.keyframe.micros() * i64::from(n));
        self.backends
            .iter()
            .map(|b| self.prices.estimate(*b, &split) + keyframes)
            .min()
    }

    /// The most shots, within what the length allows, that the job can pay for; never fewer
    /// than the length needs (routing says whether even those fit).
    pub fn cap(&self, duration_s: i32) -> usize {
        let (min, max) = shot_range(duration_s);
        let Some(money) = self.money else {
            return max as usize;
        };
        (min..=max)
            .rev()
            .find(|n| self.cost(duration_s, *n).is_some_and(|c| c <= money))
            .unwrap_or(min) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(s: &str) -> Money {
        s.parse().expect("money")
    }

    #[test]
    fn a_cheap_job_gets_fewer_longer_shots() {
        let prices = PriceTable::default();
        let purse = |money: Option<Money>| Purse {
            money,
            prices: &prices,
            backends: &[BackendName::Runway],
            keyframe: usd("0.02"),
        };
        let rich = purse(None).cap(16);
        assert_eq!(rich, 8);
        let fewest = purse(Some(usd("0.01"))).cap(16);
        assert_eq!(fewest, 2);
        // Just enough for three shots' minimums: three.
        let three = purse(None).cost(16, 3).expect("a backend");
        assert_eq!(purse(Some(three)).cap(16), 3);
        assert!(purse(None).cost(16, 4) > purse(None).cost(16, 2));
    }

    #[test]
    fn an_even_split_adds_up() {
        for d in 2..=60 {
            for n in 1..=d / 2 {
                let s = even_split(d, n);
                assert_eq!(s.iter().sum::<i64>(), i64::from(d));
                assert!(s.iter().max().expect("shots") - s.iter().min().expect("shots") <= 1);
            }
        }
    }
}
