//! The follower against a real SQLite store: views get every change in order, a sync sees the
//! caller's write, a second process's writes arrive by polling, and a follower that fell behind
//! the retention window reloads instead of skipping what was pruned.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use patron_domain::{Customer, CustomerId, Timestamp};
use patron_feed::{Feed, FeedView, Settings};
use patron_store::feed::Change;
use patron_store::{Store, StoreResult};
use patron_store_sqlite::SqliteStore;

#[derive(Debug, Default)]
struct Recorder {
    positions: Mutex<Vec<i64>>,
    keys: Mutex<Vec<String>>,
    reloads: Mutex<usize>,
}

#[async_trait]
impl FeedView for Recorder {
    async fn apply(&self, changes: &[Change]) -> StoreResult<()> {
        let mut p = self.positions.lock().expect("lock");
        let mut k = self.keys.lock().expect("lock");
        for c in changes {
            p.push(c.position);
            k.push(c.key.clone());
        }
        Ok(())
    }

    async fn reload(&self) -> StoreResult<()> {
        *self.reloads.lock().expect("lock") += 1;
        Ok(())
    }
}

async fn open(url: &str) -> Arc<dyn Store> {
    let store = SqliteStore::connect(url).await.expect("connect");
    store.migrate().await.expect("migrate");
    Arc::new(store)
}

fn customer(id: &str) -> Customer {
    Customer {
        customer_id: CustomerId::parse(id).expect("id"),
        profile: Default::default(),
    }
}

fn settings(poll_ms: u64) -> Settings {
    Settings {
        poll_interval: Duration::from_millis(poll_ms),
        ..Settings::default()
    }
}

#[tokio::test]
async fn views_follow_this_and_other_processes_writes_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    let store = open(&url).await;
    let start = Feed::start_position(store.as_ref()).await.expect("head");
    let view = Arc::new(Recorder::default());
    // Polling far apart: only `sync` can make the first write visible quickly.
    let (feed, task) = Feed::start(
        Arc::clone(&store),
        start,
        vec![Arc::clone(&view) as Arc<dyn FeedView>],
        settings(60_000),
    )
    .await
    .expect("start");
    let now = Timestamp::from_micros(1_767_225_600_000_000);
    store
        .upsert_customers(&[customer("a"), customer("b")], now)
        .await
        .expect("upsert");
    let position = feed.sync().await;
    assert_eq!(position, 2);
    assert_eq!(*view.positions.lock().expect("lock"), vec![1, 2]);

    // Another process (its own store on the same file) writes; polling brings it in.
    task.abort();
    let (feed, task) = Feed::start(
        Arc::clone(&store),
        feed.applied(),
        vec![Arc::clone(&view) as Arc<dyn FeedView>],
        settings(20),
    )
    .await
    .expect("restart");
    let other = open(&url).await;
    other
        .upsert_customers(&[customer("c")], now)
        .await
        .expect("upsert through another store");
    assert!(feed.wait_applied(3, Duration::from_secs(5)).await);
    assert_eq!(*view.positions.lock().expect("lock"), vec![1, 2, 3]);
    assert_eq!(*view.keys.lock().expect("lock"), vec!["a", "b", "c"]);
    assert_eq!(*view.reloads.lock().expect("lock"), 0);
    task.abort();
}

#[tokio::test]
async fn a_follower_behind_the_retention_window_reloads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    let store = open(&url).await;
    let now = Timestamp::from_micros(1_767_225_600_000_000);
    for id in ["a", "b", "c"] {
        store
            .upsert_customers(&[customer(id)], now)
            .await
            .expect("upsert");
    }
    // No live reader, no consumer: everything committed before "later" goes.
    let later = Timestamp::from_micros(i64::MAX / 2);
    let pruned = store.prune_feed(later, later).await.expect("prune");
    assert_eq!(pruned, 3);
    let head = store.feed_head().await.expect("head");
    assert_eq!((head.position, head.pruned_through), (3, 3));

    // A follower that had applied only position 1 cannot catch up from the feed.
    let view = Arc::new(Recorder::default());
    let (feed, task) = Feed::start(
        Arc::clone(&store),
        1,
        vec![Arc::clone(&view) as Arc<dyn FeedView>],
        settings(20),
    )
    .await
    .expect("start");
    assert!(feed.wait_applied(3, Duration::from_secs(5)).await);
    assert_eq!(*view.reloads.lock().expect("lock"), 1);
    assert!(view.positions.lock().expect("lock").is_empty());
    // And goes on from the feed afterwards.
    store
        .upsert_customers(&[customer("d")], now)
        .await
        .expect("upsert");
    assert_eq!(feed.sync().await, 4);
    assert_eq!(*view.positions.lock().expect("lock"), vec![4]);
    task.abort();
}

#[test]
fn tokens_name_the_database() {
    let t = patron_feed::token::encode("abc", 7);
    assert_eq!(patron_feed::token::decode(&t, "abc"), Ok(7));
    assert!(patron_feed::token::decode(&t, "xyz").is_err());
}
