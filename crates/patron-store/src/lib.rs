//! Patron's storage contract: one trait every backend implements, its error type, and the
//! conformance suite that every backend must pass (module `conformance`, behind the feature of
//! that name: test builds only).
//!
//! Architecture Invariant: this crate names no database driver. Backends live in
//! `patron-store-sqlite` and `patron-store-postgres`, each with its own SQL and migrations.

pub mod columns;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod decode;
pub mod feed;
pub mod loyalty;
pub mod segments;
pub mod shared;

use async_trait::async_trait;
use std::sync::Arc;

use patron_domain::{
    Attributes, Customer, CustomerId, CustomerSummary, Date, Day, Event, EventId, EventKind,
    Gender, Timestamp,
};

pub use segments::{SegmentRecord, find_cycle};

/// What can go wrong in a store. Callers map these to wire statuses; the message of
/// [`StoreError::Internal`] is logged, never shown to clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded; retrying later may work.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A concurrent transaction won; retrying the whole call may work.
    #[error("storage conflict: {0}")]
    Conflict(String),
    /// A conditional write found the stored state other than the caller expected (e.g. a tier
    /// policy revision mismatch); nothing was changed. Retrying the same call will not help: read
    /// the current state first.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// A sum would overflow 64-bit integers.
    #[error("a stored total would overflow: {0}")]
    Overflow(String),
    /// A create found the key taken (e.g. a segment id); nothing was changed.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A segment write would make segments depend on each other in a circle: the ids along it,
    /// starting and ending with the written segment. Nothing was changed.
    #[error("segment dependency cycle: {}", .0.join(" -> "))]
    SegmentCycle(Vec<String>),
    /// A segment write names a segment that does not exist (e.g. deleted concurrently).
    #[error("depends on a missing segment: {0}")]
    MissingDependency(String),
    /// A delete was refused because others depend on the record: their ids, sorted.
    #[error("in use by: {}", .0.join(", "))]
    InUse(Vec<String>),
    /// Anything else: a bug, corrupt data, a failed migration.
    #[error("storage failure: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A customer as stored: profile, bookkeeping times and summary.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerRecord {
    pub customer: Customer,
    pub create_time: Timestamp,
    /// Unset for customers created by an event and never upserted.
    pub update_time: Option<Timestamp>,
    pub summary: CustomerSummary,
}

/// The result of upserting one customer.
#[derive(Debug, Clone, PartialEq)]
pub struct UpsertedCustomer {
    pub record: CustomerRecord,
    pub created: bool,
}

/// The result of recording a batch of events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordOutcome {
    /// Events stored by this call.
    pub recorded: usize,
    /// Positions (in the batch) of events already stored or repeated earlier in the batch.
    pub duplicate_indexes: Vec<usize>,
    /// Customers created because the batch carried their first event.
    pub created_customers: usize,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub event: Event,
    pub recorded_at: Timestamp,
}

/// Position in a customer's event list (newest first): list what comes strictly after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventCursor {
    pub occurred_at: Timestamp,
    pub event_id: EventId,
}

/// One customer's summary with the profile and the day-level history that scoring and segment
/// rules read, as read in bulk by [`Store::scan_summaries`] and [`Store::get_summaries`] (no raw
/// events).
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryRow {
    pub customer_id: CustomerId,
    pub signed_up_at: Option<Timestamp>,
    pub create_time: Timestamp,
    pub birth_date: Option<Date>,
    pub gender: Gender,
    /// ISO 3166-1 alpha-2. Shared between rows with the same country (one allocation per
    /// country, not per customer: the index holds every customer).
    pub country: Option<Arc<str>>,
    /// Shared between rows with the same attributes where the store can tell (most customers
    /// have none, or one of a few combinations of plan, channel and the like).
    pub attributes: Arc<Attributes>,
    /// All zero for a customer without events.
    pub summary: CustomerSummary,
    /// The customer's active orders (purchase recorded, not wholly refunded), ascending by
    /// (day, net amount): the data of windowed purchase counts and revenue.
    pub orders: Vec<OrderDay>,
    /// Engagement events per UTC day and activity, ascending by (day, activity).
    pub engagement: Vec<EngagementDay>,
}

impl SummaryRow {
    /// When the customer became one: signed up, else the first event, else when the record was
    /// created. Tenure, `customer.since` in rules and scoring's "customer since" all start here.
    pub fn since(&self) -> Timestamp {
        self.signed_up_at
            .or(self.summary.totals.first_event_at)
            .unwrap_or(self.create_time)
    }
}

/// One active order: the UTC day of its purchase and its amount net of refunds (minor units,
/// >= 0: a zero-value order counts as a purchase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct OrderDay {
    pub day: Day,
    pub net_amount: i64,
}

/// How many engagement events of one activity a customer had on one UTC day. Activity names are
/// shared between rows read together (one allocation per distinct name per read).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EngagementDay {
    pub day: Day,
    pub activity: Arc<str>,
    pub count: i64,
}

/// A stored value model. The body is an opaque JSON document owned by `patron-views`
/// (`model.rs`); the store keeps it byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredModel {
    /// 1, 2, … in insertion order.
    pub version: i64,
    pub created_at: Timestamp,
    /// At most one stored model is active, and once one is, exactly one is.
    pub active: bool,
    pub body: String,
}

/// Whether a newly stored value model becomes the active one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Always: it replaces the active model.
    Always,
    /// Only if no model is active yet (the first usable model serves at once).
    IfNoneActive,
    /// Never: stored for inspection, activated later if at all (a fit that did not converge).
    Never,
}

impl Activation {
    /// Whether the model becomes active, given whether one is active already.
    pub const fn activates(self, any_active: bool) -> bool {
        match self {
            Self::Always => true,
            Self::IfNoneActive => !any_active,
            Self::Never => false,
        }
    }
}

/// The stored tier policy: an opaque JSON document with a revision for optimistic concurrency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    /// 1 for the first stored policy, then one more per write.
    pub revision: i64,
    pub updated_at: Timestamp,
    pub body: String,
}

/// Connections of a backend's pools, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolState {
    /// Connections open now (idle or in use).
    pub open: u32,
    /// Open connections not in use.
    pub idle: u32,
    /// The most the pools may open.
    pub max: u32,
}

/// The storage contract. All writes are transactional: when a method returns `Ok`, its effect is
/// durable; when it returns `Err`, nothing changed.
#[async_trait]
pub trait Store:
    SegmentStore + loyalty::LoyaltyStore + feed::FeedStore + Send + Sync + std::fmt::Debug + 'static
{
    /// The backend's name, for logs and health.
    fn backend(&self) -> &'static str;

    /// Checks that the database answers (`SELECT 1`, on a connection of its own where the backend
    /// has a server) within `timeout` and remembers the answer: while the last check failed,
    /// every call fails at once with [`StoreError::Unavailable`] instead of waiting for a
    /// connection. Returns how long the check took.
    async fn check_connection(
        &self,
        timeout: std::time::Duration,
    ) -> StoreResult<std::time::Duration>;

    /// Whether the last connection check (or connection failure) found the database reachable.
    fn reachable(&self) -> bool;

    /// The pools' connections now.
    fn pool_state(&self) -> PoolState;

    /// Creates or replaces the profiles of `customers` (ids unique within the slice), atomically.
    async fn upsert_customers(
        &self,
        customers: &[Customer],
        now: Timestamp,
    ) -> StoreResult<Vec<UpsertedCustomer>>;

    async fn get_customer(&self, id: &CustomerId) -> StoreResult<Option<CustomerRecord>>;

    /// Customers in ascending id order, strictly after `after`.
    async fn list_customers(
        &self,
        after: Option<&CustomerId>,
        limit: usize,
    ) -> StoreResult<Vec<CustomerRecord>>;

    /// Erases a customer: profile, events, summary, orders and engagement days go, and the id
    /// leaves every table; the customer's loyalty rows (members, lots, entries, orders, markers,
    /// counters, activity, redemptions) are kept under a random pseudonym (`erased-…`), with the
    /// id replaced in their text, so program totals and stock do not change. `None` if there was
    /// no such customer, otherwise the number of events erased.
    async fn delete_customer(&self, id: &CustomerId) -> StoreResult<Option<u64>>;

    /// Stores the new events of `events` and updates summaries, in one transaction. Events whose
    /// (customer_id, event_id) is already stored, or repeated earlier in `events`, are duplicates.
    async fn record_events(&self, events: &[Event], now: Timestamp) -> StoreResult<RecordOutcome>;

    /// A customer's events, newest first (`occurred_at` then `event_id`, descending), strictly
    /// after `after`, only of `kinds` (all kinds when empty).
    async fn list_events(
        &self,
        customer: &CustomerId,
        kinds: &[EventKind],
        after: Option<&EventCursor>,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>>;

    /// Every event of `customers` that occurred at or before `until`, only of `kinds` (all kinds
    /// when empty), in (customer id, occurred_at, event id) order: one read for many customers'
    /// histories up to an instant (bulk `as_of` scoring, fits at an earlier calibration end).
    /// Unknown ids and repeats are ignored.
    async fn events_until(
        &self,
        customers: &[CustomerId],
        until: Timestamp,
        kinds: &[EventKind],
    ) -> StoreResult<Vec<Event>>;

    /// Customers in ascending id order, strictly after `after`, with their summaries: one query
    /// per call, for bulk reads of every customer (index builds, model fitting) in pages of about
    /// 10,000.
    async fn scan_summaries(
        &self,
        after: Option<&CustomerId>,
        limit: usize,
    ) -> StoreResult<Vec<SummaryRow>>;

    /// Customer ids that cut every customer, in id order, into `parts` runs of about equal size:
    /// run k holds the ids after cut k − 1 up to and including cut k, the last run the rest.
    /// Fewer cuts when there are fewer customers; none for `parts` below 2. For reading every
    /// customer on several connections at once ([`Store::scan_summaries`] from each cut).
    async fn customer_id_cuts(&self, parts: usize) -> StoreResult<Vec<CustomerId>>;

    /// The rows of those of `ids` that exist, in no particular order, each once. One statement
    /// per 10,000 ids.
    async fn get_summaries(&self, ids: &[CustomerId]) -> StoreResult<Vec<SummaryRow>>;

    /// Stores a value model as the next version (1, 2, …). It becomes the only active model as
    /// `activation` says, atomically with the insert.
    async fn insert_value_model(
        &self,
        body: &str,
        created_at: Timestamp,
        activation: Activation,
    ) -> StoreResult<StoredModel>;

    async fn get_value_model(&self, version: i64) -> StoreResult<Option<StoredModel>>;

    /// Value models newest first (version descending), strictly below `before`.
    async fn list_value_models(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<StoredModel>>;

    /// Makes `version` the only active model, atomically. `None` (and nothing changed) if there
    /// is no such version.
    async fn activate_value_model(&self, version: i64) -> StoreResult<Option<StoredModel>>;

    /// The active model; `None` only while no model is stored.
    async fn active_value_model(&self) -> StoreResult<Option<StoredModel>>;

    async fn get_tier_policy(&self) -> StoreResult<Option<StoredPolicy>>;

    /// Stores the tier policy as the next revision. With `expected_revision`, only if the stored
    /// revision (0 while none is stored) equals it; otherwise
    /// [`StoreError::PreconditionFailed`] and nothing changes.
    async fn put_tier_policy(
        &self,
        body: &str,
        updated_at: Timestamp,
        expected_revision: Option<i64>,
    ) -> StoreResult<StoredPolicy>;
}

#[async_trait]
pub trait SegmentStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a new segment definition (revision 1) with its dependencies
    /// (`record.depends_on`, stored segments only), atomically. [`StoreError::AlreadyExists`] if
    /// the id is taken, [`StoreError::MissingDependency`] if a dependency is not stored.
    async fn create_segment(&self, record: &SegmentRecord) -> StoreResult<SegmentRecord>;

    async fn get_segment(&self, id: &str) -> StoreResult<Option<SegmentRecord>>;

    /// Segments in ascending id order, strictly after `after`.
    async fn list_segments(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<SegmentRecord>>;

    /// Replaces a segment's definition and dependencies as the next revision, atomically, after
    /// checking under a lock that no dependency cycle results ([`find_cycle`] over every stored
    /// edge; [`StoreError::SegmentCycle`]) and, with `expected_revision`, that the stored revision
    /// equals it ([`StoreError::PreconditionFailed`]). `record.revision` and `create_time` are
    /// ignored. `None` if there is no such segment.
    async fn update_segment(
        &self,
        record: &SegmentRecord,
        expected_revision: Option<i64>,
    ) -> StoreResult<Option<SegmentRecord>>;

    /// Deletes a segment: `false` if there was none; [`StoreError::InUse`] (nothing changed) while
    /// other segments, loyalty programs (target segment) or rewards (required segment) depend on
    /// it; the ids of those are listed, programs as `program:ID` and rewards as `reward:ID`.
    async fn delete_segment(&self, id: &str) -> StoreResult<bool>;
}

/// How many ids [`Store::get_summaries`] matches per statement.
pub const SUMMARY_IDS_PER_STATEMENT: usize = 10_000;

/// The error of a tier policy write whose expected revision is not the stored one.
pub fn revision_mismatch(expected: i64, stored: i64) -> StoreError {
    StoreError::PreconditionFailed(format!(
        "tier policy revision is {stored}, the write expected {expected}"
    ))
}

/// Splits a batch into first occurrences and in-batch duplicates (by customer and event id).
/// Returns the positions of the first occurrences and of the repeats.
pub fn dedupe_batch(events: &[Event]) -> (Vec<usize>, Vec<usize>) {
    let mut seen = std::collections::HashSet::with_capacity(events.len());
    let mut firsts = Vec::with_capacity(events.len());
    let mut repeats = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if seen.insert((&e.customer_id, &e.event_id)) {
            firsts.push(i);
        } else {
            repeats.push(i);
        }
    }
    (firsts, repeats)
}

/// Serializes an event's data for storage.
pub fn encode_event_data(data: &patron_domain::EventData) -> StoreResult<String> {
    serde_json::to_string(data).map_err(|e| StoreError::Internal(format!("encode event: {e}")))
}

/// Reads an event's stored data back.
pub fn decode_event_data(json: &str) -> StoreResult<patron_domain::EventData> {
    serde_json::from_str(json).map_err(|e| StoreError::Internal(format!("decode event: {e}")))
}

/// Serializes custom attributes for storage.
pub fn encode_attributes(attrs: &patron_domain::Attributes) -> StoreResult<String> {
    serde_json::to_string(attrs)
        .map_err(|e| StoreError::Internal(format!("encode attributes: {e}")))
}

/// Reads stored custom attributes back.
pub fn decode_attributes(json: &str) -> StoreResult<patron_domain::Attributes> {
    serde_json::from_str(json).map_err(|e| StoreError::Internal(format!("decode attributes: {e}")))
}
