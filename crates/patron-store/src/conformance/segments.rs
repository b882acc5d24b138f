//! Segment definitions: created, listed, updated; cycles and missing dependencies refused;
//! segments in use kept.

use patron_domain::Timestamp;

use super::now;
use crate::{SegmentRecord, Store, StoreError};

/// A segment definition written at `now() + t` seconds.
pub(super) fn segment(id: &str, depends_on: &[&str], t: i64) -> SegmentRecord {
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
