//! A compact empirical distribution of a population metric, for percentiles and quintile scores
//! of one customer against the population a model was fitted on.
//!
//! Exact while the population has at most [`MAX_POINTS`] distinct values; beyond that it keeps
//! that many evenly spaced (by rank) values with their exact counts, and interpolates linearly in
//! value between them.

use serde::{Deserialize, Serialize};

/// Most points kept.
pub const MAX_POINTS: usize = 2_048;

/// One kept value: how many population members are below it and how many equal it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub value: f64,
    pub below: u64,
    pub tied: u64,
}

/// The distribution.
///
/// Stored as its population size and points. In memory it also keeps a [`Lookup`] that narrows
/// the search for a value to a few points by arithmetic on the value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Stored", into = "Stored")]
pub struct Cdf {
    pub n: u64,
    points: Vec<Point>,
    lookup: Lookup,
}

/// What is stored of a [`Cdf`].
#[derive(Serialize, Deserialize)]
struct Stored {
    n: u64,
    points: Vec<Point>,
}

impl From<Stored> for Cdf {
    fn from(s: Stored) -> Self {
        Self::with_points(s.n, s.points)
    }
}

impl From<Cdf> for Stored {
    fn from(c: Cdf) -> Self {
        Self {
            n: c.n,
            points: c.points,
        }
    }
}

/// Buckets of a [`Lookup`].
const BUCKETS: usize = 1_024;

/// Where a value's place among the points is: a bucket computed from the value alone, then a
/// binary search among that bucket's few points (which also brings the point it finds, with its
/// counts, into the cache).
///
/// A stream ranks every customer against five distributions. A binary search over 2,048 points
/// is a chain of eleven dependent loads, most of them missing the cache between customers: about
/// a tenth of a stream's CPU. This is a chain of three or four.
///
/// The bucket of a value is a non-decreasing function of it, so every point in an earlier bucket
/// is below the value and every point in a later one above it: the place is within the value's
/// bucket (or at its end), whatever the distribution. How evenly the points spread over the
/// buckets depends on the distribution: each one is given the spacing, linear in the value or in
/// its logarithm (by the bits of `1 + v − min`), that leaves the fewest points in the fullest
/// bucket.
#[derive(Debug, Clone, Default, PartialEq)]
struct Lookup {
    /// Bucket `b` holds the points `starts[b]..starts[b + 1]`.
    starts: Vec<u32>,
    spacing: Spacing,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
enum Spacing {
    /// No buckets (no points): the place is 0.
    #[default]
    None,
    /// `(v − min) · scale`.
    Linear { min: f64, scale: f64 },
    /// `(bits(1 + v − min) − bits(1)) >> shift`: logarithmic, give or take the mantissa.
    Log { min: f64, shift: u32 },
}

impl Spacing {
    /// The bucket of `v`, clamped to the buckets; non-decreasing in `v`.
    fn bucket(self, v: f64) -> usize {
        let b = match self {
            Spacing::None => 0.0,
            Spacing::Linear { min, scale } => ((v - min) * scale).max(0.0),
            Spacing::Log { min, shift } => {
                let w = 1.0 + (v - min).max(0.0);
                return ((w.to_bits() - 1f64.to_bits()) >> shift).min(BUCKETS as u64 - 1) as usize;
            }
        };
        // `as` saturates; NaN never comes here (ranks are of finite values).
        (b as usize).min(BUCKETS - 1)
    }
}

impl Lookup {
    fn new(points: &[Point]) -> Self {
        let values = || points.iter().map(|p| p.value);
        let (Some(min), Some(max)) = (values().next(), values().next_back()) else {
            return Self::default();
        };
        let span = max - min;
        let linear = Spacing::Linear {
            min,
            scale: if span > 0.0 && span.is_finite() {
                BUCKETS as f64 / span
            } else {
                0.0
            },
        };
        let top = (1.0 + span).to_bits().saturating_sub(1f64.to_bits());
        let shift = (u64::BITS - top.leading_zeros()).saturating_sub(BUCKETS.ilog2());
        let log = Spacing::Log { min, shift };
        let fullest = |spacing: Spacing| {
            let mut counts = vec![0u32; BUCKETS];
            for v in values() {
                counts[spacing.bucket(v)] += 1;
            }
            counts.into_iter().max().unwrap_or(0)
        };
        let spacing = if fullest(log) < fullest(linear) {
            log
        } else {
            linear
        };
        let mut starts = vec![0u32; BUCKETS + 1];
        for v in values() {
            starts[spacing.bucket(v) + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        Self { starts, spacing }
    }

    /// The index of the first of `points` (those the lookup was built from) whose value is not
    /// below `v` (`points.len()` if none is).
    fn first_not_below(&self, points: &[Point], v: f64) -> usize {
        let b = self.spacing.bucket(v);
        let bucket = match (self.starts.get(b), self.starts.get(b + 1)) {
            (Some(&start), Some(&end)) => (start as usize, end as usize),
            _ => (0, points.len()),
        };
        match points.get(bucket.0..bucket.1) {
            Some(within) => bucket.0 + within.partition_point(|p| p.value < v),
            None => points.partition_point(|p| p.value < v),
        }
    }
}

impl Cdf {
    /// Builds from a population; non-finite values are ignored.
    pub fn from_values(mut values: Vec<f64>) -> Self {
        values.retain(|v| v.is_finite());
        values.sort_unstable_by(f64::total_cmp);
        let n = values.len() as u64;
        let mut all: Vec<Point> = Vec::new();
        let mut i = 0usize;
        while i < values.len() {
            let v = values[i];
            let end = values[i..].partition_point(|x| *x <= v) + i;
            all.push(Point {
                value: v,
                below: i as u64,
                tied: (end - i) as u64,
            });
            i = end;
        }
        if all.len() > MAX_POINTS {
            let last = all.len() - 1;
            let step = last as f64 / (MAX_POINTS - 1) as f64;
            let mut kept: Vec<Point> = (0..MAX_POINTS)
                .map(|k| all[((k as f64 * step).round() as usize).min(last)])
                .collect();
            kept.dedup_by(|a, b| a.value == b.value);
            all = kept;
        }
        Self::with_points(n, all)
    }

    /// From kept points (in increasing value) and the population size.
    fn with_points(n: u64, points: Vec<Point>) -> Self {
        let lookup = Lookup::new(&points);
        Self { n, points, lookup }
    }

    /// The kept points, in increasing value.
    pub fn points(&self) -> &[Point] {
        &self.points
    }

    /// `(count below, count tied)` of `v`, estimated between kept points.
    fn rank(&self, v: f64) -> Option<(f64, f64)> {
        if self.n == 0 || !v.is_finite() {
            return None;
        }
        let idx = self.lookup.first_not_below(&self.points, v);
        match self.points.get(idx) {
            Some(p) if p.value == v => Some((p.below as f64, p.tied as f64)),
            next => {
                let below = match (idx.checked_sub(1).and_then(|i| self.points.get(i)), next) {
                    (None, _) => 0.0,
                    (Some(prev), None) => (prev.below + prev.tied) as f64,
                    (Some(prev), Some(next)) => {
                        let lo = (prev.below + prev.tied) as f64;
                        let hi = next.below as f64;
                        let span = next.value - prev.value;
                        let frac = if span > 0.0 {
                            (v - prev.value) / span
                        } else {
                            0.0
                        };
                        lo + (hi - lo) * frac.clamp(0.0, 1.0)
                    }
                };
                Some((below, 0.0))
            }
        }
    }

    /// Share of the population below `v`, ties counting half: 0–1. `None` for an empty
    /// population.
    pub fn percentile(&self, v: f64) -> Option<f64> {
        let (below, tied) = self.rank(v)?;
        Some(((below + tied / 2.0) / self.n as f64).clamp(0.0, 1.0))
    }

    /// Quintile score 1–5 by the mid-rank rule of `patron_domain::clv::rfm`: `1 + ⌊5 · p⌋` with
    /// `p` the share of the population worse (ties half). `higher_is_better` false for metrics
    /// where less is better (days since the last purchase).
    pub fn score(&self, v: f64, higher_is_better: bool) -> Option<u8> {
        let (below, tied) = self.rank(v)?;
        let n = self.n as f64;
        let worse = if higher_is_better {
            below
        } else {
            n - below - tied
        };
        let q = (5.0 * (worse + tied / 2.0) / n).floor();
        Some(1 + q.clamp(0.0, 4.0) as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patron_domain::clv::{RfmObservation, rfm_scores};

    #[test]
    fn scores_match_the_domain_rule_on_small_populations() {
        // Recency (days since), frequency, monetary with plenty of ties.
        let population: Vec<(f64, f64, f64)> = (0..137)
            .map(|i| {
                (
                    ((i * 37) % 50) as f64,
                    ((i * 7) % 4) as f64,
                    ((i * 13) % 90) as f64 * 10.0,
                )
            })
            .collect();
        let obs: Vec<RfmObservation> = population
            .iter()
            .map(|(r, f, m)| RfmObservation::new(*r, *f, *m).expect("finite"))
            .collect();
        let want = rfm_scores(&obs);
        let r = Cdf::from_values(population.iter().map(|p| p.0).collect());
        let f = Cdf::from_values(population.iter().map(|p| p.1).collect());
        let m = Cdf::from_values(population.iter().map(|p| p.2).collect());
        for (p, w) in population.iter().zip(want) {
            assert_eq!(r.score(p.0, false), Some(w.r()), "{p:?}");
            assert_eq!(f.score(p.1, true), Some(w.f()), "{p:?}");
            assert_eq!(m.score(p.2, true), Some(w.m()), "{p:?}");
        }
    }

    #[test]
    fn percentiles_and_compression() {
        let cdf = Cdf::from_values((0..100).map(f64::from).collect());
        assert_eq!(cdf.percentile(0.0), Some(0.005));
        assert_eq!(cdf.percentile(98.0), Some(0.985));
        assert_eq!(cdf.percentile(1_000.0), Some(1.0));
        assert_eq!(cdf.percentile(-1.0), Some(0.0));
        assert_eq!(Cdf::default().percentile(1.0), None);
        let big = Cdf::from_values((0..100_000).map(|i| f64::from(i) * 0.5).collect());
        assert!(big.points().len() <= MAX_POINTS);
        let p = big.percentile(25_000.25).expect("percentile");
        assert!((p - 0.5).abs() < 1e-3, "{p}");
        assert_eq!(big.score(49_999.5, true), Some(5));
        assert_eq!(big.score(0.0, true), Some(1));
        assert_eq!(Cdf::from_values(vec![f64::NAN, 1.0]).n, 1);
    }

    /// Every value's place by the lookup is the place a binary search over the points finds.
    fn assert_lookup_exact(cdf: &Cdf, probes: impl IntoIterator<Item = f64>) {
        for v in probes {
            let want = cdf.points().partition_point(|p| p.value < v);
            assert_eq!(
                cdf.lookup.first_not_below(cdf.points(), v),
                want,
                "{v:e} among {} points ({:?})",
                cdf.points().len(),
                cdf.lookup.spacing
            );
        }
    }

    /// Each point's value, its neighbours in the float line, midpoints, and the far ends.
    fn probes(cdf: &Cdf) -> Vec<f64> {
        let mut out = vec![f64::MIN, f64::MAX, -0.0, 0.0, -1e300, 1e300];
        for p in cdf.points() {
            let v = p.value;
            out.extend([v, v.next_up(), v.next_down(), v + 0.5, v - 0.5, v * 1.01]);
        }
        out
    }

    #[test]
    fn the_bucketed_lookup_finds_what_a_binary_search_finds() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut populations: Vec<Vec<f64>> = vec![
            vec![],
            vec![5.0],
            vec![-3.0, -3.0],
            vec![0.0, -0.0, 1.0],
            (0..2_047).map(f64::from).collect(),
            (0..3_000).map(|i| f64::from(i % 1_800)).collect(),
            // Long-tailed money, with negatives (refunds beyond purchases).
            (0..60_000)
                .map(|_| ((next() % 1_000_000) as f64).powi(3) / 1e12 - 50.0)
                .collect(),
            // Tiny probabilities and a huge outlier.
            (0..10_000)
                .map(|i| f64::from(i) * 1e-9)
                .chain([1e15])
                .collect(),
            (0..5_000)
                .map(|_| f64::from_bits(next() >> 12) * 1e-3)
                .collect(),
        ];
        populations.push(vec![f64::MIN, -1.0, 0.0, 1.0, f64::MAX]);
        for values in populations {
            let cdf = Cdf::from_values(values);
            assert_lookup_exact(&cdf, probes(&cdf));
            let ranks: Vec<_> = probes(&cdf).iter().map(|v| cdf.rank(*v)).collect();
            let stored = serde_json::to_string(&cdf).expect("to json");
            assert!(!stored.contains("starts"), "only points are stored");
            let back: Cdf = serde_json::from_str(&stored).expect("from json");
            assert_eq!(back, cdf);
            let again: Vec<_> = probes(&back).iter().map(|v| back.rank(*v)).collect();
            assert_eq!(again, ranks);
        }
    }

    #[test]
    fn long_tails_are_spread_by_logarithm_and_even_values_by_value() {
        let days = Cdf::from_values((0..1_800).map(f64::from).collect());
        assert!(matches!(days.lookup.spacing, Spacing::Linear { .. }));
        let money = Cdf::from_values((0..100_000).map(|i| (f64::from(i) / 1e3).exp()).collect());
        assert!(matches!(money.lookup.spacing, Spacing::Log { .. }));
        for cdf in [&days, &money] {
            let fullest = cdf.lookup.starts.windows(2).map(|w| w[1] - w[0]).max();
            assert!(fullest <= Some(16), "{fullest:?} points in one bucket");
        }
    }
}
