//! CSAT average, NPS category and the customer's own NPS (formulas in the module docs of
//! [`crate::value`]).

use serde::{Deserialize, Serialize};

use super::perceived::average_rating;
use crate::SummaryDelta;

/// The Net Promoter category of one 0–10 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NpsCategory {
    /// 9 or 10.
    Promoter,
    /// 7 or 8.
    Passive,
    /// 0 to 6.
    Detractor,
}

impl NpsCategory {
    /// The category of an answer: Detractor 0–6, Passive 7–8, Promoter 9–10; `None` above 10.
    pub const fn from_answer(answer: u8) -> Option<Self> {
        match answer {
            0..=6 => Some(Self::Detractor),
            7 | 8 => Some(Self::Passive),
            9 | 10 => Some(Self::Promoter),
            _ => None,
        }
    }

    /// Lower-case name: `promoter`, `passive`, `detractor`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Promoter => "promoter",
            Self::Passive => "passive",
            Self::Detractor => "detractor",
        }
    }
}

/// CSAT average `sum / count` in [1, 5]; `None` without answers.
pub fn csat_average(sum: i64, count: i64) -> Option<f64> {
    average_rating(sum, count)
}

/// The customer's own NPS, `(promoters − detractors) / answers × 100` in [−100, 100], where
/// `answers = promoters + passives + detractors`; `None` without answers. Negative counts (a
/// corrupt row) count as 0.
pub fn nps_score(promoters: i64, passives: i64, detractors: i64) -> Option<f64> {
    let [p, pa, d] = [promoters, passives, detractors].map(|c| c.max(0) as f64);
    let answers = p + pa + d;
    (answers > 0.0).then(|| (p - d) / answers * 100.0)
}

/// A customer's satisfaction answers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Satisfaction {
    /// Average CSAT, 1–5.
    pub csat: Option<f64>,
    /// Number of CSAT answers (surveys and support interactions).
    pub csat_count: i64,
    /// The customer's own NPS from all their answers, −100 to 100.
    pub nps_score: Option<f64>,
    /// Number of NPS answers.
    pub nps_answers: i64,
    /// The most recent NPS answer, 0–10.
    pub last_nps: Option<u8>,
    /// The category of the most recent NPS answer.
    pub nps_category: Option<NpsCategory>,
}

impl Satisfaction {
    /// From a customer's totals and most recent NPS answer (an answer above 10 counts as none).
    pub fn from_totals(totals: &SummaryDelta, last_nps: Option<u8>) -> Self {
        let nps_category = last_nps.and_then(NpsCategory::from_answer);
        Self {
            csat: csat_average(totals.csat_sum, totals.csat_count),
            csat_count: totals.csat_count.max(0),
            nps_score: nps_score(
                totals.nps_promoters,
                totals.nps_passives,
                totals.nps_detractors,
            ),
            nps_answers: totals
                .nps_promoters
                .max(0)
                .saturating_add(totals.nps_passives.max(0))
                .saturating_add(totals.nps_detractors.max(0)),
            last_nps: last_nps.filter(|_| nps_category.is_some()),
            nps_category,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::type_complexity)] // data-driven case tables
    use super::*;

    #[test]
    fn nps_category_boundaries() {
        let cases: &[(u8, Option<NpsCategory>)] = &[
            (0, Some(NpsCategory::Detractor)),
            (6, Some(NpsCategory::Detractor)),
            (7, Some(NpsCategory::Passive)),
            (8, Some(NpsCategory::Passive)),
            (9, Some(NpsCategory::Promoter)),
            (10, Some(NpsCategory::Promoter)),
            (11, None),
            (255, None),
        ];
        for &(answer, want) in cases {
            assert_eq!(NpsCategory::from_answer(answer), want, "answer {answer}");
        }
    }

    #[test]
    fn nps_score_and_csat() {
        let cases: &[((i64, i64, i64), Option<f64>)] = &[
            ((0, 0, 0), None),
            ((3, 0, 0), Some(100.0)),
            ((0, 0, 2), Some(-100.0)),
            ((0, 5, 0), Some(0.0)),
            ((2, 1, 1), Some(25.0)),
            ((1, 2, 1), Some(0.0)),
            ((-4, 0, 1), Some(-100.0)),
            ((-1, -1, -1), None),
            ((i64::MAX, 0, i64::MAX), Some(0.0)),
        ];
        for &((p, pa, d), want) in cases {
            assert_eq!(nps_score(p, pa, d), want, "({p}, {pa}, {d})");
        }
        assert_eq!(csat_average(0, 0), None);
        assert_eq!(csat_average(9, 2), Some(4.5));
        assert_eq!(csat_average(1, -2), None);
    }

    #[test]
    fn satisfaction_from_totals() {
        let totals = SummaryDelta {
            csat_sum: 12,
            csat_count: 3,
            nps_promoters: 1,
            nps_passives: 1,
            nps_detractors: 2,
            ..SummaryDelta::default()
        };
        let s = Satisfaction::from_totals(&totals, Some(8));
        assert_eq!(s.csat, Some(4.0));
        assert_eq!(s.nps_score, Some(-25.0));
        assert_eq!(s.nps_answers, 4);
        assert_eq!(s.nps_category, Some(NpsCategory::Passive));
        let bad = Satisfaction::from_totals(&totals, Some(11));
        assert_eq!((bad.last_nps, bad.nps_category), (None, None));
        let none = Satisfaction::from_totals(&SummaryDelta::default(), None);
        assert_eq!(none, Satisfaction::default());
    }
}
