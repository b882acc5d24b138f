//! The value-balance quadrant: value of the customer × value for the customer (cut points in the
//! module docs of [`crate::value`]).

use serde::{Deserialize, Serialize};

use super::TierMetric;

/// Value to the business is high from this business percentile on.
pub const BUSINESS_VALUE_HIGH_PERCENTILE: f64 = 0.5;
/// Value for the customer is high from this value index on (benefits at least equal to costs).
pub const PERCEIVED_VALUE_HIGH_INDEX: f64 = 50.0;

/// Where a customer falls in the value-balance matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueQuadrant {
    /// No survey answers on both the benefit and the cost side, or no business percentile.
    #[default]
    Unknown,
    /// High value to the business and high value for the customer: value flows both ways.
    MutualValue,
    /// High value to the business, low value for the customer: being extracted from, and at risk.
    AtRisk,
    /// Low value to the business, high value for the customer: under-served commercially.
    UnderServed,
    /// Low value both ways.
    LowEngagement,
}

impl ValueQuadrant {
    /// Lower-case name: `unknown`, `mutual_value`, `at_risk`, `under_served`, `low_engagement`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::MutualValue => "mutual_value",
            Self::AtRisk => "at_risk",
            Self::UnderServed => "under_served",
            Self::LowEngagement => "low_engagement",
        }
    }

    /// What the quadrant means, in one sentence.
    pub const fn meaning(self) -> &'static str {
        match self {
            Self::Unknown => {
                "Not enough data to place the customer: no survey answers on both benefits and costs, or no value ranking."
            }
            Self::MutualValue => {
                "Valuable to the business and gets much value back: value flows both ways."
            }
            Self::AtRisk => {
                "Valuable to the business but gets little value back: being extracted from, and at risk of leaving."
            }
            Self::UnderServed => {
                "Gets much value but brings little to the business: under-served commercially."
            }
            Self::LowEngagement => "Brings little value to the business and gets little back.",
        }
    }
}

/// The business percentile the quadrant uses: the revenue percentile when the tier metric is
/// historical revenue, otherwise the predicted-CLV percentile, falling back to the revenue
/// percentile when there is none (no value model).
pub fn business_value_percentile(
    metric: TierMetric,
    clv_percentile: Option<f64>,
    revenue_percentile: Option<f64>,
) -> Option<f64> {
    let clv = clv_percentile.filter(|p| !p.is_nan());
    let revenue = revenue_percentile.filter(|p| !p.is_nan());
    match metric {
        TierMetric::HistoricalRevenue => revenue,
        TierMetric::PredictedClv | TierMetric::Composite => clv.or(revenue),
    }
}

/// The quadrant of a customer: business value high when `business_percentile ≥ 0.5`, perceived
/// value high when `value_index ≥ 50`; `Unknown` when either is `None` or NaN.
pub fn value_quadrant(business_percentile: Option<f64>, value_index: Option<f64>) -> ValueQuadrant {
    let (Some(business), Some(index)) = (
        business_percentile.filter(|p| !p.is_nan()),
        value_index.filter(|v| !v.is_nan()),
    ) else {
        return ValueQuadrant::Unknown;
    };
    match (
        business >= BUSINESS_VALUE_HIGH_PERCENTILE,
        index >= PERCEIVED_VALUE_HIGH_INDEX,
    ) {
        (true, true) => ValueQuadrant::MutualValue,
        (true, false) => ValueQuadrant::AtRisk,
        (false, true) => ValueQuadrant::UnderServed,
        (false, false) => ValueQuadrant::LowEngagement,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::type_complexity)] // data-driven case tables
    use super::*;
    use ValueQuadrant as Q;

    #[test]
    fn quadrant_cut_points() {
        let cases: &[(Option<f64>, Option<f64>, ValueQuadrant)] = &[
            (Some(0.5), Some(50.0), Q::MutualValue),
            (Some(1.0), Some(100.0), Q::MutualValue),
            (Some(0.5), Some(49.999), Q::AtRisk),
            (Some(0.9), Some(0.0), Q::AtRisk),
            (Some(0.499_999), Some(50.0), Q::UnderServed),
            (Some(0.0), Some(75.0), Q::UnderServed),
            (Some(0.499_999), Some(49.999), Q::LowEngagement),
            (None, Some(80.0), Q::Unknown),
            (Some(0.8), None, Q::Unknown),
            (None, None, Q::Unknown),
            (Some(f64::NAN), Some(50.0), Q::Unknown),
            (Some(0.5), Some(f64::NAN), Q::Unknown),
        ];
        for &(b, v, want) in cases {
            assert_eq!(value_quadrant(b, v), want, "({b:?}, {v:?})");
        }
    }

    #[test]
    fn business_percentile_choice() {
        use TierMetric as M;
        let cases: &[(TierMetric, Option<f64>, Option<f64>, Option<f64>)] = &[
            (M::PredictedClv, Some(0.9), Some(0.1), Some(0.9)),
            (M::PredictedClv, None, Some(0.1), Some(0.1)),
            (M::PredictedClv, Some(f64::NAN), Some(0.1), Some(0.1)),
            (M::Composite, Some(0.9), Some(0.1), Some(0.9)),
            (M::Composite, None, None, None),
            (M::HistoricalRevenue, Some(0.9), Some(0.1), Some(0.1)),
            (M::HistoricalRevenue, Some(0.9), None, None),
        ];
        for &(m, c, r, want) in cases {
            assert_eq!(
                business_value_percentile(m, c, r),
                want,
                "{m:?} {c:?} {r:?}"
            );
        }
    }
}
