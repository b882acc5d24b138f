//! Per-customer summaries and how a batch of new events changes them.
//!
//! The order-independent parts of a summary (counts, sums, minimum and maximum times) are kept by
//! adding [`SummaryDelta`]s. The purchase statistics depend on which orders are refunded, so the
//! stores keep one row per order ([`OrderDelta`] is added to it) and derive the purchase statistics
//! from those rows with [`derive_purchase_stats`]'s rules. Both are order-independent, so events
//! may arrive in any order and the summary is the same.

use std::collections::HashMap;

use crate::value::NpsCategory;
use crate::{CustomerId, Day, Event, EventData, OrderId, Timestamp};

/// Sum and count of one rating dimension's answers.
///
/// 32-bit: a summary holds eight of these and every customer's summary is in memory. Both stop
/// at `i32::MAX` (over 200 million answers by one customer) rather than wrap; the database keeps
/// 64-bit sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RatingTotal {
    pub sum: i32,
    pub count: i32,
}

impl RatingTotal {
    /// From stored 64-bit values, saturating.
    pub fn from_stored(sum: i64, count: i64) -> Self {
        let narrow = |v: i64| i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX });
        Self {
            sum: narrow(sum),
            count: narrow(count),
        }
    }

    fn add(&mut self, rating: Option<u8>) {
        if let Some(r) = rating {
            self.sum = self.sum.saturating_add(i32::from(r));
            self.count = self.count.saturating_add(1);
        }
    }

    fn merge(&mut self, other: RatingTotal) {
        self.sum = self.sum.saturating_add(other.sum);
        self.count = self.count.saturating_add(other.count);
    }
}

/// The additive, order-independent part of a summary contributed by some events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SummaryDelta {
    pub event_count: i64,
    pub engagement_count: i64,
    pub last_engagement_at: Option<Timestamp>,
    pub support_count: i64,
    pub support_first_contact_resolved: i64,
    pub survey_count: i64,
    pub csat_count: i64,
    pub csat_sum: i64,
    pub nps_promoters: i64,
    pub nps_passives: i64,
    pub nps_detractors: i64,
    /// The customer's most recent NPS answer (0–10): of the surveys that carry one, the one with
    /// the latest `occurred_at`; of several at that instant, the largest answer, so the result does
    /// not depend on arrival order.
    pub last_nps: Option<u8>,
    /// When [`SummaryDelta::last_nps`] was given.
    pub last_nps_at: Option<Timestamp>,
    /// Economic, functional, experiential, symbolic.
    pub benefits: [RatingTotal; 4],
    /// Price, time, effort, emotional.
    pub costs: [RatingTotal; 4],
    pub custom_event_count: i64,
    pub first_event_at: Option<Timestamp>,
    pub last_event_at: Option<Timestamp>,
}

fn min_opt(a: Option<Timestamp>, b: Timestamp) -> Option<Timestamp> {
    Some(a.map_or(b, |a| a.min(b)))
}

fn max_opt(a: Option<Timestamp>, b: Timestamp) -> Option<Timestamp> {
    Some(a.map_or(b, |a| a.max(b)))
}

impl SummaryDelta {
    /// Adds one event.
    pub fn add(&mut self, event: &Event) {
        let at = event.occurred_at;
        self.event_count += 1;
        self.first_event_at = min_opt(self.first_event_at, at);
        self.last_event_at = max_opt(self.last_event_at, at);
        match &event.data {
            EventData::Purchase(_) | EventData::Refund(_) => {}
            EventData::Engagement(_) => {
                self.engagement_count += 1;
                self.last_engagement_at = max_opt(self.last_engagement_at, at);
            }
            EventData::SupportInteraction(s) => {
                self.support_count += 1;
                self.support_first_contact_resolved += i64::from(s.resolved_first_contact);
                self.add_csat(s.csat);
            }
            EventData::Survey(s) => {
                self.survey_count += 1;
                self.add_csat(s.csat);
                if let Some(nps) = s.nps {
                    self.count_nps(nps);
                    self.offer_nps(at, nps);
                }
                for (total, rating) in self.benefits.iter_mut().zip(s.benefits) {
                    total.add(rating);
                }
                for (total, rating) in self.costs.iter_mut().zip(s.costs) {
                    total.add(rating);
                }
            }
            EventData::Custom(_) => self.custom_event_count += 1,
        }
    }

    /// Counts one NPS answer in its category ([`NpsCategory::from_answer`]).
    pub fn count_nps(&mut self, nps: u8) {
        let count = match NpsCategory::from_answer(nps) {
            Some(NpsCategory::Detractor) => &mut self.nps_detractors,
            Some(NpsCategory::Passive) => &mut self.nps_passives,
            // Above 10 (refused before it gets here) counts as a promoter, as it always has.
            Some(NpsCategory::Promoter) | None => &mut self.nps_promoters,
        };
        *count += 1;
    }

    /// Keeps `(at, nps)` as the last NPS answer if it is later than the kept one (or as late and
    /// larger): the arg-max of `(at, nps)`, which is commutative and associative.
    fn offer_nps(&mut self, at: Timestamp, nps: u8) {
        let newer = match (self.last_nps_at, self.last_nps) {
            (Some(kept_at), Some(kept)) => (at, nps) > (kept_at, kept),
            _ => true,
        };
        if newer {
            self.last_nps_at = Some(at);
            self.last_nps = Some(nps);
        }
    }

    fn add_csat(&mut self, csat: Option<u8>) {
        if let Some(c) = csat {
            self.csat_count += 1;
            self.csat_sum += i64::from(c);
        }
    }

    /// Adds another delta (the same customer's).
    pub fn merge(&mut self, o: &SummaryDelta) {
        self.event_count += o.event_count;
        self.engagement_count += o.engagement_count;
        if let Some(t) = o.last_engagement_at {
            self.last_engagement_at = max_opt(self.last_engagement_at, t);
        }
        self.support_count += o.support_count;
        self.support_first_contact_resolved += o.support_first_contact_resolved;
        self.survey_count += o.survey_count;
        self.csat_count += o.csat_count;
        self.csat_sum += o.csat_sum;
        self.nps_promoters += o.nps_promoters;
        self.nps_passives += o.nps_passives;
        self.nps_detractors += o.nps_detractors;
        if let (Some(at), Some(nps)) = (o.last_nps_at, o.last_nps) {
            self.offer_nps(at, nps);
        }
        for (a, b) in self.benefits.iter_mut().zip(o.benefits) {
            a.merge(b);
        }
        for (a, b) in self.costs.iter_mut().zip(o.costs) {
            a.merge(b);
        }
        self.custom_event_count += o.custom_event_count;
        if let Some(t) = o.first_event_at {
            self.first_event_at = min_opt(self.first_event_at, t);
        }
        if let Some(t) = o.last_event_at {
            self.last_event_at = max_opt(self.last_event_at, t);
        }
    }
}

/// What a batch adds to one order's row: purchases set its day and add to its amount, refunds add
/// to its refunded amount. A refund may arrive before its purchase; the row then has no day yet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrderDelta {
    /// The earliest purchase day of this order in the batch.
    pub day: Option<Day>,
    pub amount: i64,
    pub item_count: i64,
    pub refunded: i64,
}

/// One stored order row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderRow {
    pub day: Option<Day>,
    pub amount: i64,
    pub refunded: i64,
}

impl OrderRow {
    /// An order counts as a purchase once its purchase is known, unless refunds cover its whole
    /// (non-zero) value. A zero-value order counts.
    pub fn is_active(&self) -> bool {
        self.day.is_some() && (self.refunded == 0 || self.refunded < self.amount)
    }

    /// What the order is still worth: amount minus refunds, never below zero.
    pub fn net(&self) -> i64 {
        if self.is_active() {
            self.amount - self.refunded
        } else {
            0
        }
    }
}

/// The purchase statistics derived from a customer's order rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PurchaseStats {
    pub order_count: i64,
    pub purchase_days: i64,
    pub first_purchase_day: Option<Day>,
    pub last_purchase_day: Option<Day>,
    pub net_revenue: i64,
    pub refunded: i64,
    pub first_day_revenue: i64,
}

/// Derives purchase statistics from order rows. The SQL of each store implements the same rules
/// set-wise; the conformance suite checks both against this function.
pub fn derive_purchase_stats(orders: &[OrderRow]) -> PurchaseStats {
    let mut s = PurchaseStats::default();
    let mut days: Vec<Day> = Vec::new();
    for o in orders {
        s.refunded += o.refunded;
        if let (true, Some(day)) = (o.is_active(), o.day) {
            s.order_count += 1;
            s.net_revenue += o.net();
            days.push(day);
        }
    }
    days.sort_unstable();
    days.dedup();
    s.purchase_days = days.len() as i64;
    s.first_purchase_day = days.first().copied();
    s.last_purchase_day = days.last().copied();
    s.first_day_revenue = orders
        .iter()
        .filter(|o| o.is_active() && o.day == s.first_purchase_day)
        .map(OrderRow::net)
        .sum();
    s
}

/// Everything a batch of new events changes, grouped for set-wise writes.
#[derive(Debug, Default)]
pub struct BatchAggregate {
    /// One delta per customer, in customer id order.
    pub summaries: Vec<(CustomerId, SummaryDelta)>,
    /// One delta per order, in (customer id, order id) order.
    pub orders: Vec<(CustomerId, OrderId, OrderDelta)>,
    /// Engagement events per customer, UTC day and activity name, in that key order: the
    /// windowed counts segment rules read (`engagement.count(30)`).
    pub engagement: Vec<(CustomerId, Day, String, i64)>,
}

impl BatchAggregate {
    /// Groups new (not duplicate) events by customer and by order.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut agg = BatchAggregate::default();
        let mut customer_pos: HashMap<&CustomerId, usize> = HashMap::new();
        let mut order_pos: HashMap<(&CustomerId, &OrderId), usize> = HashMap::new();
        let mut summaries: Vec<(&CustomerId, SummaryDelta)> = Vec::new();
        let mut orders: Vec<(&CustomerId, &OrderId, OrderDelta)> = Vec::new();
        let mut engagement: std::collections::BTreeMap<(&CustomerId, Day, &str), i64> =
            std::collections::BTreeMap::new();
        for e in events {
            let pos = *customer_pos.entry(&e.customer_id).or_insert_with(|| {
                summaries.push((&e.customer_id, SummaryDelta::default()));
                summaries.len() - 1
            });
            summaries[pos].1.add(e);
            let (order_id, day, amount, items, refunded) = match &e.data {
                EventData::Purchase(p) => (
                    &p.order_id,
                    Some(e.occurred_at.day()),
                    p.amount,
                    i64::from(p.item_count),
                    0,
                ),
                EventData::Refund(r) => (&r.order_id, None, 0, 0, r.amount),
                EventData::Engagement(g) => {
                    *engagement
                        .entry((&e.customer_id, e.occurred_at.day(), g.activity.as_str()))
                        .or_insert(0) += 1;
                    continue;
                }
                _ => continue,
            };
            let pos = *order_pos
                .entry((&e.customer_id, order_id))
                .or_insert_with(|| {
                    orders.push((&e.customer_id, order_id, OrderDelta::default()));
                    orders.len() - 1
                });
            let d = &mut orders[pos].2;
            d.day = match (d.day, day) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            d.amount += amount;
            d.item_count += items;
            d.refunded += refunded;
        }
        // Key order: stores write neighbouring rows together and take row locks in one order.
        summaries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        orders.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        agg.summaries = summaries.into_iter().map(|(c, d)| (c.clone(), d)).collect();
        agg.orders = orders
            .into_iter()
            .map(|(c, o, d)| (c.clone(), o.clone(), d))
            .collect();
        agg.engagement = engagement
            .into_iter()
            .map(|((c, d, a), n)| (c.clone(), d, a.to_owned(), n))
            .collect();
        agg
    }
}

/// A customer's whole summary, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CustomerSummary {
    pub totals: SummaryDelta,
    pub purchases: PurchaseStats,
}

impl CustomerSummary {
    /// Repeat purchase days: the `lifetimes` frequency in days.
    pub fn frequency(&self) -> i64 {
        (self.purchases.purchase_days - 1).max(0)
    }

    /// Days between first and last purchase day: the `lifetimes` recency in days.
    pub fn recency_days(&self) -> i64 {
        match (
            self.purchases.first_purchase_day,
            self.purchases.last_purchase_day,
        ) {
            (Some(a), Some(b)) => i64::from(b.as_days() - a.as_days()),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Purchase, Refund, Survey};

    // Rating totals are 32-bit in memory: stored 64-bit values and long runs of answers stop at
    // the ends instead of wrapping.
    #[test]
    fn rating_totals_saturate_instead_of_wrapping() {
        assert_eq!(
            RatingTotal::from_stored(i64::MAX, i64::from(i32::MAX) + 1),
            RatingTotal {
                sum: i32::MAX,
                count: i32::MAX
            }
        );
        assert_eq!(RatingTotal::from_stored(i64::MIN, 3).sum, i32::MIN);
        assert_eq!(
            RatingTotal::from_stored(17, 4),
            RatingTotal { sum: 17, count: 4 }
        );
        let mut t = RatingTotal {
            sum: i32::MAX - 2,
            count: i32::MAX,
        };
        t.add(Some(5));
        assert_eq!((t.sum, t.count), (i32::MAX, i32::MAX));
        t.merge(t);
        assert_eq!((t.sum, t.count), (i32::MAX, i32::MAX));
    }

    // The categories of `NpsCategory::from_answer`, for every answer a `u8` can hold (above 10,
    // refused before it gets here, counts as a promoter).
    #[test]
    fn an_nps_answer_counts_in_its_category() {
        for nps in 0..=u8::MAX {
            let mut d = SummaryDelta::default();
            d.count_nps(nps);
            let want = match nps {
                9.. => (1, 0, 0),
                7 | 8 => (0, 1, 0),
                _ => (0, 0, 1),
            };
            assert_eq!(
                (d.nps_promoters, d.nps_passives, d.nps_detractors),
                want,
                "{nps}"
            );
        }
    }

    fn ev(customer: &str, id: &str, day: i32, data: EventData) -> Event {
        Event {
            customer_id: CustomerId::parse(customer).expect("id"),
            event_id: crate::EventId::parse(id).expect("id"),
            occurred_at: Day::from_days(day).start(),
            data,
        }
    }

    fn purchase(order: &str, amount: i64) -> EventData {
        EventData::Purchase(Purchase {
            order_id: OrderId::parse(order).expect("id"),
            amount,
            item_count: 1,
            channel: String::new(),
        })
    }

    fn refund(order: &str, amount: i64) -> EventData {
        EventData::Refund(Refund {
            order_id: OrderId::parse(order).expect("id"),
            amount,
        })
    }

    fn row(day: Option<i32>, amount: i64, refunded: i64) -> OrderRow {
        OrderRow {
            day: day.map(Day::from_days),
            amount,
            refunded,
        }
    }

    #[test]
    fn purchase_stats_follow_lifetimes_conventions() {
        // Two orders on day 10, one on day 12, one on day 20 fully refunded, a zero-value order on
        // day 15, and a refund whose purchase is not known yet.
        let orders = [
            row(Some(10), 500, 0),
            row(Some(10), 300, 100),
            row(Some(12), 1000, 0),
            row(Some(20), 700, 700),
            row(Some(15), 0, 0),
            row(None, 0, 50),
        ];
        let s = derive_purchase_stats(&orders);
        assert_eq!(s.order_count, 4);
        assert_eq!(s.purchase_days, 3);
        assert_eq!(s.first_purchase_day, Some(Day::from_days(10)));
        assert_eq!(s.last_purchase_day, Some(Day::from_days(15)));
        assert_eq!(s.net_revenue, 500 + 200 + 1000);
        assert_eq!(s.first_day_revenue, 700);
        assert_eq!(s.refunded, 850);
    }

    #[test]
    fn batch_groups_by_customer_and_order_in_any_order() {
        let events = vec![
            ev("a", "1", 5, refund("o1", 100)),
            ev("a", "2", 3, purchase("o1", 400)),
            ev("b", "3", 4, purchase("o2", 50)),
            ev("a", "4", 2, purchase("o1", 100)),
            ev(
                "a",
                "5",
                7,
                EventData::Survey(Survey {
                    nps: Some(9),
                    csat: Some(4),
                    ..Survey::default()
                }),
            ),
        ];
        let agg = BatchAggregate::from_events(&events);
        assert_eq!(agg.summaries.len(), 2);
        let a = &agg.summaries[0].1;
        assert_eq!(a.event_count, 4);
        assert_eq!(a.nps_promoters, 1);
        assert_eq!(a.csat_sum, 4);
        assert_eq!(a.first_event_at, Some(Day::from_days(2).start()));
        assert_eq!(a.last_event_at, Some(Day::from_days(7).start()));
        assert_eq!(agg.orders.len(), 2);
        let o1 = &agg.orders[0].2;
        assert_eq!(
            (o1.day, o1.amount, o1.refunded),
            (Some(Day::from_days(2)), 500, 100)
        );

        // Splitting the batch anywhere and merging gives the same deltas.
        let mut reversed = events.clone();
        reversed.reverse();
        let agg2 = BatchAggregate::from_events(&reversed);
        let a2 = agg2
            .summaries
            .iter()
            .find(|(c, _)| c.as_str() == "a")
            .map(|(_, d)| d);
        assert_eq!(a2, Some(a));
    }

    fn survey(customer: &str, id: &str, day: i32, nps: Option<u8>) -> Event {
        ev(
            customer,
            id,
            day,
            EventData::Survey(Survey {
                nps,
                ..Survey::default()
            }),
        )
    }

    #[test]
    fn last_nps_is_the_latest_answer_whatever_the_order() {
        let events = [
            survey("a", "1", 3, Some(2)),
            survey("a", "2", 9, Some(6)),
            // A tie at the latest instant: the larger answer wins.
            survey("a", "3", 9, Some(8)),
            survey("a", "4", 5, Some(10)),
            // Later, but without an answer: ignored.
            survey("a", "5", 12, None),
            ev("a", "6", 20, purchase("o1", 1)),
        ];
        let want_at = Some(Day::from_days(9).start());
        for rotation in 0..events.len() {
            for reverse in [false, true] {
                let mut order = events.to_vec();
                order.rotate_left(rotation);
                if reverse {
                    order.reverse();
                }
                let mut one = SummaryDelta::default();
                for e in &order {
                    one.add(e);
                }
                assert_eq!((one.last_nps, one.last_nps_at), (Some(8), want_at));
                // Any split, merged either way round, gives the same answer.
                for split in 0..=order.len() {
                    let (x, y) = order.split_at(split);
                    let delta = |es: &[Event]| {
                        let mut d = SummaryDelta::default();
                        for e in es {
                            d.add(e);
                        }
                        d
                    };
                    let (dx, dy) = (delta(x), delta(y));
                    let mut xy = dx.clone();
                    xy.merge(&dy);
                    let mut yx = dy.clone();
                    yx.merge(&dx);
                    assert_eq!(xy, one);
                    assert_eq!(yx, one);
                }
            }
        }
        let mut none = SummaryDelta::default();
        none.add(&survey("a", "1", 3, None));
        assert_eq!((none.last_nps, none.last_nps_at), (None, None));
    }
}
