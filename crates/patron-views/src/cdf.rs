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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cdf {
    pub n: u64,
    pub points: Vec<Point>,
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
        Self { n, points: all }
    }

    /// `(count below, count tied)` of `v`, estimated between kept points.
    fn rank(&self, v: f64) -> Option<(f64, f64)> {
        if self.n == 0 || !v.is_finite() {
            return None;
        }
        let idx = self.points.partition_point(|p| p.value < v);
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
        assert!(big.points.len() <= MAX_POINTS);
        let p = big.percentile(25_000.25).expect("percentile");
        assert!((p - 0.5).abs() < 1e-3, "{p}");
        assert_eq!(big.score(49_999.5, true), Some(5));
        assert_eq!(big.score(0.0, true), Some(1));
        assert_eq!(Cdf::from_values(vec![f64::NAN, 1.0]).n, 1);
    }
}
