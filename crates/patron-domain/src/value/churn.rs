//! Churn risk from P(alive) (cut points in the module docs of [`crate::value`]).

use serde::{Deserialize, Serialize};

/// Risk below this is `Low`.
pub const CHURN_LOW_BELOW: f64 = 0.3;
/// Risk below this (and at least [`CHURN_LOW_BELOW`]) is `Medium`; from it on, `High`.
pub const CHURN_MEDIUM_BELOW: f64 = 0.6;

/// Churn risk level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChurnLevel {
    /// No value model (or no usable P(alive)).
    #[default]
    Unknown,
    /// Risk below 0.3.
    Low,
    /// Risk from 0.3 to below 0.6.
    Medium,
    /// Risk 0.6 or more.
    High,
}

impl ChurnLevel {
    /// Lower-case name: `unknown`, `low`, `medium`, `high`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// A customer's churn risk.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ChurnRisk {
    /// P(alive), clamped to [0, 1].
    pub p_alive: Option<f64>,
    /// `1 − P(alive)`, 0–1.
    pub risk: Option<f64>,
    /// The level.
    pub level: ChurnLevel,
}

/// Churn risk from the model's P(alive): `None` (no model) or NaN is `Unknown`.
pub fn churn_risk(p_alive: Option<f64>) -> ChurnRisk {
    let Some(p) = p_alive.filter(|p| !p.is_nan()).map(|p| p.clamp(0.0, 1.0)) else {
        return ChurnRisk::default();
    };
    let risk = 1.0 - p;
    let level = if risk < CHURN_LOW_BELOW {
        ChurnLevel::Low
    } else if risk < CHURN_MEDIUM_BELOW {
        ChurnLevel::Medium
    } else {
        ChurnLevel::High
    };
    ChurnRisk {
        p_alive: Some(p),
        risk: Some(risk),
        level,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChurnLevel as L;

    #[test]
    fn churn_levels() {
        let cases: &[(Option<f64>, ChurnLevel)] = &[
            (None, L::Unknown),
            (Some(f64::NAN), L::Unknown),
            (Some(1.0), L::Low),
            (Some(0.75), L::Low),   // risk 0.25
            (Some(0.5), L::Medium), // risk 0.5
            (Some(0.25), L::High),  // risk 0.75
            (Some(0.0), L::High),
            (Some(2.0), L::Low),
            (Some(-1.0), L::High),
            (Some(f64::INFINITY), L::Low),
        ];
        for &(p, want) in cases {
            assert_eq!(churn_risk(p).level, want, "{p:?}");
        }
        // Cut points: risk exactly 0.3 is Medium, exactly 0.6 is High. 1 − 0.7 is not exactly
        // 0.3 in binary, so the cut points are checked on the risk directly.
        let at = |risk: f64| churn_risk(Some(1.0 - risk)).level;
        assert_eq!(at(0.25), L::Low);
        assert_eq!(at(0.5), L::Medium);
        assert_eq!(at(0.625), L::High);
        assert_eq!(churn_risk(Some(0.4)).risk, Some(0.6));
        assert_eq!(churn_risk(Some(0.4)).level, L::High);
        assert_eq!(churn_risk(Some(2.0)).p_alive, Some(1.0));
    }
}
