//! Program tiers, evaluated from a member's daily activity — no stored state, so the answer is
//! the same whenever it is asked and windows roll over by themselves.
//!
//! Qualification on UTC day `s`: the customer's tenure on `s` is at least the tier's
//! `min_tenure_days`, and — when the tier has thresholds — the points earned or the net spend in
//! the window of `tier_window_days` days ending on `s` (that day included) reach either threshold.
//! Downgrade rule: a member holds the best tier they qualified for on any day of the last
//! `tier_grace_days` days (today included). So an upgrade is immediate, and a member who stops
//! qualifying keeps the tier for the grace period after the last qualifying day.

use super::ledger::Points;
use super::program::ProgramDef;
use crate::Day;

/// Points earned and net spend on one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayActivity {
    pub day: Day,
    pub points: Points,
    pub spend: i64,
}

/// What it takes to reach the next tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextTier {
    pub index: usize,
    /// Points still to earn within the window (0 if met or not a criterion).
    pub points_needed: Points,
    /// Spend still needed within the window (minor units; 0 if met or not a criterion).
    pub spend_needed: i64,
    /// Days of tenure still needed.
    pub tenure_days_needed: i64,
}

/// A member's tier status on a day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierStatus {
    /// Index into the program's tiers (`None` when the program has none).
    pub current: Option<usize>,
    pub points_in_window: Points,
    pub spend_in_window: i64,
    /// For a tier above the base: the last day it is held without qualifying again.
    pub held_until: Option<Day>,
    /// Points (or spend) to earn now to qualify for the current tier again today, restarting
    /// the grace period; 0 when qualifying today.
    pub keep_points_needed: Points,
    pub keep_spend_needed: i64,
    pub next: Option<NextTier>,
}

struct Sums {
    days: Vec<i32>,
    points: Vec<Points>,
    spend: Vec<i64>,
}

impl Sums {
    fn new(activity: &[DayActivity]) -> Self {
        let mut sorted = activity.to_vec();
        sorted.sort_by_key(|a| a.day);
        let mut s = Sums {
            days: Vec::with_capacity(sorted.len()),
            points: vec![0],
            spend: vec![0],
        };
        for a in sorted {
            s.days.push(a.day.as_days());
            let p = s
                .points
                .last()
                .copied()
                .unwrap_or(0)
                .saturating_add(a.points);
            let m = s.spend.last().copied().unwrap_or(0).saturating_add(a.spend);
            s.points.push(p);
            s.spend.push(m);
        }
        s
    }

    /// Sums over days in (end − window, end].
    fn window(&self, end: i32, window: u32) -> (Points, i64) {
        let hi = self.days.partition_point(|&d| d <= end);
        let start = end.saturating_sub(i32::try_from(window).unwrap_or(i32::MAX));
        let lo = self.days.partition_point(|&d| d <= start);
        (
            self.points[hi].saturating_sub(self.points[lo]),
            self.spend[hi].saturating_sub(self.spend[lo]),
        )
    }
}

fn qualifies(def: &ProgramDef, i: usize, points: Points, spend: i64, tenure: i64) -> bool {
    let Some(t) = def.tiers.get(i) else {
        return false;
    };
    if tenure < i64::from(t.min_tenure_days) {
        return false;
    }
    if t.min_points == 0 && t.min_spend == 0 {
        return true;
    }
    (t.min_points > 0 && points >= t.min_points) || (t.min_spend > 0 && spend >= t.min_spend)
}

fn best(def: &ProgramDef, points: Points, spend: i64, tenure: i64) -> usize {
    (0..def.tiers.len())
        .rev()
        .find(|&i| qualifies(def, i, points, spend, tenure))
        .unwrap_or(0)
}

/// The member's tier on `today`, from their daily activity and the day their tenure started.
pub fn evaluate(
    def: &ProgramDef,
    activity: &[DayActivity],
    tenure_start: Day,
    today: Day,
) -> TierStatus {
    let sums = Sums::new(activity);
    let t = today.as_days();
    let tenure_on = |d: i32| i64::from(d) - i64::from(tenure_start.as_days());
    let (points, spend) = sums.window(t, def.tier_window_days);
    if def.tiers.is_empty() {
        return TierStatus {
            current: None,
            points_in_window: points,
            spend_in_window: spend,
            held_until: None,
            keep_points_needed: 0,
            keep_spend_needed: 0,
            next: None,
        };
    }
    let grace = i32::try_from(def.tier_grace_days).unwrap_or(i32::MAX);
    // The best tier of each day in the grace period, and the last day the held tier qualified.
    let mut current = 0usize;
    let mut last_day = t;
    for d in t.saturating_sub(grace)..=t {
        let (p, s) = sums.window(d, def.tier_window_days);
        let b = best(def, p, s, tenure_on(d));
        if b > current || (b == current && b > 0) {
            current = b;
            last_day = d;
        }
    }
    let tier = &def.tiers[current];
    let qualifies_today = qualifies(def, current, points, spend, tenure_on(t));
    let (keep_points_needed, keep_spend_needed) = if qualifies_today || current == 0 {
        (0, 0)
    } else {
        (
            if tier.min_points > 0 {
                tier.min_points - points
            } else {
                0
            },
            if tier.min_spend > 0 {
                tier.min_spend - spend
            } else {
                0
            },
        )
    };
    let next = def.tiers.get(current + 1).map(|n| NextTier {
        index: current + 1,
        points_needed: if n.min_points > 0 {
            (n.min_points - points).max(0)
        } else {
            0
        },
        spend_needed: if n.min_spend > 0 {
            (n.min_spend - spend).max(0)
        } else {
            0
        },
        tenure_days_needed: (i64::from(n.min_tenure_days) - tenure_on(t)).max(0),
    });
    TierStatus {
        current: Some(current),
        points_in_window: points,
        spend_in_window: spend,
        held_until: (current > 0).then(|| Day::from_days(last_day.saturating_add(grace))),
        keep_points_needed: keep_points_needed.max(0),
        keep_spend_needed: keep_spend_needed.max(0),
        next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loyalty::program::{Expiry, ProgramTier};
    use crate::{Currency, Day};

    fn def() -> ProgramDef {
        let tier = |name: &str, min_points, min_spend, tenure| ProgramTier {
            name: name.into(),
            min_points,
            min_spend,
            min_tenure_days: tenure,
            earn_multiplier_percent: 100,
        };
        ProgramDef {
            display_name: "p".into(),
            currency: Currency::parse("USD").expect("USD"),
            points_per_unit: 1,
            first_purchase_bonus: 0,
            event_bonuses: vec![],
            pending_days: 0,
            expiry: Expiry::Never,
            tiers: vec![
                tier("member", 0, 0, 0),
                tier("silver", 500, 50_000, 0),
                tier("gold", 1000, 0, 365),
            ],
            tier_window_days: 30,
            tier_grace_days: 10,
            target_segment: None,
            auto_enroll: true,
        }
    }

    fn day(d: i32) -> Day {
        Day::from_days(20_000 + d)
    }

    fn act(d: i32, points: Points, spend: i64) -> DayActivity {
        DayActivity {
            day: day(d),
            points,
            spend,
        }
    }

    #[test]
    fn qualification_at_window_edges_and_downgrade_after_grace() {
        let d = def();
        let start = day(-1000);
        let a = vec![act(0, 300, 0), act(5, 200, 0)];
        // Day 5: 500 points in the window: silver.
        assert_eq!(evaluate(&d, &a, start, day(4)).current, Some(0));
        assert_eq!(evaluate(&d, &a, start, day(5)).current, Some(1));
        // Day 29: window (−1, 29] still holds day 0; day 30: day 0 leaves the window.
        let s = evaluate(&d, &a, start, day(29));
        assert_eq!(
            (s.current, s.points_in_window, s.keep_points_needed),
            (Some(1), 500, 0)
        );
        let s = evaluate(&d, &a, start, day(30));
        assert_eq!((s.current, s.points_in_window), (Some(1), 200));
        assert_eq!(
            s.held_until,
            Some(day(39)),
            "last qualified day 29 + 10 days of grace"
        );
        assert_eq!(s.keep_points_needed, 300);
        // Held through the grace period, gone the day after.
        assert_eq!(evaluate(&d, &a, start, day(39)).current, Some(1));
        assert_eq!(evaluate(&d, &a, start, day(40)).current, Some(0));
        // Spend qualifies too.
        let spenders = vec![act(0, 0, 50_000)];
        assert_eq!(evaluate(&d, &spenders, start, day(0)).current, Some(1));
    }

    #[test]
    fn tenure_gates_a_tier_and_progress_says_what_is_missing() {
        let d = def();
        let a = vec![act(0, 1200, 0)];
        // Enough points for gold, but a member for 100 days only.
        let s = evaluate(&d, &a, day(-100), day(0));
        assert_eq!(s.current, Some(1));
        let next = s.next.expect("next");
        assert_eq!(
            (next.index, next.points_needed, next.tenure_days_needed),
            (2, 0, 265)
        );
        let s = evaluate(&d, &a, day(-365), day(0));
        assert_eq!(s.current, Some(2));
        assert!(s.next.is_none());
        let s = evaluate(&d, &[act(0, 120, 0)], day(-5), day(0));
        let next = s.next.expect("next");
        assert_eq!((next.points_needed, next.spend_needed), (380, 50_000));
    }
}
