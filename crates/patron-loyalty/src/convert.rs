//! Proto ⇄ domain conversion for loyalty messages. Proto → domain destructures exhaustively, so
//! a new proto field fails the build until it is handled.

use patron_domain::loyalty::program::{CapPeriod, EventBonus, Expiry, ProgramDef, ProgramTier};
use patron_domain::loyalty::reward::{Reason, RewardDef, Unmet};
use patron_domain::loyalty::tier::TierStatus;
use patron_domain::loyalty::{Balances, Entry, EntryKind};
use patron_domain::{Currency, Timestamp, Violations};
use patron_grpc::time::{from_proto, to_proto};
use patron_proto::common::v1 as common;
use patron_proto::loyalty::v1 as pb;
use patron_store::loyalty::{ProgramRecord, RedemptionRecord, RedemptionStatus, RewardRecord};

/// Ids of programs and rewards: the shared resource-id rule.
pub use patron_grpc::check_resource_id as check_id;

pub fn money(minor_units: i64, currency: Currency) -> common::Money {
    common::Money {
        currency_code: currency.to_string(),
        minor_units,
    }
}

/// An optional money amount in the deployment currency: unset is 0.
fn money_in(m: Option<&common::Money>, path: &str, currency: Currency, v: &mut Violations) -> i64 {
    let Some(m) = m else { return 0 };
    if m.minor_units == 0 && m.currency_code.is_empty() {
        return 0;
    }
    match Currency::parse(&m.currency_code) {
        Ok(c) if c == currency => {}
        Ok(_) => v.add(
            format!("{path}.currency_code"),
            format!("must be {currency}, the deployment's currency"),
        ),
        Err(e) => v.add(format!("{path}.currency_code"), e.to_string()),
    }
    if m.minor_units < 0 {
        v.add(format!("{path}.minor_units"), "must not be negative");
    }
    m.minor_units.max(0)
}

fn days(value: i32, path: &str, v: &mut Violations) -> u32 {
    u32::try_from(value).unwrap_or_else(|_| {
        v.add(path, "must not be negative");
        0
    })
}

fn opt_time(
    t: Option<&prost_types::Timestamp>,
    path: &str,
    v: &mut Violations,
) -> Option<Timestamp> {
    t.and_then(|t| match from_proto(t) {
        Ok(t) => Some(t),
        Err(e) => {
            v.add(path, e.to_string());
            None
        }
    })
}

fn opt_string(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// A program from proto; violations under `program.*`.
pub fn program_from_proto(p: &pb::Program, currency: Currency, v: &mut Violations) -> ProgramDef {
    let pb::Program {
        program_id: _,
        display_name,
        currency_code,
        earning,
        pending_days,
        expiry_days,
        tiers,
        tier_window_days,
        tier_grace_days,
        target_segment,
        auto_enroll,
        revision: _,
        create_time: _,
        update_time: _,
    } = p;
    match Currency::parse(currency_code) {
        Ok(c) if c == currency => {}
        Ok(_) => v.add(
            "program.currency_code",
            format!("must be {currency}, the deployment's currency"),
        ),
        Err(e) => v.add("program.currency_code", e.to_string()),
    }
    let earning = earning.clone().unwrap_or_default();
    let pb::EarningRules {
        points_per_unit,
        first_purchase_bonus,
        event_bonuses,
    } = earning;
    let event_bonuses = event_bonuses
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let pb::EventBonus {
                event_name,
                points,
                cap,
                cap_period,
            } = b;
            let path = format!("program.earning.event_bonuses[{i}]");
            let cap_period = match pb::CapPeriod::try_from(*cap_period) {
                Ok(pb::CapPeriod::Unspecified | pb::CapPeriod::Day) => CapPeriod::Day,
                Ok(pb::CapPeriod::Week) => CapPeriod::Week,
                Ok(pb::CapPeriod::Month) => CapPeriod::Month,
                Err(_) => {
                    v.add(
                        format!("{path}.cap_period"),
                        format!("{cap_period} is not a CapPeriod"),
                    );
                    CapPeriod::Day
                }
            };
            let cap = match *cap {
                0 => None,
                n if n < 0 => {
                    v.add(format!("{path}.cap"), "must not be negative");
                    None
                }
                n => u32::try_from(n).ok(),
            };
            EventBonus {
                event_name: event_name.clone(),
                points: *points,
                cap,
                cap_period,
            }
        })
        .collect();
    let tiers = tiers
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let pb::ProgramTier {
                name,
                min_points,
                min_spend,
                min_tenure_days,
                earn_multiplier_percent,
            } = t;
            let path = format!("program.tiers[{i}]");
            ProgramTier {
                name: name.clone(),
                min_points: *min_points,
                min_spend: money_in(
                    min_spend.as_ref(),
                    &format!("{path}.min_spend"),
                    currency,
                    v,
                ),
                min_tenure_days: days(*min_tenure_days, &format!("{path}.min_tenure_days"), v),
                earn_multiplier_percent: days(
                    *earn_multiplier_percent,
                    &format!("{path}.earn_multiplier_percent"),
                    v,
                ),
            }
        })
        .collect();
    let expiry = match *expiry_days {
        0 => Expiry::Never,
        n => Expiry::AfterDays(days(n, "program.expiry_days", v)),
    };
    ProgramDef {
        display_name: display_name.trim().to_owned(),
        currency,
        points_per_unit,
        first_purchase_bonus,
        event_bonuses,
        pending_days: days(*pending_days, "program.pending_days", v),
        expiry,
        tiers,
        tier_window_days: days(*tier_window_days, "program.tier_window_days", v),
        tier_grace_days: days(*tier_grace_days, "program.tier_grace_days", v),
        target_segment: opt_string(target_segment),
        auto_enroll: *auto_enroll,
    }
}

pub fn program_to_proto(record: &ProgramRecord, def: &ProgramDef) -> pb::Program {
    pb::Program {
        program_id: record.program_id.clone(),
        display_name: def.display_name.clone(),
        currency_code: def.currency.to_string(),
        earning: Some(pb::EarningRules {
            points_per_unit: def.points_per_unit,
            first_purchase_bonus: def.first_purchase_bonus,
            event_bonuses: def
                .event_bonuses
                .iter()
                .map(|b| pb::EventBonus {
                    event_name: b.event_name.clone(),
                    points: b.points,
                    cap: b.cap.map_or(0, |c| i32::try_from(c).unwrap_or(i32::MAX)),
                    cap_period: match b.cap_period {
                        CapPeriod::Day => pb::CapPeriod::Day,
                        CapPeriod::Week => pb::CapPeriod::Week,
                        CapPeriod::Month => pb::CapPeriod::Month,
                    }
                    .into(),
                })
                .collect(),
        }),
        pending_days: i32::try_from(def.pending_days).unwrap_or(i32::MAX),
        expiry_days: match def.expiry {
            Expiry::Never => 0,
            Expiry::AfterDays(d) => i32::try_from(d).unwrap_or(i32::MAX),
        },
        tiers: def
            .tiers
            .iter()
            .map(|t| pb::ProgramTier {
                name: t.name.clone(),
                min_points: t.min_points,
                min_spend: (t.min_spend > 0).then(|| money(t.min_spend, def.currency)),
                min_tenure_days: i32::try_from(t.min_tenure_days).unwrap_or(i32::MAX),
                earn_multiplier_percent: i32::try_from(t.earn_multiplier_percent)
                    .unwrap_or(i32::MAX),
            })
            .collect(),
        tier_window_days: i32::try_from(def.tier_window_days).unwrap_or(i32::MAX),
        tier_grace_days: i32::try_from(def.tier_grace_days).unwrap_or(i32::MAX),
        target_segment: def.target_segment.clone().unwrap_or_default(),
        auto_enroll: def.auto_enroll,
        revision: record.revision,
        create_time: Some(to_proto(record.create_time)),
        update_time: Some(to_proto(record.update_time)),
    }
}

/// A reward from proto; violations under `reward.*`. Returns the definition and the stock.
pub fn reward_from_proto(
    r: &pb::Reward,
    currency: Currency,
    v: &mut Violations,
) -> (RewardDef, Option<i64>) {
    let pb::Reward {
        reward_id: _,
        program_id: _,
        display_name,
        description,
        cost,
        min_tier,
        required_segment,
        min_tenure_days,
        min_lifetime_spend,
        per_customer_limit,
        stock,
        active_from,
        active_until,
        revision: _,
        create_time: _,
        update_time: _,
    } = r;
    if stock.is_some_and(|s| s < 0) {
        v.add("reward.stock", "must not be negative");
    }
    let per_customer_limit = match *per_customer_limit {
        0 => None,
        n => Some(days(n, "reward.per_customer_limit", v)),
    };
    let def = RewardDef {
        display_name: display_name.trim().to_owned(),
        description: description.clone(),
        cost: *cost,
        min_tier: opt_string(min_tier),
        required_segment: opt_string(required_segment),
        min_tenure_days: days(*min_tenure_days, "reward.min_tenure_days", v),
        min_lifetime_spend: money_in(
            min_lifetime_spend.as_ref(),
            "reward.min_lifetime_spend",
            currency,
            v,
        ),
        per_customer_limit,
        active_from: opt_time(active_from.as_ref(), "reward.active_from", v),
        active_until: opt_time(active_until.as_ref(), "reward.active_until", v),
    };
    (def, stock.map(|s| s.max(0)))
}

pub fn reward_to_proto(record: &RewardRecord, def: &RewardDef, currency: Currency) -> pb::Reward {
    pb::Reward {
        reward_id: record.reward_id.clone(),
        program_id: record.program_id.clone(),
        display_name: def.display_name.clone(),
        description: def.description.clone(),
        cost: def.cost,
        min_tier: def.min_tier.clone().unwrap_or_default(),
        required_segment: def.required_segment.clone().unwrap_or_default(),
        min_tenure_days: i32::try_from(def.min_tenure_days).unwrap_or(i32::MAX),
        min_lifetime_spend: (def.min_lifetime_spend > 0)
            .then(|| money(def.min_lifetime_spend, currency)),
        per_customer_limit: def
            .per_customer_limit
            .map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX)),
        stock: record.stock_remaining,
        active_from: def.active_from.map(to_proto),
        active_until: def.active_until.map(to_proto),
        revision: record.revision,
        create_time: Some(to_proto(record.create_time)),
        update_time: Some(to_proto(record.update_time)),
    }
}

pub fn balances_to_proto(b: &Balances) -> pb::Balances {
    pb::Balances {
        available: (b.available - b.debt).max(0),
        pending: b.pending,
        debt: b.debt,
        expiring_soon: b
            .expiring
            .iter()
            .map(|(day, points)| {
                let d = day.date();
                pb::ExpiringPoints {
                    date: Some(common::Date {
                        year: d.year(),
                        month: i32::from(d.month()),
                        day: i32::from(d.day()),
                    }),
                    points: *points,
                }
            })
            .collect(),
        lifetime_earned: b.lifetime_earned,
        lifetime_redeemed: b.lifetime_redeemed,
    }
}

fn date(day: patron_domain::Day) -> common::Date {
    let d = day.date();
    common::Date {
        year: d.year(),
        month: i32::from(d.month()),
        day: i32::from(d.day()),
    }
}

pub fn tier_to_proto(def: &ProgramDef, s: &TierStatus) -> pb::TierProgress {
    let c = def.currency;
    let current = s.current.and_then(|i| def.tiers.get(i));
    let next = s
        .next
        .as_ref()
        .and_then(|n| def.tiers.get(n.index).map(|t| (n, t)));
    pb::TierProgress {
        tier: current.map(|t| t.name.clone()).unwrap_or_default(),
        rank: s
            .current
            .map_or(0, |i| i32::try_from(i + 1).unwrap_or(i32::MAX)),
        points_in_window: s.points_in_window,
        spend_in_window: Some(money(s.spend_in_window, c)),
        held_until: s.held_until.map(date),
        keep_points_needed: s.keep_points_needed,
        keep_spend_needed: Some(money(s.keep_spend_needed, c)),
        next_tier: next.map(|(_, t)| t.name.clone()).unwrap_or_default(),
        next_points_needed: next.map_or(0, |(n, _)| n.points_needed),
        next_spend_needed: next.map(|(n, _)| money(n.spend_needed, c)),
        next_tenure_days_needed: next.map_or(0, |(n, _)| n.tenure_days_needed),
    }
}

pub fn entry_to_proto(e: &Entry) -> pb::LedgerEntry {
    pb::LedgerEntry {
        entry_id: e.entry_id,
        r#type: match e.kind {
            EntryKind::Earn => pb::EntryType::Earn,
            EntryKind::Pending => pb::EntryType::Pending,
            EntryKind::Activate => pb::EntryType::Activate,
            EntryKind::Redeem => pb::EntryType::Redeem,
            EntryKind::CancelRedemption => pb::EntryType::CancelRedemption,
            EntryKind::Clawback => pb::EntryType::Clawback,
            EntryKind::Expire => pb::EntryType::Expire,
            EntryKind::Adjust => pb::EntryType::Adjust,
        }
        .into(),
        amount: e.amount,
        points: e.points,
        lots: e
            .lots
            .iter()
            .map(|(lot_id, points)| pb::LotUse {
                lot_id: *lot_id,
                points: *points,
            })
            .collect(),
        source_event_id: e.source.event_id.clone().unwrap_or_default(),
        source_redemption_id: e.source.redemption_id.clone().unwrap_or_default(),
        source_rule: e.source.rule.clone().unwrap_or_default(),
        issuer: e.issuer.clone(),
        reason: e.reason.clone(),
        create_time: Some(to_proto(e.created_at)),
        effective_time: Some(to_proto(e.effective_at)),
        expire_time: e.expires_at.map(to_proto),
    }
}

pub fn redemption_to_proto(
    program_id: &str,
    customer_id: &str,
    r: &RedemptionRecord,
) -> pb::Redemption {
    pb::Redemption {
        redemption_id: r.redemption_id.clone(),
        request_id: r.request_id.clone(),
        program_id: program_id.to_owned(),
        customer_id: customer_id.to_owned(),
        reward_id: r.reward_id.clone(),
        cost: r.cost,
        lots: r
            .lots
            .iter()
            .map(|(lot_id, points)| pb::LotUse {
                lot_id: *lot_id,
                points: *points,
            })
            .collect(),
        status: match r.status {
            RedemptionStatus::Completed => pb::RedemptionStatus::Completed,
            RedemptionStatus::Cancelled => pb::RedemptionStatus::Cancelled,
        }
        .into(),
        create_time: Some(to_proto(r.created_at)),
        cancel_time: r.cancelled_at.map(to_proto),
    }
}

pub fn unmet_to_proto(u: &Unmet) -> pb::UnmetCondition {
    pb::UnmetCondition {
        reason: match u.reason {
            Reason::NotEnrolled => pb::IneligibilityReason::NotEnrolled,
            Reason::NotActive => pb::IneligibilityReason::NotActive,
            Reason::OutOfStock => pb::IneligibilityReason::OutOfStock,
            Reason::InsufficientPoints => pb::IneligibilityReason::InsufficientPoints,
            Reason::TierTooLow => pb::IneligibilityReason::TierTooLow,
            Reason::NotInSegment => pb::IneligibilityReason::NotInSegment,
            Reason::TenureTooShort => pb::IneligibilityReason::TenureTooShort,
            Reason::SpendTooLow => pb::IneligibilityReason::SpendTooLow,
            Reason::LimitReached => pb::IneligibilityReason::LimitReached,
        }
        .into(),
        required: u.required,
        actual: u.actual,
        missing: u.missing,
        detail: u.detail.clone(),
    }
}
