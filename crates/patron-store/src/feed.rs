//! The change feed: a durable, ordered log of what every committed write changed, appended in the
//! write's own transaction. It is the only way in-memory views (the scoring index, the active
//! model and tier policy, segment definitions and watchers, the loyalty view) and derived effects
//! (loyalty earning) learn of changes — in the process that wrote and in every other process
//! sharing the database.
//!
//! Order: positions are dense (1, 2, 3, … with no gaps) and become visible in position order.
//! Both backends hand out positions from a one-row counter (`change_feed_head`) updated as the
//! last statement of each write transaction: the row lock is held until the commit is visible, so
//! a transaction can only take the next positions after the previous holder's commit is visible
//! (Postgres), and SQLite has one writer. A reader that has applied everything up to position
//! `p` and then reads `position > p` can therefore never skip a change that commits later.

use async_trait::async_trait;
use patron_domain::{CustomerId, Event, Timestamp};

use crate::StoreResult;

/// What a change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    /// A customer's profile, events or summary changed, or the customer was erased. Key: the
    /// customer id; `txn`: the write's transaction number (events recorded by it carry it).
    Customer,
    /// A value model was stored or activated. Key: its version.
    Model,
    /// The tier policy was written. Key: its revision.
    TierPolicy,
    /// A segment was created, updated or deleted. Key: its id.
    Segment,
    /// A loyalty program was created or updated. Key: its id.
    Program,
    /// A reward was created or updated, or its stock changed. Key: its id; scope: its program.
    Reward,
    /// A loyalty member's points, lots or activity changed, or the member was enrolled or
    /// erased (an erasure moves the member to a pseudonym: changes for both ids). Key: the
    /// customer id; scope: the program id.
    Member,
}

impl ChangeKind {
    /// The stored code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Model => "model",
            Self::TierPolicy => "tier_policy",
            Self::Segment => "segment",
            Self::Program => "program",
            Self::Reward => "reward",
            Self::Member => "member",
        }
    }

    /// Parses a stored code.
    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "customer" => Self::Customer,
            "model" => Self::Model,
            "tier_policy" => Self::TierPolicy,
            "segment" => Self::Segment,
            "program" => Self::Program,
            "reward" => Self::Reward,
            "member" => Self::Member,
            _ => return None,
        })
    }
}

/// One entry of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// 1, 2, 3, … in commit order, without gaps.
    pub position: i64,
    pub kind: ChangeKind,
    pub key: String,
    /// The program of a member or reward change; empty otherwise.
    pub scope: String,
    /// The writing transaction's number: the same for every change of one commit; events
    /// recorded by that commit carry it too ([`FeedStore::events_of`]).
    pub txn: i64,
    pub committed_at: Timestamp,
}

/// The feed's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedHead {
    /// The last position handed out (0 while the feed is empty).
    pub position: i64,
    /// Every position up to this one has been pruned: a reader whose position is below it
    /// cannot catch up from the feed and must reload its views.
    pub pruned_through: i64,
    /// A random id made when the database was migrated: consistency tokens name it, so a token
    /// from another deployment is refused.
    pub database_id: String,
}

/// Reading the feed, and the durable positions of its consumers.
#[async_trait]
pub trait FeedStore: Send + Sync + std::fmt::Debug + 'static {
    async fn feed_head(&self) -> StoreResult<FeedHead>;

    /// Changes strictly after `after`, ascending by position, at most `limit`.
    async fn read_changes(&self, after: i64, limit: usize) -> StoreResult<Vec<Change>>;

    /// The events recorded by the given (customer, txn) pairs of [`ChangeKind::Customer`]
    /// changes, in (customer, txn, event id) order. Pairs with no events give none.
    async fn events_of(&self, changes: &[(CustomerId, i64)]) -> StoreResult<Vec<Event>>;

    /// Records that the live reader `reader` (one per server process) has applied the feed up
    /// to `position`, at `now`. Pruning keeps what live readers have not passed.
    async fn feed_reader_heartbeat(
        &self,
        reader: &str,
        position: i64,
        now: Timestamp,
    ) -> StoreResult<()>;

    /// Deletes changes committed before `committed_before` that every reader with a heartbeat
    /// at or after `live_since` and every consumer ([`FeedStore::claim_consumer`]) has passed,
    /// forgets readers silent since before `live_since`, and advances `pruned_through`. Returns
    /// the number of changes deleted.
    async fn prune_feed(
        &self,
        committed_before: Timestamp,
        live_since: Timestamp,
    ) -> StoreResult<u64>;

    /// Takes or renews the lease of the durable consumer `name` (e.g. the loyalty earner) for
    /// `owner` until `lease_until`, if it is free, expired at `now`, or already `owner`'s.
    /// Returns the consumer's position when `owner` holds the lease, `None` when another owner
    /// does. A consumer that does not exist yet is created at position 0.
    async fn claim_consumer(
        &self,
        name: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> StoreResult<Option<i64>>;

    /// Moves the consumer `name` to `position` if `owner` still holds its lease (and the position
    /// is ahead of the stored one: a consumer never moves back). Returns whether `owner` holds the
    /// lease: `true` also when the stored position was already at or past `position` (a retried
    /// advance), `false` once another owner has claimed the consumer or if there is no such
    /// consumer. Expiry is not checked here (there is no `now`): an owner whose lease ran out can
    /// still advance until another owner claims the consumer.
    async fn advance_consumer(&self, name: &str, owner: &str, position: i64) -> StoreResult<bool>;

    /// The stored position of the durable consumer `name`; 0 while it does not exist.
    async fn consumer_position(&self, name: &str) -> StoreResult<i64>;

    /// Registers a function called (from a background task) whenever another connection
    /// commits to the feed, to wake readers at once. Backends without notifications (SQLite)
    /// ignore it: readers poll.
    fn on_feed_commit(&self, _wake: std::sync::Arc<dyn Fn() + Send + Sync>) {}
}

/// A view kept current by the feed (the follower is `patron-feed`'s `Feed`). Here rather than in
/// `patron-feed` so that a view needs no gRPC to be one.
#[async_trait]
pub trait FeedView: Send + Sync + std::fmt::Debug {
    /// Applies a page of changes, in position order. Views re-read the current state of what
    /// changed from the store, so applying a change twice, or late, is harmless.
    async fn apply(&self, changes: &[Change]) -> StoreResult<()>;

    /// Reloads everything from the store: this process fell behind the feed's retention window
    /// (what it missed was pruned).
    async fn reload(&self) -> StoreResult<()>;
}
