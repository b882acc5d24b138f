//! A member's points: lots, ledger entries and balances.
//!
//! Every change to a balance is an [`Entry`]. Credits create [`Lot`]s (an amount with the instant
//! it becomes available and the instant it expires); debits take points from lots — redemptions
//! and negative adjustments the oldest-expiring available lots first, clawbacks pending lots first
//! and then available ones — and record which lots they used, so expiry only ever takes points
//! still in a lot. A clawback larger than the balance leaves a *debt* that later credits pay off
//! first; a redemption or a negative adjustment never overdraws.
//!
//! Invariant (checked by [`Wallet::check`]): the sum of every entry's `amount` equals the points
//! left in lots minus the debt. Balances at an instant leave out lots that have expired by then,
//! even before an EXPIRE entry is written.
//!
//! All times are UTC instants; "days" are 86,400 s.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// Points are whole numbers.
pub type Points = i64;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EntryKind {
    /// Points credited and available at once (bonuses).
    Earn,
    /// Points credited but held until the return window closes (purchases).
    Pending,
    /// Pending points became available (amount 0: the total does not change; `points` says how many).
    Activate,
    /// Points spent on a reward.
    Redeem,
    /// A redemption cancelled: its points back in their original lots.
    CancelRedemption,
    /// Points taken back because a purchase was refunded.
    Clawback,
    /// Points that expired unspent.
    Expire,
    /// A manual credit or debit by support.
    Adjust,
}

impl EntryKind {
    pub const fn name(self) -> &'static str {
        match self {
            EntryKind::Earn => "EARN",
            EntryKind::Pending => "PENDING",
            EntryKind::Activate => "ACTIVATE",
            EntryKind::Redeem => "REDEEM",
            EntryKind::CancelRedemption => "CANCEL_REDEMPTION",
            EntryKind::Clawback => "CLAWBACK",
            EntryKind::Expire => "EXPIRE",
            EntryKind::Adjust => "ADJUST",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            EntryKind::Earn,
            EntryKind::Pending,
            EntryKind::Activate,
            EntryKind::Redeem,
            EntryKind::CancelRedemption,
            EntryKind::Clawback,
            EntryKind::Expire,
            EntryKind::Adjust,
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }
}

/// A credit of points with its own availability and expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lot {
    /// 1, 2, … per member.
    pub lot_id: i64,
    pub original: Points,
    /// Points still in the lot (0 once spent, clawed back or expired).
    pub remaining: Points,
    pub earned_at: Timestamp,
    /// Pending until then.
    pub available_at: Timestamp,
    /// `None`: never expires.
    pub expires_at: Option<Timestamp>,
    /// Whether an ACTIVATE entry has been written for it (purely informational).
    pub activated: bool,
}

impl Lot {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }

    pub fn is_available(&self, now: Timestamp) -> bool {
        self.available_at <= now && !self.is_expired(now)
    }

    pub fn is_pending(&self, now: Timestamp) -> bool {
        self.available_at > now && !self.is_expired(now)
    }
}

/// What caused an entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Source {
    /// The event that earned or clawed back the points.
    pub event_id: Option<String>,
    /// The redemption that spent or restored them.
    pub redemption_id: Option<String>,
    /// The earning rule, e.g. "purchase", "first_purchase", "event:review".
    pub rule: Option<String>,
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// 1, 2, … per member, in order of writing.
    pub entry_id: i64,
    pub kind: EntryKind,
    /// Change of the member's total (available + pending − debt); 0 for ACTIVATE.
    pub amount: Points,
    /// Points moved (= |amount|, except ACTIVATE where it is the points made available).
    pub points: Points,
    /// Lots credited or debited, with the points of each.
    pub lots: Vec<(i64, Points)>,
    pub source: Source,
    /// "system" for automatic entries, else the caller's name for the person or service.
    pub issuer: String,
    pub reason: String,
    pub created_at: Timestamp,
    /// When the change takes effect (a pending credit: when it becomes available).
    pub effective_at: Timestamp,
    /// Expiry of the credited lot.
    pub expires_at: Option<Timestamp>,
}

/// A member's points state, as loaded under the member's lock.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Wallet {
    pub lots: Vec<Lot>,
    /// Points owed after a clawback larger than the balance; paid by the next credits.
    pub debt: Points,
    pub lifetime_earned: Points,
    pub lifetime_redeemed: Points,
    pub next_lot_id: i64,
    pub next_entry_id: i64,
    /// Entries written by the operations since the wallet was loaded (the store appends them).
    #[serde(skip)]
    pub new_entries: Vec<Entry>,
}

/// Balances at an instant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Balances {
    pub available: Points,
    pub pending: Points,
    pub debt: Points,
    /// Points expiring within the horizon asked for, by UTC day of expiry, soonest first.
    pub expiring: Vec<(crate::Day, Points)>,
    pub lifetime_earned: Points,
    pub lifetime_redeemed: Points,
}

/// Why an operation was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("not enough points: {available} available, {required} required")]
    InsufficientPoints { available: Points, required: Points },
    #[error("amount must be positive")]
    NonPositive,
    #[error("points total would overflow")]
    Overflow,
}

/// How a debit picks its lots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Available lots, oldest-expiring first (never-expiring last), then oldest earned.
    OldestExpiringFirst,
    /// Pending lots (newest first), then available lots oldest-expiring first.
    PendingFirst,
}

/// The details of a new entry other than amounts and lots.
#[derive(Debug, Clone)]
pub struct Meta {
    pub source: Source,
    pub issuer: String,
    pub reason: String,
    pub now: Timestamp,
}

impl Meta {
    pub fn system(now: Timestamp, source: Source, reason: impl Into<String>) -> Self {
        Self {
            source,
            issuer: "system".into(),
            reason: reason.into(),
            now,
        }
    }
}

impl Wallet {
    pub fn new() -> Self {
        Self {
            next_lot_id: 1,
            next_entry_id: 1,
            ..Self::default()
        }
    }

    fn push(&mut self, mut e: Entry) {
        e.entry_id = self.next_entry_id;
        self.next_entry_id += 1;
        self.new_entries.push(e);
    }

    /// Balances at `now`, with the points expiring within `horizon_days` grouped by day.
    pub fn balances(&self, now: Timestamp, horizon_days: i64) -> Balances {
        let mut b = Balances {
            debt: self.debt,
            lifetime_earned: self.lifetime_earned,
            lifetime_redeemed: self.lifetime_redeemed,
            ..Balances::default()
        };
        let horizon = Timestamp::from_micros(
            now.as_micros()
                .saturating_add(horizon_days.saturating_mul(MICROS_PER_DAY)),
        );
        let mut expiring: std::collections::BTreeMap<crate::Day, Points> = Default::default();
        for l in self.lots.iter().filter(|l| l.remaining > 0) {
            if l.is_available(now) {
                b.available += l.remaining;
            } else if l.is_pending(now) {
                b.pending += l.remaining;
            } else {
                continue;
            }
            if let Some(e) = l.expires_at.filter(|e| *e <= horizon) {
                *expiring.entry(e.day()).or_insert(0) += l.remaining;
            }
        }
        b.expiring = expiring.into_iter().collect();
        b
    }

    /// Credits `amount` as a new lot (pending until `available_at`), paying any debt first.
    /// Returns the lot id.
    pub fn credit(
        &mut self,
        kind: EntryKind,
        amount: Points,
        available_at: Timestamp,
        expires_at: Option<Timestamp>,
        meta: Meta,
    ) -> Result<i64, LedgerError> {
        if amount <= 0 {
            return Err(LedgerError::NonPositive);
        }
        let lifetime = self
            .lifetime_earned
            .checked_add(if matches!(kind, EntryKind::Earn | EntryKind::Pending) {
                amount
            } else {
                0
            })
            .ok_or(LedgerError::Overflow)?;
        let paid = amount.min(self.debt);
        self.debt -= paid;
        let lot_id = self.next_lot_id;
        self.next_lot_id += 1;
        self.lifetime_earned = lifetime;
        let available_at = available_at.max(meta.now);
        self.lots.push(Lot {
            lot_id,
            original: amount,
            remaining: amount - paid,
            earned_at: meta.now,
            available_at,
            expires_at,
            activated: available_at <= meta.now,
        });
        let reason = if paid > 0 {
            format!("{} ({paid} points paid a debt)", meta.reason)
        } else {
            meta.reason
        };
        self.push(Entry {
            entry_id: 0,
            kind,
            amount,
            points: amount,
            lots: vec![(lot_id, amount - paid)],
            source: meta.source,
            issuer: meta.issuer,
            reason,
            created_at: meta.now,
            effective_at: available_at,
            expires_at,
        });
        Ok(lot_id)
    }

    fn take(&mut self, amount: Points, order: Order, now: Timestamp) -> Vec<(i64, Points)> {
        let mut idx: Vec<usize> = (0..self.lots.len())
            .filter(|&i| {
                let l = &self.lots[i];
                l.remaining > 0
                    && match order {
                        Order::OldestExpiringFirst => l.is_available(now),
                        Order::PendingFirst => l.is_available(now) || l.is_pending(now),
                    }
            })
            .collect();
        idx.sort_by_key(|&i| {
            let l = &self.lots[i];
            let pending_rank = match order {
                Order::PendingFirst if l.is_pending(now) => 0,
                Order::PendingFirst => 1,
                Order::OldestExpiringFirst => 0,
            };
            // Pending lots newest first; available ones oldest-expiring first.
            let newest_first = if pending_rank == 0 && order == Order::PendingFirst {
                -l.earned_at.as_micros()
            } else {
                0
            };
            (
                pending_rank,
                newest_first,
                l.expires_at.map_or(i64::MAX, Timestamp::as_micros),
                l.earned_at.as_micros(),
                l.lot_id,
            )
        });
        let mut left = amount;
        let mut used = Vec::new();
        for i in idx {
            if left == 0 {
                break;
            }
            let l = &mut self.lots[i];
            let n = l.remaining.min(left);
            l.remaining -= n;
            left -= n;
            used.push((l.lot_id, n));
        }
        used
    }

    /// Spends `amount` available points, oldest-expiring lots first. Refused (nothing changed)
    /// when fewer are available. Returns the lots used.
    pub fn debit(
        &mut self,
        kind: EntryKind,
        amount: Points,
        meta: Meta,
    ) -> Result<Vec<(i64, Points)>, LedgerError> {
        if amount <= 0 {
            return Err(LedgerError::NonPositive);
        }
        let available = self.balances(meta.now, 0).available - self.debt;
        if available < amount {
            return Err(LedgerError::InsufficientPoints {
                available: available.max(0),
                required: amount,
            });
        }
        let used = self.take(amount, Order::OldestExpiringFirst, meta.now);
        if kind == EntryKind::Redeem {
            self.lifetime_redeemed = self.lifetime_redeemed.saturating_add(amount);
        }
        self.push(Entry {
            entry_id: 0,
            kind,
            amount: -amount,
            points: amount,
            lots: used.clone(),
            source: meta.source,
            issuer: meta.issuer,
            reason: meta.reason,
            created_at: meta.now,
            effective_at: meta.now,
            expires_at: None,
        });
        Ok(used)
    }

    /// Takes back `amount` points: pending lots first, then available ones; what is missing
    /// becomes debt. Returns the lots used.
    pub fn clawback(
        &mut self,
        amount: Points,
        meta: Meta,
    ) -> Result<Vec<(i64, Points)>, LedgerError> {
        if amount <= 0 {
            return Err(LedgerError::NonPositive);
        }
        let used = self.take(amount, Order::PendingFirst, meta.now);
        let taken: Points = used.iter().map(|(_, n)| n).sum();
        let owed = amount - taken;
        self.debt = self.debt.checked_add(owed).ok_or(LedgerError::Overflow)?;
        let reason = if owed > 0 {
            format!("{} ({owed} points recorded as debt)", meta.reason)
        } else {
            meta.reason
        };
        self.lifetime_earned = self.lifetime_earned.saturating_sub(amount);
        self.push(Entry {
            entry_id: 0,
            kind: EntryKind::Clawback,
            amount: -amount,
            points: amount,
            lots: used.clone(),
            source: meta.source,
            issuer: meta.issuer,
            reason,
            created_at: meta.now,
            effective_at: meta.now,
            expires_at: None,
        });
        Ok(used)
    }

    /// Puts a cancelled redemption's points back into the lots they came from. Points of a lot
    /// that has expired since are restored and expire at once (the next expiry run records them).
    pub fn restore(&mut self, used: &[(i64, Points)], meta: Meta) {
        let total: Points = used.iter().map(|(_, n)| n).sum();
        for (lot_id, n) in used {
            if let Some(l) = self.lots.iter_mut().find(|l| l.lot_id == *lot_id) {
                l.remaining += n;
            }
        }
        self.lifetime_redeemed = self.lifetime_redeemed.saturating_sub(total);
        self.push(Entry {
            entry_id: 0,
            kind: EntryKind::CancelRedemption,
            amount: total,
            points: total,
            lots: used.to_vec(),
            source: meta.source,
            issuer: meta.issuer,
            reason: meta.reason,
            created_at: meta.now,
            effective_at: meta.now,
            expires_at: None,
        });
    }

    /// Writes EXPIRE entries for lots expired by `now` and ACTIVATE entries for pending lots
    /// that became available. Returns the points expired.
    pub fn settle(&mut self, now: Timestamp) -> Points {
        let mut expired = 0;
        let mut entries = Vec::new();
        for l in &mut self.lots {
            if l.remaining > 0 && l.is_expired(now) {
                let n = l.remaining;
                l.remaining = 0;
                l.activated = true;
                expired += n;
                entries.push((
                    EntryKind::Expire,
                    -n,
                    n,
                    l.lot_id,
                    l.expires_at.unwrap_or(now),
                ));
            } else if !l.activated && l.available_at <= now {
                l.activated = true;
                if l.remaining > 0 {
                    entries.push((
                        EntryKind::Activate,
                        0,
                        l.remaining,
                        l.lot_id,
                        l.available_at,
                    ));
                }
            }
        }
        for (kind, amount, points, lot, effective_at) in entries {
            self.push(Entry {
                entry_id: 0,
                kind,
                amount,
                points,
                lots: vec![(lot, points)],
                source: Source::default(),
                issuer: "system".into(),
                reason: match kind {
                    EntryKind::Expire => "expired unspent".into(),
                    _ => "return window closed".into(),
                },
                created_at: now,
                effective_at,
                expires_at: None,
            });
        }
        expired
    }

    /// Checks the ledger invariant against a full entry history: entries sum to the points left
    /// in lots minus the debt, no lot is negative or above its original.
    pub fn check(&self, history: &[Entry]) -> Result<(), String> {
        let sum: Points = history.iter().map(|e| e.amount).sum();
        let lots: Points = self.lots.iter().map(|l| l.remaining).sum();
        if sum != lots - self.debt {
            return Err(format!(
                "entries sum to {sum}, lots hold {lots}, debt {}",
                self.debt
            ));
        }
        if let Some(l) = self
            .lots
            .iter()
            .find(|l| l.remaining < 0 || l.remaining > l.original)
        {
            return Err(format!(
                "lot {} holds {} of {}",
                l.lot_id, l.remaining, l.original
            ));
        }
        if self.debt < 0 {
            return Err(format!("negative debt {}", self.debt));
        }
        Ok(())
    }
}

/// `days` days after `t`.
pub fn days_after(t: Timestamp, days: i64) -> Timestamp {
    Timestamp::from_micros(
        t.as_micros()
            .saturating_add(days.saturating_mul(MICROS_PER_DAY)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(day: i64) -> Timestamp {
        Timestamp::from_micros(1_767_225_600_000_000 + day * MICROS_PER_DAY)
    }

    fn meta(day: i64) -> Meta {
        Meta::system(t(day), Source::default(), "test")
    }

    fn all(w: &Wallet) -> Vec<Entry> {
        w.new_entries.clone()
    }

    #[test]
    fn spending_takes_the_oldest_expiring_lots_and_expiry_never_takes_spent_points() {
        let mut w = Wallet::new();
        let a = w
            .credit(EntryKind::Earn, 100, t(0), Some(t(30)), meta(0))
            .expect("a");
        let b = w
            .credit(EntryKind::Earn, 100, t(0), Some(t(10)), meta(0))
            .expect("b");
        let c = w
            .credit(EntryKind::Earn, 100, t(0), None, meta(0))
            .expect("c");
        let used = w.debit(EntryKind::Redeem, 150, meta(1)).expect("redeem");
        assert_eq!(used, vec![(b, 100), (a, 50)]);
        assert_eq!(w.balances(t(1), 0).available, 150);
        // Day 10: lot b expired, but it was spent: nothing lost.
        assert_eq!(w.balances(t(10), 0).available, 150);
        assert_eq!(w.settle(t(10)), 0);
        // Day 30: what is left of a (50) expires, before and after the clean-up.
        assert_eq!(w.balances(t(30), 0).available, 100);
        assert_eq!(w.settle(t(30)), 50);
        assert_eq!(w.balances(t(30), 0).available, 100);
        w.check(&all(&w)).expect("invariant");
        assert!(w.lots.iter().any(|l| l.lot_id == c && l.remaining == 100));
        // Refused: more than available, nothing changed.
        let before = w.clone();
        assert_eq!(
            w.debit(EntryKind::Redeem, 101, meta(31)),
            Err(LedgerError::InsufficientPoints {
                available: 100,
                required: 101
            })
        );
        assert_eq!(w, before);
    }

    #[test]
    fn pending_points_wait_for_the_return_window_and_clawbacks_take_them_first() {
        let mut w = Wallet::new();
        w.credit(EntryKind::Earn, 50, t(0), None, meta(0))
            .expect("bonus");
        w.credit(EntryKind::Pending, 80, t(14), None, meta(0))
            .expect("purchase");
        let b = w.balances(t(1), 0);
        assert_eq!((b.available, b.pending), (50, 80));
        w.clawback(100, meta(2)).expect("refund");
        let b = w.balances(t(2), 0);
        assert_eq!((b.available, b.pending, b.debt), (30, 0, 0));
        // A clawback beyond the balance records a debt; the next credit pays it first.
        w.clawback(50, meta(3)).expect("refund");
        assert_eq!(w.debt, 20);
        assert_eq!(w.balances(t(3), 0).available, 0);
        assert!(w.debit(EntryKind::Redeem, 1, meta(3)).is_err());
        w.credit(EntryKind::Earn, 25, t(4), None, meta(4))
            .expect("earn");
        assert_eq!((w.debt, w.balances(t(4), 0).available), (0, 5));
        w.check(&all(&w)).expect("invariant");
    }

    #[test]
    fn cancelled_redemptions_go_back_to_their_lots() {
        let mut w = Wallet::new();
        let a = w
            .credit(EntryKind::Earn, 60, t(0), Some(t(5)), meta(0))
            .expect("a");
        let b = w
            .credit(EntryKind::Earn, 60, t(0), Some(t(50)), meta(0))
            .expect("b");
        let used = w.debit(EntryKind::Redeem, 100, meta(1)).expect("redeem");
        assert_eq!(used, vec![(a, 60), (b, 40)]);
        w.restore(&used, meta(2));
        assert_eq!(w.balances(t(2), 0).available, 120);
        // Lot a's points were restored into a lot that expires on day 5.
        assert_eq!(w.balances(t(5), 0).available, 60);
        assert_eq!(w.balances(t(2), 10).expiring, vec![(t(5).day(), 60)]);
        assert_eq!(w.lifetime_redeemed, 0);
        w.check(&all(&w)).expect("invariant");
    }
}
