//! Loyalty earning as a consumer of the change feed.
//!
//! The earner reads the feed from its own durable position (`feed_consumers`, name
//! [`CONSUMER`]), finds the events each commit recorded ([`FeedStore::events_of`]) and applies
//! them to every program ([`LoyaltyApi::earn`]), then moves the position on. One process at a
//! time holds the consumer's lease; when it dies, another takes over where the position stands.
//! Every (program, customer, event) applies once whatever happens — a crash between a commit and
//! its earning, a lease taken over mid-page, `patron import` writing the database — because the
//! store's per-event marker (`loyalty_applied_events`) refuses a second application.
//!
//! [`FeedStore::events_of`]: patron_store::feed::FeedStore::events_of

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use patron_domain::{CustomerId, Timestamp};
use patron_feed::{Feed, FollowUp};
use patron_store::StoreResult;
use patron_store::feed::ChangeKind;
use tokio::sync::watch;

use crate::LoyaltyApi;

/// The earner's name in `feed_consumers`.
pub const CONSUMER: &str = "loyalty-earner";
/// Changes read per page.
const PAGE: usize = 2_000;

/// The earner of this process.
#[derive(Debug)]
pub struct Earner {
    api: LoyaltyApi,
    feed: Arc<Feed>,
    lease: Duration,
    /// Whether this process held the lease at its last attempt.
    owner: AtomicBool,
    /// The position this process has earned through (while it holds the lease).
    position: watch::Sender<i64>,
    state: tokio::sync::Mutex<StepState>,
}

fn after(now: Timestamp, d: Duration) -> Timestamp {
    Timestamp::from_micros(
        now.as_micros()
            .saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
    )
}

impl Earner {
    /// Starts earning (the task runs until aborted) and registers with the feed, so a write's
    /// caller is answered after the points its write earns are earned. Tries the lease once
    /// before returning, so a lone server earns from its first write on.
    pub async fn spawn(
        api: LoyaltyApi,
        feed: Arc<Feed>,
        lease: Duration,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let earner = Arc::new(Self {
            api,
            feed: Arc::clone(&feed),
            lease,
            owner: AtomicBool::new(false),
            position: watch::Sender::new(0),
            state: tokio::sync::Mutex::new(StepState {
                renew_at: std::time::Instant::now(),
                stored_at: std::time::Instant::now(),
            }),
        });
        match earner.claim().await {
            Ok(Some(p)) => {
                earner.position.send_replace(p);
                earner.state.lock().await.renew_at = std::time::Instant::now() + lease / 3;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "loyalty earner: first lease attempt failed"),
        }
        feed.add_follow_up(Arc::clone(&earner) as Arc<dyn FollowUp>);
        let task = tokio::spawn(Arc::clone(&earner).run());
        (earner, task)
    }

    /// Whether this process held the earner's lease at its last attempt.
    pub fn is_owner(&self) -> bool {
        self.owner.load(Ordering::Acquire)
    }

    async fn run(self: Arc<Self>) {
        let mut applied = self.feed.subscribe();
        // Renew well within the lease; a process without it retries as often.
        let mut tick = tokio::time::interval(self.lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failures = 0u32;
        loop {
            tokio::select! {
                changed = applied.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tick.tick() => {}
            }
            match self.step().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, failures, "loyalty earner: failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(30))))
                        .await;
                }
            }
        }
    }

    async fn claim(&self) -> StoreResult<Option<i64>> {
        let now = patron_grpc::time::now();
        let claimed = self
            .api
            .store()
            .claim_consumer(CONSUMER, self.feed.reader(), now, after(now, self.lease))
            .await?;
        self.owner.store(claimed.is_some(), Ordering::Release);
        Ok(claimed)
    }

    /// Earns from every change this process's views have applied, if it holds the lease.
    ///
    /// The lease is renewed once a third of it has passed, not on every step. The position is
    /// stored after every page that earned (or could have: any program exists); while no program
    /// exists there is nothing to earn, and the position is stored at most every
    /// [`IDLE_STORE_EVERY`], so a write-heavy deployment without programs pays almost nothing.
    async fn step(&self) -> StoreResult<()> {
        let mut state = self.state.lock().await;
        let now = std::time::Instant::now();
        if !self.is_owner() || now >= state.renew_at {
            match self.claim().await? {
                Some(stored) => {
                    state.renew_at = now + self.lease / 3;
                    let position = stored.max(*self.position.borrow());
                    self.position.send_replace(position);
                }
                None => return Ok(()),
            }
        }
        let mut position = *self.position.borrow();
        let target = self.feed.applied();
        let store = Arc::clone(self.api.store());
        if position < target && !self.api.view().has_programs() {
            // Nothing can earn: skip the changes without reading them.
            if state.stored_at.elapsed() >= IDLE_STORE_EVERY {
                if !store
                    .advance_consumer(CONSUMER, self.feed.reader(), target)
                    .await?
                {
                    self.owner.store(false, Ordering::Release);
                    return Ok(());
                }
                state.stored_at = std::time::Instant::now();
            }
            self.position.send_replace(target);
            return Ok(());
        }
        while position < target {
            let mut changes = store.read_changes(position, PAGE).await?;
            changes.retain(|c| c.position <= target);
            let Some(last) = changes.last().map(|c| c.position) else {
                return Ok(());
            };
            let programs = self.api.view().has_programs();
            if programs {
                let mut pairs: Vec<(CustomerId, i64)> = changes
                    .iter()
                    .filter(|c| c.kind == ChangeKind::Customer)
                    .filter_map(|c| CustomerId::parse(&c.key).ok().map(|id| (id, c.txn)))
                    .collect();
                pairs.sort_unstable();
                pairs.dedup();
                if !pairs.is_empty() {
                    let events = store.events_of(&pairs).await?;
                    if !events.is_empty() {
                        self.api.earn(&events).await?;
                    }
                }
            }
            if programs || state.stored_at.elapsed() >= IDLE_STORE_EVERY {
                if !store
                    .advance_consumer(CONSUMER, self.feed.reader(), last)
                    .await?
                {
                    // The lease went to another process; it goes on from the stored position.
                    self.owner.store(false, Ordering::Release);
                    return Ok(());
                }
                state.stored_at = std::time::Instant::now();
            }
            position = last;
            self.position.send_replace(position);
        }
        Ok(())
    }
}

/// While no program exists, how often the earner stores its position.
const IDLE_STORE_EVERY: Duration = Duration::from_secs(2);

/// The earner's own bookkeeping, touched by one step at a time.
#[derive(Debug)]
struct StepState {
    /// When to renew the lease.
    renew_at: std::time::Instant,
    /// When the position was last stored.
    stored_at: std::time::Instant,
}

/// How long a write on a replica that does not earn waits for the earning replica.
const REMOTE_WAIT: Duration = Duration::from_secs(3);

#[async_trait]
impl FollowUp for Earner {
    async fn caught_up(&self, position: i64) {
        if !self.api.view().has_programs() {
            // Nothing to earn: the earner only moves its position on.
            return;
        }
        if self.is_owner() {
            let mut rx = self.position.subscribe();
            // The feed bounds this wait; the sender lives as long as `self`.
            let _ = rx.wait_for(|&p| p >= position || !self.is_owner()).await;
            return;
        }
        // Another replica earns: wait (briefly) for its durable position, so the answer's token
        // covers the points too.
        let store = Arc::clone(self.api.store());
        let wait = async {
            loop {
                match store.consumer_position(CONSUMER).await {
                    Ok(p) if p >= position => return,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "loyalty earner: cannot read its position");
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        if tokio::time::timeout(REMOTE_WAIT, wait).await.is_err() {
            tracing::debug!(position, "loyalty earner: the earning replica is behind");
        }
    }
}
