//! Erasure: deleting a customer removes their data and keeps the loyalty books under a
//! pseudonym, leaving no trace of the id below the `Store` API ([`RawTables`]).

use patron_domain::{CustomerProfile, EventId, OrderId};

use patron_domain::loyalty::ledger::days_after;
use patron_domain::loyalty::tier::DayActivity;
use patron_domain::loyalty::{Entry, EntryKind, Meta, Points, Source};

use super::events::{engagement_day, history};
use super::feed::{Expected, ch, changes_after};
use super::loyalty::{
    Op, all_entries, applied, cancel, credit, debit, enrol, later, load, member, member_of, mutate,
    op, program, redeem, reward, settle,
};
use super::{RawTables, at, cid, now, profile_customer, purchase};
use crate::Store;
use crate::feed::ChangeKind;
use crate::loyalty::{
    Changes, Loaded, LoyaltyOrder, MutateOutcome, Needs, RedemptionStatus, Refusal,
};

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
pub(super) async fn pseudonym_of_erasure(store: &impl Store) -> String {
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
            return Err(Refusal::Internal("applied".into()));
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
            .map_err(|e| Refusal::Internal(e.to_string()))?;
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
            MutateOutcome::Refused(reason) => assert_eq!(reason, Refusal::NotEnrolled),
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
