//! Value models (versioned, listed, activated) and the tier policy (revisions checked).

use patron_domain::Timestamp;

use super::now;
use crate::{Activation, Store, StoreError};

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
