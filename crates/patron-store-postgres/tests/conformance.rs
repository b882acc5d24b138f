//! The storage conformance suite, plus Postgres-only concurrency checks, each against a fresh
//! database on the server named by `PATRON_TEST_POSTGRES_URL`. Ignored by default; run with
//! `PATRON_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres cargo test
//! -p patron-store-postgres -- --include-ignored`.

use std::collections::{HashMap, HashSet};

use patron_domain::{CustomerId, Day, Timestamp};
use patron_store::Store;
use patron_store::conformance::{now, purchase};
use patron_store_postgres::PgStore;
use patron_store_postgres::testing::TestDatabase;

async fn fresh() -> (PgStore, TestDatabase) {
    let db = TestDatabase::create().await;
    let store = PgStore::connect(&db.url).await.expect("connect");
    store.migrate().await.expect("migrate");
    (store, db)
}

patron_store::conformance_tests!(
    #[ignore = "Postgres suite: set PATRON_TEST_POSTGRES_URL and run with -- --include-ignored"]
    fresh().await
);

/// Eight writers record overlapping batches for the same 50 customers at once: every batch
/// holds 250 events shared by all writers and 250 of its own, in a different order each. None
/// may fail (no deadlock), every event is stored once, and the summaries count each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "Postgres suite: set PATRON_TEST_POSTGRES_URL and run with -- --include-ignored"]
async fn concurrent_overlapping_batches_do_not_deadlock() {
    const WRITERS: usize = 8;
    const CUSTOMERS: usize = 50;
    const SHARED: usize = 250;
    const OWN: usize = 250;
    let (store, _db) = fresh().await;
    let at = |i: usize| {
        Timestamp::from_micros(
            Day::from_days(20_000 + (i % 40) as i32).start().as_micros() + i as i64,
        )
    };
    let customer = |i: usize| format!("con{:02}", (i * 7) % CUSTOMERS);

    let mut tasks = Vec::new();
    let mut expected: HashMap<String, HashSet<String>> = HashMap::new();
    for w in 0..WRITERS {
        let mut batch = Vec::with_capacity(SHARED + OWN);
        for i in 0..SHARED {
            let id = format!("shared{i}");
            batch.push(purchase(&customer(i), &id, at(i), &format!("o-{id}"), 100));
            expected.entry(customer(i)).or_default().insert(id);
        }
        for i in 0..OWN {
            let id = format!("w{w}-{i}");
            batch.push(purchase(
                &customer(i + w),
                &id,
                at(i),
                &format!("o-{id}"),
                1,
            ));
            expected.entry(customer(i + w)).or_default().insert(id);
        }
        // A different order per writer; the store sorts before writing.
        batch.rotate_left(w * 61 % (SHARED + OWN));
        if w % 2 == 1 {
            batch.reverse();
        }
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.record_events(&batch, now()).await
        }));
    }
    let mut recorded = 0;
    let mut created = 0;
    for task in tasks {
        let out = task
            .await
            .expect("writer task")
            .expect("record_events under contention");
        recorded += out.recorded;
        created += out.created_customers;
    }
    assert_eq!(recorded, SHARED + WRITERS * OWN, "each event stored once");
    assert_eq!(created, CUSTOMERS, "each customer created once");

    assert_eq!(expected.len(), CUSTOMERS);
    for (id, events) in &expected {
        let record = store
            .get_customer(&CustomerId::parse(id.clone()).expect("id"))
            .await
            .expect("get")
            .expect("exists");
        let totals = &record.summary.totals;
        assert_eq!(
            totals.event_count,
            events.len() as i64,
            "event count of {id}"
        );
        let shared = events.iter().filter(|e| e.starts_with("shared")).count() as i64;
        let own = events.len() as i64 - shared;
        assert_eq!(
            record.summary.purchases.net_revenue,
            shared * 100 + own,
            "net revenue of {id}"
        );
        assert_eq!(record.summary.purchases.order_count, events.len() as i64);
        let stored = store
            .list_events(&record.customer.customer_id, &[], None, 10_000)
            .await
            .expect("list");
        assert_eq!(stored.len(), events.len(), "stored events of {id}");
    }
    store.close().await;
}

/// Sixteen writers on four threads insert value models with `activate` (and half of them then
/// re-activate an older version) at once: versions stay distinct and gap-free, and exactly one
/// model is active afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "Postgres suite: set PATRON_TEST_POSTGRES_URL and run with -- --include-ignored"]
async fn parallel_activating_inserts_leave_one_active() {
    const WRITERS: i64 = 16;
    let (store, _db) = fresh().await;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let model = store
                .insert_value_model(&format!("{{\"writer\":{w}}}"), now(), true)
                .await?;
            if w % 2 == 0 {
                store.activate_value_model(1 + w / 2).await?;
            }
            Ok::<_, patron_store::StoreError>(model.version)
        }));
    }
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.expect("writer task").expect("concurrent write"));
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=WRITERS).collect::<Vec<_>>());
    let all = store.list_value_models(None, 100).await.expect("list");
    let active: Vec<i64> = all.iter().filter(|m| m.active).map(|m| m.version).collect();
    assert_eq!(active.len(), 1, "exactly one active: {active:?}");
    store.close().await;
}
