//! The variables a segment rule may read: their names, types and units. This table is the one
//! source of the documentation in the proto comments and the README, and of the checker's
//! "did you mean" lists.

use std::fmt;

/// A static type of the rule language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Bool,
    Int,
    Double,
    String,
    /// Known only when evaluated: custom attributes.
    Dyn,
    /// The `null` literal.
    Null,
}

impl Ty {
    pub(crate) fn is_numeric(self) -> bool {
        matches!(self, Ty::Int | Ty::Double)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Ty::Bool => "bool",
            Ty::Int => "int",
            Ty::Double => "double",
            Ty::String => "string",
            Ty::Dyn => "dyn",
            Ty::Null => "null",
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A plain (not windowed) variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Var {
    CustomerId,
    Age,
    Gender,
    Country,
    TenureDays,
    RecencyDays,
    Frequency,
    MonetaryTotal,
    RScore,
    FScore,
    MScore,
    RfmSegment,
    PredictedClv,
    ProbabilityAlive,
    Tier,
    TierRank,
    ValueIndex,
    Quadrant,
    Csat,
    Nps,
    NpsCategory,
    ChurnRisk,
    PurchasesDaysSinceLast,
    PurchasesTotalCount,
    PurchasesTotalRevenue,
    EngagementDaysSinceLast,
    EngagementTotal,
}

/// One documented variable.
#[derive(Debug, Clone, Copy)]
pub struct VarDoc {
    pub group: &'static str,
    pub field: &'static str,
    pub var: Var,
    pub ty: Ty,
    /// Whether it can be `null` (unknown for this customer).
    pub nullable: bool,
    pub doc: &'static str,
}

const fn v(
    group: &'static str,
    field: &'static str,
    var: Var,
    ty: Ty,
    nullable: bool,
    doc: &'static str,
) -> VarDoc {
    VarDoc {
        group,
        field,
        var,
        ty,
        nullable,
        doc,
    }
}

/// Every plain variable, by group.
pub const VARIABLES: &[VarDoc] = &[
    v(
        "customer",
        "id",
        Var::CustomerId,
        Ty::String,
        false,
        "the caller's customer id",
    ),
    v(
        "customer",
        "age",
        Var::Age,
        Ty::Int,
        true,
        "whole years since the birth date, as of the evaluation day (UTC); a 29 February birthday counts on 1 March in other years; null without a birth date",
    ),
    v(
        "customer",
        "gender",
        Var::Gender,
        Ty::String,
        false,
        "\"female\", \"male\", \"other\", \"undisclosed\" or \"unspecified\"",
    ),
    v(
        "customer",
        "country",
        Var::Country,
        Ty::String,
        true,
        "ISO 3166-1 alpha-2 code, e.g. \"DE\"; null when not given",
    ),
    v(
        "customer",
        "tenure_days",
        Var::TenureDays,
        Ty::Int,
        false,
        "whole days since sign-up (else the first event, else creation), as of the evaluation instant",
    ),
    v(
        "rfm",
        "recency_days",
        Var::RecencyDays,
        Ty::Int,
        true,
        "days from the last purchase day to the evaluation day; null without purchases",
    ),
    v(
        "rfm",
        "frequency",
        Var::Frequency,
        Ty::Int,
        true,
        "repeat purchase days (days with a purchase after the first one: the lifetimes convention); null without purchases",
    ),
    v(
        "rfm",
        "monetary_total",
        Var::MonetaryTotal,
        Ty::Int,
        false,
        "net revenue to date, minor units of the deployment currency",
    ),
    v(
        "rfm",
        "r",
        Var::RScore,
        Ty::Int,
        true,
        "recency score 1-5 (5 = most recent) against the active model's population; null without a model or purchases",
    ),
    v(
        "rfm",
        "f",
        Var::FScore,
        Ty::Int,
        true,
        "frequency score 1-5; null without a model or purchases",
    ),
    v(
        "rfm",
        "m",
        Var::MScore,
        Ty::Int,
        true,
        "monetary score 1-5; null without a model or purchases",
    ),
    v(
        "rfm",
        "segment",
        Var::RfmSegment,
        Ty::String,
        true,
        "RFM segment: \"champions\", \"loyal\", \"potential_loyalist\", \"new\", \"promising\", \"need_attention\", \"about_to_sleep\", \"at_risk\", \"cant_lose_them\", \"hibernating\", \"lost\"; null when unscored",
    ),
    v(
        "value",
        "predicted_clv",
        Var::PredictedClv,
        Ty::Int,
        true,
        "predicted customer lifetime value, minor units (rounded); null without a value model or purchases",
    ),
    v(
        "value",
        "probability_alive",
        Var::ProbabilityAlive,
        Ty::Double,
        true,
        "BG/NBD probability the customer is still active, 0-1; null without a model or purchases",
    ),
    v(
        "value",
        "tier",
        Var::Tier,
        Ty::String,
        true,
        "value tier name from the tier policy, e.g. \"gold\"; null when undecidable",
    ),
    v(
        "value",
        "tier_rank",
        Var::TierRank,
        Ty::Int,
        true,
        "rank of the tier, 1 = best; null when undecidable",
    ),
    v(
        "value",
        "value_index",
        Var::ValueIndex,
        Ty::Double,
        true,
        "perceived value index 0-100 ((benefits - costs + 4) / 8 x 100); null without survey answers",
    ),
    v(
        "value",
        "quadrant",
        Var::Quadrant,
        Ty::String,
        false,
        "value-balance quadrant: \"mutual_value\", \"at_risk\", \"under_served\", \"low_engagement\" or \"unknown\"",
    ),
    v(
        "value",
        "csat",
        Var::Csat,
        Ty::Double,
        true,
        "mean CSAT answer 1-5; null without answers",
    ),
    v(
        "value",
        "nps",
        Var::Nps,
        Ty::Int,
        true,
        "the latest NPS answer 0-10; null without answers",
    ),
    v(
        "value",
        "nps_category",
        Var::NpsCategory,
        Ty::String,
        true,
        "category of the latest NPS answer: \"promoter\", \"passive\" or \"detractor\"; null without answers",
    ),
    v(
        "value",
        "churn_risk",
        Var::ChurnRisk,
        Ty::String,
        true,
        "churn risk level from P(alive): \"low\", \"medium\", \"high\"; null without a model or purchases",
    ),
    v(
        "purchases",
        "days_since_last",
        Var::PurchasesDaysSinceLast,
        Ty::Int,
        true,
        "days from the last purchase day to the evaluation day; null without purchases",
    ),
    v(
        "purchases",
        "total_count",
        Var::PurchasesTotalCount,
        Ty::Int,
        false,
        "orders to date (wholly refunded orders excluded)",
    ),
    v(
        "purchases",
        "total_revenue",
        Var::PurchasesTotalRevenue,
        Ty::Int,
        false,
        "net revenue to date, minor units",
    ),
    v(
        "engagement",
        "days_since_last",
        Var::EngagementDaysSinceLast,
        Ty::Int,
        true,
        "days from the last engagement event's day to the evaluation day; null without engagement",
    ),
    v(
        "engagement",
        "total",
        Var::EngagementTotal,
        Ty::Int,
        false,
        "engagement events to date",
    ),
];

/// The windowed functions, for documentation.
pub const FUNCTIONS: &[(&str, &str)] = &[
    (
        "purchases.count(days)",
        "int: orders (not wholly refunded) whose purchase day is within the last `days` UTC days, today included (1 <= days <= 3650, a literal)",
    ),
    (
        "purchases.revenue(days)",
        "int: net revenue (minor units) of those orders",
    ),
    (
        "engagement.count(days)",
        "int: engagement events within the last `days` UTC days, today included",
    ),
    (
        "engagement.count(days, \"activity\")",
        "int: engagement events of one activity within the window",
    ),
    (
        "customer.attributes.NAME / customer.attributes[\"NAME\"]",
        "the custom attribute's value (string, int, double, bool; dates as \"YYYY-MM-DD\"); an error (so not a member) when absent unless guarded with has()",
    ),
    (
        "has(customer.attributes.NAME)",
        "bool: whether the attribute is set",
    ),
    (
        "in_segment(\"id\")",
        "bool: membership of another segment, built-in or stored; cycles are refused when saving",
    ),
    (
        "size(s), s.startsWith(t), s.endsWith(t), s.contains(t), s.lowerAscii()",
        "string functions",
    ),
    ("int(x), double(x), string(x)", "conversions"),
];

/// The groups of variables.
pub const GROUPS: &[&str] = &[
    "customer",
    "rfm",
    "value",
    "purchases",
    "engagement",
    "loyalty",
];

/// The longest windows a rule may ask for, in days (ten years).
pub const MAX_WINDOW_DAYS: i64 = 3650;

pub(crate) fn lookup(group: &str, field: &str) -> Option<&'static VarDoc> {
    VARIABLES
        .iter()
        .find(|d| d.group == group && d.field == field)
}

pub(crate) fn fields_of(group: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = VARIABLES
        .iter()
        .filter(|d| d.group == group)
        .map(|d| d.field)
        .collect();
    match group {
        "customer" => out.push("attributes"),
        "purchases" => out.extend(["count(days)", "revenue(days)"]),
        "engagement" => out.push("count(days[, activity])"),
        "loyalty" => out.extend([
            "enrolled(program)",
            "points(program)",
            "pending(program)",
            "tier(program)",
            "tier_rank(program)",
        ]),
        _ => {}
    }
    out
}

impl Var {
    pub(crate) fn doc(self) -> &'static VarDoc {
        // Every Var has exactly one row; the fallback is never reached.
        VARIABLES
            .iter()
            .find(|d| d.var == self)
            .unwrap_or(&VARIABLES[0])
    }

    /// Whether the value needs the scoring model (computed lazily, once per customer).
    pub(crate) fn needs_scores(self) -> bool {
        matches!(
            self,
            Var::RScore
                | Var::FScore
                | Var::MScore
                | Var::RfmSegment
                | Var::PredictedClv
                | Var::ProbabilityAlive
                | Var::Tier
                | Var::TierRank
                | Var::Quadrant
                | Var::ChurnRisk
        )
    }

    /// Whether the value changes with the passage of time alone.
    pub(crate) fn time_relative(self) -> bool {
        matches!(
            self,
            Var::Age
                | Var::TenureDays
                | Var::RecencyDays
                | Var::PurchasesDaysSinceLast
                | Var::EngagementDaysSinceLast
        ) || self.needs_scores()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_has_one_row() {
        for d in VARIABLES {
            assert_eq!(d.var.doc().group, d.group);
            assert_eq!(d.var.doc().field, d.field);
            assert_eq!(
                VARIABLES
                    .iter()
                    .filter(|o| o.group == d.group && o.field == d.field)
                    .count(),
                1
            );
        }
    }
}
