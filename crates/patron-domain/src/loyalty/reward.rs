//! Rewards and eligibility: every condition a member does not meet, with what is required, what
//! the member has and what is missing.

use serde::{Deserialize, Serialize};

use super::ledger::Points;
use crate::{Timestamp, Violations};

/// Largest reward cost, in points.
pub const MAX_COST: Points = 1_000_000_000;

/// A reward's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewardDef {
    pub display_name: String,
    pub description: String,
    /// Points it costs (> 0).
    pub cost: Points,
    /// The lowest program tier that may take it (by name).
    pub min_tier: Option<String>,
    /// Only members in this segment may take it.
    pub required_segment: Option<String>,
    /// Days as a customer needed (since sign-up, else first event).
    pub min_tenure_days: u32,
    /// Net lifetime spend needed, minor units.
    pub min_lifetime_spend: i64,
    /// How many times one member may take it (completed, not cancelled redemptions).
    pub per_customer_limit: Option<u32>,
    /// Available from / until (UTC instants; either may be open).
    pub active_from: Option<Timestamp>,
    pub active_until: Option<Timestamp>,
}

impl RewardDef {
    pub fn validate(&self, prefix: &str, tier_names: &[String], v: &mut Violations) {
        let f = |n: &str| format!("{prefix}.{n}");
        let n = self.display_name.trim().chars().count();
        if n == 0 || n > 200 {
            v.add(f("display_name"), "must be 1 to 200 characters");
        }
        if self.description.chars().count() > 2000 {
            v.add(f("description"), "must be at most 2000 characters");
        }
        if !(1..=MAX_COST).contains(&self.cost) {
            v.add(
                f("cost"),
                format!("must be between 1 and {MAX_COST} points"),
            );
        }
        if let Some(t) = &self.min_tier
            && !tier_names.iter().any(|n| n.eq_ignore_ascii_case(t))
        {
            v.add(
                f("min_tier"),
                format!(
                    "{} is not a tier of the program ({})",
                    crate::validation::quote(t),
                    tier_names.join(", ")
                ),
            );
        }
        if self.min_tenure_days > 36_500 {
            v.add(f("min_tenure_days"), "must be at most 36500");
        }
        if self.min_lifetime_spend < 0 {
            v.add(f("min_lifetime_spend"), "must not be negative");
        }
        if self.per_customer_limit == Some(0) {
            v.add(f("per_customer_limit"), "must be positive when set");
        }
        if let (Some(a), Some(b)) = (self.active_from, self.active_until)
            && b <= a
        {
            v.add(f("active_until"), "must be after active_from");
        }
    }
}

/// The fixed list of reasons a member may not take a reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    NotEnrolled,
    NotActive,
    OutOfStock,
    InsufficientPoints,
    TierTooLow,
    NotInSegment,
    TenureTooShort,
    SpendTooLow,
    LimitReached,
}

impl Reason {
    pub const fn name(self) -> &'static str {
        match self {
            Reason::NotEnrolled => "NOT_ENROLLED",
            Reason::NotActive => "NOT_ACTIVE",
            Reason::OutOfStock => "OUT_OF_STOCK",
            Reason::InsufficientPoints => "INSUFFICIENT_POINTS",
            Reason::TierTooLow => "TIER_TOO_LOW",
            Reason::NotInSegment => "NOT_IN_SEGMENT",
            Reason::TenureTooShort => "TENURE_TOO_SHORT",
            Reason::SpendTooLow => "SPEND_TOO_LOW",
            Reason::LimitReached => "LIMIT_REACHED",
        }
    }
}

/// One unmet condition. Amounts are in the condition's unit: points, tier rank (1 = base tier),
/// days, minor units, redemptions, units of stock, or 0/1 for yes/no conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmet {
    pub reason: Reason,
    pub required: i64,
    pub actual: i64,
    pub missing: i64,
    /// Words for the amounts where numbers are not enough, e.g. the tier names.
    pub detail: String,
}

/// What eligibility is decided on.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub enrolled: bool,
    pub now: Timestamp,
    pub available_points: Points,
    /// Tier names of the program, base first.
    pub tiers: &'a [String],
    /// The member's tier index (None: no tiers or not enrolled).
    pub tier: Option<usize>,
    /// Whether the member is in the reward's required segment (None: no requirement).
    pub in_segment: Option<bool>,
    pub tenure_days: i64,
    pub lifetime_spend: i64,
    pub redemptions: i64,
    pub stock_remaining: Option<i64>,
}

/// Every unmet condition, in the order of [`Reason`]; empty means eligible.
pub fn check(reward: &RewardDef, f: &Facts<'_>) -> Vec<Unmet> {
    let mut out = Vec::new();
    let flag = |reason, detail: String| Unmet {
        reason,
        required: 1,
        actual: 0,
        missing: 1,
        detail,
    };
    if !f.enrolled {
        out.push(flag(
            Reason::NotEnrolled,
            "not a member of the program".into(),
        ));
    }
    let not_yet = reward.active_from.is_some_and(|a| f.now < a);
    let ended = reward.active_until.is_some_and(|u| f.now >= u);
    if not_yet || ended {
        out.push(flag(
            Reason::NotActive,
            if not_yet {
                "the reward is not available yet".into()
            } else {
                "the reward is no longer available".into()
            },
        ));
    }
    if let Some(stock) = f.stock_remaining
        && stock <= 0
    {
        out.push(Unmet {
            reason: Reason::OutOfStock,
            required: 1,
            actual: stock,
            missing: 1i64.saturating_sub(stock),
            detail: "none left".into(),
        });
    }
    if f.available_points < reward.cost {
        out.push(Unmet {
            reason: Reason::InsufficientPoints,
            required: reward.cost,
            actual: f.available_points,
            missing: reward.cost.saturating_sub(f.available_points),
            detail: format!(
                "{} more points",
                reward.cost.saturating_sub(f.available_points)
            ),
        });
    }
    if let Some(min) = &reward.min_tier {
        let need = f
            .tiers
            .iter()
            .position(|t| t.eq_ignore_ascii_case(min))
            .unwrap_or(0);
        let have = f.tier.unwrap_or(0);
        if !f.enrolled || have < need {
            let have_name = f
                .tier
                .and_then(|i| f.tiers.get(i))
                .map_or("none", String::as_str);
            out.push(Unmet {
                reason: Reason::TierTooLow,
                required: need as i64 + 1,
                actual: if f.enrolled { have as i64 + 1 } else { 0 },
                missing: need as i64 - if f.enrolled { have as i64 } else { -1 },
                detail: format!("reach {min} (now {have_name})"),
            });
        }
    }
    if f.in_segment == Some(false) {
        out.push(flag(
            Reason::NotInSegment,
            format!(
                "not in segment {}",
                reward.required_segment.as_deref().unwrap_or("")
            ),
        ));
    }
    if f.tenure_days < i64::from(reward.min_tenure_days) {
        let missing = i64::from(reward.min_tenure_days).saturating_sub(f.tenure_days);
        out.push(Unmet {
            reason: Reason::TenureTooShort,
            required: i64::from(reward.min_tenure_days),
            actual: f.tenure_days,
            missing,
            detail: format!("a customer for {missing} more days"),
        });
    }
    if f.lifetime_spend < reward.min_lifetime_spend {
        out.push(Unmet {
            reason: Reason::SpendTooLow,
            required: reward.min_lifetime_spend,
            actual: f.lifetime_spend,
            // Thresholds may be as high as i64::MAX and spend net of refunds below zero.
            missing: reward.min_lifetime_spend.saturating_sub(f.lifetime_spend),
            detail: "lifetime spend too low".into(),
        });
    }
    if let Some(limit) = reward.per_customer_limit
        && f.redemptions >= i64::from(limit)
    {
        out.push(Unmet {
            reason: Reason::LimitReached,
            required: i64::from(limit),
            actual: f.redemptions,
            missing: 0,
            detail: format!("taken {} of {limit} times", f.redemptions),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reward() -> RewardDef {
        RewardDef {
            display_name: "Free shipping".into(),
            description: String::new(),
            cost: 500,
            min_tier: Some("Gold".into()),
            required_segment: Some("vip".into()),
            min_tenure_days: 365,
            min_lifetime_spend: 100_000,
            per_customer_limit: Some(2),
            active_from: Some(Timestamp::from_micros(1_000)),
            active_until: Some(Timestamp::from_micros(2_000)),
        }
    }

    fn tiers() -> Vec<String> {
        vec!["Member".into(), "Silver".into(), "Gold".into()]
    }

    #[test]
    fn every_unmet_condition_is_reported_with_amounts() {
        let tiers = tiers();
        let f = Facts {
            enrolled: true,
            now: Timestamp::from_micros(1_500),
            available_points: 380,
            tiers: &tiers,
            tier: Some(1),
            in_segment: Some(false),
            tenure_days: 300,
            lifetime_spend: 40_000,
            redemptions: 2,
            stock_remaining: Some(0),
        };
        let got: Vec<(&str, i64, i64, i64)> = check(&reward(), &f)
            .iter()
            .map(|u| (u.reason.name(), u.required, u.actual, u.missing))
            .collect();
        assert_eq!(
            got,
            vec![
                ("OUT_OF_STOCK", 1, 0, 1),
                ("INSUFFICIENT_POINTS", 500, 380, 120),
                ("TIER_TOO_LOW", 3, 2, 1),
                ("NOT_IN_SEGMENT", 1, 0, 1),
                ("TENURE_TOO_SHORT", 365, 300, 65),
                ("SPEND_TOO_LOW", 100_000, 40_000, 60_000),
                ("LIMIT_REACHED", 2, 2, 0),
            ]
        );
        let ok = Facts {
            available_points: 500,
            tier: Some(2),
            in_segment: Some(true),
            tenure_days: 365,
            lifetime_spend: 100_000,
            redemptions: 1,
            stock_remaining: Some(1),
            ..f.clone()
        };
        assert!(check(&reward(), &ok).is_empty());
        let late = Facts {
            now: Timestamp::from_micros(2_000),
            ..ok.clone()
        };
        assert_eq!(check(&reward(), &late)[0].reason, Reason::NotActive);
        let outsider = Facts {
            enrolled: false,
            tier: None,
            ..ok
        };
        let reasons: Vec<Reason> = check(&reward(), &outsider)
            .iter()
            .map(|u| u.reason)
            .collect();
        assert_eq!(reasons, vec![Reason::NotEnrolled, Reason::TierTooLow]);
    }

    #[test]
    fn validation() {
        let mut bad = reward();
        bad.cost = 0;
        bad.min_tier = Some("Platinum".into());
        bad.per_customer_limit = Some(0);
        bad.active_until = Some(Timestamp::from_micros(10));
        let mut v = Violations::new();
        bad.validate("reward", &tiers(), &mut v);
        let fields: Vec<String> = v.into_vec().into_iter().map(|f| f.field).collect();
        assert_eq!(
            fields,
            [
                "reward.cost",
                "reward.min_tier",
                "reward.per_customer_limit",
                "reward.active_until"
            ]
        );
    }
}
