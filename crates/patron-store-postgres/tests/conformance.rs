//! The storage conformance suite, plus Postgres-only concurrency checks, each against a fresh
//! database on the server named by `PATRON_TEST_POSTGRES_URL`. Ignored by default; run with
//! `PATRON_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres cargo test
//! -p patron-store-postgres -- --include-ignored`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use patron_domain::{CustomerId, Day, Timestamp};
use patron_store::Store;
use patron_store::conformance::{now, purchase};
use patron_store::feed::{ChangeKind, FeedStore};
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
                .insert_value_model(
                    &format!("{{\"writer\":{w}}}"),
                    now(),
                    patron_store::Activation::Always,
                )
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

/// Eight writers record 50 small batches each, on different and overlapping customers, through
/// two pools (as two server processes would), while a reader polls the feed: every position it
/// ever sees is the one after the last it saw (a later commit never shows before an earlier
/// one's positions), and at the end it has seen every position up to the head, each commit's
/// events reachable through its changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "Postgres suite: set PATRON_TEST_POSTGRES_URL and run with -- --include-ignored"]
async fn concurrent_commits_become_visible_in_position_order() {
    const WRITERS: usize = 8;
    const BATCHES: usize = 50;
    let (first, db) = fresh().await;
    let second = PgStore::connect(&db.url).await.expect("connect");
    let stores = [first.clone(), second.clone()];
    let at =
        |i: usize| Timestamp::from_micros(Day::from_days(20_000).start().as_micros() + i as i64);

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let stores = stores.clone();
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut last = 0;
            let mut seen = Vec::new();
            let mut reads = 0usize;
            loop {
                let finished = done.load(Ordering::Acquire);
                // Alternate between the pools, small pages and large.
                let store = &stores[reads % 2];
                let limit = if reads.is_multiple_of(3) { 7 } else { 1_000 };
                reads += 1;
                let page = store.read_changes(last, limit).await.expect("read_changes");
                for c in &page {
                    assert_eq!(
                        c.position,
                        last + 1,
                        "a gap after {last}: read {:?}",
                        page.iter().map(|c| c.position).collect::<Vec<_>>()
                    );
                    last = c.position;
                }
                seen.extend(page.iter().cloned());
                if finished && page.is_empty() {
                    return (last, seen, reads);
                }
                if page.is_empty() {
                    tokio::task::yield_now().await;
                }
            }
        })
    };

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = stores[w % 2].clone();
        writers.push(tokio::spawn(async move {
            let mut recorded = 0;
            for b in 0..BATCHES {
                // One customer of this writer's own, and two shared by all writers.
                let shared = |k: usize| format!("shared{:02}", (w * 3 + b * 7 + k * 5) % 16);
                let batch = vec![
                    purchase(
                        &format!("own{w}"),
                        &format!("w{w}-{b}-0"),
                        at(b),
                        &format!("o{w}-{b}-0"),
                        1,
                    ),
                    purchase(
                        &shared(0),
                        &format!("w{w}-{b}-1"),
                        at(b),
                        &format!("o{w}-{b}-1"),
                        2,
                    ),
                    purchase(
                        &shared(1),
                        &format!("w{w}-{b}-2"),
                        at(b),
                        &format!("o{w}-{b}-2"),
                        3,
                    ),
                ];
                let out = store
                    .record_events(&batch, now())
                    .await
                    .expect("record_events");
                recorded += out.recorded;
            }
            recorded
        }));
    }
    let mut recorded = 0;
    for w in writers {
        recorded += w.await.expect("writer task");
    }
    done.store(true, Ordering::Release);
    let (last, seen, reads) = reader.await.expect("reader task");
    assert_eq!(recorded, WRITERS * BATCHES * 3);

    let head = first.feed_head().await.expect("feed_head");
    assert_eq!(
        last, head.position,
        "the reader saw everything ({reads} reads)"
    );
    assert_eq!(seen.len() as i64, head.position);
    assert!(seen.iter().all(|c| c.kind == ChangeKind::Customer));
    // One commit per batch, its txn on every change of it.
    let txns: HashSet<i64> = seen.iter().map(|c| c.txn).collect();
    assert_eq!(txns.len(), WRITERS * BATCHES);
    let pairs: Vec<(CustomerId, i64)> = seen
        .iter()
        .map(|c| (CustomerId::parse(c.key.clone()).expect("id"), c.txn))
        .collect();
    let events = second.events_of(&pairs).await.expect("events_of");
    assert_eq!(
        events.len(),
        recorded,
        "every event through its commit's changes"
    );
    let ids: HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), recorded);
    first.close().await;
    second.close().await;
}

/// A function registered with `on_feed_commit` is called after a commit made through another
/// pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "Postgres suite: set PATRON_TEST_POSTGRES_URL and run with -- --include-ignored"]
async fn feed_commits_wake_other_processes() {
    let (listening, db) = fresh().await;
    let writing = PgStore::connect(&db.url).await.expect("connect");
    let wakes = Arc::new(AtomicUsize::new(0));
    let notify = Arc::new(tokio::sync::Notify::new());
    {
        let (wakes, notify) = (Arc::clone(&wakes), Arc::clone(&notify));
        listening.on_feed_commit(Arc::new(move || {
            wakes.fetch_add(1, Ordering::SeqCst);
            notify.notify_one();
        }));
    }
    let wait_for = |n: usize| {
        let (wakes, notify) = (Arc::clone(&wakes), Arc::clone(&notify));
        async move {
            tokio::time::timeout(Duration::from_secs(10), async {
                while wakes.load(Ordering::SeqCst) < n {
                    notify.notified().await;
                }
            })
            .await
            .is_ok()
        }
    };
    // Woken once when the listener is connected (commits before it are not missed either).
    assert!(wait_for(1).await, "woken when listening");
    // A second registration shares the listener.
    let second = Arc::new(AtomicUsize::new(0));
    {
        let second = Arc::clone(&second);
        listening.on_feed_commit(Arc::new(move || {
            second.fetch_add(1, Ordering::SeqCst);
        }));
    }
    let before = wakes.load(Ordering::SeqCst);
    writing
        .record_events(&[purchase("c1", "e1", now(), "o1", 100)], now())
        .await
        .expect("record");
    assert!(
        wait_for(before + 1).await,
        "woken by the other pool's commit"
    );
    // Functions are called one after the other: the second shortly after the first.
    let every = tokio::time::timeout(Duration::from_secs(10), async {
        while second.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert!(every.await.is_ok(), "every function is called");
    let head = listening.feed_head().await.expect("feed_head");
    assert_eq!(head.position, 1);

    // A write that appends nothing (all duplicates) notifies no one.
    let before = wakes.load(Ordering::SeqCst);
    writing
        .record_events(&[purchase("c1", "e1", now(), "o1", 100)], now())
        .await
        .expect("record");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(wakes.load(Ordering::SeqCst), before);

    listening.close().await;
    writing.close().await;
}

/// A member operation that, once it holds the member's lock, waits until it is released, then
/// credits 10 points.
struct HoldThenCredit {
    holding: std::sync::mpsc::SyncSender<()>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl std::fmt::Debug for HoldThenCredit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HoldThenCredit")
    }
}

impl patron_store::loyalty::MemberOp for HoldThenCredit {
    fn needs(&self) -> patron_store::loyalty::Needs {
        patron_store::loyalty::Needs::default()
    }

    fn apply(
        &self,
        loaded: &patron_store::loyalty::Loaded,
        now: Timestamp,
    ) -> Result<patron_store::loyalty::Changes, patron_store::loyalty::Refusal> {
        let _ = self.holding.send(());
        let _ = self
            .release
            .lock()
            .map_err(|_| patron_store::loyalty::Refusal::Internal("poisoned".to_owned()))?
            .recv();
        let mut member = loaded
            .member
            .clone()
            .ok_or(patron_store::loyalty::Refusal::NotEnrolled)?;
        member
            .wallet
            .credit(
                patron_domain::loyalty::EntryKind::Earn,
                10,
                now,
                None,
                patron_domain::loyalty::Meta::system(now, Default::default(), "held"),
            )
            .map_err(|e| patron_store::loyalty::Refusal::Internal(e.to_string()))?;
        Ok(patron_store::loyalty::Changes {
            member: Some(member),
            ..Default::default()
        })
    }
}

/// Makes the customer a member (or leaves a member as is).
#[derive(Debug)]
struct Enrol;

impl patron_store::loyalty::MemberOp for Enrol {
    fn needs(&self) -> patron_store::loyalty::Needs {
        patron_store::loyalty::Needs::default()
    }

    fn apply(
        &self,
        loaded: &patron_store::loyalty::Loaded,
        now: Timestamp,
    ) -> Result<patron_store::loyalty::Changes, patron_store::loyalty::Refusal> {
        Ok(patron_store::loyalty::Changes {
            member: loaded
                .member
                .is_none()
                .then(|| patron_store::loyalty::MemberRow {
                    enrolled_at: now,
                    wallet: patron_domain::loyalty::Wallet::new(),
                    first_purchase_done: false,
                    activity: Vec::new(),
                }),
            ..Default::default()
        })
    }
}

/// An erasure waits for each membership's lock (here held by a change in progress, which lands
/// first and moves with the books), and a membership committed in another program while it
/// waits is found and moved too: afterwards no row but the erasure's own changes names the
/// customer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "Postgres suite: set PATRON_TEST_POSTGRES_URL and run with -- --include-ignored"]
async fn erasure_follows_memberships_committed_while_it_waits() {
    use patron_store::conformance::RawTables;
    use patron_store::loyalty::{LoyaltyStore, MutateOutcome, ProgramRecord};

    const C: &str = "waits-4e1b9d";
    let (store, db) = fresh().await;
    let customer = CustomerId::parse(C).expect("id");
    for p in ["p", "q"] {
        store
            .create_program(&ProgramRecord {
                program_id: p.into(),
                body: "{}".into(),
                target_segment: None,
                revision: 0,
                create_time: now(),
                update_time: now(),
            })
            .await
            .expect("program");
    }
    store
        .record_events(&[purchase(C, "e1", now(), "o1", 100)], now())
        .await
        .expect("record");
    let enrolled = store
        .mutate_member("p", &customer, now(), &Enrol)
        .await
        .expect("enrol");
    assert!(matches!(enrolled, MutateOutcome::Applied { .. }));

    // A change of the membership in p holds its lock…
    let (holding, held) = std::sync::mpsc::sync_channel(1);
    let (release, released) = std::sync::mpsc::channel();
    let hold = HoldThenCredit {
        holding,
        release: std::sync::Mutex::new(released),
    };
    let holder = {
        let (store, customer) = (store.clone(), customer.clone());
        tokio::spawn(async move { store.mutate_member("p", &customer, now(), &hold).await })
    };
    tokio::task::spawn_blocking(move || held.recv())
        .await
        .expect("join")
        .expect("the change holds the lock");
    // …while the erasure starts and waits for it.
    let eraser = {
        let (store, customer) = (store.clone(), customer.clone());
        tokio::spawn(async move { store.delete_customer(&customer).await })
    };
    let locks = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let waiting = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        )
        .fetch_one(&locks)
        .await
        .expect("pg_locks")
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        while waiting().await == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the erasure waits for the member lock");
    // A membership in q commits meanwhile (the erasure has not seen it).
    let enrolled = store
        .mutate_member("q", &customer, now(), &Enrol)
        .await
        .expect("enrol in q");
    assert!(matches!(enrolled, MutateOutcome::Applied { .. }));
    release.send(()).expect("release");
    let held = holder.await.expect("join").expect("held change");
    assert!(matches!(held, MutateOutcome::Applied { .. }), "{held:?}");
    assert_eq!(eraser.await.expect("join").expect("delete"), Some(1));

    // Both memberships moved to the pseudonym, the held credit with them.
    let changes = store.read_changes(0, 1_000).await.expect("read");
    let erasure: Vec<(ChangeKind, &str, &str)> = changes
        .iter()
        .rev()
        .take(5)
        .rev()
        .map(|c| (c.kind, c.key.as_str(), c.scope.as_str()))
        .collect();
    let pseudonym = erasure[4].1;
    assert!(pseudonym.starts_with("erased-"), "{erasure:?}");
    assert_eq!(
        erasure,
        [
            (ChangeKind::Customer, C, ""),
            (ChangeKind::Member, C, "p"),
            (ChangeKind::Member, C, "q"),
            (ChangeKind::Member, pseudonym, "p"),
            (ChangeKind::Member, pseudonym, "q"),
        ]
    );
    let pseudonymous = CustomerId::parse(pseudonym).expect("id");
    assert_eq!(
        store
            .member_programs(&pseudonymous)
            .await
            .expect("programs"),
        ["p", "q"]
    );
    let p = store
        .get_member("p", &pseudonymous)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(p.wallet.lifetime_earned, 10);
    assert!(
        store
            .member_programs(&customer)
            .await
            .expect("programs")
            .is_empty()
    );
    for (table, column) in store.text_columns().await.expect("text_columns") {
        let n = store
            .rows_containing(&table, &column, C)
            .await
            .expect("rows_containing");
        let want = if (table.as_str(), column.as_str()) == ("change_feed", "key") {
            3
        } else {
            0
        };
        assert_eq!(n, want, "{table}.{column}");
    }
    locks.close().await;
    store.close().await;
}
