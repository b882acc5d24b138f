//! Following the change feed.
//!
//! Every server process runs one [`Feed`]: a task that reads the store's change feed
//! ([`patron_store::feed`]) from this process's position and hands each page of changes, in
//! position order, to the process's views ([`FeedView`]: the scoring index, segment definitions
//! and watchers, the loyalty view). It is the only way views learn of changes, whichever process
//! wrote them. It wakes on the store's commit notifications (Postgres LISTEN/NOTIFY), on a
//! write of this process ([`Feed::sync`]), and every `poll_interval` (the fallback, and the only
//! way on SQLite, where `patron import` may write the same file).
//!
//! Positions name what a view has seen: [`Feed::applied`] is the last position every view of
//! this process has applied. A consistency token ([`token`]) carries a position across replicas:
//! a read with a token waits until this process has applied it ([`layer::ConsistencyLayer`]).

pub mod layer;
pub mod token;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use patron_domain::Timestamp;
use patron_store::{Store, StoreError, StoreResult};
use tokio::sync::{Notify, watch};

/// Changes read per statement.
const PAGE: usize = 2_000;

/// A view kept current by the feed (defined with the feed's storage, so a view needs no gRPC).
pub use patron_store::feed::FeedView;

/// Work that follows the feed after the views (loyalty earning): a write's caller is answered
/// once it has caught up with the write, when this process does that work.
#[async_trait]
pub trait FollowUp: Send + Sync + std::fmt::Debug {
    /// Waits (bounded) until the work has processed every change up to `position`, if this
    /// process does it; returns at once otherwise.
    async fn caught_up(&self, position: i64);
}

/// Settings of the follower.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often the feed is read when nothing woke the follower.
    pub poll_interval: Duration,
    /// Changes older than this may be pruned once every live process has applied them.
    pub retention: Duration,
    /// How often this process records its position and prunes.
    pub heartbeat_interval: Duration,
    /// How long [`Feed::sync`] waits for the views before answering anyway.
    pub sync_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(200),
            retention: Duration::from_secs(3600),
            heartbeat_interval: Duration::from_secs(10),
            sync_timeout: Duration::from_secs(10),
        }
    }
}

/// This process's follower of the change feed.
#[derive(Debug)]
pub struct Feed {
    store: Arc<dyn Store>,
    views: Vec<Arc<dyn FeedView>>,
    follow_ups: std::sync::Mutex<Vec<Arc<dyn FollowUp>>>,
    settings: Settings,
    database_id: String,
    /// This process's reader name (unique per process).
    reader: String,
    applied: watch::Sender<i64>,
    /// Sync requests: a round that starts after request `n` was made completes it.
    requested: AtomicU64,
    completed: watch::Sender<u64>,
    wake: Arc<Notify>,
}

/// A random name for this process: its pid and 64 random bits.
fn reader_name() -> String {
    format!("{}-{:016x}", std::process::id(), rand::random::<u64>())
}

fn now() -> Timestamp {
    patron_grpc::time::now()
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Feed {
    /// The feed's position before views load: views loaded after this read hold at least
    /// everything up to it, so following from it misses nothing.
    pub async fn start_position(store: &dyn Store) -> StoreResult<i64> {
        Ok(store.feed_head().await?.position)
    }

    /// Starts following from `position` (read with [`Feed::start_position`] before the views
    /// were loaded), applying to `views` in order. The returned task runs until aborted.
    pub async fn start(
        store: Arc<dyn Store>,
        position: i64,
        views: Vec<Arc<dyn FeedView>>,
        settings: Settings,
    ) -> StoreResult<(Arc<Self>, tokio::task::JoinHandle<()>)> {
        let head = store.feed_head().await?;
        let feed = Arc::new(Self {
            store: Arc::clone(&store),
            views,
            follow_ups: std::sync::Mutex::new(Vec::new()),
            settings,
            database_id: head.database_id,
            reader: reader_name(),
            applied: watch::Sender::new(position),
            requested: AtomicU64::new(0),
            completed: watch::Sender::new(0),
            wake: Arc::new(Notify::new()),
        });
        let wake = Arc::clone(&feed.wake);
        store.on_feed_commit(Arc::new(move || wake.notify_one()));
        // Record this reader at once, so pruning keeps what it has not applied yet.
        if let Err(e) = store
            .feed_reader_heartbeat(&feed.reader, position, now())
            .await
        {
            tracing::warn!(error = %e, "change feed: first heartbeat failed");
        }
        let task = tokio::spawn(Arc::clone(&feed).run());
        Ok((feed, task))
    }

    /// Adds work that a write's caller waits for after the views (see [`FollowUp`]).
    pub fn add_follow_up(&self, follow_up: Arc<dyn FollowUp>) {
        lock(&self.follow_ups).push(follow_up);
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// This process's reader name (the feed's reader and the earner's lease owner).
    pub fn reader(&self) -> &str {
        &self.reader
    }

    /// The database's id, named by consistency tokens.
    pub fn database_id(&self) -> &str {
        &self.database_id
    }

    /// The last position every view of this process has applied.
    pub fn applied(&self) -> i64 {
        *self.applied.borrow()
    }

    /// Watches [`Feed::applied`].
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.applied.subscribe()
    }

    /// The consistency token of `position` in this database.
    pub fn token(&self, position: i64) -> String {
        token::encode(&self.database_id, position)
    }

    /// Applies every change committed before this call to this process's views (and waits for
    /// follow-up work this process does), then returns the applied position: after a write, its
    /// caller reads it here at once, and the position is its consistency token. Bounded by the
    /// sync timeout; on timeout (the store is unreachable) returns the position reached.
    pub async fn sync(&self) -> i64 {
        let position =
            match tokio::time::timeout(self.settings.sync_timeout, self.views_sync()).await {
                Ok(p) => p,
                Err(_) => {
                    tracing::warn!("change feed: views did not catch up in time");
                    return self.applied();
                }
            };
        let follow_ups: Vec<Arc<dyn FollowUp>> = lock(&self.follow_ups).clone();
        if follow_ups.is_empty() {
            return position;
        }
        for f in &follow_ups {
            if tokio::time::timeout(self.settings.sync_timeout, f.caught_up(position))
                .await
                .is_err()
            {
                tracing::warn!("change feed: follow-up work did not catch up in time");
            }
        }
        // Follow-up work writes changes of its own (points earned): apply those too.
        match tokio::time::timeout(self.settings.sync_timeout, self.views_sync()).await {
            Ok(p) => p,
            Err(_) => self.applied(),
        }
    }

    async fn views_sync(&self) -> i64 {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut completed = self.completed.subscribe();
        self.wake.notify_one();
        // The sender lives as long as `self`: the wait cannot fail while we hold it.
        let _ = completed.wait_for(|&done| done >= ticket).await;
        self.applied()
    }

    /// Waits until this process has applied `position`, or `timeout` passes. Returns whether it
    /// did.
    pub async fn wait_applied(&self, position: i64, timeout: Duration) -> bool {
        if self.applied() >= position {
            return true;
        }
        // A position this process has not seen may already be committed: look now rather than
        // at the next poll.
        self.wake.notify_one();
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|&p| p >= position))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    async fn run(self: Arc<Self>) {
        let mut poll = tokio::time::interval(self.settings.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat = tokio::time::interval(self.settings.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = 0u32;
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                _ = poll.tick() => {}
                _ = heartbeat.tick() => {
                    self.heartbeat().await;
                    continue;
                }
            }
            let ticket = self.requested.load(Ordering::SeqCst);
            match self.round().await {
                Ok(()) => {
                    failures = 0;
                    self.completed.send_if_modified(|done| {
                        let moved = ticket > *done;
                        *done = (*done).max(ticket);
                        moved
                    });
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, failures, "change feed: reading or applying failed; retrying");
                    let backoff = Duration::from_millis(50 * u64::from(failures.min(20)));
                    tokio::time::sleep(backoff).await;
                    self.wake.notify_one();
                }
            }
        }
    }

    /// Applies everything up to the head as read at the round's start.
    async fn round(&self) -> StoreResult<()> {
        let head = self.store.feed_head().await?;
        let mut applied = self.applied();
        if head.position <= applied {
            return Ok(());
        }
        if applied < head.pruned_through {
            tracing::warn!(
                applied,
                pruned_through = head.pruned_through,
                "change feed: this process fell behind the retention window; reloading views"
            );
            for v in &self.views {
                v.reload().await?;
            }
            // Views reloaded after the head was read hold everything up to it.
            self.applied.send_replace(head.position);
            return Ok(());
        }
        while applied < head.position {
            let changes = self.store.read_changes(applied, PAGE).await?;
            let Some(last) = changes.last().map(|c| c.position) else {
                // Pruned under our feet between reading the head and the changes.
                return Err(StoreError::Unavailable(
                    "change feed: changes vanished while reading".into(),
                ));
            };
            if changes[0].position != applied + 1 {
                return Err(StoreError::Internal(format!(
                    "change feed: expected position {} next, read {}",
                    applied + 1,
                    changes[0].position
                )));
            }
            for v in &self.views {
                v.apply(&changes).await?;
            }
            applied = last;
            self.applied.send_replace(applied);
        }
        Ok(())
    }

    async fn heartbeat(&self) {
        let now = now();
        if let Err(e) = self
            .store
            .feed_reader_heartbeat(&self.reader, self.applied(), now)
            .await
        {
            tracing::warn!(error = %e, "change feed: heartbeat failed");
            return;
        }
        let committed_before = Timestamp::from_micros(
            now.as_micros()
                .saturating_sub(micros(self.settings.retention)),
        );
        // A reader silent for six heartbeats is gone (or will reload when it comes back).
        let live_since = Timestamp::from_micros(
            now.as_micros()
                .saturating_sub(micros(self.settings.heartbeat_interval * 6)),
        );
        match self.store.prune_feed(committed_before, live_since).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(pruned = n, "change feed: pruned"),
            Err(e) => tracing::warn!(error = %e, "change feed: pruning failed"),
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
