//! Perceived value: benefits minus costs from survey rating totals (formulas in the module docs of
//! [`crate::value`]).

use serde::{Deserialize, Serialize};

use crate::{CustomerSummary, RatingTotal};

/// Lowest rating of a survey dimension.
pub const RATING_MIN: f64 = 1.0;
/// Highest rating of a survey dimension.
pub const RATING_MAX: f64 = 5.0;

/// A benefit dimension, in the order of [`crate::SummaryDelta::benefits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BenefitDimension {
    /// Money gained, not wasted.
    Economic,
    /// The task easily done.
    Functional,
    /// Pleasant interactions.
    Experiential,
    /// Status, belonging.
    Symbolic,
}

impl BenefitDimension {
    /// All four, in array order.
    pub const ALL: [Self; 4] = [
        Self::Economic,
        Self::Functional,
        Self::Experiential,
        Self::Symbolic,
    ];

    /// Lower-case name: `economic`, `functional`, `experiential`, `symbolic`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Economic => "economic",
            Self::Functional => "functional",
            Self::Experiential => "experiential",
            Self::Symbolic => "symbolic",
        }
    }
}

/// A cost dimension, in the order of [`crate::SummaryDelta::costs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CostDimension {
    /// Price paid.
    Price,
    /// Time spent.
    Time,
    /// Effort spent.
    Effort,
    /// Emotional cost (stress, frustration).
    Emotional,
}

impl CostDimension {
    /// All four, in array order.
    pub const ALL: [Self; 4] = [Self::Price, Self::Time, Self::Effort, Self::Emotional];

    /// Lower-case name: `price`, `time`, `effort`, `emotional`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Price => "price",
            Self::Time => "time",
            Self::Effort => "effort",
            Self::Emotional => "emotional",
        }
    }
}

/// Average of one dimension's 1–5 answers: `sum / count`, clamped to [1, 5]; `None` when there is
/// no answer (`count <= 0`).
pub fn rating_average(total: RatingTotal) -> Option<f64> {
    average_rating(i64::from(total.sum), i64::from(total.count))
}

/// `sum / count` clamped to [1, 5]; `None` without answers (count ≤ 0).
pub fn average_rating(sum: i64, count: i64) -> Option<f64> {
    if count <= 0 {
        return None;
    }
    let avg = sum as f64 / count as f64;
    avg.is_finite().then(|| avg.clamp(RATING_MIN, RATING_MAX))
}

/// Value index `(benefit − cost + 4) / 8 × 100` in [0, 100] of a benefit and a cost score (each
/// clamped to [1, 5]); `None` when either is NaN.
pub fn value_index(benefit_score: f64, cost_score: f64) -> Option<f64> {
    if benefit_score.is_nan() || cost_score.is_nan() {
        return None;
    }
    let b = benefit_score.clamp(RATING_MIN, RATING_MAX);
    let c = cost_score.clamp(RATING_MIN, RATING_MAX);
    Some((b - c + 4.0) / 8.0 * 100.0)
}

fn mean_available(values: &[Option<f64>]) -> Option<f64> {
    let (sum, n) = values
        .iter()
        .flatten()
        .fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

/// A customer's perceived value (value *for* the customer).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PerceivedValue {
    /// Average per benefit dimension (economic, functional, experiential, symbolic), 1–5.
    pub benefits: [Option<f64>; 4],
    /// Average per cost dimension (price, time, effort, emotional), 1–5.
    pub costs: [Option<f64>; 4],
    /// Mean of the available benefit averages, 1–5.
    pub benefit_score: Option<f64>,
    /// Mean of the available cost averages, 1–5.
    pub cost_score: Option<f64>,
    /// `(benefit − cost + 4) / 8 × 100`, 0–100; `None` unless both scores are known.
    pub value_index: Option<f64>,
    /// `benefit / cost`, 0.2–5; `None` unless both scores are known.
    pub benefit_cost_ratio: Option<f64>,
}

impl PerceivedValue {
    /// From the rating totals of the benefit and cost dimensions.
    pub fn from_totals(benefits: &[RatingTotal; 4], costs: &[RatingTotal; 4]) -> Self {
        let benefits = benefits.map(rating_average);
        let costs = costs.map(rating_average);
        let benefit_score = mean_available(&benefits);
        let cost_score = mean_available(&costs);
        let (value_index, benefit_cost_ratio) = match (benefit_score, cost_score) {
            // Both are averages clamped to [1, 5], so the ratio's divisor is at least 1.
            (Some(b), Some(c)) => (value_index(b, c), Some(b / c)),
            _ => (None, None),
        };
        Self {
            benefits,
            costs,
            benefit_score,
            cost_score,
            value_index,
            benefit_cost_ratio,
        }
    }

    /// From a customer's summary.
    pub fn from_summary(summary: &CustomerSummary) -> Self {
        Self::from_totals(&summary.totals.benefits, &summary.totals.costs)
    }

    /// The average of one benefit dimension.
    pub fn benefit(&self, dimension: BenefitDimension) -> Option<f64> {
        let i = BenefitDimension::ALL
            .iter()
            .position(|d| *d == dimension)
            .unwrap_or(0);
        self.benefits.get(i).copied().flatten()
    }

    /// The average of one cost dimension.
    pub fn cost(&self, dimension: CostDimension) -> Option<f64> {
        let i = CostDimension::ALL
            .iter()
            .position(|d| *d == dimension)
            .unwrap_or(0);
        self.costs.get(i).copied().flatten()
    }

    /// Whether any dimension has an answer.
    pub fn has_answers(&self) -> bool {
        self.benefit_score.is_some() || self.cost_score.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: RatingTotal = RatingTotal { sum: 0, count: 0 };

    fn t(sum: i32, count: i32) -> RatingTotal {
        RatingTotal { sum, count }
    }

    fn close(a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-9,
            (None, None) => true,
            _ => false,
        }
    }

    /// (benefits, costs) → (benefit score, cost score, value index, ratio).
    #[track_caller]
    fn check(
        benefits: [RatingTotal; 4],
        costs: [RatingTotal; 4],
        want: (Option<f64>, Option<f64>, Option<f64>, Option<f64>),
    ) {
        let p = PerceivedValue::from_totals(&benefits, &costs);
        let got = (
            p.benefit_score,
            p.cost_score,
            p.value_index,
            p.benefit_cost_ratio,
        );
        assert!(
            close(got.0, want.0)
                && close(got.1, want.1)
                && close(got.2, want.2)
                && close(got.3, want.3),
            "benefits {benefits:?} costs {costs:?}: got {got:?}, want {want:?}"
        );
    }

    #[test]
    fn perceived_value_formulas() {
        // Balanced: every dimension 3.
        check(
            [t(3, 1); 4],
            [t(3, 1); 4],
            (Some(3.0), Some(3.0), Some(50.0), Some(1.0)),
        );
        // Best and worst.
        check(
            [t(5, 1); 4],
            [t(1, 1); 4],
            (Some(5.0), Some(1.0), Some(100.0), Some(5.0)),
        );
        check(
            [t(1, 1); 4],
            [t(5, 1); 4],
            (Some(1.0), Some(5.0), Some(0.0), Some(0.2)),
        );
        // Averages over several answers: benefits (4.5, 4, 3, 2.5) → 3.5; costs 2 → index 68.75.
        check(
            [t(9, 2), t(12, 3), t(3, 1), t(5, 2)],
            [t(4, 2), t(2, 1), t(6, 3), t(2, 1)],
            (Some(3.5), Some(2.0), Some(68.75), Some(1.75)),
        );
        // Each dimension weighs the same however many answers it has: price 5 (10 answers) and
        // time 1 (1 answer) → cost 3.
        check(
            [t(4, 1), NONE, NONE, NONE],
            [t(50, 10), t(1, 1), NONE, NONE],
            (Some(4.0), Some(3.0), Some(62.5), Some(4.0 / 3.0)),
        );
        // Missing dimensions are skipped.
        check(
            [NONE, t(4, 1), NONE, NONE],
            [NONE, NONE, NONE, t(2, 1)],
            (Some(4.0), Some(2.0), Some(75.0), Some(2.0)),
        );
        // Only one side: its score, no index, no ratio.
        check([t(4, 1); 4], [NONE; 4], (Some(4.0), None, None, None));
        check([NONE; 4], [t(2, 1); 4], (None, Some(2.0), None, None));
        // No data at all.
        check([NONE; 4], [NONE; 4], (None, None, None, None));
        // Corrupt totals: negative count is no data, out-of-range averages are clamped.
        check([t(3, -1); 4], [t(3, 1); 4], (None, Some(3.0), None, None));
        check(
            [t(100, 1); 4],
            [t(-7, 1); 4],
            (Some(5.0), Some(1.0), Some(100.0), Some(5.0)),
        );
        check(
            [t(i32::MAX, 1); 4],
            [t(i32::MIN, i32::MAX); 4],
            (Some(5.0), Some(1.0), Some(100.0), Some(5.0)),
        );
    }

    #[test]
    fn per_dimension_accessors() {
        let p = PerceivedValue::from_totals(
            &[t(5, 1), NONE, t(6, 2), NONE],
            &[NONE, t(8, 2), NONE, NONE],
        );
        assert_eq!(p.benefit(BenefitDimension::Economic), Some(5.0));
        assert_eq!(p.benefit(BenefitDimension::Functional), None);
        assert_eq!(p.benefit(BenefitDimension::Experiential), Some(3.0));
        assert_eq!(p.cost(CostDimension::Time), Some(4.0));
        assert_eq!(p.cost(CostDimension::Emotional), None);
        assert!(p.has_answers());
        assert!(!PerceivedValue::default().has_answers());
        assert_eq!(value_index(f64::NAN, 3.0), None);
        assert_eq!(value_index(9.0, -3.0), Some(100.0));
    }

    #[test]
    fn from_summary_reads_totals() {
        let mut s = CustomerSummary::default();
        s.totals.benefits[0] = t(4, 1);
        s.totals.costs[2] = t(2, 1);
        let p = PerceivedValue::from_summary(&s);
        assert_eq!(p.value_index, Some(75.0));
    }
}
