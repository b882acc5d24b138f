//! RFM scores (1–5 per dimension, by quintiles of the population) and the 11 named segments.
//!
//! # Scores
//!
//! For each dimension the population is ranked from worst to best (recency: the longest time
//! since the last purchase is worst, i.e. **more recent = higher score**; frequency and monetary:
//! lower is worse). With `worse` the number of customers strictly worse and `tied` the number
//! with exactly the same value (the customer included), the mid-rank percentile is
//! `(worse + tied / 2) / n` and
//!
//! ```text
//! score = 1 + ⌊5 · (worse + tied / 2) / n⌋      (computed in integers, always in 1..=5)
//! ```
//!
//! Ties are handled deterministically: equal values always get the same score, whatever the
//! input order, and a block of ties sits at the quintile of its middle. Consequently a
//! population with many ties (e.g. most customers with frequency 0) does not fill each score
//! with exactly 20 %, and some scores can be unused. A population of one customer scores 3, 3, 3.
//!
//! # Segments
//!
//! The segment depends on `R` and `FM = ⌈(F + M) / 2⌉`, through this grid (rows `R`, columns
//! `FM`), which is a partition of the 25 cells into the 11 segments:
//!
//! ```text
//!          FM=1             FM=2                FM=3                FM=4             FM=5
//! R=5   new              potential loyalist  potential loyalist  champions        champions
//! R=4   promising        potential loyalist  potential loyalist  loyal            champions
//! R=3   promising        need attention      need attention      loyal            loyal
//! R=2   about to sleep   about to sleep      at risk             at risk          can't lose them
//! R=1   lost             hibernating         at risk             can't lose them  can't lose them
//! ```
//!
//! [`RfmSegment::rule`] states each segment as rectangles of `(R, FM)`; the tests check that
//! the rules and the grid agree and that every one of the 125 `(R, F, M)` combinations falls in
//! exactly one segment.

use std::ops::RangeInclusive;

use super::{ClvError, CustomerRfm, TimeUnit};

/// One customer's raw RFM metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RfmObservation {
    time_since_last_purchase: f64,
    frequency: f64,
    monetary: f64,
}

impl RfmObservation {
    /// Metrics: time since the last purchase (any unit, only the order matters), number of
    /// purchases (or repeat purchases), monetary value (total or mean). All finite.
    pub fn new(
        time_since_last_purchase: f64,
        frequency: f64,
        monetary: f64,
    ) -> Result<Self, ClvError> {
        for (field, v) in [
            ("time_since_last_purchase", time_since_last_purchase),
            ("frequency", frequency),
            ("monetary", monetary),
        ] {
            if !v.is_finite() {
                return Err(ClvError::NotFinite { field });
            }
        }
        Ok(Self {
            time_since_last_purchase: time_since_last_purchase + 0.0,
            frequency: frequency + 0.0,
            monetary: monetary + 0.0,
        })
    }

    /// From a model summary: `T - t_x`, `x`, mean repeat value `m`.
    pub fn from_summary<U: TimeUnit>(c: &CustomerRfm<U>) -> Self {
        Self {
            time_since_last_purchase: c.time_since_last_purchase(),
            frequency: f64::from(c.frequency()),
            monetary: c.monetary(),
        }
    }
}

/// R, F and M scores, each in `1..=5` (5 best).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RfmScore {
    r: u8,
    f: u8,
    m: u8,
}

impl RfmScore {
    /// Scores; each must be in `1..=5`.
    pub fn new(r: u8, f: u8, m: u8) -> Result<Self, ClvError> {
        for (name, v) in [("r", r), ("f", f), ("m", m)] {
            if !(1..=5).contains(&v) {
                return Err(ClvError::InvalidParameter {
                    name,
                    value: f64::from(v),
                });
            }
        }
        Ok(Self { r, f, m })
    }

    /// Recency score (5 = most recent).
    pub const fn r(&self) -> u8 {
        self.r
    }

    /// Frequency score.
    pub const fn f(&self) -> u8 {
        self.f
    }

    /// Monetary score.
    pub const fn m(&self) -> u8 {
        self.m
    }

    /// Combined frequency-monetary score `⌈(F + M) / 2⌉`.
    pub const fn fm(&self) -> u8 {
        (self.f + self.m).div_ceil(2)
    }

    /// The segment (module docs).
    pub fn segment(&self) -> RfmSegment {
        let row = usize::from(5 - self.r);
        let col = usize::from(self.fm() - 1);
        GRID.get(row)
            .and_then(|cells| cells.get(col))
            .copied()
            .unwrap_or(RfmSegment::Lost)
    }
}

/// The 11 named RFM segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RfmSegment {
    /// Bought recently, buy often and spend the most.
    Champions,
    /// Buy regularly, responsive.
    Loyal,
    /// Recent customers with average frequency.
    PotentialLoyalist,
    /// Bought most recently, not often.
    New,
    /// Recent shoppers who have not spent much.
    Promising,
    /// Above-average recency, frequency and monetary values, but slipping.
    NeedAttention,
    /// Below-average recency and frequency.
    AboutToSleep,
    /// Spent big and often, but long ago.
    AtRisk,
    /// Made the biggest purchases, often, but have not returned for a long time.
    CantLoseThem,
    /// Last purchase long ago, low spenders, few orders.
    Hibernating,
    /// Lowest recency, frequency and monetary scores.
    Lost,
}

use RfmSegment::*;

/// Rows R = 5, 4, 3, 2, 1; columns FM = 1..=5.
const GRID: [[RfmSegment; 5]; 5] = [
    [
        New,
        PotentialLoyalist,
        PotentialLoyalist,
        Champions,
        Champions,
    ],
    [
        Promising,
        PotentialLoyalist,
        PotentialLoyalist,
        Loyal,
        Champions,
    ],
    [Promising, NeedAttention, NeedAttention, Loyal, Loyal],
    [AboutToSleep, AboutToSleep, AtRisk, AtRisk, CantLoseThem],
    [Lost, Hibernating, AtRisk, CantLoseThem, CantLoseThem],
];

impl RfmSegment {
    /// All segments.
    pub const ALL: [RfmSegment; 11] = [
        Champions,
        Loyal,
        PotentialLoyalist,
        New,
        Promising,
        NeedAttention,
        AboutToSleep,
        AtRisk,
        CantLoseThem,
        Hibernating,
        Lost,
    ];

    /// The segment's rule: a union of `(R range, FM range)` rectangles.
    pub fn rule(self) -> &'static [(RangeInclusive<u8>, RangeInclusive<u8>)] {
        match self {
            Champions => &[(5..=5, 4..=5), (4..=4, 5..=5)],
            Loyal => &[(4..=4, 4..=4), (3..=3, 4..=5)],
            PotentialLoyalist => &[(4..=5, 2..=3)],
            New => &[(5..=5, 1..=1)],
            Promising => &[(3..=4, 1..=1)],
            NeedAttention => &[(3..=3, 2..=3)],
            AboutToSleep => &[(2..=2, 1..=2)],
            AtRisk => &[(2..=2, 3..=4), (1..=1, 3..=3)],
            CantLoseThem => &[(1..=2, 5..=5), (1..=1, 4..=4)],
            Hibernating => &[(1..=1, 2..=2)],
            Lost => &[(1..=1, 1..=1)],
        }
    }

    /// Whether a score satisfies this segment's rule.
    pub fn matches(self, score: &RfmScore) -> bool {
        let fm = score.fm();
        self.rule()
            .iter()
            .any(|(r, f)| r.contains(&score.r) && f.contains(&fm))
    }

    /// A stable snake-case name.
    pub const fn name(self) -> &'static str {
        match self {
            Champions => "champions",
            Loyal => "loyal",
            PotentialLoyalist => "potential_loyalist",
            New => "new",
            Promising => "promising",
            NeedAttention => "need_attention",
            AboutToSleep => "about_to_sleep",
            AtRisk => "at_risk",
            CantLoseThem => "cant_lose_them",
            Hibernating => "hibernating",
            Lost => "lost",
        }
    }
}

/// Scores of one dimension: `better_is_higher` false for time since last purchase.
fn scores_of(values: &[f64], better_is_higher: bool) -> Vec<u8> {
    let n = values.len();
    let mut sorted: Vec<f64> = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    values
        .iter()
        .map(|v| {
            let below = sorted.partition_point(|s| s.total_cmp(v).is_lt());
            let not_above = sorted.partition_point(|s| s.total_cmp(v).is_le());
            let tied = not_above - below;
            let worse = if better_is_higher {
                below
            } else {
                n - not_above
            };
            // 1 + floor(5 (worse + tied/2) / n) = 1 + floor((10 worse + 5 tied) / (2 n))
            let q = (10 * worse as u128 + 5 * tied as u128) / (2 * n as u128);
            1 + u8::try_from(q.min(4)).unwrap_or(4)
        })
        .collect()
}

/// RFM scores of every customer of a population (module docs); empty in, empty out.
pub fn rfm_scores(population: &[RfmObservation]) -> Vec<RfmScore> {
    let r = scores_of(
        &population
            .iter()
            .map(|o| o.time_since_last_purchase)
            .collect::<Vec<_>>(),
        false,
    );
    let f = scores_of(
        &population.iter().map(|o| o.frequency).collect::<Vec<_>>(),
        true,
    );
    let m = scores_of(
        &population.iter().map(|o| o.monetary).collect::<Vec<_>>(),
        true,
    );
    r.into_iter()
        .zip(f)
        .zip(m)
        .map(|((r, f), m)| RfmScore { r, f, m })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_combination_maps_to_exactly_one_segment() {
        let mut reached = std::collections::BTreeSet::new();
        for r in 1..=5 {
            for f in 1..=5 {
                for m in 1..=5 {
                    let s = RfmScore::new(r, f, m).expect("in range");
                    let matching: Vec<_> = RfmSegment::ALL
                        .iter()
                        .filter(|seg| seg.matches(&s))
                        .collect();
                    assert_eq!(matching.len(), 1, "{s:?} matches {matching:?}");
                    assert_eq!(*matching[0], s.segment(), "{s:?}");
                    reached.insert(s.segment());
                }
            }
        }
        assert_eq!(reached.len(), 11, "every segment is reachable");
    }

    #[test]
    fn quintiles_and_ties() {
        assert!(rfm_scores(&[]).is_empty());
        let one = rfm_scores(&[RfmObservation::new(1.0, 1.0, 1.0).expect("finite")]);
        assert_eq!(one, vec![RfmScore { r: 3, f: 3, m: 3 }]);
        // 10 distinct values: two per quintile.
        let pop: Vec<_> = (0..10)
            .map(|i| RfmObservation::new(f64::from(i), f64::from(i), f64::from(9 - i)).expect("ok"))
            .collect();
        let s = rfm_scores(&pop);
        let f: Vec<u8> = s.iter().map(|s| s.f).collect();
        assert_eq!(f, vec![1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
        let r: Vec<u8> = s.iter().map(|s| s.r).collect();
        assert_eq!(
            r,
            vec![5, 5, 4, 4, 3, 3, 2, 2, 1, 1],
            "more recent = higher"
        );
        let m: Vec<u8> = s.iter().map(|s| s.m).collect();
        assert_eq!(m, vec![5, 5, 4, 4, 3, 3, 2, 2, 1, 1]);
        // Ties get one score regardless of order: 6 zeros and 4 distinct values.
        let values = [0.0, 5.0, 0.0, 0.0, 7.0, 0.0, 9.0, 0.0, 0.0, 8.0];
        let pop: Vec<_> = values
            .iter()
            .map(|&v| RfmObservation::new(0.0, v, 0.0).expect("ok"))
            .collect();
        let s = rfm_scores(&pop);
        let mut rev = pop.clone();
        rev.reverse();
        let mut s_rev = rfm_scores(&rev);
        s_rev.reverse();
        assert_eq!(s, s_rev, "order independent");
        for (v, sc) in values.iter().zip(&s) {
            let want = match *v as i32 {
                0 => 2, // mid-rank 3/10 → 1 + floor(1.5)
                5 => 4, // (6 + 0.5)/10 → 1 + floor(3.25)
                7 => 4, // 7.5/10 → 1 + 3
                8 => 5, // 8.5/10 → 1 + 4
                _ => 5,
            };
            assert_eq!(sc.f, want, "value {v}");
        }
        assert!(RfmObservation::new(f64::NAN, 0.0, 0.0).is_err());
        assert!(RfmScore::new(0, 1, 1).is_err());
        assert!(RfmScore::new(1, 6, 1).is_err());
    }
}
