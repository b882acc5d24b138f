//! The behaviour every [`Store`] must show, as async functions over a fresh, empty store.
//!
//! Each backend runs the whole suite with [`conformance_tests!`](crate::conformance_tests), so
//! SQLite and Postgres are held to exactly the same contract.

use patron_domain::{
    AttributeKey, AttributeValue, Customer, CustomerId, CustomerProfile, Date, Day, Event,
    EventData, EventId, EventKind, Gender, OrderId, OrderRow, Purchase, Refund, SupportInteraction,
    Survey, Timestamp, derive_purchase_stats,
};

use std::sync::Arc;

use patron_domain::loyalty::ledger::days_after;
use patron_domain::loyalty::tier::DayActivity;
use patron_domain::loyalty::{Entry, EntryKind, Meta, Points, Source, Wallet};

use crate::feed::{Change, ChangeKind};
use crate::loyalty::{
    Changes, Loaded, LoyaltyOrder, MemberOp, MemberRow, MutateOutcome, Needs, ProgramRecord,
    RedemptionRecord, RedemptionStatus, RewardRecord,
};
use crate::{
    Activation, EngagementDay, EventCursor, OrderDay, SegmentRecord, Store, StoreError, SummaryRow,
};

/// Generates one `#[tokio::test]` per conformance case. `$make` is an async expression
/// producing `(store, guard)`: a fresh, empty store and whatever must live as long as it (a
/// temporary directory, say).
///
/// An optional leading attribute is put on every generated test, e.g.
/// `conformance_tests!(#[ignore = "needs a server"] fresh().await)`.
#[macro_export]
macro_rules! conformance_tests {
    (@cases $attrs:tt $make:expr; $($case:ident),* $(,)?) => {
        $(
            $crate::conformance_tests!(@case $attrs $make; $case);
        )*
    };
    (@case [$($attr:tt)*] $make:expr; $case:ident) => {
        #[tokio::test]
        $($attr)*
        async fn $case() {
            let (store, _guard) = $make;
            $crate::conformance::$case(&store).await;
        }
    };
    (@all $attrs:tt $make:expr) => {
        $crate::conformance_tests!(@cases $attrs $make;
            upsert_and_get_round_trip,
            list_customers_pages_in_id_order,
            events_are_idempotent,
            unknown_customers_are_created_by_events,
            summaries_do_not_depend_on_arrival_order,
            refunds_cancel_orders_even_before_the_purchase_arrives,
            survey_and_support_aggregates,
            list_events_newest_first_with_kinds_and_cursor,
            delete_erases_everything,
            order_and_engagement_days_do_not_depend_on_arrival_order,
            summary_rows_carry_the_profile,
            large_batch_in_one_call,
            scan_summaries_pages_in_id_order,
            get_summaries_returns_the_existing_rows,
            value_models_are_versioned_listed_and_activated,
            models_stored_without_activation_stay_inactive,
            concurrent_model_writes_leave_exactly_one_active,
            tier_policy_revisions_are_checked,
            concurrent_policy_writes_on_one_revision_let_one_win,
            segments_are_created_listed_and_updated,
            segment_cycles_and_missing_dependencies_are_refused,
            segments_in_use_cannot_be_deleted,
            concurrent_segment_updates_cannot_close_a_cycle,
            loyalty_programs_and_rewards_are_stored,
            member_changes_round_trip,
            refused_member_changes_write_nothing,
            reward_stock_is_taken_once,
            events_are_applied_once,
            members_to_settle_finds_expired_and_matured_lots,
            loyalty_entries_are_listed_newest_first,
            scan_members_pages_in_key_order_with_lots_and_activity,
            segments_named_by_loyalty_cannot_be_deleted,
            concurrent_member_changes_are_serialized,
            erasure_moves_loyalty_rows_to_a_pseudonym,
            erasure_keeps_the_books_and_leaves_no_trace,
            erasure_and_member_changes_serialize,
            every_write_appends_its_changes_in_order,
            refused_writes_append_nothing,
            events_of_returns_the_events_of_one_commit,
            pruning_keeps_what_live_readers_and_consumers_have_not_passed,
            consumer_leases_admit_one_owner,
        );
    };
    // The attribute form comes first: a plain `$make:expr` would swallow `#[...]` as an
    // attribute on the expression.
    (#[$attr:meta] $make:expr) => {
        $crate::conformance_tests!(@all [#[$attr]] $make);
    };
    ($make:expr) => {
        $crate::conformance_tests!(@all [] $make);
    };
}

/// A look below the [`Store`] API at a backend's tables, for the erasure cases: this crate names
/// no driver, so each backend answers with its own SQL (implemented in its `testing` module).
#[async_trait::async_trait]
pub trait RawTables: Send + Sync {
    /// Every text column of every table of the schema (the backend's bookkeeping tables
    /// included), as (table, column), sorted.
    async fn text_columns(&self) -> crate::StoreResult<Vec<(String, String)>>;

    /// How many rows of `table` hold `needle` anywhere inside `column`'s text.
    async fn rows_containing(
        &self,
        table: &str,
        column: &str,
        needle: &str,
    ) -> crate::StoreResult<i64>;
}

/// A fixed "now" for the suite: 2026-01-01T00:00:00Z.
pub fn now() -> Timestamp {
    Day::from_days(20_454).start()
}

fn cid(s: &str) -> CustomerId {
    CustomerId::parse(s).expect("valid id")
}

fn at(day: i32, second: i64) -> Timestamp {
    Timestamp::from_micros(Day::from_days(day).start().as_micros() + second * 1_000_000)
}

/// A purchase event.
pub fn purchase(customer: &str, id: &str, when: Timestamp, order: &str, amount: i64) -> Event {
    Event {
        customer_id: cid(customer),
        event_id: EventId::parse(id).expect("valid id"),
        occurred_at: when,
        data: EventData::Purchase(Purchase {
            order_id: OrderId::parse(order).expect("valid id"),
            amount,
            item_count: 2,
            channel: "web".into(),
        }),
    }
}

fn refund(customer: &str, id: &str, when: Timestamp, order: &str, amount: i64) -> Event {
    Event {
        customer_id: cid(customer),
        event_id: EventId::parse(id).expect("valid id"),
        occurred_at: when,
        data: EventData::Refund(Refund {
            order_id: OrderId::parse(order).expect("valid id"),
            amount,
        }),
    }
}

fn other(customer: &str, id: &str, when: Timestamp, data: EventData) -> Event {
    Event {
        customer_id: cid(customer),
        event_id: EventId::parse(id).expect("valid id"),
        occurred_at: when,
        data,
    }
}

fn profile_customer(id: &str, country: &str) -> Customer {
    let mut attributes = patron_domain::Attributes::new();
    attributes.insert(
        AttributeKey::parse("plan").expect("key"),
        AttributeValue::String("pro".into()),
    );
    attributes.insert(
        AttributeKey::parse("seats").expect("key"),
        AttributeValue::Int(12),
    );
    attributes.insert(
        AttributeKey::parse("score").expect("key"),
        AttributeValue::Double(0.5),
    );
    attributes.insert(
        AttributeKey::parse("vip").expect("key"),
        AttributeValue::Bool(true),
    );
    Customer {
        customer_id: cid(id),
        profile: CustomerProfile {
            birth_date: Some(Date::new(1990, 2, 28).expect("date")),
            gender: Gender::Female,
            country: Some(country.into()),
            signed_up_at: Some(at(19_000, 42)),
            attributes,
        },
    }
}

pub async fn upsert_and_get_round_trip(store: &impl Store) {
    let c = profile_customer("alice", "DE");
    let first = store
        .upsert_customers(std::slice::from_ref(&c), now())
        .await
        .expect("upsert");
    assert_eq!(first.len(), 1);
    assert!(first[0].created);
    assert_eq!(first[0].record.customer, c);
    let got = store
        .get_customer(&c.customer_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.customer, c);
    assert_eq!(got.create_time, now());
    assert_eq!(got.update_time, Some(now()));

    // Replacing the profile keeps create_time and moves update_time.
    let later = Timestamp::from_micros(now().as_micros() + 5_000_000);
    let mut changed = profile_customer("alice", "FR");
    changed.profile.attributes.clear();
    changed.profile.birth_date = None;
    let second = store
        .upsert_customers(std::slice::from_ref(&changed), later)
        .await
        .expect("upsert");
    assert!(!second[0].created);
    let got = store
        .get_customer(&c.customer_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.customer, changed);
    assert_eq!(got.create_time, now());
    assert_eq!(got.update_time, Some(later));
    assert!(
        store
            .get_customer(&cid("nobody"))
            .await
            .expect("get")
            .is_none()
    );
}

pub async fn list_customers_pages_in_id_order(store: &impl Store) {
    let customers: Vec<Customer> = (0..25)
        .rev()
        .map(|i| profile_customer(&format!("c{i:03}"), "US"))
        .collect();
    store
        .upsert_customers(&customers, now())
        .await
        .expect("upsert");
    let mut seen = Vec::new();
    let mut after: Option<CustomerId> = None;
    loop {
        let page = store
            .list_customers(after.as_ref(), 10)
            .await
            .expect("list");
        assert!(page.len() <= 10);
        if page.is_empty() {
            break;
        }
        after = page.last().map(|r| r.customer.customer_id.clone());
        seen.extend(
            page.into_iter()
                .map(|r| r.customer.customer_id.into_string()),
        );
    }
    let want: Vec<String> = (0..25).map(|i| format!("c{i:03}")).collect();
    assert_eq!(seen, want);
}

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

pub async fn unknown_customers_are_created_by_events(store: &impl Store) {
    store
        .upsert_customers(&[profile_customer("known", "US")], now())
        .await
        .expect("upsert");
    let out = store
        .record_events(
            &[
                purchase("known", "k1", at(10, 0), "o1", 1),
                purchase("new1", "n1", at(10, 0), "o1", 1),
                purchase("new2", "n2", at(10, 0), "o1", 1),
                purchase("new2", "n3", at(11, 0), "o2", 1),
            ],
            now(),
        )
        .await
        .expect("record");
    assert_eq!(out.created_customers, 2);
    let new = store
        .get_customer(&cid("new2"))
        .await
        .expect("get")
        .expect("created");
    assert_eq!(new.customer.profile, CustomerProfile::default());
    assert_eq!(new.update_time, None);
    assert_eq!(new.create_time, now());
    // An upsert of an event-created customer keeps its summary.
    store
        .upsert_customers(&[profile_customer("new2", "JP")], now())
        .await
        .expect("upsert");
    let new = store
        .get_customer(&cid("new2"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(new.summary.purchases.purchase_days, 2);
    assert_eq!(new.customer.profile.country.as_deref(), Some("JP"));
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

fn history(customer: &str) -> Vec<Event> {
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

fn nps_survey(nps: Option<u8>) -> EventData {
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

pub async fn delete_erases_everything(store: &impl Store) {
    store
        .upsert_customers(&[profile_customer("gone", "US")], now())
        .await
        .expect("upsert");
    store
        .record_events(&history("gone"), now())
        .await
        .expect("record");
    store
        .record_events(&history("stays"), now())
        .await
        .expect("record");
    assert_eq!(
        store.delete_customer(&cid("gone")).await.expect("delete"),
        Some(11)
    );
    assert!(
        store
            .get_customer(&cid("gone"))
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        store
            .list_events(&cid("gone"), &[], None, 100)
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        store.delete_customer(&cid("gone")).await.expect("delete"),
        None
    );
    // Other customers are untouched.
    let stays = store
        .get_customer(&cid("stays"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(stays.summary.totals.event_count, 11);
    // After erasure the same events are new again, with a fresh summary.
    let out = store
        .record_events(&history("gone"), now())
        .await
        .expect("record");
    assert_eq!(out.recorded, 11);
    assert_eq!(out.created_customers, 1);
    let again = store
        .get_customer(&cid("gone"))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(again.summary, stays.summary);
    // Its order and engagement days were erased too: the same history counts once again.
    let mut rows = store
        .get_summaries(&[cid("gone"), cid("stays")])
        .await
        .expect("get");
    rows.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
    let [gone, stays] = &rows[..] else {
        panic!("two rows, got {rows:?}")
    };
    assert_eq!(gone.orders, stays.orders);
    assert_eq!(gone.orders.len(), 6);
    assert_eq!(gone.engagement, stays.engagement);
    assert_eq!(gone.engagement, [engagement_day(20, "login", 1)]);
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

/// Asserts that `row` is what [`Store::get_customer`] says of its customer.
async fn assert_row_matches_customer(store: &impl Store, row: &SummaryRow) {
    let record = store
        .get_customer(&row.customer_id)
        .await
        .expect("get")
        .expect("exists");
    let id = row.customer_id.as_str();
    assert_eq!(
        row.signed_up_at, record.customer.profile.signed_up_at,
        "{id}"
    );
    assert_eq!(row.birth_date, record.customer.profile.birth_date, "{id}");
    assert_eq!(row.gender, record.customer.profile.gender, "{id}");
    assert_eq!(row.country, record.customer.profile.country, "{id}");
    assert_eq!(row.attributes, record.customer.profile.attributes, "{id}");
    assert_eq!(row.create_time, record.create_time, "{id}");
    assert_eq!(row.summary, record.summary, "{id}");
}

/// 30 customers: `sum00`…`sum19` upserted with a profile (the odd ones also get events), and
/// `sum20`…`sum29` created by events. Returns their ids in order.
async fn summary_fixture(store: &impl Store) -> Vec<CustomerId> {
    let mut upserted: Vec<Customer> = (0..20)
        .map(|i| profile_customer(&format!("sum{i:02}"), "US"))
        .collect();
    upserted[4].profile.birth_date = None;
    upserted[4].profile.signed_up_at = None;
    store
        .upsert_customers(&upserted, now())
        .await
        .expect("upsert");
    let mut events = Vec::new();
    for i in (1..30).filter(|i| i % 2 == 1 || *i >= 20) {
        let c = format!("sum{i:02}");
        events.extend(history(&c));
        events.push(other(
            &c,
            "nps",
            at(70, i64::from(i)),
            nps_survey(Some(u8::try_from(i % 11).expect("small"))),
        ));
    }
    let later = Timestamp::from_micros(now().as_micros() + 1_000_000);
    store.record_events(&events, later).await.expect("record");
    (0..30).map(|i| cid(&format!("sum{i:02}"))).collect()
}

pub async fn scan_summaries_pages_in_id_order(store: &impl Store) {
    assert!(
        store
            .scan_summaries(None, 10)
            .await
            .expect("scan")
            .is_empty()
    );
    let ids = summary_fixture(store).await;
    let mut seen = Vec::new();
    let mut after: Option<CustomerId> = None;
    loop {
        let page = store.scan_summaries(after.as_ref(), 7).await.expect("scan");
        assert!(page.len() <= 7);
        if page.is_empty() {
            break;
        }
        after = page.last().map(|r| r.customer_id.clone());
        seen.extend(page);
    }
    let seen_ids: Vec<CustomerId> = seen.iter().map(|r| r.customer_id.clone()).collect();
    assert_eq!(seen_ids, ids);
    for row in &seen {
        assert_row_matches_customer(store, row).await;
    }
    // Spot checks: a customer without events has an empty summary; one with a full profile and
    // history has both.
    assert_eq!(seen[0].summary, patron_domain::CustomerSummary::default());
    assert_eq!(
        seen[0].birth_date,
        Some(Date::new(1990, 2, 28).expect("date"))
    );
    assert_eq!(seen[4].signed_up_at, None);
    assert_eq!(seen[3].summary.purchases.purchase_days, 4);
    assert_eq!(seen[3].summary.totals.last_nps, Some(3));
    assert_eq!(seen[25].signed_up_at, None);
    assert_eq!(seen[25].summary.totals.event_count, 12);
    // The profile and the day-level history.
    assert_eq!(
        (seen[3].gender, seen[3].country.as_deref()),
        (Gender::Female, Some("US"))
    );
    assert_eq!(
        seen[3].attributes,
        profile_customer("x", "US").profile.attributes
    );
    assert_eq!(seen[3].orders, history_orders());
    assert_eq!(seen[3].engagement, [engagement_day(20, "login", 1)]);
    assert!(seen[0].orders.is_empty() && seen[0].engagement.is_empty());
    assert_eq!(
        (seen[25].gender, seen[25].country.as_deref()),
        (Gender::Unspecified, None)
    );
    assert!(seen[25].attributes.is_empty());
    assert_eq!(seen[25].orders, history_orders());

    // One large page holds everything; a cursor past the end gives nothing.
    let all = store.scan_summaries(None, 10_000).await.expect("scan");
    assert_eq!(all, seen);
    let from_middle = store
        .scan_summaries(Some(&cid("sum14")), 3)
        .await
        .expect("scan");
    assert_eq!(from_middle, seen[15..18].to_vec());
    assert!(
        store
            .scan_summaries(Some(&cid("zzz")), 10)
            .await
            .expect("scan")
            .is_empty()
    );
}

pub async fn get_summaries_returns_the_existing_rows(store: &impl Store) {
    assert!(store.get_summaries(&[]).await.expect("get").is_empty());
    let ids = summary_fixture(store).await;
    // Some existing ids (one twice), some unknown.
    let asked = vec![
        ids[27].clone(),
        cid("unknown"),
        ids[3].clone(),
        ids[0].clone(),
        ids[3].clone(),
        cid("sum99"),
    ];
    let mut rows = store.get_summaries(&asked).await.expect("get");
    rows.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
    let got: Vec<&str> = rows.iter().map(|r| r.customer_id.as_str()).collect();
    assert_eq!(got, ["sum00", "sum03", "sum27"]);
    for row in &rows {
        assert_row_matches_customer(store, row).await;
    }
    // More ids than one statement takes: every existing customer is found once.
    let mut many: Vec<CustomerId> = (0..25_000).map(|i| cid(&format!("nobody{i}"))).collect();
    for (i, id) in ids.iter().enumerate() {
        many.insert(i * 800, id.clone());
    }
    let mut rows = store.get_summaries(&many).await.expect("get");
    rows.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
    let scanned = store.scan_summaries(None, 100).await.expect("scan");
    assert_eq!(rows, scanned);
}

pub async fn value_models_are_versioned_listed_and_activated(store: &impl Store) {
    assert_eq!(store.active_value_model().await.expect("active"), None);
    assert!(
        store
            .list_value_models(None, 10)
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(store.get_value_model(1).await.expect("get"), None);
    assert_eq!(store.activate_value_model(1).await.expect("activate"), None);

    let when = |v: i64| Timestamp::from_micros(now().as_micros() + v * 1_000_000);
    let body = |v: i64| format!("{{\"model\": {v},  \"note\": \"kept byte for byte\"}}");
    // The first model is activated even when not asked to: there must be an active one.
    let m1 = store
        .insert_value_model(&body(1), when(1), Activation::IfNoneActive)
        .await
        .expect("insert");
    assert_eq!(
        m1,
        crate::StoredModel {
            version: 1,
            created_at: when(1),
            active: true,
            body: body(1),
        }
    );
    let m2 = store
        .insert_value_model(&body(2), when(2), Activation::IfNoneActive)
        .await
        .expect("insert");
    assert_eq!((m2.version, m2.active), (2, false));
    assert_eq!(store.active_value_model().await.expect("active"), Some(m1));
    let m3 = store
        .insert_value_model(&body(3), when(3), Activation::Always)
        .await
        .expect("insert");
    assert_eq!((m3.version, m3.active), (3, true));
    assert_eq!(
        store.active_value_model().await.expect("active"),
        Some(m3.clone())
    );
    for v in 4..=7 {
        store
            .insert_value_model(&body(v), when(v), Activation::IfNoneActive)
            .await
            .expect("insert");
    }
    let actives = |models: &[crate::StoredModel]| -> Vec<i64> {
        models
            .iter()
            .filter(|m| m.active)
            .map(|m| m.version)
            .collect()
    };

    // Newest first, in pages.
    let mut versions = Vec::new();
    let mut before = None;
    loop {
        let page = store.list_value_models(before, 3).await.expect("list");
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        before = Some(last.version);
        versions.extend(page.iter().map(|m| m.version));
    }
    assert_eq!(versions, [7, 6, 5, 4, 3, 2, 1]);
    let all = store.list_value_models(None, 100).await.expect("list");
    assert_eq!(actives(&all), [3]);
    assert_eq!(
        store.list_value_models(Some(3), 100).await.expect("list"),
        all[5..].to_vec()
    );
    assert!(
        store
            .list_value_models(Some(1), 100)
            .await
            .expect("list")
            .is_empty()
    );
    let got = store
        .get_value_model(5)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(
        (got.body, got.created_at, got.active),
        (body(5), when(5), false)
    );

    // Activation moves the single active flag; an unknown version changes nothing.
    let a5 = store
        .activate_value_model(5)
        .await
        .expect("activate")
        .expect("exists");
    assert_eq!((a5.version, a5.active, a5.body), (5, true, body(5)));
    assert_eq!(
        store.activate_value_model(99).await.expect("activate"),
        None
    );
    assert_eq!(store.activate_value_model(0).await.expect("activate"), None);
    let again = store
        .activate_value_model(5)
        .await
        .expect("activate")
        .expect("exists");
    assert!(again.active);
    let all = store.list_value_models(None, 100).await.expect("list");
    assert_eq!(actives(&all), [5]);
    assert_eq!(
        store
            .active_value_model()
            .await
            .expect("active")
            .map(|m| m.version),
        Some(5)
    );
    store.activate_value_model(1).await.expect("activate");
    let all = store.list_value_models(None, 100).await.expect("list");
    assert_eq!(actives(&all), [1]);
}

pub async fn models_stored_without_activation_stay_inactive(store: &impl Store) {
    // Even the first model stays inactive when told to: nothing serves until one is activated.
    let m1 = store
        .insert_value_model("{\"m\":1}", now(), Activation::Never)
        .await
        .expect("insert");
    assert_eq!((m1.version, m1.active), (1, false));
    assert_eq!(store.active_value_model().await.expect("active"), None);
    let m2 = store
        .insert_value_model("{\"m\":2}", now(), Activation::IfNoneActive)
        .await
        .expect("insert");
    assert_eq!((m2.version, m2.active), (2, true));
    let m3 = store
        .insert_value_model("{\"m\":3}", now(), Activation::Never)
        .await
        .expect("insert");
    assert_eq!((m3.version, m3.active), (3, false));
    assert_eq!(
        store
            .active_value_model()
            .await
            .expect("active")
            .map(|m| m.version),
        Some(2)
    );
    let m1 = store
        .activate_value_model(1)
        .await
        .expect("activate")
        .expect("exists");
    assert!(m1.active);
    let all = store.list_value_models(None, 10).await.expect("list");
    let active: Vec<i64> = all.iter().filter(|m| m.active).map(|m| m.version).collect();
    assert_eq!(active, [1]);
}

pub async fn concurrent_model_writes_leave_exactly_one_active(store: &impl Store) {
    // Inserts racing with activation, all at once (on a pool these overlap in the database).
    let inserts = (0..8).map(|i| {
        store.insert_value_model(
            "{}",
            now(),
            if i % 3 != 1 {
                Activation::Always
            } else {
                Activation::IfNoneActive
            },
        )
    });
    let inserted: Vec<crate::StoredModel> = futures::future::join_all(inserts)
        .await
        .into_iter()
        .map(|r| r.expect("concurrent insert"))
        .collect();
    let mut versions: Vec<i64> = inserted.iter().map(|m| m.version).collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=8).collect::<Vec<_>>(), "distinct versions");
    let all = store.list_value_models(None, 100).await.expect("list");
    assert_eq!(all.iter().filter(|m| m.active).count(), 1);

    let mixed = (1..=8).map(|v| async move {
        if v % 2 == 0 {
            store
                .activate_value_model(v)
                .await
                .map(|m| m.map(|m| m.version))
        } else {
            store
                .insert_value_model("{}", now(), Activation::Always)
                .await
                .map(|m| Some(m.version))
        }
    });
    for r in futures::future::join_all(mixed).await {
        assert!(r.expect("concurrent write").is_some());
    }
    let all = store.list_value_models(None, 100).await.expect("list");
    assert_eq!(all.len(), 12);
    let active: Vec<i64> = all.iter().filter(|m| m.active).map(|m| m.version).collect();
    assert_eq!(active.len(), 1, "exactly one active: {active:?}");
    assert_eq!(
        store
            .active_value_model()
            .await
            .expect("active")
            .map(|m| m.version),
        active.first().copied()
    );
}

pub async fn tier_policy_revisions_are_checked(store: &impl Store) {
    assert_eq!(store.get_tier_policy().await.expect("get"), None);
    let when = |s: i64| Timestamp::from_micros(now().as_micros() + s * 1_000_000);
    let mismatch = |r: crate::StoreResult<crate::StoredPolicy>| {
        assert!(
            matches!(r, Err(StoreError::PreconditionFailed(_))),
            "expected a revision mismatch, got {r:?}"
        );
    };
    // Nothing stored is revision 0.
    mismatch(store.put_tier_policy("{\"a\":1}", when(1), Some(1)).await);
    assert_eq!(store.get_tier_policy().await.expect("get"), None);
    let p1 = store
        .put_tier_policy("{\"a\":1}", when(1), Some(0))
        .await
        .expect("put");
    assert_eq!(
        p1,
        crate::StoredPolicy {
            revision: 1,
            updated_at: when(1),
            body: "{\"a\":1}".into(),
        }
    );
    assert_eq!(store.get_tier_policy().await.expect("get"), Some(p1));
    // Unconditional.
    let p2 = store
        .put_tier_policy("{\"a\": 2}", when(2), None)
        .await
        .expect("put");
    assert_eq!(p2.revision, 2);
    // Stale and future revisions both fail and change nothing.
    mismatch(
        store
            .put_tier_policy("{\"stale\":1}", when(3), Some(1))
            .await,
    );
    mismatch(
        store
            .put_tier_policy("{\"stale\":1}", when(3), Some(0))
            .await,
    );
    mismatch(
        store
            .put_tier_policy("{\"stale\":1}", when(3), Some(7))
            .await,
    );
    assert_eq!(store.get_tier_policy().await.expect("get"), Some(p2));
    let p3 = store
        .put_tier_policy("{\"a\":3}", when(4), Some(2))
        .await
        .expect("put");
    assert_eq!((p3.revision, p3.updated_at), (3, when(4)));
    assert_eq!(store.get_tier_policy().await.expect("get"), Some(p3));
}

pub async fn concurrent_policy_writes_on_one_revision_let_one_win(store: &impl Store) {
    for expected in [0, 1] {
        let bodies: Vec<String> = (0..6).map(|i| format!("{{\"writer\":{i}}}")).collect();
        let writes = bodies
            .iter()
            .map(|b| store.put_tier_policy(b, now(), Some(expected)));
        let results = futures::future::join_all(writes).await;
        let mut winners = Vec::new();
        for r in results {
            match r {
                Ok(p) => winners.push(p),
                Err(StoreError::PreconditionFailed(_)) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "one write wins revision {expected}");
        assert_eq!(winners[0].revision, expected + 1);
        assert_eq!(store.get_tier_policy().await.expect("get"), winners.pop());
    }
}

/// The active orders of [`history`]: o6 is wholly refunded, o2 partly; o3 has amount 0.
fn history_orders() -> Vec<OrderDay> {
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

fn engagement_day(day: i32, activity: &str, count: i64) -> EngagementDay {
    EngagementDay {
        day: Day::from_days(day),
        activity: Arc::from(activity),
        count,
    }
}

fn engagement(customer: &str, id: &str, when: Timestamp, activity: &str) -> Event {
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

pub async fn summary_rows_carry_the_profile(store: &impl Store) {
    let mut plain = profile_customer("prof-plain", "JP");
    plain.profile.attributes.clear();
    plain.profile.gender = Gender::Undisclosed;
    let full = profile_customer("prof-full", "DE");
    store
        .upsert_customers(&[full.clone(), plain.clone()], now())
        .await
        .expect("upsert");
    store
        .record_events(
            &[
                purchase("prof-full", "p1", at(30, 0), "o1", 700),
                engagement("prof-full", "g1", at(31, 0), "search"),
                engagement("prof-events", "g1", at(31, 0), "search"),
            ],
            now(),
        )
        .await
        .expect("record");
    let ids = [cid("prof-events"), cid("prof-full"), cid("prof-plain")];
    let scanned = store.scan_summaries(None, 10).await.expect("scan");
    let mut got = store.get_summaries(&ids).await.expect("get");
    got.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
    assert_eq!(got, scanned);
    let [events_only, with_full, with_plain] = &scanned[..] else {
        panic!("three rows, got {scanned:?}")
    };
    for (row, c) in [(with_full, &full), (with_plain, &plain)] {
        assert_eq!(row.customer_id, c.customer_id);
        assert_eq!(row.gender, c.profile.gender);
        assert_eq!(row.country, c.profile.country);
        assert_eq!(row.attributes, c.profile.attributes);
        assert_eq!(row.birth_date, c.profile.birth_date);
        assert_eq!(row.signed_up_at, c.profile.signed_up_at);
    }
    assert_eq!(with_full.attributes.len(), 4);
    assert_eq!(
        with_full.orders,
        [OrderDay {
            day: Day::from_days(30),
            net_amount: 700
        }]
    );
    assert_eq!(with_full.engagement, [engagement_day(31, "search", 1)]);
    assert!(with_plain.orders.is_empty() && with_plain.engagement.is_empty());
    assert_eq!(events_only.gender, Gender::Unspecified);
    assert_eq!(events_only.country, None);
    assert!(events_only.attributes.is_empty());
    assert_eq!(events_only.engagement, [engagement_day(31, "search", 1)]);
    for row in &scanned {
        assert_row_matches_customer(store, row).await;
    }

    // A replaced profile reads back replaced.
    let mut changed = full.clone();
    changed.profile.gender = Gender::Other;
    changed.profile.country = None;
    changed.profile.attributes.clear();
    store
        .upsert_customers(&[changed.clone()], now())
        .await
        .expect("upsert");
    let rows = store.get_summaries(&[cid("prof-full")]).await.expect("get");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (&rows[0].gender, &rows[0].country, &rows[0].attributes),
        (
            &changed.profile.gender,
            &changed.profile.country,
            &changed.profile.attributes
        )
    );
    assert_eq!(rows[0].orders, with_full.orders);
}

/// A segment definition written at `now() + t` seconds.
fn segment(id: &str, depends_on: &[&str], t: i64) -> SegmentRecord {
    let when = Timestamp::from_micros(now().as_micros() + t * 1_000_000);
    SegmentRecord {
        segment_id: id.into(),
        display_name: format!("Segment {id}"),
        description: format!("Customers of {id}, version {t}"),
        rule: depends_on
            .iter()
            .map(|d| format!("in_segment(\"{d}\")"))
            .chain([format!("customer.orders.count(30) > {t}")])
            .collect::<Vec<_>>()
            .join(" && "),
        depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        revision: 0,
        create_time: when,
        update_time: when,
    }
}

/// Every stored segment, in id order.
async fn all_segments(store: &impl Store) -> Vec<SegmentRecord> {
    store.list_segments(None, 1_000).await.expect("list")
}

pub async fn segments_are_created_listed_and_updated(store: &impl Store) {
    assert_eq!(store.get_segment("a").await.expect("get"), None);
    assert!(all_segments(store).await.is_empty());

    let a = store
        .create_segment(&segment("a", &[], 1))
        .await
        .expect("create");
    assert_eq!(
        a,
        SegmentRecord {
            revision: 1,
            ..segment("a", &[], 1)
        }
    );
    assert_eq!(store.get_segment("a").await.expect("get"), Some(a.clone()));
    let b = store
        .create_segment(&segment("b", &["a"], 2))
        .await
        .expect("create");
    assert_eq!(
        (b.revision, b.depends_on.clone()),
        (1, vec!["a".to_owned()])
    );
    // Dependencies are stored sorted, without repeats.
    let c = store
        .create_segment(&segment("c", &["b", "a", "b"], 3))
        .await
        .expect("create");
    assert_eq!(c.depends_on, ["a", "b"]);
    assert_eq!(store.get_segment("c").await.expect("get"), Some(c.clone()));

    // A taken id is refused and nothing changes.
    let r = store.create_segment(&segment("a", &["b"], 9)).await;
    assert!(matches!(r, Err(StoreError::AlreadyExists(_))), "{r:?}");
    assert_eq!(all_segments(store).await, [a.clone(), b.clone(), c.clone()]);

    // In id order, in pages.
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_segments(after.as_deref(), 2)
            .await
            .expect("list");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.segment_id.clone());
        ids.extend(page.into_iter().map(|s| s.segment_id));
    }
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(
        store.list_segments(Some("a"), 10).await.expect("list"),
        [b.clone(), c.clone()]
    );
    assert!(
        store
            .list_segments(Some("c"), 10)
            .await
            .expect("list")
            .is_empty()
    );

    // Updates: the next revision, create_time kept, the given revision and create_time ignored.
    let mut next = segment("b", &[], 4);
    next.revision = 42;
    next.create_time = Timestamp::from_micros(0);
    let b2 = store
        .update_segment(&next, Some(1))
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(
        b2,
        SegmentRecord {
            revision: 2,
            create_time: b.create_time,
            ..segment("b", &[], 4)
        }
    );
    assert_eq!(store.get_segment("b").await.expect("get"), Some(b2.clone()));
    // A stale or future revision is refused and changes nothing.
    for expected in [1, 3] {
        let r = store
            .update_segment(&segment("b", &["a"], 5), Some(expected))
            .await;
        assert!(matches!(r, Err(StoreError::PreconditionFailed(_))), "{r:?}");
    }
    assert_eq!(store.get_segment("b").await.expect("get"), Some(b2.clone()));
    // Unconditional.
    let b3 = store
        .update_segment(&segment("b", &["a"], 6), None)
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(
        (b3.revision, b3.depends_on.clone()),
        (3, vec!["a".to_owned()])
    );
    assert_eq!(store.get_segment("b").await.expect("get"), Some(b3.clone()));
    // No such segment.
    assert_eq!(
        store
            .update_segment(&segment("zz", &[], 7), None)
            .await
            .expect("update"),
        None
    );
    assert_eq!(store.get_segment("zz").await.expect("get"), None);
    assert_eq!(all_segments(store).await, [a, b3, c]);
}

pub async fn segment_cycles_and_missing_dependencies_are_refused(store: &impl Store) {
    for s in [
        segment("a", &[], 1),
        segment("b", &["a"], 2),
        segment("c", &["b"], 3),
    ] {
        store.create_segment(&s).await.expect("create");
    }
    let before = all_segments(store).await;
    let cycle = |r: crate::StoreResult<Option<SegmentRecord>>, want: &[&str]| match r {
        Err(StoreError::SegmentCycle(path)) => assert_eq!(path, want),
        other => panic!("expected the cycle {want:?}, got {other:?}"),
    };
    cycle(
        store.update_segment(&segment("a", &["c"], 4), None).await,
        &["a", "c", "b", "a"],
    );
    cycle(
        store
            .update_segment(&segment("a", &["b"], 4), Some(1))
            .await,
        &["a", "b", "a"],
    );
    cycle(
        store.update_segment(&segment("b", &["b"], 4), None).await,
        &["b", "b"],
    );
    let r = store.create_segment(&segment("x", &["x"], 4)).await;
    match r {
        Err(StoreError::SegmentCycle(path)) => assert_eq!(path, ["x", "x"]),
        other => panic!("expected a self-dependency cycle, got {other:?}"),
    }
    let r = store
        .create_segment(&segment("y", &["a", "missing"], 4))
        .await;
    match r {
        Err(StoreError::MissingDependency(id)) => assert_eq!(id, "missing"),
        other => panic!("expected a missing dependency, got {other:?}"),
    }
    let r = store
        .update_segment(&segment("b", &["a", "gone"], 4), Some(1))
        .await;
    match r {
        Err(StoreError::MissingDependency(id)) => assert_eq!(id, "gone"),
        other => panic!("expected a missing dependency, got {other:?}"),
    }
    assert_eq!(all_segments(store).await, before, "nothing changed");

    // Shapes without a circle are fine: a diamond, then a reversed chain.
    let c = store
        .update_segment(&segment("c", &["a", "b"], 5), Some(1))
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(c.depends_on, ["a", "b"]);
    store
        .update_segment(&segment("b", &[], 6), None)
        .await
        .expect("update");
    store
        .update_segment(&segment("c", &[], 6), None)
        .await
        .expect("update");
    let a = store
        .update_segment(&segment("a", &["b", "c"], 7), None)
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(
        (a.revision, a.depends_on),
        (2, vec!["b".to_owned(), "c".to_owned()])
    );
    cycle(
        store.update_segment(&segment("c", &["a"], 8), None).await,
        &["c", "a", "c"],
    );
}

pub async fn segments_in_use_cannot_be_deleted(store: &impl Store) {
    for s in [
        segment("a", &[], 1),
        segment("b", &["a"], 2),
        segment("c", &["a"], 3),
    ] {
        store.create_segment(&s).await.expect("create");
    }
    let in_use = |r: crate::StoreResult<bool>, want: &[&str]| match r {
        Err(StoreError::InUse(ids)) => assert_eq!(ids, want),
        other => panic!("expected in use by {want:?}, got {other:?}"),
    };
    let before = all_segments(store).await;
    in_use(store.delete_segment("a").await, &["b", "c"]);
    assert_eq!(all_segments(store).await, before, "nothing changed");
    assert!(!store.delete_segment("nope").await.expect("delete"));

    // Once b no longer depends on a, only c holds it.
    store
        .update_segment(&segment("b", &[], 4), Some(1))
        .await
        .expect("update")
        .expect("exists");
    in_use(store.delete_segment("a").await, &["c"]);
    // c goes, with its dependency rows; then a can go.
    assert!(store.delete_segment("c").await.expect("delete"));
    assert!(store.delete_segment("a").await.expect("delete"));
    assert_eq!(store.get_segment("a").await.expect("get"), None);
    assert_eq!(store.get_segment("c").await.expect("get"), None);
    assert!(!store.delete_segment("a").await.expect("delete"));
    let ids: Vec<String> = all_segments(store)
        .await
        .into_iter()
        .map(|s| s.segment_id)
        .collect();
    assert_eq!(ids, ["b"]);
    // A new segment under a deleted one's id starts afresh.
    let a = store
        .create_segment(&segment("a", &["b"], 5))
        .await
        .expect("create");
    assert_eq!((a.revision, a.depends_on), (1, vec!["b".to_owned()]));
    in_use(store.delete_segment("b").await, &["a"]);
}

pub async fn concurrent_segment_updates_cannot_close_a_cycle(store: &impl Store) {
    // Six segments each made to depend on the next, all at once: whatever the order, the write
    // that would close the ring is refused, every other one succeeds.
    const N: usize = 6;
    let id = |i: usize| format!("ring{}", i % N);
    for i in 0..N {
        store
            .create_segment(&segment(&id(i), &[], 1))
            .await
            .expect("create");
    }
    let updates: Vec<SegmentRecord> = (0..N)
        .map(|i| segment(&id(i), &[id(i + 1).as_str()], 2))
        .collect();
    let results =
        futures::future::join_all(updates.iter().map(|s| store.update_segment(s, Some(1)))).await;
    let mut refused = 0;
    for r in results {
        match r {
            Ok(Some(s)) => assert_eq!(s.revision, 2),
            Err(StoreError::SegmentCycle(path)) => {
                assert_eq!(path.len(), N + 1, "{path:?}");
                refused += 1;
            }
            other => panic!("unexpected result: {other:?}"),
        }
    }
    assert_eq!(refused, 1);
    let stored = all_segments(store).await;
    let edges: Vec<(String, String)> = stored
        .iter()
        .flat_map(|s| {
            s.depends_on
                .iter()
                .map(move |d| (s.segment_id.clone(), d.clone()))
        })
        .collect();
    assert_eq!(edges.len(), N - 1);
    for s in &stored {
        assert_eq!(
            crate::find_cycle(&edges, &s.segment_id, &s.depends_on),
            None
        );
    }
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

// Loyalty: programs, rewards and members' points.

/// What a suite operation decides from what was loaded.
type Decide = dyn Fn(&Loaded, Timestamp) -> Result<Changes, String> + Send + Sync;

/// A [`MemberOp`] made of its needs and a closure: the suite's stand-in for patron-loyalty's
/// operations.
struct Op {
    needs: Needs,
    decide: Box<Decide>,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op").field("needs", &self.needs).finish()
    }
}

impl MemberOp for Op {
    fn needs(&self) -> Needs {
        self.needs.clone()
    }

    fn apply(&self, loaded: &Loaded, now: Timestamp) -> Result<Changes, String> {
        (self.decide)(loaded, now)
    }
}

fn op(
    needs: Needs,
    decide: impl Fn(&Loaded, Timestamp) -> Result<Changes, String> + Send + Sync + 'static,
) -> Op {
    Op {
        needs,
        decide: Box::new(decide),
    }
}

/// `days` days after the suite's now.
fn later(days: i64) -> Timestamp {
    days_after(now(), days)
}

/// The loaded member, to change; refused when not a member.
fn member_of(loaded: &Loaded) -> Result<MemberRow, String> {
    loaded
        .member
        .clone()
        .ok_or_else(|| "not a member".to_owned())
}

fn meta(now: Timestamp, source: Source) -> Meta {
    Meta::system(now, source, "conformance")
}

/// Makes the customer a member (refused if they are one).
fn enrol() -> Op {
    op(Needs::default(), |loaded, now| {
        if loaded.member.is_some() {
            return Err("already a member".into());
        }
        Ok(Changes {
            member: Some(MemberRow {
                enrolled_at: now,
                wallet: Wallet::new(),
                first_purchase_done: false,
                activity: Vec::new(),
            }),
            ..Changes::default()
        })
    })
}

/// Credits `points`, pending for `pending_days` (EARN when 0, else PENDING), expiring after
/// `expiry_days` (never when `None`).
fn credit(points: Points, pending_days: i64, expiry_days: Option<i64>) -> Op {
    op(Needs::default(), move |loaded, now| {
        let mut m = member_of(loaded)?;
        let kind = if pending_days > 0 {
            EntryKind::Pending
        } else {
            EntryKind::Earn
        };
        m.wallet
            .credit(
                kind,
                points,
                days_after(now, pending_days),
                expiry_days.map(|d| days_after(now, d)),
                meta(now, Source::default()),
            )
            .map_err(|e| e.to_string())?;
        Ok(Changes {
            member: Some(m),
            ..Changes::default()
        })
    })
}

/// Spends `points` available points (refused when fewer are available).
fn debit(points: Points) -> Op {
    op(Needs::default(), move |loaded, now| {
        let mut m = member_of(loaded)?;
        m.wallet
            .debit(EntryKind::Adjust, points, meta(now, Source::default()))
            .map_err(|e| e.to_string())?;
        Ok(Changes {
            member: Some(m),
            ..Changes::default()
        })
    })
}

/// Settles expiry and activation.
fn settle() -> Op {
    op(Needs::default(), |loaded, now| {
        let mut m = member_of(loaded)?;
        m.wallet.settle(now);
        Ok(Changes {
            member: Some(m),
            ..Changes::default()
        })
    })
}

/// Redeems `reward` for `cost` points as `redemption` (request `request`), taking a unit of
/// stock; refused if the request was seen.
fn redeem(reward: &str, request: &str, redemption: &str, cost: Points) -> Op {
    let (reward, request, redemption) =
        (reward.to_owned(), request.to_owned(), redemption.to_owned());
    let needs = Needs {
        reward_id: Some(reward.clone()),
        request_id: Some(request.clone()),
        ..Needs::default()
    };
    op(needs, move |loaded, now| {
        if loaded.redemption.is_some() {
            return Err("request already seen".into());
        }
        let mut m = member_of(loaded)?;
        let source = Source {
            redemption_id: Some(redemption.clone()),
            ..Source::default()
        };
        let lots = m
            .wallet
            .debit(EntryKind::Redeem, cost, meta(now, source))
            .map_err(|e| e.to_string())?;
        Ok(Changes {
            member: Some(m),
            redemption: Some(RedemptionRecord {
                redemption_id: redemption.clone(),
                request_id: request.clone(),
                reward_id: reward.clone(),
                cost,
                lots,
                fingerprint: format!("{reward}/{cost}"),
                status: RedemptionStatus::Completed,
                created_at: now,
                cancelled_at: None,
            }),
            take_stock: true,
            ..Changes::default()
        })
    })
}

/// Cancels a completed redemption: its points back in their lots, its unit back in stock.
fn cancel(reward: &str, redemption: &str) -> Op {
    let needs = Needs {
        reward_id: Some(reward.to_owned()),
        redemption_id: Some(redemption.to_owned()),
        ..Needs::default()
    };
    op(needs, |loaded, now| {
        let r = loaded.redemption.clone().ok_or("no such redemption")?;
        if r.status != RedemptionStatus::Completed {
            return Err("not completed".into());
        }
        let mut m = member_of(loaded)?;
        let source = Source {
            redemption_id: Some(r.redemption_id.clone()),
            ..Source::default()
        };
        m.wallet.restore(&r.lots, meta(now, source));
        Ok(Changes {
            member: Some(m),
            redemption: Some(RedemptionRecord {
                status: RedemptionStatus::Cancelled,
                cancelled_at: Some(now),
                ..r
            }),
            return_stock: true,
            ..Changes::default()
        })
    })
}

/// Loads `needs` and writes nothing.
fn look(needs: Needs) -> Op {
    op(needs, |_, _| Ok(Changes::default()))
}

async fn mutate(
    store: &impl Store,
    program: &str,
    customer: &str,
    when: Timestamp,
    op: &Op,
) -> MutateOutcome {
    store
        .mutate_member(program, &cid(customer), when, op)
        .await
        .expect("mutate_member")
}

/// The loaded state and changes of an applied operation.
fn applied(outcome: MutateOutcome) -> (Loaded, Changes) {
    match outcome {
        MutateOutcome::Applied { loaded, changes } => (loaded, changes),
        other => panic!("expected Applied, got {other:?}"),
    }
}

/// What [`look`] loads.
async fn load(store: &impl Store, program: &str, customer: &str, needs: Needs) -> Loaded {
    applied(mutate(store, program, customer, now(), &look(needs)).await).0
}

async fn member(store: &impl Store, program: &str, customer: &str) -> Option<MemberRow> {
    store
        .get_member(program, &cid(customer))
        .await
        .expect("get_member")
}

async fn all_entries(store: &impl Store, program: &str, customer: &str) -> Vec<Entry> {
    store
        .list_entries(program, &cid(customer), None, 10_000)
        .await
        .expect("list_entries")
}

/// A program written at `now() + t` seconds.
fn program(id: &str, segment: Option<&str>, t: i64) -> ProgramRecord {
    let when = Timestamp::from_micros(now().as_micros() + t * 1_000_000);
    ProgramRecord {
        program_id: id.into(),
        body: format!("{{\"program\":\"{id}\",\"t\":{t}}}"),
        target_segment: segment.map(str::to_owned),
        revision: 0,
        create_time: when,
        update_time: when,
    }
}

/// A reward written at `now() + t` seconds.
fn reward(
    id: &str,
    program: &str,
    segment: Option<&str>,
    stock: Option<i64>,
    t: i64,
) -> RewardRecord {
    let when = Timestamp::from_micros(now().as_micros() + t * 1_000_000);
    RewardRecord {
        reward_id: id.into(),
        program_id: program.into(),
        body: format!("{{\"reward\":\"{id}\",\"t\":{t}}}"),
        required_segment: segment.map(str::to_owned),
        stock_remaining: stock,
        revision: 0,
        create_time: when,
        update_time: when,
    }
}

pub async fn loyalty_programs_and_rewards_are_stored(store: &impl Store) {
    assert_eq!(store.get_program("p1").await.expect("get"), None);
    assert!(
        store
            .list_programs(None, 10)
            .await
            .expect("list")
            .is_empty()
    );
    let mut created = Vec::new();
    for (id, t) in [("p2", 1), ("p1", 2), ("p3", 3)] {
        let p = store
            .create_program(&program(id, None, t))
            .await
            .expect("create");
        assert_eq!(
            p,
            ProgramRecord {
                revision: 1,
                ..program(id, None, t)
            }
        );
        created.push(p);
    }
    let (p2, p1, p3) = (created[0].clone(), created[1].clone(), created[2].clone());
    assert_eq!(
        store.get_program("p1").await.expect("get"),
        Some(p1.clone())
    );
    let r = store.create_program(&program("p1", Some("vip"), 9)).await;
    assert!(matches!(r, Err(StoreError::AlreadyExists(_))), "{r:?}");
    assert_eq!(
        store.get_program("p1").await.expect("get"),
        Some(p1.clone())
    );

    // In id order, in pages.
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_programs(after.as_deref(), 2)
            .await
            .expect("list");
        let Some(last) = page.last() else { break };
        after = Some(last.program_id.clone());
        pages.push(page);
    }
    assert_eq!(pages, [vec![p1.clone(), p2.clone()], vec![p3.clone()]]);
    assert_eq!(
        store.list_programs(Some("p1"), 10).await.expect("list"),
        [p2.clone(), p3.clone()]
    );

    // Updates: the next revision, create_time kept; stale or future revisions refused.
    let t = later(1);
    let p2b = store
        .update_program("p2", "{\"v\":2}", Some("vip"), t, Some(1))
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(
        p2b,
        ProgramRecord {
            body: "{\"v\":2}".into(),
            target_segment: Some("vip".into()),
            revision: 2,
            update_time: t,
            ..p2.clone()
        }
    );
    for expected in [1, 3] {
        let r = store
            .update_program("p2", "{}", None, later(2), Some(expected))
            .await;
        assert!(matches!(r, Err(StoreError::PreconditionFailed(_))), "{r:?}");
    }
    assert_eq!(
        store.get_program("p2").await.expect("get"),
        Some(p2b.clone())
    );
    let p2c = store
        .update_program("p2", "{\"v\":3}", None, later(3), None)
        .await
        .expect("update")
        .expect("exists");
    assert_eq!((p2c.revision, p2c.target_segment.clone()), (3, None));
    assert_eq!(store.get_program("p2").await.expect("get"), Some(p2c));
    assert_eq!(
        store
            .update_program("nope", "{}", None, later(3), None)
            .await
            .expect("update"),
        None
    );
    assert_eq!(store.get_program("nope").await.expect("get"), None);

    // Rewards need their program.
    let r = store
        .create_reward(&reward("r1", "nope", None, None, 1))
        .await;
    match r {
        Err(StoreError::MissingDependency(id)) => assert_eq!(id, "nope"),
        other => panic!("expected a missing program, got {other:?}"),
    }
    assert_eq!(store.get_reward("r1").await.expect("get"), None);
    let r2 = store
        .create_reward(&reward("r2", "p1", Some("vip"), Some(5), 1))
        .await
        .expect("create");
    assert_eq!(
        r2,
        RewardRecord {
            revision: 1,
            ..reward("r2", "p1", Some("vip"), Some(5), 1)
        }
    );
    let r1 = store
        .create_reward(&reward("r1", "p1", None, None, 2))
        .await
        .expect("create");
    let r3 = store
        .create_reward(&reward("r3", "p2", None, Some(0), 3))
        .await
        .expect("create");
    for taken in [
        reward("r1", "p1", None, None, 4),
        reward("r1", "nope", None, None, 4),
    ] {
        let r = store.create_reward(&taken).await;
        assert!(matches!(r, Err(StoreError::AlreadyExists(_))), "{r:?}");
    }
    assert_eq!(store.get_reward("r1").await.expect("get"), Some(r1.clone()));
    assert_eq!(
        store.list_rewards("p1", None, 1).await.expect("list"),
        std::slice::from_ref(&r1)
    );
    assert_eq!(
        store.list_rewards("p1", Some("r1"), 1).await.expect("list"),
        std::slice::from_ref(&r2)
    );
    assert!(
        store
            .list_rewards("p1", Some("r2"), 1)
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        store.list_rewards("p2", None, 10).await.expect("list"),
        std::slice::from_ref(&r3)
    );
    assert!(
        store
            .list_rewards("p3", None, 10)
            .await
            .expect("list")
            .is_empty()
    );

    // Stock: `None` keeps it, `Some(None)` makes it unlimited, `Some(Some(n))` sets it.
    let r2b = store
        .update_reward("r2", "{\"v\":2}", None, None, later(1), Some(1))
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(
        r2b,
        RewardRecord {
            body: "{\"v\":2}".into(),
            required_segment: None,
            revision: 2,
            update_time: later(1),
            ..r2.clone()
        }
    );
    let r2c = store
        .update_reward("r2", "{}", Some("vip"), Some(None), later(2), None)
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(
        (
            r2c.stock_remaining,
            r2c.revision,
            r2c.required_segment.clone()
        ),
        (None, 3, Some("vip".into()))
    );
    let r2d = store
        .update_reward("r2", "{}", None, Some(Some(7)), later(3), Some(3))
        .await
        .expect("update")
        .expect("exists");
    assert_eq!((r2d.stock_remaining, r2d.revision), (Some(7), 4));
    for expected in [3, 5] {
        let r = store
            .update_reward("r2", "{}", None, Some(Some(1)), later(4), Some(expected))
            .await;
        assert!(matches!(r, Err(StoreError::PreconditionFailed(_))), "{r:?}");
    }
    assert_eq!(store.get_reward("r2").await.expect("get"), Some(r2d));
    assert_eq!(
        store
            .update_reward("nope", "{}", None, None, later(4), None)
            .await
            .expect("update"),
        None
    );
}

pub async fn member_changes_round_trip(store: &impl Store) {
    const P: &str = "points";
    let c = "member";
    assert_eq!(member(store, P, c).await, None);
    assert!(
        store
            .member_programs(&cid(c))
            .await
            .expect("programs")
            .is_empty()
    );
    store
        .create_program(&program(P, None, 0))
        .await
        .expect("program");
    let shop = store
        .create_reward(&reward("mug", P, None, None, 0))
        .await
        .expect("reward");

    // Enrolment creates the member row.
    let (loaded, changes) = applied(mutate(store, P, c, now(), &enrol()).await);
    assert_eq!(loaded, Loaded::default());
    let enrolled = changes.member.expect("member");
    assert_eq!(member(store, P, c).await, Some(enrolled.clone()));
    assert_eq!(
        mutate(store, P, c, now(), &enrol()).await,
        MutateOutcome::Refused("already a member".into())
    );

    // One operation writing everything there is to write.
    let day = now().day();
    let needs = Needs {
        order_id: Some(OrderId::parse("o1").expect("id")),
        bonus: Some(("review".into(), day)),
        reward_id: Some("mug".into()),
        request_id: Some("req1".into()),
        redemption_id: None,
        event_id: Some(EventId::parse("e1").expect("id")),
    };
    let everything = op(needs.clone(), move |loaded, now| {
        let mut m = member_of(loaded)?;
        let purchase = Source {
            event_id: Some("e1".into()),
            redemption_id: None,
            rule: Some("purchase".into()),
        };
        let w = &mut m.wallet;
        w.credit(
            EntryKind::Pending,
            100,
            days_after(now, 14),
            Some(days_after(now, 365)),
            meta(now, purchase),
        )
        .map_err(|e| e.to_string())?;
        w.credit(EntryKind::Earn, 50, now, None, meta(now, Source::default()))
            .map_err(|e| e.to_string())?;
        let source = Source {
            redemption_id: Some("red1".into()),
            ..Source::default()
        };
        let lots = w
            .debit(EntryKind::Redeem, 30, meta(now, source))
            .map_err(|e| e.to_string())?;
        m.first_purchase_done = true;
        Ok(Changes {
            member: Some(m),
            order: Some(LoyaltyOrder {
                order_id: "o1".into(),
                amount: 10_000,
                refunded: 250,
                purchased: true,
                day: Some(now.day()),
                multiplier_percent: 150,
                points: 100,
            }),
            bonus_count: Some(1),
            activity: vec![
                DayActivity {
                    day: now.day(),
                    points: 100,
                    spend: 10_000,
                },
                DayActivity {
                    day: Day::from_days(now.day().as_days() - 3),
                    points: 7,
                    spend: -20,
                },
                DayActivity {
                    day: now.day(),
                    points: 50,
                    spend: 0,
                },
            ],
            take_stock: true,
            return_stock: false,
            redemption: Some(RedemptionRecord {
                redemption_id: "red1".into(),
                request_id: "req1".into(),
                reward_id: "mug".into(),
                cost: 30,
                lots,
                fingerprint: "mug/30".into(),
                status: RedemptionStatus::Completed,
                created_at: now,
                cancelled_at: None,
            }),
            mark_event_applied: true,
        })
    });
    let (loaded, changes) = applied(mutate(store, P, c, now(), &everything).await);
    assert_eq!(
        loaded,
        Loaded {
            member: Some(enrolled.clone()),
            reward: Some(shop.clone()),
            ..Loaded::default()
        }
    );
    let written = changes.member.clone().expect("member");
    assert_eq!(written.wallet.new_entries.len(), 3);

    // What was written is what is loaded next time.
    let activity = vec![
        DayActivity {
            day: Day::from_days(day.as_days() - 3),
            points: 7,
            spend: -20,
        },
        DayActivity {
            day,
            points: 150,
            spend: 10_000,
        },
    ];
    let stored = MemberRow {
        wallet: Wallet {
            new_entries: Vec::new(),
            ..written.wallet.clone()
        },
        activity: activity.clone(),
        ..written.clone()
    };
    let again = load(store, P, c, needs.clone()).await;
    assert_eq!(
        again,
        Loaded {
            member: Some(stored.clone()),
            order: changes.order.clone(),
            bonus_count: 1,
            reward: Some(shop.clone()),
            reward_redemptions: 1,
            redemption: changes.redemption.clone(),
            event_applied: true,
        }
    );
    assert_eq!(member(store, P, c).await, Some(stored.clone()));
    // The same count by a plain read, per reward; other members and programs count nothing.
    let counts = store
        .completed_redemptions(P, &cid(c))
        .await
        .expect("counts");
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        [(shop.reward_id.clone(), 1)]
    );
    assert!(
        store
            .completed_redemptions("elsewhere", &cid(c))
            .await
            .expect("counts")
            .is_empty()
    );
    // The redemption also by its id; other keys load nothing.
    let by_id = load(
        store,
        P,
        c,
        Needs {
            redemption_id: Some("red1".into()),
            ..Needs::default()
        },
    )
    .await;
    assert_eq!(by_id.redemption, changes.redemption);
    let others = load(
        store,
        P,
        c,
        Needs {
            order_id: Some(OrderId::parse("o2").expect("id")),
            bonus: Some(("review".into(), Day::from_days(day.as_days() + 1))),
            reward_id: Some("missing".into()),
            request_id: Some("req2".into()),
            redemption_id: Some("red2".into()),
            event_id: Some(EventId::parse("e2").expect("id")),
        },
    )
    .await;
    assert_eq!(
        others,
        Loaded {
            member: Some(stored.clone()),
            ..Loaded::default()
        }
    );
    assert_eq!(
        store.get_redemption(P, &cid(c), "red1").await.expect("get"),
        changes.redemption
    );
    assert_eq!(
        store.get_redemption(P, &cid(c), "red2").await.expect("get"),
        None
    );
    let mut entries = all_entries(store, P, c).await;
    entries.reverse();
    assert_eq!(entries, written.wallet.new_entries);

    // Counters go on; a second write adds to the activity and updates the rest in place.
    let (_, changes) = applied(mutate(store, P, c, later(20), &cancel("mug", "red1")).await);
    let cancelled = changes.redemption.clone().expect("redemption");
    assert_eq!(cancelled.status, RedemptionStatus::Cancelled);
    let (_, changes) = applied(mutate(store, P, c, later(20), &settle()).await);
    let settled = changes.member.expect("member");
    assert!(settled.wallet.lots.iter().all(|l| l.activated));
    let reloaded = load(store, P, c, needs).await;
    assert_eq!(
        reloaded.reward_redemptions, 0,
        "the redemption is cancelled"
    );
    assert!(
        store
            .completed_redemptions(P, &cid(c))
            .await
            .expect("counts")
            .is_empty(),
        "a cancelled redemption is not counted"
    );
    assert_eq!(reloaded.redemption, Some(cancelled.clone()));
    let m = reloaded.member.expect("member");
    assert_eq!(m.wallet.lots, settled.wallet.lots);
    assert_eq!(m.wallet.next_entry_id, 6);
    let entries = all_entries(store, P, c).await;
    assert_eq!(
        entries.iter().map(|e| e.entry_id).collect::<Vec<_>>(),
        [5, 4, 3, 2, 1]
    );
    assert_eq!(
        (entries[0].kind, entries[1].kind),
        (EntryKind::Activate, EntryKind::CancelRedemption)
    );
    m.wallet.check(&entries).expect("ledger invariant");
    assert_eq!(m.wallet.balances(later(20), 0).available, 150);
    assert_eq!(
        store.get_reward("mug").await.expect("get"),
        Some(shop),
        "an unlimited reward's stock stays unlimited"
    );

    // Programs of the customer, in id order.
    applied(mutate(store, "another", c, now(), &enrol()).await);
    assert_eq!(
        store.member_programs(&cid(c)).await.expect("programs"),
        ["another", P]
    );
    assert!(
        store
            .member_programs(&cid("someone"))
            .await
            .expect("programs")
            .is_empty()
    );
}

pub async fn refused_member_changes_write_nothing(store: &impl Store) {
    const P: &str = "points";
    let c = "refused";
    let refuse_after = |needs: Needs, inner: Op| {
        op(needs, move |loaded, now| {
            // Decide everything, then refuse.
            inner.apply(loaded, now)?;
            Err("changed my mind".into())
        })
    };
    // Not a member: nothing is created.
    assert_eq!(
        mutate(store, P, c, now(), &refuse_after(Needs::default(), enrol())).await,
        MutateOutcome::Refused("changed my mind".into())
    );
    assert_eq!(member(store, P, c).await, None);
    assert!(
        store
            .member_programs(&cid(c))
            .await
            .expect("programs")
            .is_empty()
    );

    applied(mutate(store, P, c, now(), &enrol()).await);
    applied(mutate(store, P, c, now(), &credit(100, 0, None)).await);
    let before = member(store, P, c).await;
    let entries = all_entries(store, P, c).await;
    let needs = Needs {
        order_id: Some(OrderId::parse("o1").expect("id")),
        bonus: Some(("review".into(), now().day())),
        event_id: Some(EventId::parse("e1").expect("id")),
        ..Needs::default()
    };
    let everything = op(needs.clone(), |loaded, now| {
        let mut m = member_of(loaded)?;
        m.wallet
            .debit(EntryKind::Adjust, 60, meta(now, Source::default()))
            .map_err(|e| e.to_string())?;
        Ok(Changes {
            member: Some(m),
            order: Some(LoyaltyOrder {
                order_id: "o1".into(),
                amount: 5,
                ..LoyaltyOrder::default()
            }),
            bonus_count: Some(3),
            activity: vec![DayActivity {
                day: now.day(),
                points: 1,
                spend: 1,
            }],
            mark_event_applied: true,
            ..Changes::default()
        })
    });
    assert_eq!(
        mutate(store, P, c, now(), &refuse_after(needs.clone(), everything)).await,
        MutateOutcome::Refused("changed my mind".into())
    );
    // A debit beyond the balance is refused by the ledger.
    assert!(matches!(
        mutate(store, P, c, now(), &debit(101)).await,
        MutateOutcome::Refused(_)
    ));
    assert_eq!(member(store, P, c).await, before);
    assert_eq!(all_entries(store, P, c).await, entries);
    let loaded = load(store, P, c, needs).await;
    assert_eq!(
        (loaded.order, loaded.bonus_count, loaded.event_applied),
        (None, 0, false)
    );

    // A second redemption under a taken request id is a conflict, and writes nothing.
    store
        .create_program(&program(P, None, 0))
        .await
        .expect("program");
    store
        .create_reward(&reward("mug", P, None, None, 0))
        .await
        .expect("reward");
    applied(mutate(store, P, c, now(), &redeem("mug", "req", "red-a", 10)).await);
    let before = member(store, P, c).await;
    let entries = all_entries(store, P, c).await;
    let reuse = op(Needs::default(), |loaded, now| {
        let mut m = member_of(loaded)?;
        let lots = m
            .wallet
            .debit(EntryKind::Redeem, 10, meta(now, Source::default()))
            .map_err(|e| e.to_string())?;
        Ok(Changes {
            member: Some(m),
            redemption: Some(RedemptionRecord {
                redemption_id: "red-b".into(),
                request_id: "req".into(),
                reward_id: "mug".into(),
                cost: 10,
                lots,
                fingerprint: "other".into(),
                status: RedemptionStatus::Completed,
                created_at: now,
                cancelled_at: None,
            }),
            ..Changes::default()
        })
    });
    let r = store.mutate_member(P, &cid(c), now(), &reuse).await;
    assert!(matches!(r, Err(StoreError::Conflict(_))), "{r:?}");
    assert_eq!(member(store, P, c).await, before);
    assert_eq!(all_entries(store, P, c).await, entries);
    assert_eq!(
        store
            .get_redemption(P, &cid(c), "red-b")
            .await
            .expect("get"),
        None
    );
}

pub async fn reward_stock_is_taken_once(store: &impl Store) {
    const P: &str = "shop";
    store
        .create_program(&program(P, None, 0))
        .await
        .expect("program");
    for r in [
        reward("last", P, None, Some(1), 0),
        reward("free", P, None, None, 0),
    ] {
        store.create_reward(&r).await.expect("reward");
    }
    for c in ["first", "second"] {
        applied(mutate(store, P, c, now(), &enrol()).await);
        applied(mutate(store, P, c, now(), &credit(100, 0, None)).await);
    }

    let (loaded, _) =
        applied(mutate(store, P, "first", now(), &redeem("last", "q1", "d1", 10)).await);
    assert_eq!(
        loaded.reward.and_then(|r| r.stock_remaining),
        Some(1),
        "loaded before the take"
    );
    assert_eq!(
        store
            .get_reward("last")
            .await
            .expect("get")
            .and_then(|r| r.stock_remaining),
        Some(0)
    );

    // None left: nothing of the redemption is written.
    let before = member(store, P, "second").await;
    let entries = all_entries(store, P, "second").await;
    let reward_before = store.get_reward("last").await.expect("get");
    assert_eq!(
        mutate(store, P, "second", now(), &redeem("last", "q2", "d2", 10)).await,
        MutateOutcome::OutOfStock
    );
    assert_eq!(member(store, P, "second").await, before);
    assert_eq!(all_entries(store, P, "second").await, entries);
    assert_eq!(
        store
            .get_redemption(P, &cid("second"), "d2")
            .await
            .expect("get"),
        None
    );
    assert_eq!(store.get_reward("last").await.expect("get"), reward_before);

    // A cancellation gives the unit back; then the second member gets it.
    applied(mutate(store, P, "first", now(), &cancel("last", "d1")).await);
    assert_eq!(
        store
            .get_reward("last")
            .await
            .expect("get")
            .and_then(|r| r.stock_remaining),
        Some(1)
    );
    applied(mutate(store, P, "second", now(), &redeem("last", "q2", "d2", 10)).await);
    assert_eq!(
        store
            .get_reward("last")
            .await
            .expect("get")
            .and_then(|r| r.stock_remaining),
        Some(0)
    );
    let m = member(store, P, "second").await.expect("member");
    assert_eq!(m.wallet.balances(now(), 0).available, 90);

    // Unlimited stays unlimited, until a stock is set.
    for (i, c) in ["first", "second", "first"].into_iter().enumerate() {
        let q = format!("free{i}");
        applied(mutate(store, P, c, now(), &redeem("free", &q, &q, 1)).await);
    }
    let free = store
        .get_reward("free")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!((free.stock_remaining, free.revision), (None, 1));
    store
        .update_reward("free", "{}", None, Some(Some(0)), now(), None)
        .await
        .expect("update");
    assert_eq!(
        mutate(
            store,
            P,
            "first",
            now(),
            &redeem("free", "free9", "free9", 1)
        )
        .await,
        MutateOutcome::OutOfStock
    );
}

pub async fn events_are_applied_once(store: &impl Store) {
    let mark = |event: &str| {
        let needs = Needs {
            event_id: Some(EventId::parse(event).expect("id")),
            ..Needs::default()
        };
        op(needs, |loaded, _| {
            if loaded.event_applied {
                return Err("already applied".into());
            }
            Ok(Changes {
                mark_event_applied: true,
                ..Changes::default()
            })
        })
    };
    let (loaded, _) = applied(mutate(store, "p", "c1", now(), &mark("e1")).await);
    assert!(!loaded.event_applied);
    assert_eq!(
        mutate(store, "p", "c1", now(), &mark("e1")).await,
        MutateOutcome::Refused("already applied".into())
    );
    // Per event, per customer, per program.
    applied(mutate(store, "p", "c1", now(), &mark("e2")).await);
    applied(mutate(store, "p", "c2", now(), &mark("e1")).await);
    applied(mutate(store, "q", "c1", now(), &mark("e1")).await);
    assert_eq!(
        mutate(store, "q", "c1", now(), &mark("e1")).await,
        MutateOutcome::Refused("already applied".into())
    );
}

pub async fn members_to_settle_finds_expired_and_matured_lots(store: &impl Store) {
    const P: &str = "settle";
    let setup: [(&str, &str, &[Op]); 6] = [
        (P, "expiring", &[credit(100, 0, Some(10))]),
        (P, "maturing", &[credit(100, 14, None)]),
        (P, "spent", &[credit(50, 0, Some(10)), debit(50)]),
        (P, "later", &[credit(100, 60, Some(90))]),
        (P, "never", &[credit(10, 0, None)]),
        ("a-first", "expiring", &[credit(5, 0, Some(5))]),
    ];
    for (program, customer, ops) in &setup {
        applied(mutate(store, program, customer, now(), &enrol()).await);
        for o in *ops {
            applied(mutate(store, program, customer, now(), o).await);
        }
    }
    let due = |members: Vec<(String, CustomerId)>| {
        members
            .into_iter()
            .map(|(p, c)| format!("{p}/{c}"))
            .collect::<Vec<_>>()
    };
    let after_at = |t: Timestamp, after: Option<(&'static str, &'static str)>, limit: usize| async move {
        let after = after.map(|(p, c)| (p, CustomerId::parse(c).expect("id")));
        due(store
            .members_to_settle(t, after.as_ref().map(|(p, c)| (*p, c)), limit)
            .await
            .expect("members_to_settle"))
    };
    let at = |t: Timestamp, limit: usize| after_at(t, None, limit);
    assert!(at(now(), 100).await.is_empty());
    assert!(at(later(4), 100).await.is_empty());
    assert_eq!(at(later(5), 100).await, ["a-first/expiring"]);
    // Expiry and maturity are inclusive.
    assert_eq!(
        at(later(14), 100).await,
        ["a-first/expiring", "settle/expiring", "settle/maturing"]
    );
    assert_eq!(
        at(later(14), 2).await,
        ["a-first/expiring", "settle/expiring"]
    );
    // Pages follow (program id, customer id), strictly after the cursor.
    assert_eq!(
        after_at(later(14), Some(("a-first", "expiring")), 100).await,
        ["settle/expiring", "settle/maturing"]
    );
    assert_eq!(
        after_at(later(14), Some((P, "expiring")), 1).await,
        ["settle/maturing"]
    );
    assert!(
        after_at(later(14), Some((P, "maturing")), 100)
            .await
            .is_empty()
    );
    assert_eq!(
        at(later(20), 100).await,
        ["a-first/expiring", "settle/expiring", "settle/maturing"]
    );

    // Settled members are done.
    for (p, c) in [(P, "expiring"), (P, "maturing"), ("a-first", "expiring")] {
        let (_, changes) = applied(mutate(store, p, c, later(20), &settle()).await);
        assert_eq!(changes.member.expect("member").wallet.new_entries.len(), 1);
    }
    assert!(at(later(20), 100).await.is_empty());
    let m = member(store, P, "expiring").await.expect("member");
    assert_eq!(m.wallet.balances(later(20), 0).available, 0);
    m.wallet
        .check(&all_entries(store, P, "expiring").await)
        .expect("ledger invariant");
    // A pending lot that expires unspent is due once it has expired.
    assert_eq!(at(later(100), 100).await, ["settle/later"]);
}

pub async fn loyalty_entries_are_listed_newest_first(store: &impl Store) {
    const P: &str = "points";
    for (program, c) in [(P, "lister"), (P, "other"), ("elsewhere", "lister")] {
        applied(mutate(store, program, c, now(), &enrol()).await);
    }
    let mut written = Vec::new();
    for i in 1..=5 {
        let (_, changes) = applied(mutate(store, P, "lister", now(), &credit(i, 0, Some(i))).await);
        written.extend(changes.member.expect("member").wallet.new_entries);
        applied(mutate(store, P, "other", now(), &credit(100, 0, None)).await);
    }
    applied(mutate(store, "elsewhere", "lister", now(), &credit(100, 0, None)).await);
    written.reverse();
    assert_eq!(all_entries(store, P, "lister").await, written);
    let page = |before: Option<i64>, limit: usize| async move {
        store
            .list_entries(P, &cid("lister"), before, limit)
            .await
            .expect("list_entries")
            .into_iter()
            .map(|e| e.entry_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(page(None, 2).await, [5, 4]);
    assert_eq!(page(Some(4), 2).await, [3, 2]);
    assert_eq!(page(Some(2), 10).await, [1]);
    assert!(page(Some(1), 10).await.is_empty());
    assert!(
        store
            .list_entries(P, &cid("nobody"), None, 10)
            .await
            .expect("list_entries")
            .is_empty()
    );
}

pub async fn scan_members_pages_in_key_order_with_lots_and_activity(store: &impl Store) {
    assert!(
        store
            .scan_members(None, 10)
            .await
            .expect("scan_members")
            .is_empty()
    );
    // Keys whose tuple order differs from the order of their concatenation ("a"+"z" vs "ab"+"a")
    // and members with nothing, lots only, activity only and both.
    let members = [
        ("b", "p1"),
        ("a", "z"),
        ("ab", "a"),
        ("a", "p1"),
        ("b", "p2"),
        ("c", "p1"),
        ("a", "p2"),
        ("ab", "p1"),
        ("c", "z"),
    ];
    for (i, &(c, p)) in members.iter().enumerate() {
        applied(mutate(store, p, c, now(), &enrol()).await);
        let i = i64::try_from(i).expect("small");
        if i % 3 != 1 {
            for n in 0..=(i % 4) {
                let credit = credit(10 * i + n + 1, n % 2, Some(30 + n));
                applied(mutate(store, p, c, now(), &credit).await);
            }
        }
        if i % 2 == 0 {
            let day = now().day().as_days();
            let days: Vec<DayActivity> = (0..=(i % 3))
                .map(|d| DayActivity {
                    day: Day::from_days(day - 5 + i32::try_from(d * 2).expect("small")),
                    points: i + d,
                    spend: 100 * i - d,
                })
                .collect();
            let record = op(Needs::default(), move |loaded, _| {
                member_of(loaded)?;
                Ok(Changes {
                    activity: days.clone(),
                    ..Changes::default()
                })
            });
            applied(mutate(store, p, c, now(), &record).await);
        }
    }
    let mut want = Vec::new();
    for (c, p) in members {
        let row = member(store, p, c).await.expect("a member");
        want.push((cid(c), p.to_owned(), row));
    }
    want.sort_by(|x, y| (x.0.as_str(), &x.1).cmp(&(y.0.as_str(), &y.1)));
    assert!(want.iter().any(|m| m.2.wallet.lots.len() > 1));
    assert!(want.iter().any(|m| m.2.activity.len() > 1));
    assert!(
        want.iter()
            .any(|m| m.2.wallet.lots.is_empty() && m.2.activity.is_empty())
    );

    for limit in [1, 2, 4, want.len(), want.len() + 1] {
        let mut got = Vec::new();
        let mut cursor: Option<(CustomerId, String)> = None;
        loop {
            let page = store
                .scan_members(cursor.as_ref().map(|(c, p)| (c, p.as_str())), limit)
                .await
                .expect("scan_members");
            assert!(page.len() <= limit);
            let done = page.len() < limit;
            cursor = page.last().map(|(c, p, _)| (c.clone(), p.clone()));
            got.extend(page);
            if done {
                break;
            }
        }
        assert_eq!(got, want, "limit {limit}");
    }

    // After a key that is not a member's: the members strictly after it.
    let after = |c: &str, p: &str| {
        let c = cid(c);
        let p = p.to_owned();
        async move {
            store
                .scan_members(Some((&c, p.as_str())), 100)
                .await
                .expect("scan_members")
                .into_iter()
                .map(|(c, p, _)| (c.as_str().to_owned(), p))
                .collect::<Vec<_>>()
        }
    };
    let keys = |ks: &[(&str, &str)]| {
        ks.iter()
            .map(|&(c, p)| (c.to_owned(), p.to_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        after("a", "zz").await,
        keys(&[
            ("ab", "a"),
            ("ab", "p1"),
            ("b", "p1"),
            ("b", "p2"),
            ("c", "p1"),
            ("c", "z"),
        ])
    );
    assert_eq!(
        after("b", "p10").await,
        keys(&[("b", "p2"), ("c", "p1"), ("c", "z")])
    );
    assert!(after("c", "z").await.is_empty());
}

pub async fn segments_named_by_loyalty_cannot_be_deleted(store: &impl Store) {
    for s in [segment("vip", &[], 1), segment("zeta", &["vip"], 2)] {
        store.create_segment(&s).await.expect("create");
    }
    store
        .create_program(&program("p", Some("vip"), 1))
        .await
        .expect("program");
    store
        .create_program(&program("q", Some("zeta"), 1))
        .await
        .expect("program");
    store
        .create_reward(&reward("r", "q", Some("vip"), None, 1))
        .await
        .expect("reward");
    let in_use = |r: crate::StoreResult<bool>, want: &[&str]| match r {
        Err(StoreError::InUse(ids)) => assert_eq!(ids, want),
        other => panic!("expected in use by {want:?}, got {other:?}"),
    };
    in_use(
        store.delete_segment("vip").await,
        &["program:p", "reward:r", "zeta"],
    );
    in_use(store.delete_segment("zeta").await, &["program:q"]);
    assert!(store.get_segment("vip").await.expect("get").is_some());

    store
        .update_program("p", "{}", None, now(), None)
        .await
        .expect("update");
    store
        .update_reward("r", "{}", Some("zeta"), None, now(), None)
        .await
        .expect("update");
    in_use(store.delete_segment("vip").await, &["zeta"]);
    in_use(
        store.delete_segment("zeta").await,
        &["program:q", "reward:r"],
    );
    store
        .update_program("q", "{}", None, now(), None)
        .await
        .expect("update");
    store
        .update_reward("r", "{}", None, None, now(), None)
        .await
        .expect("update");
    assert!(store.delete_segment("zeta").await.expect("delete"));
    assert!(store.delete_segment("vip").await.expect("delete"));
}

pub async fn concurrent_member_changes_are_serialized(store: &impl Store) {
    const P: &str = "points";
    const K: i64 = 23;
    const CALLS: usize = 64;
    let c = "busy";
    let customer = cid(c);
    // Concurrent enrolments of a new member: the lock holds before the row exists.
    let enrolment = enrol();
    let results = futures::future::join_all(
        (0..8).map(|_| store.mutate_member(P, &customer, now(), &enrolment)),
    )
    .await;
    let mut enrolled = 0;
    for r in results {
        match r.expect("concurrent enrolment") {
            MutateOutcome::Applied { .. } => enrolled += 1,
            MutateOutcome::Refused(reason) => assert_eq!(reason, "already a member"),
            MutateOutcome::OutOfStock => panic!("no stock was taken"),
        }
    }
    assert_eq!(enrolled, 1);

    // 10·K points in lots of different expiries, then CALLS debits of 10 at once.
    for o in [
        credit(10 * (K - 13), 0, Some(30)),
        credit(100, 0, None),
        credit(30, 0, Some(10)),
    ] {
        applied(mutate(store, P, c, now(), &o).await);
    }
    let spend = debit(10);
    let results = futures::future::join_all(
        (0..CALLS).map(|_| store.mutate_member(P, &customer, now(), &spend)),
    )
    .await;
    let mut applied_count = 0;
    let mut refused = 0;
    for r in results {
        match r.expect("concurrent mutate_member") {
            MutateOutcome::Applied { .. } => applied_count += 1,
            MutateOutcome::Refused(_) => refused += 1,
            MutateOutcome::OutOfStock => panic!("no stock was taken"),
        }
    }
    assert_eq!((applied_count, refused), (K as usize, CALLS - K as usize));
    let m = member(store, P, c).await.expect("member");
    assert_eq!(m.wallet.balances(now(), 0).available, 0);
    assert!(m.wallet.lots.iter().all(|l| l.remaining == 0));
    let entries = all_entries(store, P, c).await;
    assert_eq!(entries.len(), 3 + K as usize);
    let ids: Vec<i64> = entries.iter().map(|e| e.entry_id).collect();
    assert_eq!(ids, (1..=3 + K).rev().collect::<Vec<_>>());
    assert_eq!(entries.iter().map(|e| e.amount).sum::<Points>(), 0);
    m.wallet.check(&entries).expect("ledger invariant");
}

pub async fn erasure_moves_loyalty_rows_to_a_pseudonym(store: &impl Store) {
    store
        .create_program(&program("p", None, 0))
        .await
        .expect("program");
    store
        .create_reward(&reward("mug", "p", None, None, 0))
        .await
        .expect("reward");
    let needs = Needs {
        order_id: Some(OrderId::parse("o1").expect("id")),
        bonus: Some(("review".into(), now().day())),
        reward_id: Some("mug".into()),
        event_id: Some(EventId::parse("e1").expect("id")),
        ..Needs::default()
    };
    let write = op(needs.clone(), |_, now| {
        Ok(Changes {
            order: Some(LoyaltyOrder {
                order_id: "o1".into(),
                amount: 1,
                ..LoyaltyOrder::default()
            }),
            bonus_count: Some(1),
            activity: vec![DayActivity {
                day: now.day(),
                points: 1,
                spend: 1,
            }],
            mark_event_applied: true,
            ..Changes::default()
        })
    });
    for c in ["gone", "stays"] {
        store
            .record_events(&[purchase(c, "e1", at(100, 0), "o1", 100)], now())
            .await
            .expect("record");
        for p in ["p", "q"] {
            applied(mutate(store, p, c, now(), &enrol()).await);
            applied(mutate(store, p, c, now(), &credit(100, 0, Some(1))).await);
            applied(mutate(store, p, c, now(), &write).await);
        }
        applied(mutate(store, "p", c, now(), &redeem("mug", "q1", "d1", 10)).await);
    }
    let stays = load(store, "p", "stays", needs.clone()).await;
    let gone_before = load(store, "p", "gone", needs.clone()).await;
    let gone_member_before = [
        member(store, "p", "gone").await,
        member(store, "q", "gone").await,
    ];
    let gone_entries_before = [
        all_entries(store, "p", "gone").await,
        all_entries(store, "q", "gone").await,
    ];
    assert_eq!(
        store.delete_customer(&cid("gone")).await.expect("delete"),
        Some(1)
    );
    let pseudonym = pseudonym_of_erasure(store).await;
    for p in ["p", "q"] {
        assert_eq!(member(store, p, "gone").await, None);
        assert!(all_entries(store, p, "gone").await.is_empty());
    }
    assert!(
        store
            .member_programs(&cid("gone"))
            .await
            .expect("programs")
            .is_empty()
    );
    assert_eq!(
        store
            .get_redemption("p", &cid("gone"), "d1")
            .await
            .expect("get"),
        None
    );
    let gone = load(store, "p", "gone", needs.clone()).await;
    assert_eq!(
        gone,
        Loaded {
            reward: stays.reward.clone(),
            ..Loaded::default()
        }
    );
    // Everything the customer had in the programs is kept, under the pseudonym.
    assert_eq!(
        load(store, "p", &pseudonym, needs.clone()).await,
        gone_before
    );
    for (i, p) in ["p", "q"].into_iter().enumerate() {
        assert_eq!(member(store, p, &pseudonym).await, gone_member_before[i]);
        assert_eq!(
            all_entries(store, p, &pseudonym).await,
            gone_entries_before[i]
        );
    }
    assert_eq!(
        store
            .member_programs(&cid(&pseudonym))
            .await
            .expect("programs"),
        ["p", "q"]
    );
    let redemption = store
        .get_redemption("p", &cid(&pseudonym), "d1")
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(redemption.request_id, "q1");
    let settle_due: Vec<String> = store
        .members_to_settle(later(5), None, 100)
        .await
        .expect("members_to_settle")
        .into_iter()
        .map(|(p, c)| format!("{p}/{c}"))
        .collect();
    // The pseudonymous members' points still expire: the books go on.
    assert_eq!(
        settle_due,
        [
            format!("p/{pseudonym}"),
            "p/stays".into(),
            format!("q/{pseudonym}"),
            "q/stays".into()
        ]
    );
    // The other customer keeps everything.
    assert_eq!(load(store, "p", "stays", needs).await, stays);
    assert_eq!(
        store
            .member_programs(&cid("stays"))
            .await
            .expect("programs"),
        ["p", "q"]
    );
}

/// The pseudonym of the latest erasure, read from the change feed (a member change under an
/// `erased-` key), checked to be `erased-` and 32 lowercase hex digits.
async fn pseudonym_of_erasure(store: &impl Store) -> String {
    let changes = changes_after(store, 0).await;
    let pseudonym = changes
        .iter()
        .rev()
        .find(|c| c.kind == ChangeKind::Member && c.key.starts_with("erased-"))
        .map(|c| c.key.clone())
        .expect("the erasure's member changes name the pseudonym");
    let hex = &pseudonym["erased-".len()..];
    assert!(
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "pseudonym {pseudonym:?}"
    );
    pseudonym
}

/// Every (table, column) that holds customer ids: each `customer_id` column of the schema, and
/// the change feed's key (of customer and member changes). Kept by hand on purpose:
/// [`erasure_keeps_the_books_and_leaves_no_trace`] fails when a migration adds a `customer_id`
/// column that is not listed here, so that whoever adds it looks at `delete_customer` (erase the
/// rows, or keep them under the pseudonym) and then lists it.
pub const CUSTOMER_ID_COLUMNS: &[(&str, &str)] = &[
    ("change_feed", "key"),
    ("customer_summaries", "customer_id"),
    ("customers", "customer_id"),
    ("engagement_days", "customer_id"),
    ("events", "customer_id"),
    ("loyalty_activity", "customer_id"),
    ("loyalty_applied_events", "customer_id"),
    ("loyalty_bonus_counts", "customer_id"),
    ("loyalty_entries", "customer_id"),
    ("loyalty_lots", "customer_id"),
    ("loyalty_members", "customer_id"),
    ("loyalty_orders", "customer_id"),
    ("loyalty_redemptions", "customer_id"),
    ("orders", "customer_id"),
];

/// A program's books as the Store API shows them, over all its members: per entry kind the
/// number of entries, the points moved and the change of total; the members' lifetime totals,
/// points left in lots and debt; completed redemptions per reward and the rewards' stock.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Books {
    members: usize,
    by_kind: std::collections::BTreeMap<&'static str, (usize, Points, Points)>,
    lifetime_earned: Points,
    lifetime_redeemed: Points,
    in_lots: Points,
    debt: Points,
    redemptions: Vec<(String, i64)>,
    stock: Vec<(String, Option<i64>)>,
}

async fn books(store: &impl Store, program: &str, rewards: &[&str]) -> Books {
    let mut b = Books {
        members: 0,
        by_kind: std::collections::BTreeMap::new(),
        lifetime_earned: 0,
        lifetime_redeemed: 0,
        in_lots: 0,
        debt: 0,
        redemptions: rewards.iter().map(|r| ((*r).to_owned(), 0)).collect(),
        stock: Vec::new(),
    };
    let members = store
        .scan_members(None, 10_000)
        .await
        .expect("scan_members");
    for (customer, _, m) in members.iter().filter(|(_, p, _)| p == program) {
        b.members += 1;
        b.lifetime_earned += m.wallet.lifetime_earned;
        b.lifetime_redeemed += m.wallet.lifetime_redeemed;
        b.in_lots += m.wallet.lots.iter().map(|l| l.remaining).sum::<Points>();
        b.debt += m.wallet.debt;
        for e in all_entries(store, program, customer.as_str()).await {
            let k = b.by_kind.entry(e.kind.name()).or_default();
            *k = (k.0 + 1, k.1 + e.points, k.2 + e.amount);
        }
        for (reward, n) in &mut b.redemptions {
            let needs = Needs {
                reward_id: Some(reward.clone()),
                ..Needs::default()
            };
            *n += load(store, program, customer.as_str(), needs)
                .await
                .reward_redemptions;
        }
    }
    for r in rewards {
        let stored = store
            .get_reward(r)
            .await
            .expect("get_reward")
            .expect("reward");
        b.stock.push(((*r).to_owned(), stored.stock_remaining));
    }
    b
}

/// A purchase's points for a member: the order, a bonus counter, a day of activity, the event
/// marked applied and an EARN entry, with an issuer and reason naming the customer (as a
/// caller's free text may).
fn earn_from(customer: &str, event: &str, order: &str, points: Points) -> Op {
    let (customer, event, order) = (customer.to_owned(), event.to_owned(), order.to_owned());
    let needs = Needs {
        order_id: Some(OrderId::parse(order.clone()).expect("id")),
        bonus: Some((format!("review-{customer}"), now().day())),
        event_id: Some(EventId::parse(event.clone()).expect("id")),
        ..Needs::default()
    };
    op(needs, move |loaded, now| {
        if loaded.event_applied {
            return Err("applied".into());
        }
        let mut m = member_of(loaded)?;
        let meta = Meta {
            source: Source {
                event_id: Some(event.clone()),
                redemption_id: None,
                rule: Some(format!("purchase:{customer}")),
            },
            issuer: format!("agent for {customer}"),
            reason: format!("order {order} of {customer}"),
            now,
        };
        m.wallet
            .credit(
                EntryKind::Earn,
                points,
                now,
                Some(days_after(now, 30)),
                meta,
            )
            .map_err(|e| e.to_string())?;
        Ok(Changes {
            member: Some(m),
            order: Some(LoyaltyOrder {
                order_id: order.clone(),
                amount: points * 100,
                purchased: true,
                day: Some(now.day()),
                multiplier_percent: 100,
                points,
                ..LoyaltyOrder::default()
            }),
            bonus_count: Some(loaded.bonus_count + 1),
            activity: vec![DayActivity {
                day: now.day(),
                points,
                spend: points * 100,
            }],
            mark_event_applied: true,
            ..Changes::default()
        })
    })
}

/// Erasure keeps the books: every program's totals (points issued, redeemed and expired over
/// all entries, completed redemptions, stock) are the same before and after, the erased member's
/// rows live on under a random pseudonym with every mention of the customer id replaced, no
/// table holds the customer id afterwards (only the erasure's own feed changes, which tell the
/// views), the other customer is untouched, and the id can start over with no history.
pub async fn erasure_keeps_the_books_and_leaves_no_trace(store: &(impl Store + RawTables)) {
    // Distinctive ids, so that a substring match over every text column means them.
    const GONE: &str = "gone-7f3a9c";
    const STAYS: &str = "stays-2b8e41";
    const P: &str = "books";
    const Q: &str = "extra";
    const REWARDS: [&str; 2] = ["mug", "pen"];

    // Every column that holds customer ids is known to the erasure.
    let columns = store.text_columns().await.expect("text_columns");
    let mut holding_ids: Vec<(&str, &str)> = columns
        .iter()
        .filter(|(_, c)| c == "customer_id")
        .map(|(t, c)| (t.as_str(), c.as_str()))
        .chain([("change_feed", "key")])
        .collect();
    holding_ids.sort_unstable();
    assert_eq!(
        holding_ids, CUSTOMER_ID_COLUMNS,
        "tables with customer ids: erase or pseudonymize new ones in delete_customer, then \
         list them in CUSTOMER_ID_COLUMNS"
    );

    for p in [P, Q] {
        store
            .create_program(&program(p, None, 0))
            .await
            .expect("program");
    }
    store
        .create_reward(&reward("mug", P, None, Some(10), 0))
        .await
        .expect("reward");
    store
        .create_reward(&reward("pen", P, None, None, 0))
        .await
        .expect("reward");
    for c in [GONE, STAYS] {
        store
            .upsert_customers(&[profile_customer(c, "US")], now())
            .await
            .expect("upsert");
        let mut events = history(c);
        events.push(purchase(
            c,
            &format!("{c}-e1"),
            at(100, 0),
            &format!("{c}-o1"),
            100,
        ));
        store.record_events(&events, now()).await.expect("record");
        for p in [P, Q] {
            applied(mutate(store, p, c, now(), &enrol()).await);
            applied(mutate(store, p, c, now(), &credit(500, 0, Some(30))).await);
            applied(mutate(store, p, c, now(), &credit(200, 10, None)).await);
            let earn = earn_from(c, &format!("{c}-e1"), &format!("{c}-o1"), 80);
            applied(mutate(store, p, c, now(), &earn).await);
        }
        for (i, reward) in ["mug", "mug", "pen"].into_iter().enumerate() {
            let redeem = redeem(reward, &format!("{c}-req-{i}"), &format!("rdm-{c}-{i}"), 60);
            applied(mutate(store, P, c, now(), &redeem).await);
        }
        applied(mutate(store, P, c, now(), &cancel("mug", &format!("rdm-{c}-1"))).await);
        applied(mutate(store, P, c, now(), &debit(15)).await);
        // The first lots expire: EXPIRE entries (and ACTIVATE for the pending ones).
        applied(mutate(store, P, c, later(31), &settle()).await);
    }
    let books_before = [books(store, P, &REWARDS).await, books(store, Q, &[]).await];
    assert_eq!(books_before[0].members, 2);
    assert!(
        books_before[0].by_kind.contains_key("EXPIRE"),
        "{books_before:?}"
    );
    assert_eq!(
        books_before[0].redemptions,
        [("mug".into(), 2), ("pen".into(), 2)]
    );
    assert_eq!(
        books_before[0].stock,
        [("mug".into(), Some(8)), ("pen".into(), None)]
    );
    let stays_before = (
        store.get_customer(&cid(STAYS)).await.expect("get"),
        [member(store, P, STAYS).await, member(store, Q, STAYS).await],
        [
            all_entries(store, P, STAYS).await,
            all_entries(store, Q, STAYS).await,
        ],
        store
            .get_redemption(P, &cid(STAYS), &format!("rdm-{STAYS}-0"))
            .await
            .expect("get"),
    );
    let gone_before = (
        [member(store, P, GONE).await, member(store, Q, GONE).await],
        [
            all_entries(store, P, GONE).await,
            all_entries(store, Q, GONE).await,
        ],
    );
    let head = store.feed_head().await.expect("feed_head").position;

    assert_eq!(
        store.delete_customer(&cid(GONE)).await.expect("delete"),
        Some(11 + 1)
    );

    // The erasure's changes: the customer and their memberships (so every view forgets them),
    // and the memberships under the pseudonym.
    let pseudonym = pseudonym_of_erasure(store).await;
    assert!(!pseudonym.contains(GONE));
    let erasure: Vec<Expected> = changes_after(store, head)
        .await
        .iter()
        .map(|c| (c.kind, c.key.clone(), c.scope.clone()))
        .collect();
    assert_eq!(
        erasure,
        [
            ch(ChangeKind::Customer, GONE, ""),
            ch(ChangeKind::Member, GONE, P),
            ch(ChangeKind::Member, GONE, Q),
            ch(ChangeKind::Member, &pseudonym, P),
            ch(ChangeKind::Member, &pseudonym, Q),
        ]
    );

    // No text anywhere holds the customer id, but those changes.
    let mut found = Vec::new();
    for (table, column) in &columns {
        let n = store
            .rows_containing(table, column, GONE)
            .await
            .expect("rows_containing");
        if n > 0 {
            found.push((table.as_str(), column.as_str(), n));
        }
    }
    assert_eq!(found, [("change_feed", "key", 3)]);

    // The books are the same.
    let books_after = [books(store, P, &REWARDS).await, books(store, Q, &[]).await];
    assert_eq!(books_after, books_before);

    // The erased customer is gone from every read.
    assert!(store.get_customer(&cid(GONE)).await.expect("get").is_none());
    assert!(
        store
            .list_events(&cid(GONE), &[], None, 100)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        store
            .member_programs(&cid(GONE))
            .await
            .expect("programs")
            .is_empty()
    );
    for p in [P, Q] {
        assert_eq!(member(store, p, GONE).await, None);
        assert!(all_entries(store, p, GONE).await.is_empty());
    }
    assert!(
        store
            .get_summaries(&[cid(GONE)])
            .await
            .expect("get")
            .is_empty()
    );

    // Their member rows, lots, activity and entries live on under the pseudonym, the text of
    // the entries with the customer id replaced.
    assert_eq!(
        store
            .member_programs(&cid(&pseudonym))
            .await
            .expect("programs"),
        [P, Q]
    );
    let scrub = |s: &str| s.replace(GONE, &pseudonym);
    for (i, p) in [P, Q].into_iter().enumerate() {
        assert_eq!(member(store, p, &pseudonym).await, gone_before.0[i]);
        let want: Vec<Entry> = gone_before.1[i]
            .iter()
            .map(|e| Entry {
                source: Source {
                    event_id: e.source.event_id.as_deref().map(scrub),
                    redemption_id: e.source.redemption_id.as_deref().map(scrub),
                    rule: e.source.rule.as_deref().map(scrub),
                },
                issuer: scrub(&e.issuer),
                reason: scrub(&e.reason),
                ..e.clone()
            })
            .collect();
        assert_eq!(all_entries(store, p, &pseudonym).await, want);
    }
    let kept = store
        .get_redemption(P, &cid(&pseudonym), &scrub(&format!("rdm-{GONE}-1")))
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(kept.request_id, scrub(&format!("{GONE}-req-1")));
    assert_eq!(kept.status, RedemptionStatus::Cancelled);
    let loaded = load(
        store,
        P,
        &pseudonym,
        Needs {
            order_id: Some(OrderId::parse(scrub(&format!("{GONE}-o1"))).expect("id")),
            event_id: Some(EventId::parse(scrub(&format!("{GONE}-e1"))).expect("id")),
            bonus: Some((scrub(&format!("review-{GONE}")), now().day())),
            ..Needs::default()
        },
    )
    .await;
    assert!(loaded.event_applied);
    assert_eq!(loaded.bonus_count, 1);
    assert_eq!(loaded.order.map(|o| o.points), Some(80));
    // Their points still expire: the pseudonymous members are settled like any other.
    let due: Vec<(String, String)> = store
        .members_to_settle(later(400), None, 100)
        .await
        .expect("members_to_settle")
        .into_iter()
        .map(|(p, c)| (p, c.into_string()))
        .collect();
    assert_eq!(
        due,
        [
            (Q.to_owned(), pseudonym.clone()),
            (Q.to_owned(), STAYS.to_owned())
        ]
    );

    // The other customer is untouched.
    let stays_after = (
        store.get_customer(&cid(STAYS)).await.expect("get"),
        [member(store, P, STAYS).await, member(store, Q, STAYS).await],
        [
            all_entries(store, P, STAYS).await,
            all_entries(store, Q, STAYS).await,
        ],
        store
            .get_redemption(P, &cid(STAYS), &format!("rdm-{STAYS}-0"))
            .await
            .expect("get"),
    );
    assert_eq!(stays_after, stays_before);

    // The id starts over as a new customer with no history.
    let out = store
        .record_events(&history(GONE), now())
        .await
        .expect("record");
    assert_eq!((out.recorded, out.created_customers), (11, 1));
    let again = store
        .get_customer(&cid(GONE))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(again.summary.totals.event_count, 11);
    assert_eq!(again.customer.profile, CustomerProfile::default());
    let fresh = load(
        store,
        P,
        GONE,
        Needs {
            event_id: Some(EventId::parse(format!("{GONE}-e1")).expect("id")),
            reward_id: Some("mug".into()),
            ..Needs::default()
        },
    )
    .await;
    assert_eq!(fresh.member, None);
    assert!(!fresh.event_applied);
    assert_eq!(fresh.reward_redemptions, 0);
    applied(mutate(store, P, GONE, now(), &enrol()).await);
    let m = member(store, P, GONE).await.expect("member");
    assert_eq!(m.wallet.balances(now(), 0).available, 0);
    assert_eq!(m.wallet.lifetime_earned, 0);
    assert_eq!(all_entries(store, P, GONE).await.len(), 0);
}

/// An erasure takes each membership's lock: member changes racing with it either land before
/// (and move with the books) or find no member after; none leaves a row under the customer id,
/// and the pseudonymous member's ledger adds up.
pub async fn erasure_and_member_changes_serialize(store: &(impl Store + RawTables)) {
    const C: &str = "racing-5d1e07";
    const P: &str = "points";
    const CALLS: usize = 24;
    store
        .create_program(&program(P, None, 0))
        .await
        .expect("program");
    store
        .record_events(&[purchase(C, "e1", at(100, 0), "o1", 100)], now())
        .await
        .expect("record");
    applied(mutate(store, P, C, now(), &enrol()).await);
    let customer = cid(C);
    let add = credit(10, 0, None);
    let (results, erased) = futures::join!(
        futures::future::join_all((0..CALLS).map(|_| store.mutate_member(
            P,
            &customer,
            now(),
            &add
        ))),
        store.delete_customer(&customer),
    );
    assert_eq!(erased.expect("delete"), Some(1));
    let mut landed = 0;
    for r in results {
        match r.expect("concurrent mutate_member") {
            MutateOutcome::Applied { .. } => landed += 1,
            MutateOutcome::Refused(reason) => assert_eq!(reason, "not a member"),
            MutateOutcome::OutOfStock => panic!("no stock was taken"),
        }
    }
    let pseudonym = pseudonym_of_erasure(store).await;
    let m = member(store, P, &pseudonym).await.expect("kept");
    assert_eq!(m.wallet.lifetime_earned, 10 * landed);
    m.wallet
        .check(&all_entries(store, P, &pseudonym).await)
        .expect("ledger invariant");
    assert_eq!(member(store, P, C).await, None);
    // Only the erasure's own changes (the customer, their membership) name the customer.
    for (table, column) in store.text_columns().await.expect("text_columns") {
        let n = store
            .rows_containing(&table, &column, C)
            .await
            .expect("rows_containing");
        let want = if (table.as_str(), column.as_str()) == ("change_feed", "key") {
            2
        } else {
            0
        };
        assert_eq!(n, want, "{table}.{column}");
    }
}

// The change feed.

/// A change as the tests compare it: (kind, key, scope).
type Expected = (ChangeKind, String, String);

fn ch(kind: ChangeKind, key: &str, scope: &str) -> Expected {
    (kind, key.to_owned(), scope.to_owned())
}

/// Every change after `after`, checked to be dense from `after + 1`.
async fn changes_after(store: &impl Store, after: i64) -> Vec<Change> {
    let changes = store
        .read_changes(after, 100_000)
        .await
        .expect("read_changes");
    for (i, c) in changes.iter().enumerate() {
        assert_eq!(
            c.position,
            after + 1 + i as i64,
            "dense positions: {changes:?}"
        );
    }
    changes
}

/// Checks that the changes after the head `*at` are exactly `want` (in order), all of one
/// commit (one txn, never seen before, recorded in `txns`), and moves `*at` past them.
async fn expect_changes(
    store: &impl Store,
    at: &mut i64,
    txns: &mut Vec<i64>,
    what: &str,
    want: &[Expected],
) {
    let changes = changes_after(store, *at).await;
    let got: Vec<Expected> = changes
        .iter()
        .map(|c| (c.kind, c.key.clone(), c.scope.clone()))
        .collect();
    assert_eq!(got, want, "changes of {what}");
    if let Some(first) = changes.first() {
        assert!(
            changes.iter().all(|c| c.txn == first.txn),
            "one txn per commit ({what}): {changes:?}"
        );
        assert!(
            !txns.contains(&first.txn),
            "a new txn per commit ({what}): {changes:?}"
        );
        txns.push(first.txn);
        assert!(
            changes
                .windows(2)
                .all(|w| w[0].committed_at == w[1].committed_at),
            "one commit time per commit ({what}): {changes:?}"
        );
    }
    *at += changes.len() as i64;
    let head = store.feed_head().await.expect("feed_head");
    assert_eq!(head.position, *at, "head after {what}");
}

pub async fn every_write_appends_its_changes_in_order(store: &impl Store) {
    let head = store.feed_head().await.expect("feed_head");
    assert_eq!((head.position, head.pruned_through), (0, 0));
    assert_eq!(head.database_id.len(), 32, "{head:?}");
    assert!(
        head.database_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{head:?}"
    );
    assert_eq!(store.feed_head().await.expect("feed_head"), head, "stable");
    let (mut pos, mut txns) = (0, Vec::new());
    let t = |s: i64| Timestamp::from_micros(now().as_micros() + s * 1_000_000);
    use ChangeKind::{Customer, Member, Model, Program, Reward, Segment, TierPolicy};

    // Customers, in id order.
    store
        .upsert_customers(
            &[profile_customer("b", "DE"), profile_customer("a", "FR")],
            now(),
        )
        .await
        .expect("upsert");
    let want = [ch(Customer, "a", ""), ch(Customer, "b", "")];
    expect_changes(store, &mut pos, &mut txns, "upsert", &want).await;

    // Events: one change per customer with a new event.
    let batch = [
        purchase("c", "e1", at(100, 0), "o1", 100),
        purchase("a", "e1", at(100, 0), "o1", 100),
        purchase("a", "e2", at(100, 1), "o2", 100),
        purchase("a", "e1", at(100, 0), "o1", 100),
    ];
    store.record_events(&batch, now()).await.expect("record");
    let want = [ch(Customer, "a", ""), ch(Customer, "c", "")];
    expect_changes(store, &mut pos, &mut txns, "record_events", &want).await;
    let batch = [
        purchase("a", "e1", at(100, 0), "o1", 100),
        purchase("b", "e1", at(100, 0), "o1", 100),
    ];
    let out = store.record_events(&batch, now()).await.expect("record");
    assert_eq!(out.duplicate_indexes, [0]);
    let want = [ch(Customer, "b", "")];
    expect_changes(store, &mut pos, &mut txns, "a half-duplicate batch", &want).await;

    // Models and the tier policy, keyed by version and revision.
    store
        .insert_value_model("{\"m\":1}", now(), Activation::IfNoneActive)
        .await
        .expect("insert");
    store
        .insert_value_model("{\"m\":2}", now(), Activation::IfNoneActive)
        .await
        .expect("insert");
    let want = [ch(Model, "1", "")];
    // Two commits: check them one at a time.
    let changes = changes_after(store, pos).await;
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_ne!(changes[0].txn, changes[1].txn, "{changes:?}");
    assert_eq!(
        changes
            .iter()
            .map(|c| (c.kind, c.key.clone(), c.scope.clone()))
            .collect::<Vec<_>>(),
        [want[0].clone(), ch(Model, "2", "")]
    );
    pos += 2;
    assert!(
        store
            .activate_value_model(99)
            .await
            .expect("activate")
            .is_none()
    );
    expect_changes(store, &mut pos, &mut txns, "activating no model", &[]).await;
    store
        .activate_value_model(2)
        .await
        .expect("activate")
        .expect("found");
    expect_changes(
        store,
        &mut pos,
        &mut txns,
        "activate",
        &[ch(Model, "2", "")],
    )
    .await;
    store.put_tier_policy("{}", now(), None).await.expect("put");
    store
        .put_tier_policy("{}", now(), Some(1))
        .await
        .expect("put");
    let changes = changes_after(store, pos).await;
    assert_eq!(
        changes
            .iter()
            .map(|c| (c.kind, c.key.clone(), c.scope.clone()))
            .collect::<Vec<_>>(),
        [ch(TierPolicy, "1", ""), ch(TierPolicy, "2", "")]
    );
    pos += 2;

    // Segments.
    store
        .create_segment(&segment("s1", &[], 1))
        .await
        .expect("create");
    expect_changes(
        store,
        &mut pos,
        &mut txns,
        "create_segment",
        &[ch(Segment, "s1", "")],
    )
    .await;
    store
        .update_segment(&segment("s1", &[], 2), Some(1))
        .await
        .expect("update")
        .expect("found");
    expect_changes(
        store,
        &mut pos,
        &mut txns,
        "update_segment",
        &[ch(Segment, "s1", "")],
    )
    .await;
    assert!(
        store
            .update_segment(&segment("nope", &[], 2), None)
            .await
            .expect("update")
            .is_none()
    );
    assert!(!store.delete_segment("nope").await.expect("delete"));
    expect_changes(store, &mut pos, &mut txns, "writes to no segment", &[]).await;
    assert!(store.delete_segment("s1").await.expect("delete"));
    expect_changes(
        store,
        &mut pos,
        &mut txns,
        "delete_segment",
        &[ch(Segment, "s1", "")],
    )
    .await;

    // Programs and rewards (scoped by their program).
    store
        .create_program(&program("p", None, 1))
        .await
        .expect("program");
    expect_changes(
        store,
        &mut pos,
        &mut txns,
        "create_program",
        &[ch(Program, "p", "")],
    )
    .await;
    store
        .update_program("p", "{}", None, t(2), Some(1))
        .await
        .expect("update")
        .expect("found");
    expect_changes(
        store,
        &mut pos,
        &mut txns,
        "update_program",
        &[ch(Program, "p", "")],
    )
    .await;
    assert!(
        store
            .update_program("nope", "{}", None, t(2), None)
            .await
            .expect("update")
            .is_none()
    );
    store
        .create_reward(&reward("r", "p", None, Some(5), 1))
        .await
        .expect("reward");
    expect_changes(
        store,
        &mut pos,
        &mut txns,
        "create_reward",
        &[ch(Reward, "r", "p")],
    )
    .await;
    store
        .create_reward(&reward("u", "p", None, None, 1))
        .await
        .expect("reward");
    expect_changes(
        store,
        &mut pos,
        &mut txns,
        "create_reward",
        &[ch(Reward, "u", "p")],
    )
    .await;
    store
        .update_reward("r", "{}", None, Some(Some(4)), t(2), Some(1))
        .await
        .expect("update")
        .expect("found");
    expect_changes(
        store,
        &mut pos,
        &mut txns,
        "update_reward",
        &[ch(Reward, "r", "p")],
    )
    .await;
    assert!(
        store
            .update_reward("nope", "{}", None, None, t(2), None)
            .await
            .expect("update")
            .is_none()
    );
    expect_changes(store, &mut pos, &mut txns, "updates of nothing", &[]).await;

    // Members: a change when anything is written; the reward too when its stock moves.
    applied(mutate(store, "p", "a", now(), &enrol()).await);
    expect_changes(store, &mut pos, &mut txns, "enrol", &[ch(Member, "a", "p")]).await;
    load(store, "p", "a", Needs::default()).await;
    assert!(matches!(
        mutate(store, "p", "a", now(), &enrol()).await,
        MutateOutcome::Refused(_)
    ));
    expect_changes(store, &mut pos, &mut txns, "a look and a refusal", &[]).await;
    applied(mutate(store, "p", "a", now(), &credit(100, 0, None)).await);
    expect_changes(
        store,
        &mut pos,
        &mut txns,
        "credit",
        &[ch(Member, "a", "p")],
    )
    .await;
    applied(mutate(store, "p", "a", now(), &redeem("r", "q1", "d1", 10)).await);
    let want = [ch(Member, "a", "p"), ch(Reward, "r", "p")];
    expect_changes(store, &mut pos, &mut txns, "redeem", &want).await;
    applied(mutate(store, "p", "a", now(), &cancel("r", "d1")).await);
    expect_changes(store, &mut pos, &mut txns, "cancel", &want).await;
    // An unlimited reward's stock does not move.
    applied(mutate(store, "p", "a", now(), &redeem("u", "q2", "d2", 10)).await);
    let want = [ch(Member, "a", "p")];
    expect_changes(store, &mut pos, &mut txns, "redeem unlimited", &want).await;
    // Only the applied-event mark.
    let mark = op(
        Needs {
            event_id: Some(EventId::parse("e1").expect("id")),
            ..Needs::default()
        },
        |_, _| {
            Ok(Changes {
                mark_event_applied: true,
                ..Changes::default()
            })
        },
    );
    applied(mutate(store, "q", "b", now(), &mark).await);
    let want = [ch(Member, "b", "q")];
    expect_changes(store, &mut pos, &mut txns, "mark an event", &want).await;

    // Erasure: the customer and each of their memberships.
    applied(mutate(store, "q", "a", now(), &enrol()).await);
    expect_changes(store, &mut pos, &mut txns, "enrol", &[ch(Member, "a", "q")]).await;
    assert_eq!(
        store.delete_customer(&cid("nope")).await.expect("delete"),
        None
    );
    expect_changes(store, &mut pos, &mut txns, "erasing no one", &[]).await;
    // A segment that shares the customer's id is not the customer: its changes stay as written.
    store
        .create_segment(&segment("a", &[], 3))
        .await
        .expect("segment");
    let want = [ch(Segment, "a", "")];
    expect_changes(store, &mut pos, &mut txns, "create_segment", &want).await;
    let before_erasure = changes_after(store, 0).await;
    store
        .delete_customer(&cid("a"))
        .await
        .expect("delete")
        .expect("existed");
    let pseudonym = pseudonym_of_erasure(store).await;
    let want = [
        ch(Customer, "a", ""),
        ch(Member, "a", "p"),
        ch(Member, "a", "q"),
        ch(Member, &pseudonym, "p"),
        ch(Member, &pseudonym, "q"),
    ];
    expect_changes(store, &mut pos, &mut txns, "delete_customer", &want).await;
    // The customer's earlier changes name the pseudonym now, in place; every other change
    // (the segment "a" too) is as it was.
    let after_erasure = changes_after(store, 0).await;
    let mut renamed = 0;
    for (before, after) in before_erasure.iter().zip(&after_erasure) {
        if matches!(before.kind, Customer | Member) && before.key == "a" {
            assert_eq!(
                after,
                &Change {
                    key: pseudonym.clone(),
                    ..before.clone()
                }
            );
            renamed += 1;
        } else {
            assert_eq!(after, before);
        }
    }
    assert!(renamed >= 5, "{before_erasure:?}");

    // The whole feed reads back in pages, in order.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_changes(after, 3).await.expect("read");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        after = page.last().expect("page").position;
        paged.extend(page);
    }
    assert_eq!(paged, changes_after(store, 0).await);
    assert_eq!(paged.len() as i64, pos);
    assert!(store.read_changes(0, 0).await.expect("read").is_empty());
    assert!(store.read_changes(pos, 10).await.expect("read").is_empty());
}

pub async fn refused_writes_append_nothing(store: &impl Store) {
    let batch = [
        purchase("a", "e1", at(100, 0), "o1", 100),
        purchase("b", "e1", at(100, 0), "o1", 100),
    ];
    store.record_events(&batch, now()).await.expect("record");
    store.put_tier_policy("{}", now(), None).await.expect("put");
    store
        .create_segment(&segment("s1", &[], 1))
        .await
        .expect("create");
    store
        .create_program(&program("p", None, 1))
        .await
        .expect("program");
    store
        .create_reward(&reward("r", "p", None, Some(0), 1))
        .await
        .expect("reward");
    applied(mutate(store, "p", "a", now(), &enrol()).await);
    applied(mutate(store, "p", "a", now(), &credit(100, 0, None)).await);
    let head = store.feed_head().await.expect("feed_head");
    let all = changes_after(store, 0).await;
    assert_eq!(all.len() as i64, head.position);

    // All duplicates, and nothing at all.
    let out = store.record_events(&batch, now()).await.expect("record");
    assert_eq!(out.recorded, 0);
    store.record_events(&[], now()).await.expect("record");
    store.upsert_customers(&[], now()).await.expect("upsert");
    // Refusals.
    assert!(matches!(
        store.put_tier_policy("{}", now(), Some(7)).await,
        Err(StoreError::PreconditionFailed(_))
    ));
    assert!(matches!(
        store.create_segment(&segment("s1", &[], 2)).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        store.update_segment(&segment("s1", &[], 2), Some(9)).await,
        Err(StoreError::PreconditionFailed(_))
    ));
    assert!(matches!(
        store.update_segment(&segment("s1", &["s1"], 2), None).await,
        Err(StoreError::SegmentCycle(_))
    ));
    assert!(matches!(
        store.create_segment(&segment("s2", &["missing"], 2)).await,
        Err(StoreError::MissingDependency(_))
    ));
    assert!(matches!(
        store.create_program(&program("p", None, 2)).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        store.update_program("p", "{}", None, now(), Some(9)).await,
        Err(StoreError::PreconditionFailed(_))
    ));
    assert!(matches!(
        store
            .create_reward(&reward("r2", "nope", None, None, 2))
            .await,
        Err(StoreError::MissingDependency(_))
    ));
    assert!(matches!(
        store.create_reward(&reward("r", "p", None, None, 2)).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        store
            .update_reward("r", "{}", None, None, now(), Some(9))
            .await,
        Err(StoreError::PreconditionFailed(_))
    ));
    assert!(matches!(
        mutate(store, "p", "a", now(), &debit(1_000)).await,
        MutateOutcome::Refused(_)
    ));
    assert_eq!(
        mutate(store, "p", "a", now(), &redeem("r", "q1", "d1", 10)).await,
        MutateOutcome::OutOfStock
    );
    assert_eq!(store.feed_head().await.expect("feed_head"), head);
    assert_eq!(changes_after(store, 0).await, all);
}

pub async fn events_of_returns_the_events_of_one_commit(store: &impl Store) {
    let first = [
        purchase("y", "e3", at(100, 3), "o3", 300),
        purchase("x", "e2", at(100, 2), "o2", 200),
        purchase("x", "e1", at(100, 1), "o1", 100),
    ];
    store.record_events(&first, now()).await.expect("record");
    let txn1 = changes_after(store, 0).await[0].txn;
    let second = [
        purchase("x", "e1", at(100, 1), "o1", 100),
        purchase("x", "e4", at(100, 4), "o4", 400),
    ];
    store.record_events(&second, now()).await.expect("record");
    let changes = changes_after(store, 2).await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(
        (changes[0].kind, changes[0].key.as_str()),
        (ChangeKind::Customer, "x")
    );
    let txn2 = changes[0].txn;
    assert_ne!(txn1, txn2);
    // An event recorded again with the second commit keeps the first's number.
    let of = |pairs: &[(&str, i64)]| pairs.iter().map(|(c, t)| (cid(c), *t)).collect::<Vec<_>>();
    let got = store
        .events_of(&of(&[("x", txn1), ("y", txn1)]))
        .await
        .expect("events_of");
    assert_eq!(got, [first[2].clone(), first[1].clone(), first[0].clone()]);
    let got = store
        .events_of(&of(&[("x", txn2)]))
        .await
        .expect("events_of");
    assert_eq!(got, [second[1].clone()]);
    // Nothing for another commit, an unknown number or customer, or no pairs.
    for pairs in [
        vec![("y", txn2)],
        vec![("x", txn1.max(txn2) + 1_000)],
        vec![("nobody", txn1)],
        vec![],
    ] {
        assert!(
            store
                .events_of(&of(&pairs))
                .await
                .expect("events_of")
                .is_empty(),
            "{pairs:?}"
        );
    }
    // In (customer, txn, event id) order, each event once.
    let (lo, hi) = (txn1.min(txn2), txn1.max(txn2));
    let got = store
        .events_of(&of(&[("y", txn1), ("x", hi), ("x", lo), ("x", txn1)]))
        .await
        .expect("events_of");
    let mut want = vec![first[2].clone(), first[1].clone(), second[1].clone()];
    if txn2 < txn1 {
        want.rotate_right(1);
    }
    want.push(first[0].clone());
    assert_eq!(got, want);
}

pub async fn pruning_keeps_what_live_readers_and_consumers_have_not_passed(store: &impl Store) {
    for i in 1..=6 {
        store
            .upsert_customers(&[profile_customer(&format!("c{i}"), "DE")], now())
            .await
            .expect("upsert");
    }
    let all = changes_after(store, 0).await;
    assert_eq!(all.len(), 6);
    let everything = Timestamp::from_micros(
        all.iter()
            .map(|c| c.committed_at.as_micros())
            .max()
            .expect("changes")
            + 1_000_000,
    );
    let live_since = Timestamp::from_micros(now().as_micros() - 60_000_000);
    let stale = Timestamp::from_micros(now().as_micros() - 3_600_000_000);
    let positions = |changes: Vec<Change>| changes.iter().map(|c| c.position).collect::<Vec<_>>();

    // A live reader at 2 holds back 3.., a silent one at 0 is forgotten.
    store
        .feed_reader_heartbeat("old", 0, stale)
        .await
        .expect("heartbeat");
    store
        .feed_reader_heartbeat("r1", 1, now())
        .await
        .expect("heartbeat");
    store
        .feed_reader_heartbeat("r1", 2, now())
        .await
        .expect("heartbeat");
    assert_eq!(
        store
            .prune_feed(everything, live_since)
            .await
            .expect("prune"),
        2
    );
    assert_eq!(head_and_pruned(store).await, (6, 2));
    assert_eq!(positions(changes_after(store, 2).await), [3, 4, 5, 6]);
    assert!(
        store.read_changes(0, 10).await.expect("read")[0].position == 3,
        "pruned rows are gone"
    );

    // A consumer holds back what it has not passed.
    let lease = Timestamp::from_micros(now().as_micros() + 10_000_000);
    assert_eq!(
        store
            .claim_consumer("earner", "o1", now(), lease)
            .await
            .expect("claim"),
        Some(0)
    );
    store
        .feed_reader_heartbeat("r1", 6, now())
        .await
        .expect("heartbeat");
    assert_eq!(
        store
            .prune_feed(everything, live_since)
            .await
            .expect("prune"),
        0
    );
    assert_eq!(head_and_pruned(store).await, (6, 2));
    assert!(
        store
            .advance_consumer("earner", "o1", 4)
            .await
            .expect("advance")
    );
    assert_eq!(
        store
            .prune_feed(everything, live_since)
            .await
            .expect("prune"),
        2
    );
    assert_eq!(head_and_pruned(store).await, (6, 4));
    assert_eq!(positions(changes_after(store, 4).await), [5, 6]);

    // Retention: nothing committed at or after `committed_before` goes, nor anything after it.
    assert!(
        store
            .advance_consumer("earner", "o1", 6)
            .await
            .expect("advance")
    );
    assert_eq!(
        store
            .prune_feed(all[4].committed_at, live_since)
            .await
            .expect("prune"),
        0
    );
    assert_eq!(head_and_pruned(store).await, (6, 4));
    assert_eq!(positions(changes_after(store, 4).await), [5, 6]);

    // The reader falls silent: it is forgotten, and the consumer alone holds nothing back.
    let later = Timestamp::from_micros(now().as_micros() + 60_000_000);
    assert_eq!(store.prune_feed(everything, later).await.expect("prune"), 2);
    assert_eq!(head_and_pruned(store).await, (6, 6));
    assert!(changes_after(store, 0).await.is_empty());
    assert_eq!(store.prune_feed(everything, later).await.expect("prune"), 0);
    assert_eq!(head_and_pruned(store).await, (6, 6));

    // Positions go on from the head; with neither readers nor a consumer behind, the head
    // bounds what goes.
    store
        .upsert_customers(&[profile_customer("c7", "DE")], now())
        .await
        .expect("upsert");
    assert_eq!(positions(changes_after(store, 6).await), [7]);
    assert_eq!(head_and_pruned(store).await, (7, 6));
    // The consumer at 6 keeps 7.
    let after_all = Timestamp::from_micros(i64::MAX);
    assert_eq!(store.prune_feed(after_all, later).await.expect("prune"), 0);
    assert!(
        store
            .advance_consumer("earner", "o1", 7)
            .await
            .expect("advance")
    );
    assert_eq!(store.prune_feed(after_all, later).await.expect("prune"), 1);
    assert_eq!(head_and_pruned(store).await, (7, 7));
}

async fn store_head(store: &impl Store) -> crate::feed::FeedHead {
    store.feed_head().await.expect("feed_head")
}

async fn head_and_pruned(store: &impl Store) -> (i64, i64) {
    let h = store_head(store).await;
    (h.position, h.pruned_through)
}

pub async fn consumer_leases_admit_one_owner(store: &impl Store) {
    let t = |s: i64| Timestamp::from_micros(now().as_micros() + s * 1_000_000);
    // Created at 0 by the first claim.
    assert_eq!(
        store
            .claim_consumer("earner", "a", t(0), t(10))
            .await
            .expect("claim"),
        Some(0)
    );
    assert!(
        store
            .advance_consumer("earner", "a", 5)
            .await
            .expect("advance")
    );
    // Another owner is refused while the lease is live, and cannot advance.
    assert_eq!(
        store
            .claim_consumer("earner", "b", t(5), t(15))
            .await
            .expect("claim"),
        None
    );
    assert!(
        !store
            .advance_consumer("earner", "b", 7)
            .await
            .expect("advance")
    );
    // The owner renews; a position behind the stored one is kept (and the owner still holds).
    assert_eq!(
        store
            .claim_consumer("earner", "a", t(6), t(12))
            .await
            .expect("claim"),
        Some(5)
    );
    assert!(
        store
            .advance_consumer("earner", "a", 3)
            .await
            .expect("advance")
    );
    assert!(
        store
            .advance_consumer("earner", "a", 5)
            .await
            .expect("advance")
    );
    // Expired exactly at its end is not yet expired; after it, another owner takes over.
    assert_eq!(
        store
            .claim_consumer("earner", "b", t(12), t(22))
            .await
            .expect("claim"),
        None
    );
    assert_eq!(
        store
            .claim_consumer("earner", "b", t(13), t(23))
            .await
            .expect("claim"),
        Some(5)
    );
    // The old owner can no longer advance, nor claim while the new lease is live.
    assert!(
        !store
            .advance_consumer("earner", "a", 9)
            .await
            .expect("advance")
    );
    assert_eq!(
        store
            .claim_consumer("earner", "a", t(14), t(24))
            .await
            .expect("claim"),
        None
    );
    assert!(
        store
            .advance_consumer("earner", "b", 9)
            .await
            .expect("advance")
    );
    assert_eq!(
        store
            .claim_consumer("earner", "b", t(15), t(25))
            .await
            .expect("claim"),
        Some(9)
    );
    // Consumers are independent; an unknown one cannot be advanced.
    assert_eq!(
        store
            .claim_consumer("other", "a", t(15), t(25))
            .await
            .expect("claim"),
        Some(0)
    );
    assert!(
        !store
            .advance_consumer("nobody", "a", 1)
            .await
            .expect("advance")
    );
    // Consumers write nothing to the feed.
    assert_eq!(store_head(store).await.position, 0);
}
