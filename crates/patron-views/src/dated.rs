//! What a fit reads of each customer's past, dated and kept in memory, so that a fit at an earlier
//! calibration end computes every customer's summary as of then without replaying the stored
//! events: each purchase and refund (instant, order, amount) and each survey's ratings (instant,
//! benefits, costs), 32 bytes an event.
//!
//! A customer's history is read from the store the first time a fit needs it and kept with the
//! version of the customer's index row it was read for (the row's event count and last event
//! instant). The engine forgets it whenever the row changes or goes (the change feed, erasure), and
//! a history whose version is not the row's is read again, so a fit never uses an older past than
//! the index holds.

use std::collections::HashMap;
use std::sync::Arc;

use patron_domain::{
    CustomerId, CustomerSummary, Event, EventData, EventKind, OrderId, OrderRow, SummaryDelta,
    Timestamp, derive_purchase_stats,
};
use patron_store::{OrderDay, SummaryRow};

/// The event kinds a fit reads: purchases and refunds (the orders) and surveys (the perceived
/// value index).
pub const FIT_KINDS: [EventKind; 3] = [EventKind::Purchase, EventKind::Refund, EventKind::Survey];

/// One event as a fit reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dated {
    /// A purchase (or a refund) of the customer's `order`-th order.
    Order {
        at: i64,
        amount: i64,
        order: u32,
        refund: bool,
    },
    /// A survey's benefits then costs.
    Survey { at: i64, ratings: [Option<u8>; 8] },
}

impl Dated {
    fn at(&self) -> i64 {
        match self {
            Dated::Order { at, .. } | Dated::Survey { at, .. } => *at,
        }
    }
}

/// Which version of a customer's row a history was read for.
type Stamp = (i64, Option<Timestamp>);

fn stamp(row: &SummaryRow) -> Stamp {
    (
        row.summary.totals.event_count,
        row.summary.totals.last_event_at,
    )
}

/// One customer's dated purchases, refunds and survey ratings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatedHistory {
    stamp: Stamp,
    orders: u32,
    events: Box<[Dated]>,
}

/// What a fit reads of a customer as of an instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Then {
    /// The purchase statistics and the survey totals (benefits and costs); every other part of
    /// the summary is zero.
    pub summary: CustomerSummary,
    /// The active orders then, ascending by (day, net amount).
    pub orders: Vec<OrderDay>,
}

impl DatedHistory {
    /// The history of `events` (one customer's; other kinds than [`FIT_KINDS`] are skipped), read
    /// for `row`.
    pub fn from_events<'a>(row: &SummaryRow, events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut positions: HashMap<&OrderId, u32> = HashMap::new();
        let mut out = Vec::new();
        for e in events {
            let at = e.occurred_at.as_micros();
            let (order_id, amount, refund) = match &e.data {
                EventData::Purchase(p) => (&p.order_id, p.amount, false),
                EventData::Refund(r) => (&r.order_id, r.amount, true),
                EventData::Survey(s) => {
                    let mut ratings = [None; 8];
                    for (slot, r) in ratings.iter_mut().zip(s.benefits.iter().chain(&s.costs)) {
                        *slot = *r;
                    }
                    out.push(Dated::Survey { at, ratings });
                    continue;
                }
                _ => continue,
            };
            let next = u32::try_from(positions.len()).unwrap_or(u32::MAX);
            let order = *positions.entry(order_id).or_insert(next);
            out.push(Dated::Order {
                at,
                amount,
                order,
                refund,
            });
        }
        Self {
            stamp: stamp(row),
            orders: u32::try_from(positions.len()).unwrap_or(u32::MAX),
            events: out.into_boxed_slice(),
        }
    }

    /// Whether this history was read for `row` as it is.
    pub fn is_for(&self, row: &SummaryRow) -> bool {
        self.stamp == stamp(row)
    }

    /// The customer as of `as_of`: the order rows and survey totals of the events up to it, under
    /// the rules of the stored summaries (an order's day is its earliest purchase's, refunds add to
    /// it; [`derive_purchase_stats`]).
    pub fn then(&self, as_of: Timestamp) -> Then {
        let cut = as_of.as_micros();
        let mut rows = vec![
            OrderRow {
                day: None,
                amount: 0,
                refunded: 0,
            };
            self.orders as usize
        ];
        let mut totals = SummaryDelta::default();
        for e in self.events.iter().filter(|e| e.at() <= cut) {
            match *e {
                Dated::Order {
                    at,
                    amount,
                    order,
                    refund,
                } => {
                    let Some(row) = rows.get_mut(order as usize) else {
                        continue;
                    };
                    if refund {
                        row.refunded += amount;
                    } else {
                        let day = Timestamp::from_micros(at).day();
                        row.day = Some(row.day.map_or(day, |d| d.min(day)));
                        row.amount += amount;
                    }
                }
                Dated::Survey { ratings, .. } => {
                    let totals = totals.benefits.iter_mut().chain(totals.costs.iter_mut());
                    for (total, rating) in totals.zip(ratings) {
                        if let Some(r) = rating {
                            total.sum = total.sum.saturating_add(i32::from(r));
                            total.count = total.count.saturating_add(1);
                        }
                    }
                }
            }
        }
        Then {
            summary: CustomerSummary {
                totals,
                purchases: derive_purchase_stats(&rows),
            },
            orders: crate::history::active_orders(&rows),
        }
    }
}

/// Every customer's history a fit has read, by customer.
#[derive(Debug, Default)]
pub struct DatedCache {
    map: HashMap<CustomerId, Arc<DatedHistory>, foldhash::fast::RandomState>,
}

impl DatedCache {
    /// `row`'s history, if the one kept was read for the row as it is.
    pub fn current(&self, row: &SummaryRow) -> Option<Arc<DatedHistory>> {
        self.map
            .get(&row.customer_id)
            .filter(|h| h.is_for(row))
            .cloned()
    }

    pub fn keep(&mut self, id: CustomerId, history: Arc<DatedHistory>) {
        self.map.insert(id, history);
    }

    pub fn forget(&mut self, id: &CustomerId) {
        self.map.remove(id);
    }

    pub fn clear(&mut self) {
        self.map = HashMap::default();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use patron_domain::{
        CustomerId, Engagement, Event, EventData, EventId, OrderId, Purchase, Refund, Survey,
        Timestamp,
    };
    use patron_store::SummaryRow;

    use super::DatedHistory;
    use crate::history::rebuild_row;

    const DAY: i64 = 86_400_000_000;

    fn event(n: usize, at: i64, data: EventData) -> Event {
        Event {
            customer_id: CustomerId::parse("c-1").expect("id"),
            event_id: EventId::parse(format!("e-{n}")).expect("id"),
            occurred_at: Timestamp::from_micros(at),
            data,
        }
    }

    fn row() -> SummaryRow {
        SummaryRow {
            customer_id: CustomerId::parse("c-1").expect("id"),
            signed_up_at: None,
            create_time: Timestamp::from_micros(0),
            birth_date: None,
            gender: Default::default(),
            country: None,
            attributes: Default::default(),
            summary: Default::default(),
            orders: Vec::new(),
            engagement: Vec::new(),
        }
    }

    /// A small deterministic generator (xorshift), so the test needs no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self, below: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % below
        }
    }

    /// Purchases (some orders bought twice), refunds (some before their purchase, some of the
    /// whole order), surveys with some answers missing and engagement, in time order.
    fn history(rng: &mut Rng) -> Vec<Event> {
        let mut events = Vec::new();
        let mut at = 20_000 * DAY;
        for n in 0..(1 + rng.next(40) as usize) {
            at += rng.next(30) as i64 * DAY / 3 + rng.next(1_000) as i64;
            let order = OrderId::parse(format!("o-{}", rng.next(8))).expect("order");
            let amount = rng.next(5) as i64 * 1_000;
            let rating = |rng: &mut Rng| match rng.next(8) {
                0 => None,
                r => Some(r as u8),
            };
            let data = match rng.next(5) {
                0 | 1 => EventData::Purchase(Purchase {
                    order_id: order,
                    amount,
                    item_count: 1,
                    channel: "web".into(),
                }),
                2 => EventData::Refund(Refund {
                    order_id: order,
                    amount,
                }),
                3 => EventData::Survey(Survey {
                    benefits: [(); 4].map(|_| rating(rng)),
                    costs: [(); 4].map(|_| rating(rng)),
                    csat: rating(rng),
                    nps: None,
                }),
                _ => EventData::Engagement(Engagement {
                    activity: "visit".into(),
                }),
            };
            events.push(event(n, at, data));
        }
        events
    }

    #[test]
    fn a_customer_then_is_the_row_rebuilt_from_the_events_up_to_then() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let row = row();
        let mut compared = 0;
        for _ in 0..300 {
            let events = history(&mut rng);
            let dated = DatedHistory::from_events(&row, &events);
            let first = events[0].occurred_at.as_micros();
            let last = events[events.len() - 1].occurred_at.as_micros();
            // Before everything, at and between events, on day boundaries and after everything.
            let mut cuts = vec![first - 1, last + 1, 20_005 * DAY];
            cuts.extend(events.iter().map(|e| e.occurred_at.as_micros()));
            cuts.extend((0..5).map(|_| first + rng.next((last - first + 1) as u64) as i64));
            for cut in cuts {
                let as_of = Timestamp::from_micros(cut);
                let upto: Vec<Event> = events
                    .iter()
                    .filter(|e| e.occurred_at <= as_of)
                    .cloned()
                    .collect();
                let expected = rebuild_row(&row, &upto);
                let then = dated.then(as_of);
                assert_eq!(
                    then.summary.purchases, expected.summary.purchases,
                    "at {cut}"
                );
                assert_eq!(then.orders, expected.orders, "at {cut}");
                assert_eq!(
                    then.summary.totals.benefits,
                    expected.summary.totals.benefits
                );
                assert_eq!(then.summary.totals.costs, expected.summary.totals.costs);
                compared += 1;
            }
        }
        assert!(compared > 3_000, "{compared} instants compared");
    }

    /// Twelve customers, each buying on days 100, 150 + i, 250 and 350 of 1970.
    fn twelve_buyers() -> Vec<Event> {
        let mut events = Vec::new();
        for c in 0..12i64 {
            for (k, day) in [100, 150 + c, 250, 350].into_iter().enumerate() {
                events.push(Event {
                    customer_id: CustomerId::parse(format!("c{c:02}")).expect("id"),
                    event_id: EventId::parse(format!("e{c}-{k}")).expect("id"),
                    occurred_at: Timestamp::from_micros(day * DAY + 3_600_000_000),
                    data: EventData::Purchase(Purchase {
                        order_id: OrderId::parse(format!("o{k}")).expect("order"),
                        amount: 1_000 + 10 * c,
                        item_count: 1,
                        channel: "web".into(),
                    }),
                });
            }
        }
        events
    }

    // A fit at an earlier calibration end keeps the histories it read; a change of the customer
    // (here a refund, as the change feed would bring it) or its erasure drops its history, and
    // the next fit reads the store again and sees the change.
    #[tokio::test]
    async fn kept_histories_go_when_their_customers_change_or_are_erased() {
        use patron_domain::Currency;
        use patron_store::Store;
        use patron_store_sqlite::SqliteStore;
        use std::sync::Arc;

        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let sqlite = SqliteStore::connect(&url).await.expect("store");
        sqlite.migrate().await.expect("migrate");
        let now = Timestamp::from_micros(400 * DAY);
        sqlite
            .record_events(&twelve_buyers(), now)
            .await
            .expect("record");
        let store: Arc<dyn Store> = Arc::new(sqlite);
        let usd = Currency::parse("USD").expect("USD");
        let engine = crate::engine::Engine::load(Arc::clone(&store), usd)
            .await
            .expect("engine");
        let request = crate::model::FitRequest {
            calibration_end: Timestamp::from_micros(300 * DAY),
            time_unit: patron_domain::clv::TimeUnitKind::Days,
            horizon_months: 12,
            horizon_days: None,
            monthly_discount_rate: 0.01,
            purchase_model: crate::model::PurchaseModel::BgNbd,
            penalizer_coef: 0.0,
            holdout_end: now,
            choose_by_holdout: false,
        };
        let fit = || async {
            let (_, doc) = engine
                .fit(request, false, now)
                .await
                .map_err(|e| format!("{e:?}"))
                .expect("fit");
            doc
        };
        let first = fit().await;
        assert_eq!(
            engine.dated_customers(),
            12,
            "every customer bought after day 300"
        );
        assert_eq!(
            fit().await.gamma_gamma,
            first.gamma_gamma,
            "again from memory"
        );

        // c00 refunds half of an order of day 250 (before the calibration end: its past changes).
        let c00 = CustomerId::parse("c00").expect("id");
        let refund = Event {
            customer_id: c00.clone(),
            event_id: EventId::parse("r1").expect("id"),
            occurred_at: Timestamp::from_micros(260 * DAY),
            data: EventData::Refund(Refund {
                order_id: OrderId::parse("o2").expect("order"),
                amount: 500,
            }),
        };
        store.record_events(&[refund], now).await.expect("refund");
        engine
            .refresh(std::slice::from_ref(&c00))
            .await
            .expect("refresh");
        assert_eq!(engine.dated_customers(), 11, "c00's history is forgotten");
        let after = fit().await;
        assert_ne!(
            after.gamma_gamma, first.gamma_gamma,
            "the refund is in the fit"
        );
        assert_eq!(engine.dated_customers(), 12, "and read again");

        // Erased: gone from the index and from the kept histories.
        store.delete_customer(&c00).await.expect("erase");
        engine
            .refresh(std::slice::from_ref(&c00))
            .await
            .expect("refresh");
        assert_eq!(engine.dated_customers(), 11);
        assert_eq!(fit().await.customers, first.customers - 1);
        assert_eq!(
            engine.dated_customers(),
            11,
            "nothing kept of an erased customer"
        );
    }

    #[test]
    fn a_history_is_for_the_row_it_was_read_for() {
        let mut row = row();
        row.summary.totals.event_count = 3;
        let dated = DatedHistory::from_events(&row, &[]);
        assert!(dated.is_for(&row));
        row.summary.totals.event_count = 4;
        assert!(!dated.is_for(&row));
    }
}
