//! Events and the summaries they keep: idempotent recording, summaries independent of arrival
//! order, refunds, surveys and support, the event list, order and engagement days; and the
//! engagement-day backfill the migration tests check.

use patron_domain::{
    CustomerId, Day, Event, EventData, EventKind, OrderRow, SupportInteraction, Survey, Timestamp,
    derive_purchase_stats,
};

use std::sync::Arc;

use super::{at, cid, now, other, purchase, refund};
use crate::{EngagementDay, EventCursor, OrderDay, Store, SummaryRow};

pub async fn events_are_idempotent(store: &impl Store) {
    let e1 = purchase("bob", "e1", at(100, 0), "o1", 1000);
    let e2 = purchase("bob", "e2", at(101, 0), "o2", 500);
    let out = store
        .record_events(&[e1.clone(), e2.clone(), e1.clone()], now())
        .await
        .expect("record");
    assert_eq!(out.recorded, 2);
    assert_eq!(out.duplicate_indexes, vec![2]);
    assert_eq!(out.created_customers, 1);
    // Replaying the batch stores nothing and changes no summary.
    let before = store
        .get_customer(&cid("bob"))
        .await
        .expect("get")
        .expect("exists");
    let out = store
        .record_events(&[e2.clone(), e1.clone()], now())
        .await
        .expect("record");
    assert_eq!(out.recorded, 0);
    assert_eq!(out.duplicate_indexes, vec![0, 1]);
    assert_eq!(out.created_customers, 0);
    let after = store
        .get_customer(&cid("bob"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(before.summary, after.summary);
    assert_eq!(after.summary.totals.event_count, 2);
    assert_eq!(after.summary.purchases.net_revenue, 1500);
    // The same event id for another customer is another event.
    let out = store
        .record_events(&[purchase("carol", "e1", at(100, 0), "o1", 1)], now())
        .await
        .expect("record");
    assert_eq!(out.recorded, 1);
    // A batch mixing stored and new events stores exactly the new ones.
    let e3 = purchase("bob", "e3", at(102, 0), "o3", 250);
    let out = store
        .record_events(&[e3.clone(), e2.clone(), e3.clone()], now())
        .await
        .expect("record");
    assert_eq!(out.recorded, 1);
    assert_eq!(out.duplicate_indexes, vec![1, 2]);
    let after = store
        .get_customer(&cid("bob"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(after.summary.totals.event_count, 3);
    assert_eq!(after.summary.purchases.net_revenue, 1750);
}
/// A deterministic shuffle (xorshift), so the suite needs no random-number crate.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let j = (seed % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}
pub(super) fn history(customer: &str) -> Vec<Event> {
    let mut events = Vec::new();
    for (n, (day, amount)) in [
        (10, 500),
        (10, 250),
        (12, 1000),
        (30, 0),
        (45, 700),
        (45, 300),
        (60, 1200),
    ]
    .into_iter()
    .enumerate()
    {
        events.push(purchase(
            customer,
            &format!("p{n}"),
            at(day, n as i64),
            &format!("o{n}"),
            amount,
        ));
    }
    // Order o6 (day 60) is fully refunded in two parts; o2 partly.
    events.push(refund(customer, "r1", at(61, 0), "o6", 1000));
    events.push(refund(customer, "r2", at(62, 0), "o6", 200));
    events.push(refund(customer, "r3", at(13, 0), "o2", 400));
    events.push(other(
        customer,
        "g1",
        at(20, 0),
        EventData::Engagement(patron_domain::Engagement {
            activity: "login".into(),
        }),
    ));
    events
}
pub async fn summaries_do_not_depend_on_arrival_order(store: &impl Store) {
    // The reference: what the domain rules say for this history.
    let rows = [
        (Some(10), 500, 0),
        (Some(10), 250, 0),
        (Some(12), 1000, 400),
        (Some(30), 0, 0),
        (Some(45), 700, 0),
        (Some(45), 300, 0),
        (Some(60), 1200, 1200),
    ]
    .map(|(d, amount, refunded)| OrderRow {
        day: d.map(Day::from_days),
        amount,
        refunded,
    });
    let want = derive_purchase_stats(&rows);
    assert_eq!(want.purchase_days, 4);
    assert_eq!(want.last_purchase_day, Some(Day::from_days(45)));

    for seed in 1..=6u64 {
        let customer = format!("shuffled{seed}");
        let mut events = history(&customer);
        // NPS answers: the latest instant has two (the larger wins); a later survey has none.
        for (id, day, nps) in [
            ("n1", 40, Some(9)),
            ("n2", 50, Some(3)),
            ("n3", 55, Some(8)),
            ("n4", 55, Some(6)),
            ("n5", 58, None),
        ] {
            events.push(other(&customer, id, at(day, 0), nps_survey(nps)));
        }
        shuffle(&mut events, seed * 7919);
        // Split into batches of varying size, as a stream would.
        for chunk in events.chunks(seed as usize) {
            store.record_events(chunk, now()).await.expect("record");
        }
        let got = store
            .get_customer(&cid(&customer))
            .await
            .expect("get")
            .expect("exists");
        assert_eq!(got.summary.purchases, want, "seed {seed}");
        assert_eq!(got.summary.totals.event_count, 16, "seed {seed}");
        assert_eq!(got.summary.totals.engagement_count, 1);
        assert_eq!(
            (got.summary.totals.last_nps, got.summary.totals.last_nps_at),
            (Some(8), Some(at(55, 0))),
            "seed {seed}"
        );
        assert_eq!(got.summary.totals.survey_count, 5);
        assert_eq!(got.summary.totals.first_event_at, Some(at(10, 0)));
        assert_eq!(got.summary.totals.last_event_at, Some(at(62, 0)));
        assert_eq!(got.summary.frequency(), 3);
        assert_eq!(got.summary.recency_days(), 35);
    }
}
pub(super) fn nps_survey(nps: Option<u8>) -> EventData {
    EventData::Survey(Survey {
        nps,
        ..Survey::default()
    })
}
pub async fn refunds_cancel_orders_even_before_the_purchase_arrives(store: &impl Store) {
    let c = "refunder";
    store
        .record_events(&[refund(c, "r1", at(20, 0), "o1", 900)], now())
        .await
        .expect("record");
    let got = store
        .get_customer(&cid(c))
        .await
        .expect("get")
        .expect("created");
    assert_eq!(got.summary.purchases.order_count, 0);
    assert_eq!(got.summary.purchases.refunded, 900);
    store
        .record_events(
            &[
                purchase(c, "p1", at(19, 0), "o1", 900),
                purchase(c, "p2", at(25, 0), "o2", 100),
            ],
            now(),
        )
        .await
        .expect("record");
    let got = store
        .get_customer(&cid(c))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        got.summary.purchases.order_count, 1,
        "o1 is cancelled by its refund"
    );
    assert_eq!(got.summary.purchases.purchase_days, 1);
    assert_eq!(
        got.summary.purchases.first_purchase_day,
        Some(Day::from_days(25))
    );
    assert_eq!(got.summary.purchases.net_revenue, 100);
    assert_eq!(got.summary.purchases.first_day_revenue, 100);
}
pub async fn survey_and_support_aggregates(store: &impl Store) {
    let c = "surveyed";
    let survey = |nps, csat, economic| {
        EventData::Survey(Survey {
            benefits: [economic, Some(4), None, None],
            costs: [Some(2), None, None, Some(1)],
            csat,
            nps,
        })
    };
    let support = |fcr, csat| {
        EventData::SupportInteraction(SupportInteraction {
            channel: "phone".into(),
            resolved_first_contact: fcr,
            csat,
        })
    };
    let events = vec![
        other(c, "s1", at(5, 0), survey(Some(10), Some(5), Some(5))),
        other(c, "s2", at(6, 0), survey(Some(7), None, None)),
        other(c, "s3", at(7, 0), survey(Some(0), Some(1), Some(1))),
        other(c, "s4", at(8, 0), survey(None, None, None)),
        other(c, "t1", at(9, 0), support(true, Some(4))),
        other(c, "t2", at(9, 1), support(false, None)),
        other(
            c,
            "x1",
            at(9, 2),
            EventData::Custom(patron_domain::CustomEvent {
                name: "referral".into(),
                properties: Default::default(),
            }),
        ),
    ];
    store.record_events(&events, now()).await.expect("record");
    let t = store
        .get_customer(&cid(c))
        .await
        .expect("get")
        .expect("exists")
        .summary
        .totals;
    assert_eq!(t.survey_count, 4);
    assert_eq!(
        (t.nps_promoters, t.nps_passives, t.nps_detractors),
        (1, 1, 1)
    );
    assert_eq!((t.csat_sum, t.csat_count), (10, 3));
    assert_eq!((t.benefits[0].sum, t.benefits[0].count), (6, 2));
    assert_eq!((t.benefits[1].sum, t.benefits[1].count), (16, 4));
    assert_eq!(t.benefits[2].count, 0);
    assert_eq!((t.costs[3].sum, t.costs[3].count), (4, 4));
    assert_eq!((t.support_count, t.support_first_contact_resolved), (2, 1));
    assert_eq!(t.custom_event_count, 1);
    assert_eq!(t.event_count, 7);
    // The last NPS answer is s3's (s4, later, has none).
    assert_eq!((t.last_nps, t.last_nps_at), (Some(0), Some(at(7, 0))));

    // The same events one per batch, newest first: the same totals, the same last answer.
    let r = "surveyed-reversed";
    for e in events.iter().rev() {
        let mut e = e.clone();
        e.customer_id = cid(r);
        store.record_events(&[e], now()).await.expect("record");
    }
    let reversed = store
        .get_customer(&cid(r))
        .await
        .expect("get")
        .expect("exists")
        .summary
        .totals;
    assert_eq!(reversed, t);

    // An older answer arriving late changes nothing; a newer one replaces it; one at the same
    // instant replaces it only if larger.
    let late = |id: &str, when, nps| other(c, id, when, nps_survey(Some(nps)));
    let last = |t: &patron_domain::SummaryDelta| (t.last_nps, t.last_nps_at);
    for (event, want) in [
        (late("s5", at(6, 30), 9), (Some(0), Some(at(7, 0)))),
        (late("s6", at(7, 0), 5), (Some(5), Some(at(7, 0)))),
        (late("s7", at(7, 0), 2), (Some(5), Some(at(7, 0)))),
        (late("s8", at(7, 1), 1), (Some(1), Some(at(7, 1)))),
    ] {
        store.record_events(&[event], now()).await.expect("record");
        let t = store
            .get_customer(&cid(c))
            .await
            .expect("get")
            .expect("exists")
            .summary
            .totals;
        assert_eq!(last(&t), want);
    }
}
pub async fn list_events_newest_first_with_kinds_and_cursor(store: &impl Store) {
    let c = "lister";
    let mut events = history(c);
    // Two events at the same instant are ordered by event id, descending.
    events.push(purchase(c, "same-a", at(70, 0), "oa", 1));
    events.push(purchase(c, "same-b", at(70, 0), "ob", 1));
    store.record_events(&events, now()).await.expect("record");
    let mut all = Vec::new();
    let mut cursor: Option<EventCursor> = None;
    loop {
        let page = store
            .list_events(&cid(c), &[], cursor.as_ref(), 4)
            .await
            .expect("list");
        if page.is_empty() {
            break;
        }
        cursor = page.last().map(|e| EventCursor {
            occurred_at: e.event.occurred_at,
            event_id: e.event.event_id.clone(),
        });
        all.extend(page);
    }
    assert_eq!(all.len(), events.len());
    assert_eq!(all[0].event.event_id.as_str(), "same-b");
    assert_eq!(all[1].event.event_id.as_str(), "same-a");
    assert!(
        all.windows(2)
            .all(|w| w[0].event.occurred_at >= w[1].event.occurred_at)
    );
    assert_eq!(all[0].recorded_at, now());
    // Stored data reads back exactly.
    let original = events
        .iter()
        .find(|e| e.event_id.as_str() == "r3")
        .expect("r3");
    let stored = all
        .iter()
        .find(|e| e.event.event_id.as_str() == "r3")
        .expect("r3 stored");
    assert_eq!(&stored.event, original);

    let refunds = store
        .list_events(
            &cid(c),
            &[EventKind::Refund, EventKind::Engagement],
            None,
            100,
        )
        .await
        .expect("list");
    let kinds: Vec<EventKind> = refunds.iter().map(|e| e.event.data.kind()).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Refund,
            EventKind::Refund,
            EventKind::Engagement,
            EventKind::Refund
        ]
    );
    assert!(
        store
            .list_events(&cid("nobody"), &[], None, 10)
            .await
            .expect("list")
            .is_empty()
    );
}
pub async fn events_until_reads_many_histories_up_to_an_instant(store: &impl Store) {
    let until = at(200, 30);
    let events = vec![
        purchase("bea", "b2", at(150, 0), "o1", 100),
        purchase("ann", "a1", at(100, 0), "o1", 100),
        // First by id, not by time: the instant orders.
        purchase("ann", "a00", at(150, 0), "o5", 50),
        purchase("ann", "a3", until, "o3", 300),
        // Same instant, ids in both orders; one microsecond later is out.
        purchase("ann", "a2", until, "o2", 200),
        purchase(
            "ann",
            "a0",
            Timestamp::from_micros(until.as_micros() + 1),
            "o4",
            400,
        ),
        refund("bea", "b9", at(300, 0), "o1", 100),
        purchase("cid", "c1", at(250, 0), "o1", 100),
        purchase("dan", "d1", at(10, 0), "o1", 100),
    ];
    store.record_events(&events, now()).await.expect("record");
    let got = store
        .events_until(
            &[
                cid("cid"),
                cid("bea"),
                cid("ann"),
                cid("nobody"),
                cid("ann"),
            ],
            until,
            &[],
        )
        .await
        .expect("events");
    let ids: Vec<(&str, &str)> = got
        .iter()
        .map(|e| (e.customer_id.as_str(), e.event_id.as_str()))
        .collect();
    assert_eq!(
        ids,
        [
            ("ann", "a1"),
            ("ann", "a00"),
            ("ann", "a2"),
            ("ann", "a3"),
            ("bea", "b2")
        ]
    );
    let a2 = events.iter().find(|e| e.event_id.as_str() == "a2");
    assert_eq!(got.get(2), a2, "events come back whole");
    assert!(
        store
            .events_until(&[], until, &[])
            .await
            .expect("none")
            .is_empty()
    );
    // Only some kinds, up to 300 days: refunds alone (bea's), then her purchase and refund.
    let got = store
        .events_until(&[cid("bea"), cid("ann")], at(300, 0), &[EventKind::Refund])
        .await
        .expect("refunds");
    let ids: Vec<&str> = got.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["b9"]);
    let got = store
        .events_until(
            &[cid("bea")],
            at(300, 0),
            &[EventKind::Purchase, EventKind::Refund],
        )
        .await
        .expect("orders");
    let ids: Vec<&str> = got.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["b2", "b9"]);
}

pub async fn large_batch_in_one_call(store: &impl Store) {
    let events: Vec<Event> = (0..10_000)
        .map(|i| {
            purchase(
                &format!("bulk{}", i % 1_000),
                &format!("e{i}"),
                at(1_000 + i / 1_000, i64::from(i % 60)),
                &format!("o{i}"),
                i64::from(i),
            )
        })
        .collect();
    let out = store.record_events(&events, now()).await.expect("record");
    assert_eq!(out.recorded, 10_000);
    assert_eq!(out.created_customers, 1_000);
    let c = store
        .get_customer(&cid("bulk7"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(c.summary.purchases.purchase_days, 10);
    assert_eq!(
        c.summary.purchases.net_revenue,
        (0..10).map(|k| 7 + 1_000 * k).sum::<i64>()
    );
    let out = store.record_events(&events, now()).await.expect("record");
    assert_eq!((out.recorded, out.duplicate_indexes.len()), (0, 10_000));
}
/// The active orders of [`history`]: o6 is wholly refunded, o2 partly; o3 has amount 0.
pub(super) fn history_orders() -> Vec<OrderDay> {
    [
        (10, 250),
        (10, 500),
        (12, 600),
        (30, 0),
        (45, 300),
        (45, 700),
    ]
    .map(|(day, net_amount)| OrderDay {
        day: Day::from_days(day),
        net_amount,
    })
    .to_vec()
}
pub(super) fn engagement_day(day: i32, activity: &str, count: i64) -> EngagementDay {
    EngagementDay {
        day: Day::from_days(day),
        activity: Arc::from(activity),
        count,
    }
}
pub(super) fn engagement(customer: &str, id: &str, when: Timestamp, activity: &str) -> Event {
    other(
        customer,
        id,
        when,
        EventData::Engagement(patron_domain::Engagement {
            activity: activity.into(),
        }),
    )
}
/// [`history`] with more engagement (names with spaces, commas, digits and non-ASCII letters;
/// instants at the edges of a UTC day), a refund whose purchase never comes, and a partial
/// refund dated before its purchase.
fn day_history(customer: &str) -> Vec<Event> {
    let mut events = history(customer);
    events.extend([
        engagement(customer, "g2", at(20, 5), "login"),
        engagement(customer, "g3", at(20, 9), "view, page"),
        engagement(customer, "g4", at(21, 0), "login"),
        engagement(customer, "g5", at(19, 86_399), "Ünïcode 名前 3 4"),
        engagement(customer, "g6", at(20, 86_399), "a"),
        engagement(customer, "g7", at(20, 0), "login"),
        refund(customer, "r9", at(70, 0), "o9", 50),
        refund(customer, "r10", at(79, 0), "o10", 100),
        purchase(customer, "p10", at(80, 0), "o10", 900),
    ]);
    events
}
pub async fn order_and_engagement_days_do_not_depend_on_arrival_order(store: &impl Store) {
    let mut want_orders = history_orders();
    want_orders.push(OrderDay {
        day: Day::from_days(80),
        net_amount: 800,
    });
    let want_engagement = vec![
        engagement_day(19, "Ünïcode 名前 3 4", 1),
        engagement_day(20, "a", 1),
        engagement_day(20, "login", 3),
        engagement_day(20, "view, page", 1),
        engagement_day(21, "login", 1),
    ];
    let mut ids = Vec::new();
    for seed in 1..=5u64 {
        let customer = format!("days{seed}");
        let mut events = day_history(&customer);
        shuffle(&mut events, seed * 104_729);
        // Batches of varying size, each repeating its first event (an in-batch duplicate).
        for chunk in events.chunks(seed as usize + 1) {
            let mut batch = chunk.to_vec();
            batch.push(chunk[0].clone());
            store.record_events(&batch, now()).await.expect("record");
        }
        // Every event again, in another order: all duplicates, nothing counted twice.
        shuffle(&mut events, seed);
        let out = store.record_events(&events, now()).await.expect("record");
        assert_eq!(out.recorded, 0, "seed {seed}");
        ids.push(cid(&customer));
    }
    // And one customer whose events arrive one per batch, newest first.
    let mut events = day_history("days-reversed");
    events.sort_by_key(|e| std::cmp::Reverse(e.occurred_at));
    for e in events {
        store.record_events(&[e], now()).await.expect("record");
    }
    ids.push(cid("days-reversed"));

    let scanned = store.scan_summaries(None, 100).await.expect("scan");
    let mut got = store.get_summaries(&ids).await.expect("get");
    got.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
    assert_eq!(got, scanned);
    assert_eq!(scanned.len(), ids.len());
    for row in &scanned {
        let id = row.customer_id.as_str();
        assert_eq!(row.orders, want_orders, "{id}");
        assert_eq!(row.engagement, want_engagement, "{id}");
        assert_eq!(
            row.engagement.iter().map(|g| g.count).sum::<i64>(),
            row.summary.totals.engagement_count,
            "{id}"
        );
        assert_eq!(
            row.orders.iter().map(|o| o.net_amount).sum::<i64>(),
            row.summary.purchases.net_revenue,
            "{id}"
        );
        assert_eq!(
            i64::try_from(row.orders.len()).expect("small"),
            row.summary.purchases.order_count,
            "{id}"
        );
    }
    // Rows read together share their activity names.
    let login = |row: &SummaryRow| Arc::clone(&row.engagement[2].activity);
    assert!(Arc::ptr_eq(&login(&scanned[0]), &login(&scanned[1])));
    assert!(Arc::ptr_eq(&login(&got[0]), &login(&got[5])));
    assert!(Arc::ptr_eq(
        &scanned[0].engagement[2].activity,
        &scanned[0].engagement[4].activity
    ));
    // Paging splits nothing: every page carries whole histories.
    let mut paged = Vec::new();
    let mut after: Option<CustomerId> = None;
    loop {
        let page = store.scan_summaries(after.as_ref(), 2).await.expect("scan");
        let Some(last) = page.last() else { break };
        after = Some(last.customer_id.clone());
        paged.extend(page);
    }
    assert_eq!(paged, scanned);
}
/// Events as a store kept them before engagement days existed, for the test that migration 0003
/// fills `engagement_days` in from stored events: engagement of two customers (some before
/// 1970, at the edges of UTC days, names that JSON escapes), and events of other kinds.
pub fn backfill_events() -> Vec<Event> {
    const DAY: i64 = 86_400_000_000;
    let mut events = Vec::new();
    for (n, (micros, activity)) in [
        (0, "login"),
        (DAY - 1, "login"),
        (DAY, "login"),
        (-1, "login"),
        (-DAY, "login"),
        (-DAY - 1, "login"),
        (at(300, 7).as_micros(), "say \"hi\" \\ there"),
        (at(300, 8).as_micros(), "say \"hi\" \\ there"),
        (at(300, 9).as_micros(), "Ünïcode, 名前"),
        (at(301, 0).as_micros(), "login"),
    ]
    .into_iter()
    .enumerate()
    {
        let when = Timestamp::from_micros(micros);
        events.push(engagement("backfill-a", &format!("g{n}"), when, activity));
        if n % 3 == 0 {
            events.push(engagement("backfill-b", &format!("g{n}"), when, activity));
        }
    }
    events.push(purchase("backfill-a", "p1", at(300, 0), "o1", 500));
    events.push(other(
        "backfill-b",
        "x1",
        at(300, 0),
        EventData::Custom(patron_domain::CustomEvent {
            name: "login".into(),
            properties: Default::default(),
        }),
    ));
    events
}
/// Asserts that the store reads the engagement days of `events` (stored as they were before
/// migration 0003, then migrated), and that newly recorded engagement adds to them.
pub async fn engagement_days_were_backfilled(store: &impl Store, events: &[Event]) {
    let want = |events: &[Event]| {
        let agg = patron_domain::summary::BatchAggregate::from_events(events.iter());
        let mut by_customer: std::collections::BTreeMap<String, Vec<EngagementDay>> =
            std::collections::BTreeMap::new();
        for (c, day, activity, count) in agg.engagement {
            by_customer
                .entry(c.into_string())
                .or_default()
                .push(EngagementDay {
                    day,
                    activity: Arc::from(activity),
                    count,
                });
        }
        for days in by_customer.values_mut() {
            days.sort();
        }
        by_customer
    };
    let got = |rows: Vec<SummaryRow>| {
        rows.into_iter()
            .filter(|r| !r.engagement.is_empty())
            .map(|r| (r.customer_id.into_string(), r.engagement))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let expected = want(events);
    assert_eq!(expected.len(), 2);
    assert_eq!(
        expected["backfill-a"].first(),
        Some(&engagement_day(-2, "login", 1))
    );
    let rows = store.scan_summaries(None, 100).await.expect("scan");
    assert_eq!(got(rows), expected);

    // Engagement recorded after the migration adds to the backfilled days.
    let later = [
        engagement("backfill-a", "new1", at(301, 5), "login"),
        engagement("backfill-b", "new1", Timestamp::from_micros(-1), "login"),
    ];
    store.record_events(&later, now()).await.expect("record");
    let all: Vec<Event> = events.iter().cloned().chain(later).collect();
    let rows = store
        .get_summaries(&[cid("backfill-a"), cid("backfill-b")])
        .await
        .expect("get");
    assert_eq!(got(rows), want(&all));
}
