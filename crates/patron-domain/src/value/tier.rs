//! Value-tier policies, their validation, and tier assignment (rules in the module docs of
//! [`crate::value`]).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::Violations;

/// Most tiers a policy may have.
pub const MAX_TIERS: usize = 10;
/// Longest tier name, in characters.
pub const MAX_TIER_NAME_CHARS: usize = 32;
/// Largest composite metric value: a composite score of 1 in basis points.
pub const COMPOSITE_MAX_BASIS_POINTS: i64 = 10_000;
/// Rounding tolerance of the percentile cuts.
const PERCENTILE_EPSILON: f64 = 1e-9;

/// What a tier policy ranks customers by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierMetric {
    /// Predicted CLV over the model's horizon, in minor units (rounded).
    PredictedClv,
    /// Net revenue to date, in minor units.
    HistoricalRevenue,
    /// The composite score, in basis points (0–10,000).
    Composite,
}

impl TierMetric {
    /// Lower-case name: `predicted_clv`, `historical_revenue`, `composite`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::PredictedClv => "predicted_clv",
            Self::HistoricalRevenue => "historical_revenue",
            Self::Composite => "composite",
        }
    }
}

/// How tier boundaries are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierMode {
    /// Each tier but the last has a minimum metric value.
    Absolute,
    /// Each tier but the last has a share of the population, counted from the top.
    Percentile,
}

/// One tier of a policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierDef {
    /// 1–32 characters, unique in the policy ignoring case.
    pub name: String,
    /// Absolute mode, every tier but the last: the lowest metric value that earns this tier, in
    /// the metric's unit (minor units, or basis points for the composite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_value: Option<i64>,
    /// Percentile mode, every tier but the last: this tier's share of the population, in percent,
    /// in (0, 100].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_percent: Option<f64>,
}

impl TierDef {
    /// An absolute-mode tier.
    pub fn with_min_value(name: impl Into<String>, min_value: i64) -> Self {
        Self {
            name: name.into(),
            min_value: Some(min_value),
            share_percent: None,
        }
    }

    /// A percentile-mode tier.
    pub fn with_share(name: impl Into<String>, share_percent: f64) -> Self {
        Self {
            name: name.into(),
            min_value: None,
            share_percent: Some(share_percent),
        }
    }

    /// The last tier, which takes everyone else.
    pub fn rest(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            min_value: None,
            share_percent: None,
        }
    }
}

/// A value-tier policy: ordered tiers, best (rank 1) first.
///
/// Deserialising does not validate: call [`TierPolicy::validate`] on what was loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierPolicy {
    /// The metric.
    pub metric: TierMetric,
    /// Absolute thresholds or population shares.
    pub mode: TierMode,
    /// 1 to 10 tiers, best first; the last takes everyone else.
    pub tiers: Vec<TierDef>,
}

impl Default for TierPolicy {
    /// Percentile on predicted CLV: platinum 2 %, gold 8 %, silver 20 %, bronze the rest.
    fn default() -> Self {
        Self {
            metric: TierMetric::PredictedClv,
            mode: TierMode::Percentile,
            tiers: vec![
                TierDef::with_share("platinum", 2.0),
                TierDef::with_share("gold", 8.0),
                TierDef::with_share("silver", 20.0),
                TierDef::rest("bronze"),
            ],
        }
    }
}

impl TierPolicy {
    /// Every problem of the policy, each with its field path (`tiers[2].min_value`).
    pub fn validate(&self) -> Result<(), Violations> {
        let mut v = Violations::new();
        let n = self.tiers.len();
        if n == 0 {
            v.add("tiers", "must have at least one tier");
        } else if n > MAX_TIERS {
            v.add(
                "tiers",
                format!("must have at most {MAX_TIERS} tiers, has {n}"),
            );
        }
        let last = n.saturating_sub(1);
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut previous_min: Option<(usize, i64)> = None;
        let mut total_share = 0.0;
        let mut total_reported = false;
        for (i, tier) in self.tiers.iter().enumerate() {
            check_name(&mut v, i, &tier.name, &mut names);
            let min_path = format!("tiers[{i}].min_value");
            let share_path = format!("tiers[{i}].share_percent");
            match self.mode {
                TierMode::Absolute => {
                    if tier.share_percent.is_some() {
                        v.add(&share_path, "must not be set in absolute mode");
                    }
                    match (i == last, tier.min_value) {
                        (true, Some(_)) => v.add(
                            &min_path,
                            "must not be set on the last tier, which takes every other customer",
                        ),
                        (true, None) => {}
                        (false, None) => v.add(
                            &min_path,
                            "is required in absolute mode on every tier but the last",
                        ),
                        (false, Some(m)) => {
                            if m < 0 {
                                v.add(&min_path, "must not be negative");
                            } else if self.metric == TierMetric::Composite
                                && m > COMPOSITE_MAX_BASIS_POINTS
                            {
                                v.add(
                                    &min_path,
                                    format!(
                                        "must be at most {COMPOSITE_MAX_BASIS_POINTS} basis points for the composite metric"
                                    ),
                                );
                            }
                            if let Some((j, pm)) = previous_min
                                && m >= pm
                            {
                                v.add(
                                    &min_path,
                                    format!(
                                        "must be less than tiers[{j}].min_value ({pm}): thresholds must strictly decrease"
                                    ),
                                );
                            }
                            previous_min = Some((i, m));
                        }
                    }
                }
                TierMode::Percentile => {
                    if tier.min_value.is_some() {
                        v.add(&min_path, "must not be set in percentile mode");
                    }
                    match (i == last, tier.share_percent) {
                        (true, Some(_)) => v.add(
                            &share_path,
                            "must not be set on the last tier, which takes the rest",
                        ),
                        (true, None) => {}
                        (false, None) => v.add(
                            &share_path,
                            "is required in percentile mode on every tier but the last",
                        ),
                        (false, Some(s)) if !s.is_finite() => {
                            v.add(&share_path, "must be a finite number");
                        }
                        (false, Some(s)) if s <= 0.0 => {
                            v.add(&share_path, "must be greater than 0");
                        }
                        (false, Some(s)) => {
                            total_share += s;
                            if total_share > 100.0 + PERCENTILE_EPSILON && !total_reported {
                                total_reported = true;
                                v.add(
                                    &share_path,
                                    format!(
                                        "brings the shares to {total_share} %: they must sum to at most 100 %"
                                    ),
                                );
                            }
                        }
                    }
                }
            }
        }
        v.finish(())
    }

    /// The rank (1 = best) of the tier called `name`, ignoring case.
    pub fn rank_of(&self, name: &str) -> Option<u32> {
        let i = self
            .tiers
            .iter()
            .position(|t| t.name.to_lowercase() == name.to_lowercase())?;
        u32::try_from(i + 1).ok()
    }
}

fn check_name(v: &mut Violations, i: usize, name: &str, names: &mut HashMap<String, usize>) {
    let path = format!("tiers[{i}].name");
    if name.trim().is_empty() {
        v.add(path, "is required");
        return;
    }
    let chars = name.chars().count();
    if chars > MAX_TIER_NAME_CHARS {
        v.add(
            &path,
            format!("must be at most {MAX_TIER_NAME_CHARS} characters, has {chars}"),
        );
    }
    if name.chars().any(char::is_control) {
        v.add(&path, "must not contain control characters");
    }
    if name.trim() != name {
        v.add(&path, "must not start or end with whitespace");
    }
    match names.get(&name.to_lowercase()) {
        Some(j) => v.add(
            &path,
            format!("duplicates tiers[{j}].name (names are compared ignoring case)"),
        ),
        None => {
            names.insert(name.to_lowercase(), i);
        }
    }
}

/// The tier a customer gets.
#[derive(Debug, Clone, PartialEq)]
pub struct TierAssignment {
    /// The tier's name.
    pub name: String,
    /// 1 = best.
    pub rank: u32,
    /// The customer's metric value in the metric's unit (minor units, or basis points for the
    /// composite); `None` when unknown (e.g. no value model).
    pub metric_value: Option<i64>,
    /// The customer's percentile of the metric in the population, 0–1; `None` when unknown.
    pub percentile: Option<f64>,
}

/// Predicted CLV (model output, minor units as `f64`) as a tier metric value: rounded half away
/// from zero, saturating at the `i64` range; `None` for NaN or infinities.
pub fn clv_minor_units(clv: f64) -> Option<i64> {
    clv.is_finite().then(|| clv.round() as i64)
}

/// The tier of a customer with `metric_value` (absolute mode) or `percentile` (percentile mode)
/// under `policy`; the last tier when the deciding input is unknown. `None` only when the policy
/// has no tiers (a valid policy always has one). The policy is assumed valid; an invalid one still
/// gives a tier (the first that matches), never a panic.
pub fn assign_tier(
    policy: &TierPolicy,
    metric_value: Option<i64>,
    percentile: Option<f64>,
) -> Option<TierAssignment> {
    let last = policy.tiers.len().checked_sub(1)?;
    let percentile = percentile
        .filter(|p| !p.is_nan())
        .map(|p| p.clamp(0.0, 1.0));
    let mut head = policy.tiers.iter().take(last);
    let index = match policy.mode {
        TierMode::Absolute => metric_value
            .and_then(|value| head.position(|t| t.min_value.is_some_and(|m| value >= m))),
        TierMode::Percentile => percentile.and_then(|p| {
            let mut cumulative = 0.0;
            head.position(|t| {
                cumulative += t.share_percent.unwrap_or(0.0) / 100.0;
                p >= 1.0 - cumulative - PERCENTILE_EPSILON
            })
        }),
    }
    .unwrap_or(last);
    let tier = policy.tiers.get(index)?;
    Some(TierAssignment {
        name: tier.name.clone(),
        rank: u32::try_from(index + 1).unwrap_or(u32::MAX),
        metric_value,
        percentile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Percentiles;

    fn absolute(metric: TierMetric, tiers: Vec<TierDef>) -> TierPolicy {
        TierPolicy {
            metric,
            mode: TierMode::Absolute,
            tiers,
        }
    }

    fn percentile(tiers: Vec<TierDef>) -> TierPolicy {
        TierPolicy {
            metric: TierMetric::PredictedClv,
            mode: TierMode::Percentile,
            tiers,
        }
    }

    /// Checks the violations of `policy`: (field, description substring) pairs, in order.
    #[track_caller]
    fn check_invalid(policy: TierPolicy, want: &[(&str, &str)]) {
        let got = match policy.validate() {
            Ok(()) => Vec::new(),
            Err(v) => v.into_vec(),
        };
        let matches = got.len() == want.len()
            && got
                .iter()
                .zip(want)
                .all(|(g, (f, d))| g.field == *f && g.description.contains(d));
        assert!(matches, "policy {policy:?}\n got: {got:#?}\nwant: {want:?}");
    }

    #[test]
    fn valid_policies() {
        check_invalid(TierPolicy::default(), &[]);
        check_invalid(percentile(vec![TierDef::rest("everyone")]), &[]);
        check_invalid(
            absolute(
                TierMetric::HistoricalRevenue,
                vec![
                    TierDef::with_min_value("gold", 100_000),
                    TierDef::with_min_value("silver", 0),
                    TierDef::rest("bronze"),
                ],
            ),
            &[],
        );
        check_invalid(
            percentile(vec![
                TierDef::with_share("a", 50.0),
                TierDef::with_share("b", 50.0),
                TierDef::rest("c"),
            ]),
            &[],
        );
        // Rounding of shares that sum to 100.
        check_invalid(
            percentile(vec![
                TierDef::with_share("a", 33.3),
                TierDef::with_share("b", 33.3),
                TierDef::with_share("c", 33.4),
                TierDef::rest("d"),
            ]),
            &[],
        );
        let ten: Vec<TierDef> = (0..9)
            .map(|i| TierDef::with_share(format!("t{i}"), 10.0))
            .chain([TierDef::rest("rest")])
            .collect();
        check_invalid(percentile(ten), &[]);
        check_invalid(percentile(vec![TierDef::rest("x".repeat(32))]), &[]);
    }

    #[test]
    fn policy_validation_errors() {
        check_invalid(percentile(vec![]), &[("tiers", "at least one")]);
        let eleven: Vec<TierDef> = (0..10)
            .map(|i| TierDef::with_share(format!("t{i}"), 1.0))
            .chain([TierDef::rest("rest")])
            .collect();
        check_invalid(percentile(eleven), &[("tiers", "at most 10")]);
        // Names.
        check_invalid(
            percentile(vec![
                TierDef::with_share("", 2.0),
                TierDef::with_share("  ", 2.0),
                TierDef::with_share("x".repeat(33), 2.0),
                TierDef::with_share("Gold", 2.0),
                TierDef::with_share("gold", 2.0),
                TierDef::with_share(" silver", 2.0),
                TierDef::with_share("a\tb", 2.0),
                TierDef::rest("GOLD"),
            ]),
            &[
                ("tiers[0].name", "required"),
                ("tiers[1].name", "required"),
                ("tiers[2].name", "at most 32 characters"),
                ("tiers[4].name", "duplicates tiers[3].name"),
                ("tiers[5].name", "whitespace"),
                ("tiers[6].name", "control characters"),
                ("tiers[7].name", "duplicates tiers[3].name"),
            ],
        );
        // Absolute thresholds.
        check_invalid(
            absolute(
                TierMetric::PredictedClv,
                vec![
                    TierDef::with_min_value("a", 1_000),
                    TierDef::with_min_value("b", 1_000),
                    TierDef::rest("c"),
                ],
            ),
            &[("tiers[1].min_value", "less than tiers[0].min_value (1000)")],
        );
        check_invalid(
            absolute(
                TierMetric::PredictedClv,
                vec![
                    TierDef::with_min_value("a", 10),
                    TierDef::with_min_value("b", 20),
                    TierDef::rest("c"),
                ],
            ),
            &[("tiers[1].min_value", "strictly decrease")],
        );
        check_invalid(
            absolute(
                TierMetric::HistoricalRevenue,
                vec![
                    TierDef::rest("a"),
                    TierDef::with_share("b", 5.0),
                    TierDef::with_min_value("c", -1),
                    TierDef::with_min_value("d", 5),
                ],
            ),
            &[
                ("tiers[0].min_value", "required"),
                ("tiers[1].share_percent", "absolute mode"),
                ("tiers[1].min_value", "required"),
                ("tiers[2].min_value", "negative"),
                ("tiers[3].min_value", "last tier"),
            ],
        );
        check_invalid(
            absolute(
                TierMetric::Composite,
                vec![
                    TierDef::with_min_value("a", 10_001),
                    TierDef::with_min_value("b", 10_000),
                    TierDef::rest("c"),
                ],
            ),
            &[("tiers[0].min_value", "at most 10000 basis points")],
        );
        // Percentile shares.
        check_invalid(
            percentile(vec![
                TierDef::with_share("a", 0.0),
                TierDef::with_share("b", -5.0),
                TierDef::with_share("c", f64::NAN),
                TierDef::with_share("d", f64::INFINITY),
                TierDef::with_min_value("e", 5),
                TierDef::with_share("f", 5.0),
            ]),
            &[
                ("tiers[0].share_percent", "greater than 0"),
                ("tiers[1].share_percent", "greater than 0"),
                ("tiers[2].share_percent", "finite"),
                ("tiers[3].share_percent", "finite"),
                ("tiers[4].min_value", "percentile mode"),
                ("tiers[4].share_percent", "required"),
                ("tiers[5].share_percent", "last tier"),
            ],
        );
        check_invalid(
            percentile(vec![
                TierDef::with_share("a", 60.0),
                TierDef::with_share("b", 40.5),
                TierDef::with_share("c", 10.0),
                TierDef::rest("d"),
            ]),
            &[("tiers[1].share_percent", "100.5 %")],
        );
    }

    /// Assigns every value of `values` (a whole population) and returns the tier names.
    fn assign_population(policy: &TierPolicy, values: &[i64]) -> Vec<String> {
        let pop = Percentiles::from_integers(values.iter().copied());
        values
            .iter()
            .map(|&v| {
                assign_tier(policy, Some(v), pop.percentile_of_integer(v))
                    .map(|a| a.name)
                    .unwrap_or_default()
            })
            .collect()
    }

    fn counts(names: &[String], policy: &TierPolicy) -> Vec<usize> {
        policy
            .tiers
            .iter()
            .map(|t| names.iter().filter(|n| **n == t.name).count())
            .collect()
    }

    #[test]
    fn percentile_tiers_at_exact_boundaries() {
        let policy = TierPolicy::default();
        // 100 distinct values: exactly 2, 8, 20, 70.
        let values: Vec<i64> = (1..=100).collect();
        let names = assign_population(&policy, &values);
        assert_eq!(counts(&names, &policy), [2, 8, 20, 70]);
        assert_eq!(names[99], "platinum");
        assert_eq!(names[98], "platinum");
        assert_eq!(names[97], "gold");
        assert_eq!(names[90], "gold");
        assert_eq!(names[89], "silver");
        assert_eq!(names[70], "silver");
        assert_eq!(names[69], "bronze");
        // (population size, expected counts): round(n × cumulative share), halves up.
        let cases: &[(i64, [usize; 4])] = &[
            (1, [0, 0, 0, 1]),   // 0.02 → 0: the only customer sits at 0.5
            (25, [1, 2, 5, 17]), // 0.5 → 1, 2.5 → 3, 7.5 → 8
            (50, [1, 4, 10, 35]),
            (1000, [20, 80, 200, 700]),
        ];
        for &(n, want) in cases {
            let values: Vec<i64> = (1..=n).collect();
            let names = assign_population(&policy, &values);
            assert_eq!(counts(&names, &policy), want, "n = {n}");
        }
        // Ties share a tier: 100 customers, the top 5 equal.
        let mut values: Vec<i64> = (1..=95).collect();
        values.extend([1_000; 5]);
        let names = assign_population(&policy, &values);
        // The five tie at percentile (95 + 2.5) / 100 = 0.975 < 0.98: all gold, none platinum.
        assert_eq!(counts(&names, &policy), [0, 10, 20, 70]);
    }

    #[test]
    fn percentile_tiers_unknowns() {
        let policy = TierPolicy::default();
        let cases: &[(Option<f64>, &str, u32)] = &[
            (None, "bronze", 4),
            (Some(f64::NAN), "bronze", 4),
            (Some(1.0), "platinum", 1),
            (Some(0.98), "platinum", 1),
            (Some(0.979_999), "gold", 2),
            (Some(0.9), "gold", 2),
            (Some(0.7), "silver", 3),
            (Some(0.699_999), "bronze", 4),
            (Some(0.0), "bronze", 4),
            (Some(7.0), "platinum", 1),
            (Some(-1.0), "bronze", 4),
        ];
        for &(p, name, rank) in cases {
            let a = assign_tier(&policy, Some(5), p);
            let got = a.as_ref().map(|a| (a.name.as_str(), a.rank));
            assert_eq!(got, Some((name, rank)), "percentile {p:?}");
        }
        // Empty population: everyone the last tier, percentile None.
        let empty = Percentiles::new([]);
        let a = assign_tier(&policy, Some(1_000_000), empty.percentile_of(1e6));
        assert_eq!(
            a,
            Some(TierAssignment {
                name: "bronze".into(),
                rank: 4,
                metric_value: Some(1_000_000),
                percentile: None,
            })
        );
        // Shares summing to exactly 100: the last tier is empty but reachable with unknowns.
        let full = percentile(vec![
            TierDef::with_share("top", 100.0),
            TierDef::rest("none"),
        ]);
        assert_eq!(assign_tier(&full, None, Some(0.0)).map(|a| a.rank), Some(1));
        assert_eq!(assign_tier(&full, None, None).map(|a| a.rank), Some(2));
        // No tiers: no assignment.
        assert_eq!(assign_tier(&percentile(vec![]), Some(1), Some(0.5)), None);
    }

    #[test]
    fn absolute_tiers_at_exact_thresholds() {
        let policy = absolute(
            TierMetric::HistoricalRevenue,
            vec![
                TierDef::with_min_value("gold", 100_000),
                TierDef::with_min_value("silver", 10_000),
                TierDef::rest("bronze"),
            ],
        );
        let cases: &[(Option<i64>, &str)] = &[
            (Some(100_000), "gold"),
            (Some(i64::MAX), "gold"),
            (Some(99_999), "silver"),
            (Some(10_000), "silver"),
            (Some(9_999), "bronze"),
            (Some(0), "bronze"),
            (Some(-5), "bronze"),
            (None, "bronze"),
        ];
        for &(value, want) in cases {
            // The percentile does not matter in absolute mode.
            for p in [None, Some(0.0), Some(1.0)] {
                let got = assign_tier(&policy, value, p).map(|a| a.name);
                assert_eq!(
                    got.as_deref(),
                    Some(want),
                    "value {value:?}, percentile {p:?}"
                );
            }
        }
        // CLV rounding onto the threshold.
        let clv = absolute(
            TierMetric::PredictedClv,
            vec![TierDef::with_min_value("vip", 500), TierDef::rest("rest")],
        );
        let cases: &[(f64, &str)] = &[
            (499.5, "vip"),
            (499.49, "rest"),
            (f64::NAN, "rest"),
            (f64::INFINITY, "rest"),
            (1e300, "vip"),
        ];
        for &(value, want) in cases {
            let got = assign_tier(&clv, clv_minor_units(value), None).map(|a| a.name);
            assert_eq!(got.as_deref(), Some(want), "clv {value}");
        }
        assert_eq!(clv_minor_units(-2.5), Some(-3));
        assert_eq!(clv_minor_units(1e300), Some(i64::MAX));
    }

    #[test]
    fn rank_and_serde() {
        let policy = TierPolicy::default();
        assert_eq!(policy.rank_of("GOLD"), Some(2));
        assert_eq!(policy.rank_of("iron"), None);
        let json = serde_json::to_string(&policy).unwrap_or_default();
        assert!(json.contains("\"metric\":\"predicted_clv\""), "{json}");
        assert!(json.contains("\"share_percent\":2.0"), "{json}");
        let back: Result<TierPolicy, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(policy));
    }
}
