//! Mid-rank percentiles over a population of metric values, and the composite metric (formulas in
//! the module docs of [`crate::value`]).

/// Weights of the composite metric: CLV percentile, revenue percentile, value-index percentile.
pub const COMPOSITE_WEIGHTS: [f64; 3] = [0.5, 0.3, 0.2];

/// A population of metric values, sorted once, for O(log n) percentile look-ups.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Percentiles {
    sorted: Vec<f64>,
}

impl Percentiles {
    /// The population of `values`; NaN values are left out, `-0.0` counts as `0.0`.
    pub fn new(values: impl IntoIterator<Item = f64>) -> Self {
        let mut sorted: Vec<f64> = values
            .into_iter()
            .filter(|v| !v.is_nan())
            .map(|v| if v == 0.0 { 0.0 } else { v })
            .collect();
        sorted.sort_unstable_by(f64::total_cmp);
        Self { sorted }
    }

    /// The population of integer values (minor units, basis points). Values beyond ±2^53 may
    /// merge with their neighbours (they then count as ties); no real amount comes near.
    pub fn from_integers(values: impl IntoIterator<Item = i64>) -> Self {
        Self::new(values.into_iter().map(|v| v as f64))
    }

    /// Number of (non-NaN) values.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether the population is empty.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// `(values strictly below + values equal / 2) / n`, in [0, 1]; `None` for an empty population
    /// or a NaN value. The value need not be in the population.
    pub fn percentile_of(&self, value: f64) -> Option<f64> {
        if self.sorted.is_empty() || value.is_nan() {
            return None;
        }
        let below = self.sorted.partition_point(|&x| x < value);
        let not_above = self.sorted.partition_point(|&x| x <= value);
        let ties = not_above - below;
        Some((below as f64 + ties as f64 / 2.0) / self.sorted.len() as f64)
    }

    /// [`Self::percentile_of`] an integer value.
    pub fn percentile_of_integer(&self, value: i64) -> Option<f64> {
        self.percentile_of(value as f64)
    }
}

/// The composite score in [0, 1]: `0.5 × CLV pct + 0.3 × revenue pct + 0.2 × value-index pct`,
/// over the available (non-`None`, non-NaN) percentiles with their weights rescaled to sum to 1;
/// `None` when none is available. Percentiles are clamped to [0, 1].
pub fn composite_score(
    clv_percentile: Option<f64>,
    revenue_percentile: Option<f64>,
    value_index_percentile: Option<f64>,
) -> Option<f64> {
    let parts = [clv_percentile, revenue_percentile, value_index_percentile];
    let (sum, weight) = parts
        .iter()
        .zip(COMPOSITE_WEIGHTS)
        .filter_map(|(p, w)| p.filter(|p| !p.is_nan()).map(|p| (p.clamp(0.0, 1.0), w)))
        .fold((0.0, 0.0), |(s, tw), (p, w)| (s + p * w, tw + w));
    (weight > 0.0).then(|| (sum / weight).clamp(0.0, 1.0))
}

/// A composite score as a tier metric value: `round(score × 10,000)` basis points, 0–10,000;
/// `None` for NaN.
pub fn composite_basis_points(score: f64) -> Option<i64> {
    (!score.is_nan()).then(|| (score.clamp(0.0, 1.0) * 10_000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::type_complexity)] // data-driven case tables
    use super::*;

    #[test]
    fn percentile_ties_and_boundaries() {
        let pop = Percentiles::new([1.0, 2.0, 2.0, 3.0, f64::NAN, 4.0]);
        assert_eq!(pop.len(), 5);
        let cases: &[(f64, Option<f64>)] = &[
            (1.0, Some(0.1)), // 0 below, 1 tie
            (2.0, Some(0.4)), // 1 below, 2 ties
            (3.0, Some(0.7)), // 3 below, 1 tie
            (4.0, Some(0.9)), // 4 below, 1 tie
            (0.0, Some(0.0)), // below everyone
            (9.0, Some(1.0)), // above everyone
            (2.5, Some(0.6)), // between, not in the population
            (f64::NAN, None),
            (f64::NEG_INFINITY, Some(0.0)),
            (f64::INFINITY, Some(1.0)),
        ];
        for &(v, want) in cases {
            let got = pop.percentile_of(v);
            let ok = match (got, want) {
                (Some(g), Some(w)) => (g - w).abs() < 1e-12,
                (g, w) => g == w,
            };
            assert!(ok, "percentile_of({v}) = {got:?}, want {want:?}");
        }
        // All equal: everyone in the middle.
        let same = Percentiles::from_integers([7; 10]);
        assert_eq!(same.percentile_of_integer(7), Some(0.5));
        // Signed zeros are one value.
        let zeros = Percentiles::new([-0.0, 0.0]);
        assert_eq!(zeros.percentile_of(0.0), Some(0.5));
        assert_eq!(zeros.percentile_of(-0.0), Some(0.5));
        // Empty and all-NaN populations.
        assert_eq!(Percentiles::new([]).percentile_of(1.0), None);
        assert_eq!(Percentiles::new([f64::NAN]).percentile_of(1.0), None);
        assert!(Percentiles::default().is_empty());
        // Input order does not matter.
        let a = Percentiles::new([3.0, 1.0, 2.0]);
        let b = Percentiles::new([2.0, 3.0, 1.0]);
        assert_eq!(a, b);
    }

    #[test]
    fn composite() {
        let cases: &[((Option<f64>, Option<f64>, Option<f64>), Option<f64>)] = &[
            ((Some(1.0), Some(1.0), Some(1.0)), Some(1.0)),
            ((Some(0.0), Some(0.0), Some(0.0)), Some(0.0)),
            ((Some(0.8), Some(0.6), Some(0.5)), Some(0.4 + 0.18 + 0.1)),
            // No value model: revenue and value index, weights 0.3 and 0.2 rescaled to 0.6, 0.4.
            ((None, Some(0.5), Some(1.0)), Some(0.7)),
            // No survey: CLV and revenue, 0.625 and 0.375.
            ((Some(1.0), Some(0.0), None), Some(0.625)),
            ((None, None, Some(0.25)), Some(0.25)),
            ((None, None, None), None),
            ((Some(f64::NAN), None, None), None),
            ((Some(2.0), Some(-1.0), None), Some(0.625)),
        ];
        for &((c, r, v), want) in cases {
            let got = composite_score(c, r, v);
            let ok = match (got, want) {
                (Some(g), Some(w)) => (g - w).abs() < 1e-12,
                (g, w) => g == w,
            };
            assert!(
                ok,
                "composite({c:?}, {r:?}, {v:?}) = {got:?}, want {want:?}"
            );
        }
        assert_eq!(composite_basis_points(0.75), Some(7_500));
        assert_eq!(composite_basis_points(0.123_46), Some(1_235));
        assert_eq!(composite_basis_points(1.5), Some(10_000));
        assert_eq!(composite_basis_points(f64::NAN), None);
    }
}
