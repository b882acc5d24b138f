//! Loyalty programs: earning rules, pending period, expiry, tiers; and the arithmetic of earning.
//!
//! Rounding: purchase points are `floor(net spend in minor units × points_per_unit × tier
//! multiplier % / (100 × 10^minor digits))` — whole points, rounded down, computed in 128-bit
//! integers (no floating point).

use serde::{Deserialize, Serialize};

use super::ledger::Points;
use crate::{Currency, Violations};

/// Most tiers a program may have.
pub const MAX_TIERS: usize = 10;
/// Most custom-event bonus rules a program may have.
pub const MAX_EVENT_BONUSES: usize = 50;
/// Largest points-per-unit rate and bonus.
pub const MAX_RATE: i64 = 1_000_000;
/// Longest pending period, expiry, window or grace, in days (ten years).
pub const MAX_DAYS: u32 = 3650;
/// Largest earn multiplier, in percent.
pub const MAX_MULTIPLIER_PERCENT: u32 = 10_000;

/// The period a bonus cap counts in (UTC: days, ISO weeks starting Monday, calendar months).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapPeriod {
    Day,
    Week,
    Month,
}

/// Bonus points for a named custom event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBonus {
    /// The custom event's name, e.g. "review".
    pub event_name: String,
    pub points: Points,
    /// At most this many bonuses per period; `None`: no cap.
    pub cap: Option<u32>,
    pub cap_period: CapPeriod,
}

/// A tier of a program. Tiers are ordered from the base tier (index 0) up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramTier {
    pub name: String,
    /// Points earned within the qualification window that qualify (0: not a criterion).
    pub min_points: Points,
    /// Net spend (minor units) within the window that qualifies (0: not a criterion).
    pub min_spend: i64,
    /// Days since the customer's sign-up needed, in addition.
    pub min_tenure_days: u32,
    /// Earn multiplier in percent (100 = ×1).
    pub earn_multiplier_percent: u32,
}

/// Expiry of earned points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expiry {
    Never,
    /// Points expire this many days after they were earned.
    AfterDays(u32),
}

/// A program's definition (everything but its id and bookkeeping).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramDef {
    pub display_name: String,
    pub currency: Currency,
    /// Points per one major unit of net spend (e.g. 1 point per USD 1.00).
    pub points_per_unit: i64,
    /// Points for the first purchase the program sees for a member (0: none).
    pub first_purchase_bonus: Points,
    pub event_bonuses: Vec<EventBonus>,
    /// Purchase points stay pending this many days (the return window).
    pub pending_days: u32,
    pub expiry: Expiry,
    /// From the base tier up; empty: no tiers.
    pub tiers: Vec<ProgramTier>,
    /// Rolling window of tier qualification, in days.
    pub tier_window_days: u32,
    /// A member keeps a tier this many days after last qualifying for it.
    pub tier_grace_days: u32,
    /// Only customers in this segment may enrol (and are auto-enrolled).
    pub target_segment: Option<String>,
    /// Customers (of the target segment, if any) are enrolled by their first qualifying event.
    pub auto_enroll: bool,
}

impl ProgramDef {
    /// Checks the definition; paths are relative to `prefix` (e.g. "program").
    pub fn validate(&self, prefix: &str, v: &mut Violations) {
        let f = |name: &str| format!("{prefix}.{name}");
        let n = self.display_name.trim().chars().count();
        if n == 0 || n > 200 {
            v.add(f("display_name"), "must be 1 to 200 characters");
        }
        if !(1..=MAX_RATE).contains(&self.points_per_unit) {
            v.add(
                f("earning.points_per_unit"),
                format!("must be between 1 and {MAX_RATE}"),
            );
        }
        if !(0..=MAX_RATE).contains(&self.first_purchase_bonus) {
            v.add(
                f("earning.first_purchase_bonus"),
                format!("must be between 0 and {MAX_RATE}"),
            );
        }
        if self.event_bonuses.len() > MAX_EVENT_BONUSES {
            v.add(
                f("earning.event_bonuses"),
                format!("at most {MAX_EVENT_BONUSES} rules"),
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, b) in self.event_bonuses.iter().enumerate() {
            let p = f(&format!("earning.event_bonuses[{i}]"));
            if b.event_name.is_empty() || b.event_name.len() > 128 {
                v.add(format!("{p}.event_name"), "must be 1 to 128 characters");
            } else if !names.insert(b.event_name.as_str()) {
                v.add(format!("{p}.event_name"), "appears twice");
            }
            if !(1..=MAX_RATE).contains(&b.points) {
                v.add(
                    format!("{p}.points"),
                    format!("must be between 1 and {MAX_RATE}"),
                );
            }
            if b.cap == Some(0) {
                v.add(format!("{p}.cap"), "must be positive when set");
            }
        }
        if self.pending_days > MAX_DAYS {
            v.add(f("pending_days"), format!("must be at most {MAX_DAYS}"));
        }
        if let Expiry::AfterDays(d) = self.expiry
            && !(1..=MAX_DAYS).contains(&d)
        {
            v.add(
                f("expiry_days"),
                format!("must be between 1 and {MAX_DAYS}"),
            );
        }
        if self.tiers.len() > MAX_TIERS {
            v.add(f("tiers"), format!("at most {MAX_TIERS} tiers"));
        }
        let mut tier_names = std::collections::HashSet::new();
        for (i, t) in self.tiers.iter().enumerate() {
            let p = f(&format!("tiers[{i}]"));
            let n = t.name.trim().chars().count();
            if n == 0 || n > 64 {
                v.add(format!("{p}.name"), "must be 1 to 64 characters");
            } else if !tier_names.insert(t.name.to_lowercase()) {
                v.add(format!("{p}.name"), "appears twice");
            }
            if t.min_points < 0 {
                v.add(format!("{p}.min_points"), "must not be negative");
            }
            if t.min_spend < 0 {
                v.add(format!("{p}.min_spend"), "must not be negative");
            }
            if t.min_tenure_days > MAX_DAYS {
                v.add(
                    format!("{p}.min_tenure_days"),
                    format!("must be at most {MAX_DAYS}"),
                );
            }
            if !(1..=MAX_MULTIPLIER_PERCENT).contains(&t.earn_multiplier_percent) {
                v.add(
                    format!("{p}.earn_multiplier_percent"),
                    format!("must be between 1 and {MAX_MULTIPLIER_PERCENT}"),
                );
            }
            if i == 0 && (t.min_points > 0 || t.min_spend > 0 || t.min_tenure_days > 0) {
                v.add(
                    p.clone(),
                    "the first tier is the base tier every member starts in: no thresholds",
                );
            }
            if i > 0 && t.min_points == 0 && t.min_spend == 0 && t.min_tenure_days == 0 {
                v.add(p.clone(), "a tier above the base needs a threshold");
            }
            if i > 0 {
                let prev = &self.tiers[i - 1];
                let weaker = (t.min_points > 0 && t.min_points < prev.min_points)
                    || (t.min_spend > 0 && t.min_spend < prev.min_spend);
                if weaker {
                    v.add(
                        p.clone(),
                        "thresholds must not decrease from one tier to the next",
                    );
                }
            }
        }
        if !self.tiers.is_empty() && !(1..=MAX_DAYS).contains(&self.tier_window_days) {
            v.add(
                f("tier_window_days"),
                format!("must be between 1 and {MAX_DAYS} when there are tiers"),
            );
        }
        if self.tier_grace_days > MAX_DAYS {
            v.add(f("tier_grace_days"), format!("must be at most {MAX_DAYS}"));
        }
    }

    /// Points for `net_minor_units` of spend at `multiplier_percent`, rounded down; 0 for no or
    /// negative spend.
    pub fn purchase_points(&self, net_minor_units: i64, multiplier_percent: u32) -> Points {
        if net_minor_units <= 0 {
            return 0;
        }
        let scale = 10i128.pow(u32::from(self.currency.minor_digits())) * 100;
        let p = i128::from(net_minor_units)
            * i128::from(self.points_per_unit)
            * i128::from(multiplier_percent)
            / scale;
        Points::try_from(p).unwrap_or(Points::MAX)
    }

    /// The multiplier of a tier by index (100 without tiers).
    pub fn multiplier(&self, tier: Option<usize>) -> u32 {
        tier.and_then(|i| self.tiers.get(i))
            .map_or(100, |t| t.earn_multiplier_percent)
    }

    pub fn bonus_for(&self, event_name: &str) -> Option<&EventBonus> {
        self.event_bonuses
            .iter()
            .find(|b| b.event_name == event_name)
    }

    pub fn tier_index(&self, name: &str) -> Option<usize> {
        self.tiers
            .iter()
            .position(|t| t.name.eq_ignore_ascii_case(name))
    }
}

/// The first UTC day of the cap period containing `day`.
pub fn period_start(period: CapPeriod, day: crate::Day) -> crate::Day {
    match period {
        CapPeriod::Day => day,
        CapPeriod::Week => {
            // 1970-01-01 was a Thursday: Monday-based weeks start 3 days earlier.
            let d = day.as_days();
            crate::Day::from_days(d - (d + 3).rem_euclid(7))
        }
        CapPeriod::Month => {
            let date = day.date();
            crate::Date::new(date.year(), i32::from(date.month()), 1)
                .map_or(day, crate::Date::to_day)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn program() -> ProgramDef {
        ProgramDef {
            display_name: "Rewards".into(),
            currency: Currency::parse("USD").expect("USD"),
            points_per_unit: 1,
            first_purchase_bonus: 100,
            event_bonuses: vec![EventBonus {
                event_name: "review".into(),
                points: 50,
                cap: Some(2),
                cap_period: CapPeriod::Week,
            }],
            pending_days: 14,
            expiry: Expiry::AfterDays(365),
            tiers: vec![
                ProgramTier {
                    name: "Member".into(),
                    min_points: 0,
                    min_spend: 0,
                    min_tenure_days: 0,
                    earn_multiplier_percent: 100,
                },
                ProgramTier {
                    name: "Gold".into(),
                    min_points: 1000,
                    min_spend: 0,
                    min_tenure_days: 0,
                    earn_multiplier_percent: 150,
                },
            ],
            tier_window_days: 365,
            tier_grace_days: 30,
            target_segment: None,
            auto_enroll: true,
        }
    }

    #[test]
    fn purchase_points_round_down_in_integers() {
        let p = program();
        assert_eq!(p.purchase_points(1999, 100), 19);
        assert_eq!(p.purchase_points(1999, 150), 29);
        assert_eq!(p.purchase_points(99, 100), 0);
        assert_eq!(p.purchase_points(-5, 100), 0);
        assert_eq!(p.purchase_points(i64::MAX, 100), i64::MAX / 100);
        let rich = ProgramDef {
            points_per_unit: MAX_RATE,
            ..program()
        };
        // No overflow: 128-bit arithmetic, saturating at the largest balance.
        assert_eq!(
            rich.purchase_points(i64::MAX, MAX_MULTIPLIER_PERCENT),
            Points::MAX
        );
        let jpy = ProgramDef {
            currency: Currency::parse("JPY").expect("JPY"),
            ..program()
        };
        assert_eq!(jpy.purchase_points(1999, 100), 1999);
    }

    #[test]
    fn validation_names_each_bad_field() {
        let mut bad = program();
        bad.points_per_unit = 0;
        bad.event_bonuses[0].points = -1;
        bad.tiers[1].earn_multiplier_percent = 0;
        bad.tiers.push(ProgramTier {
            name: "gold".into(),
            min_points: 10,
            ..bad.tiers[1].clone()
        });
        let mut v = Violations::new();
        bad.validate("program", &mut v);
        let fields: Vec<String> = v.into_vec().into_iter().map(|f| f.field).collect();
        assert!(
            fields.contains(&"program.earning.points_per_unit".to_owned()),
            "{fields:?}"
        );
        assert!(fields.contains(&"program.earning.event_bonuses[0].points".to_owned()));
        assert!(fields.contains(&"program.tiers[1].earn_multiplier_percent".to_owned()));
        assert!(fields.contains(&"program.tiers[2].name".to_owned()));
        assert!(fields.contains(&"program.tiers[2]".to_owned()));
        let mut v = Violations::new();
        program().validate("program", &mut v);
        assert!(v.is_empty());
    }

    #[test]
    fn cap_periods_start_on_utc_days_mondays_and_firsts() {
        let d = |y, m, dd| crate::Date::new(y, m, dd).expect("date").to_day();
        // 2026-11-23 is a Monday.
        assert_eq!(
            period_start(CapPeriod::Week, d(2026, 11, 23)),
            d(2026, 11, 23)
        );
        assert_eq!(
            period_start(CapPeriod::Week, d(2026, 11, 29)),
            d(2026, 11, 23)
        );
        assert_eq!(
            period_start(CapPeriod::Week, d(2026, 11, 30)),
            d(2026, 11, 30)
        );
        assert_eq!(
            period_start(CapPeriod::Month, d(2026, 2, 28)),
            d(2026, 2, 1)
        );
        assert_eq!(period_start(CapPeriod::Day, d(2026, 2, 28)), d(2026, 2, 28));
    }
}
