//! The operations on one member's points. Each runs under the member's lock in the store
//! ([`patron_store::loyalty::LoyaltyStore::mutate_member`]) and is pure: what it decides is a
//! function of what the store loaded, the program, the event or request, and the instant.

use patron_domain::loyalty::program::{Expiry, ProgramDef, period_start};
use patron_domain::loyalty::reward::{self, RewardDef};
use patron_domain::loyalty::tier::{self, DayActivity};
use patron_domain::loyalty::{EntryKind, LedgerError, Meta, Points, Source, Wallet, ledger};
use patron_domain::{Day, Event, EventData, EventId, OrderId, Timestamp};
use patron_store::loyalty::{
    Changes, Loaded, LoyaltyOrder, MemberOp, MemberRow, Needs, RedemptionRecord, RedemptionStatus,
    Refusal,
};

/// How far ahead "expiring soon" looks, in days.
pub const EXPIRING_HORIZON_DAYS: i64 = 30;

fn new_member(now: Timestamp) -> MemberRow {
    MemberRow {
        enrolled_at: now,
        wallet: Wallet::new(),
        first_purchase_done: false,
        activity: Vec::new(),
    }
}

/// The instant points earned at `at` expire, by the program's policy.
pub fn expiry_of(def: &ProgramDef, at: Timestamp) -> Option<Timestamp> {
    match def.expiry {
        Expiry::Never => None,
        Expiry::AfterDays(d) => Some(ledger::days_after(at, i64::from(d))),
    }
}

fn add_activity(out: &mut Vec<DayActivity>, day: Day, points: Points, spend: i64) {
    if points == 0 && spend == 0 {
        return;
    }
    match out.iter_mut().find(|a| a.day == day) {
        Some(a) => {
            a.points += points;
            a.spend += spend;
        }
        None => out.push(DayActivity { day, points, spend }),
    }
}

fn merge_activity(member: &mut MemberRow, delta: &[DayActivity]) {
    for d in delta {
        add_activity(&mut member.activity, d.day, d.points, d.spend);
    }
    member.activity.sort_by_key(|a| a.day);
}

fn ledger_refusal(e: &LedgerError) -> Refusal {
    match e {
        LedgerError::InsufficientPoints { .. } => Refusal::InsufficientPoints,
        LedgerError::Overflow => Refusal::Overflow,
        // Requests are checked before an operation runs; a zero amount here is a bug.
        LedgerError::NonPositive => Refusal::Internal(format!("ledger: {e}")),
    }
}

/// Enrols a customer (nothing if a member already).
#[derive(Debug)]
pub struct Enroll;

impl MemberOp for Enroll {
    fn needs(&self) -> Needs {
        Needs::default()
    }

    fn apply(&self, loaded: &Loaded, now: Timestamp) -> Result<Changes, Refusal> {
        if loaded.member.is_some() {
            return Ok(Changes::default());
        }
        Ok(Changes {
            member: Some(new_member(now)),
            ..Changes::default()
        })
    }
}

/// Applies one purchase, refund or custom event to a member, exactly once.
#[derive(Debug)]
pub struct Earn<'a> {
    pub def: &'a ProgramDef,
    pub event: &'a Event,
    /// Whether a non-member may be enrolled by this event (auto-enrolment, target segment met).
    pub may_enroll: bool,
    /// When the customer's tenure started (for tiers).
    pub tenure_start: Day,
}

impl Earn<'_> {
    /// Whether the event can earn or take back points in this program.
    pub fn relevant(def: &ProgramDef, event: &Event) -> bool {
        match &event.data {
            EventData::Purchase(_) | EventData::Refund(_) => true,
            EventData::Custom(c) => def.bonus_for(&c.name).is_some(),
            _ => false,
        }
    }

    fn order_id(&self) -> Option<&OrderId> {
        match &self.event.data {
            EventData::Purchase(p) => Some(&p.order_id),
            EventData::Refund(r) => Some(&r.order_id),
            _ => None,
        }
    }

    fn source(&self, rule: &str) -> Source {
        Source {
            event_id: Some(self.event.event_id.as_str().to_owned()),
            redemption_id: None,
            rule: Some(rule.to_owned()),
        }
    }

    /// Moves the order's points to what its net amount earns now.
    fn settle_order(
        &self,
        member: &mut MemberRow,
        order: &mut LoyaltyOrder,
        activity: &mut Vec<DayActivity>,
        now: Timestamp,
    ) -> Result<(), Refusal> {
        let target = if order.purchased {
            self.def
                .purchase_points(order.amount - order.refunded, order.multiplier_percent)
        } else {
            0
        };
        let delta = target - order.points;
        let day = order.day.unwrap_or_else(|| self.event.occurred_at.day());
        let at = self.event.occurred_at;
        if delta > 0 {
            let available_at = ledger::days_after(at, i64::from(self.def.pending_days));
            member
                .wallet
                .credit(
                    EntryKind::Pending,
                    delta,
                    available_at,
                    expiry_of(self.def, at),
                    Meta::system(
                        now,
                        self.source("purchase"),
                        format!("order {}", order.order_id),
                    ),
                )
                .map_err(|e| ledger_refusal(&e))?;
        } else if delta < 0 {
            member
                .wallet
                .clawback(
                    -delta,
                    Meta::system(
                        now,
                        self.source("refund"),
                        format!("refund of order {}", order.order_id),
                    ),
                )
                .map_err(|e| ledger_refusal(&e))?;
        }
        order.points = target;
        add_activity(activity, day, delta, 0);
        Ok(())
    }
}

impl MemberOp for Earn<'_> {
    fn needs(&self) -> Needs {
        let bonus = match &self.event.data {
            EventData::Custom(c) => self.def.bonus_for(&c.name).map(|b| {
                (
                    c.name.clone(),
                    period_start(b.cap_period, self.event.occurred_at.day()),
                )
            }),
            _ => None,
        };
        Needs {
            order_id: self.order_id().cloned(),
            bonus,
            event_id: Some(self.event.event_id.clone()),
            ..Needs::default()
        }
    }

    fn apply(&self, loaded: &Loaded, now: Timestamp) -> Result<Changes, Refusal> {
        if loaded.event_applied {
            return Ok(Changes::default());
        }
        let mut member = match &loaded.member {
            Some(m) => m.clone(),
            None if self.may_enroll => new_member(now),
            None => return Err(Refusal::NotEnrolled),
        };
        let mut changes = Changes {
            mark_event_applied: true,
            ..Changes::default()
        };
        let mut activity = Vec::new();
        match &self.event.data {
            EventData::Purchase(p) => {
                let mut order = loaded.order.clone().unwrap_or_else(|| LoyaltyOrder {
                    order_id: p.order_id.as_str().to_owned(),
                    ..LoyaltyOrder::default()
                });
                let day = self.event.occurred_at.day();
                if !order.purchased {
                    // The multiplier of the tier held when the purchase is first seen.
                    let status =
                        tier::evaluate(self.def, &member.activity, self.tenure_start, now.day());
                    order.multiplier_percent = self.def.multiplier(status.current);
                    order.purchased = true;
                }
                order.day = Some(order.day.map_or(day, |d| d.min(day)));
                let before = (order.amount - order.refunded).max(0);
                order.amount = order.amount.saturating_add(p.amount);
                let after = (order.amount - order.refunded).max(0);
                add_activity(&mut activity, order.day.unwrap_or(day), 0, after - before);
                self.settle_order(&mut member, &mut order, &mut activity, now)?;
                if !member.first_purchase_done {
                    member.first_purchase_done = true;
                    if self.def.first_purchase_bonus > 0 {
                        let bonus = self.def.first_purchase_bonus;
                        member
                            .wallet
                            .credit(
                                EntryKind::Earn,
                                bonus,
                                now,
                                expiry_of(self.def, now),
                                Meta::system(
                                    now,
                                    self.source("first_purchase"),
                                    "first purchase bonus",
                                ),
                            )
                            .map_err(|e| ledger_refusal(&e))?;
                        add_activity(&mut activity, now.day(), bonus, 0);
                    }
                }
                changes.order = Some(order);
            }
            EventData::Refund(r) => {
                let mut order = loaded.order.clone().unwrap_or_else(|| LoyaltyOrder {
                    order_id: r.order_id.as_str().to_owned(),
                    ..LoyaltyOrder::default()
                });
                let before = if order.purchased {
                    (order.amount - order.refunded).max(0)
                } else {
                    0
                };
                order.refunded = order.refunded.saturating_add(r.amount);
                let after = if order.purchased {
                    (order.amount - order.refunded).max(0)
                } else {
                    0
                };
                let day = order.day.unwrap_or_else(|| self.event.occurred_at.day());
                add_activity(&mut activity, day, 0, after - before);
                self.settle_order(&mut member, &mut order, &mut activity, now)?;
                changes.order = Some(order);
            }
            EventData::Custom(c) => {
                let Some(rule) = self.def.bonus_for(&c.name) else {
                    return Ok(changes);
                };
                let capped = rule
                    .cap
                    .is_some_and(|cap| loaded.bonus_count >= i64::from(cap));
                if !capped {
                    member
                        .wallet
                        .credit(
                            EntryKind::Earn,
                            rule.points,
                            now,
                            expiry_of(self.def, now),
                            Meta::system(
                                now,
                                self.source(&format!("event:{}", c.name)),
                                format!("bonus for {}", c.name),
                            ),
                        )
                        .map_err(|e| ledger_refusal(&e))?;
                    add_activity(&mut activity, self.event.occurred_at.day(), rule.points, 0);
                    changes.bonus_count = Some(loaded.bonus_count + 1);
                }
            }
            _ => return Ok(changes),
        }
        merge_activity(&mut member, &activity);
        changes.activity = activity;
        changes.member = Some(member);
        Ok(changes)
    }
}

/// Everything a redemption is decided on that the store does not hold.
#[derive(Debug, Clone)]
pub struct MemberContext {
    pub tenure_start: Day,
    pub tenure_days: i64,
    pub lifetime_spend: i64,
    /// Whether the member is in the reward's required segment (None: no requirement).
    pub in_segment: Option<bool>,
}

/// The facts eligibility is checked on, from what was loaded.
pub fn eligibility_facts<'a>(
    def: &ProgramDef,
    tier_names: &'a [String],
    member: Option<&MemberRow>,
    ctx: &MemberContext,
    redemptions: i64,
    stock: Option<i64>,
    now: Timestamp,
) -> reward::Facts<'a> {
    let (available, tier) = match member {
        Some(m) => {
            let b = m.wallet.balances(now, 0);
            let status = tier::evaluate(def, &m.activity, ctx.tenure_start, now.day());
            ((b.available - b.debt).max(0), status.current)
        }
        None => (0, None),
    };
    reward::Facts {
        enrolled: member.is_some(),
        now,
        available_points: available,
        tiers: tier_names,
        tier,
        in_segment: ctx.in_segment,
        tenure_days: ctx.tenure_days,
        lifetime_spend: ctx.lifetime_spend,
        redemptions,
        stock_remaining: stock,
    }
}

/// Redeems a reward, idempotently by request id.
#[derive(Debug)]
pub struct Redeem<'a> {
    pub def: &'a ProgramDef,
    pub reward_id: &'a str,
    pub request_id: &'a str,
    pub ctx: MemberContext,
    pub redemption_id: String,
    /// Who redeems, as recorded on the REDEEM entry: the authenticated principal, or "system".
    pub issuer: String,
}

/// The fingerprint of a redemption request: what must match for a replay.
pub fn fingerprint(reward_id: &str) -> String {
    format!("reward={reward_id}")
}

impl MemberOp for Redeem<'_> {
    fn needs(&self) -> Needs {
        Needs {
            reward_id: Some(self.reward_id.to_owned()),
            request_id: Some(self.request_id.to_owned()),
            ..Needs::default()
        }
    }

    fn apply(&self, loaded: &Loaded, now: Timestamp) -> Result<Changes, Refusal> {
        if let Some(previous) = &loaded.redemption {
            return if previous.fingerprint == fingerprint(self.reward_id) {
                Ok(Changes::default())
            } else {
                Err(Refusal::RequestIdReused)
            };
        }
        let Some(reward_record) = &loaded.reward else {
            return Err(Refusal::RewardNotFound);
        };
        let reward: RewardDef = serde_json::from_str(&reward_record.body)
            .map_err(|e| Refusal::Internal(format!("stored reward: {e}")))?;
        let tier_names: Vec<String> = self.def.tiers.iter().map(|t| t.name.clone()).collect();
        let facts = eligibility_facts(
            self.def,
            &tier_names,
            loaded.member.as_ref(),
            &self.ctx,
            loaded.reward_redemptions,
            reward_record.stock_remaining,
            now,
        );
        let unmet = reward::check(&reward, &facts);
        if !unmet.is_empty() {
            return Err(Refusal::NotEligible(unmet));
        }
        let Some(member) = &loaded.member else {
            return Err(Refusal::NotEnrolled);
        };
        let mut member = member.clone();
        let used = member
            .wallet
            .debit(
                EntryKind::Redeem,
                reward.cost,
                Meta {
                    source: Source {
                        event_id: None,
                        redemption_id: Some(self.redemption_id.clone()),
                        rule: None,
                    },
                    issuer: self.issuer.clone(),
                    reason: format!("redeemed {}", self.reward_id),
                    now,
                },
            )
            .map_err(|e| ledger_refusal(&e))?;
        Ok(Changes {
            member: Some(member),
            take_stock: reward_record.stock_remaining.is_some(),
            redemption: Some(RedemptionRecord {
                redemption_id: self.redemption_id.clone(),
                request_id: self.request_id.to_owned(),
                reward_id: self.reward_id.to_owned(),
                cost: reward.cost,
                lots: used,
                fingerprint: fingerprint(self.reward_id),
                status: RedemptionStatus::Completed,
                created_at: now,
                cancelled_at: None,
            }),
            ..Changes::default()
        })
    }
}

/// Cancels a redemption: points back to their lots, stock back.
#[derive(Debug)]
pub struct Cancel<'a> {
    pub redemption_id: &'a str,
    /// The redeemed reward (read before the lock: a redemption's reward never changes), so the
    /// store can return its stock unit.
    pub reward_id: &'a str,
    pub reason: &'a str,
    /// Who cancels, as recorded on the entry: the authenticated principal, or "system".
    pub issuer: &'a str,
}

impl MemberOp for Cancel<'_> {
    fn needs(&self) -> Needs {
        Needs {
            redemption_id: Some(self.redemption_id.to_owned()),
            reward_id: Some(self.reward_id.to_owned()),
            ..Needs::default()
        }
    }

    fn apply(&self, loaded: &Loaded, now: Timestamp) -> Result<Changes, Refusal> {
        let Some(r) = &loaded.redemption else {
            return Err(Refusal::RedemptionNotFound);
        };
        if r.status == RedemptionStatus::Cancelled || r.reward_id != self.reward_id {
            return Ok(Changes::default());
        }
        let Some(member) = &loaded.member else {
            return Err(Refusal::NotEnrolled);
        };
        let mut member = member.clone();
        member.wallet.restore(
            &r.lots,
            Meta {
                source: Source {
                    event_id: None,
                    redemption_id: Some(r.redemption_id.clone()),
                    rule: None,
                },
                issuer: self.issuer.to_owned(),
                reason: if self.reason.is_empty() {
                    "redemption cancelled".into()
                } else {
                    self.reason.to_owned()
                },
                now,
            },
        );
        let mut cancelled = r.clone();
        cancelled.status = RedemptionStatus::Cancelled;
        cancelled.cancelled_at = Some(now);
        Ok(Changes {
            member: Some(member),
            return_stock: loaded
                .reward
                .as_ref()
                .is_some_and(|r| r.stock_remaining.is_some()),
            redemption: Some(cancelled),
            ..Changes::default()
        })
    }
}

/// A manual credit or debit, once per request id.
#[derive(Debug)]
pub struct Adjust<'a> {
    pub def: &'a ProgramDef,
    pub points: Points,
    pub reason: &'a str,
    pub issuer: &'a str,
    pub request_key: EventId,
}

impl MemberOp for Adjust<'_> {
    fn needs(&self) -> Needs {
        Needs {
            event_id: Some(self.request_key.clone()),
            ..Needs::default()
        }
    }

    fn apply(&self, loaded: &Loaded, now: Timestamp) -> Result<Changes, Refusal> {
        if loaded.event_applied {
            return Ok(Changes::default());
        }
        let Some(member) = &loaded.member else {
            return Err(Refusal::NotEnrolled);
        };
        let mut member = member.clone();
        let meta = Meta {
            source: Source::default(),
            issuer: self.issuer.to_owned(),
            reason: self.reason.to_owned(),
            now,
        };
        if self.points > 0 {
            member
                .wallet
                .credit(
                    EntryKind::Adjust,
                    self.points,
                    now,
                    expiry_of(self.def, now),
                    meta,
                )
                .map_err(|e| ledger_refusal(&e))?;
        } else {
            member
                .wallet
                .debit(EntryKind::Adjust, -self.points, meta)
                .map_err(|e| ledger_refusal(&e))?;
        }
        Ok(Changes {
            member: Some(member),
            mark_event_applied: true,
            ..Changes::default()
        })
    }
}

/// Writes EXPIRE and ACTIVATE entries due by now.
#[derive(Debug)]
pub struct Settle;

impl MemberOp for Settle {
    fn needs(&self) -> Needs {
        Needs::default()
    }

    fn apply(&self, loaded: &Loaded, now: Timestamp) -> Result<Changes, Refusal> {
        let Some(member) = &loaded.member else {
            return Ok(Changes::default());
        };
        let mut member = member.clone();
        member.wallet.settle(now);
        if Some(&member) == loaded.member.as_ref() {
            return Ok(Changes::default());
        }
        Ok(Changes {
            member: Some(member),
            ..Changes::default()
        })
    }
}
