//! The change feed: every write appends its changes in order, refused writes append nothing,
//! pruning, and consumer leases.

use patron_domain::{EventId, Timestamp};

use super::erasure::pseudonym_of_erasure;
use super::loyalty::{
    applied, cancel, credit, debit, enrol, load, mutate, op, program, redeem, reward,
};
use super::segments::segment;
use super::{at, cid, now, profile_customer, purchase};
use crate::feed::{Change, ChangeKind};
use crate::loyalty::{Changes, MutateOutcome, Needs};
use crate::{Activation, Store, StoreError};

/// A change as the tests compare it: (kind, key, scope).
pub(super) type Expected = (ChangeKind, String, String);
pub(super) fn ch(kind: ChangeKind, key: &str, scope: &str) -> Expected {
    (kind, key.to_owned(), scope.to_owned())
}
/// Every change after `after`, checked to be dense from `after + 1`.
pub(super) async fn changes_after(store: &impl Store, after: i64) -> Vec<Change> {
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
