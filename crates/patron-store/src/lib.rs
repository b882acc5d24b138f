//! Patron's storage contract: one trait every backend implements, its error type, and the
//! conformance suite that every backend must pass.
//!
//! Architecture Invariant: this crate names no database driver. Backends live in
//! `patron-store-sqlite` and `patron-store-postgres`, each with its own SQL and migrations.

pub mod columns;
pub mod conformance;

use async_trait::async_trait;
use patron_domain::{Customer, CustomerId, CustomerSummary, Event, EventId, EventKind, Timestamp};

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
    /// A sum would overflow 64-bit integers.
    #[error("a stored total would overflow: {0}")]
    Overflow(String),
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

/// The storage contract. All writes are transactional: when a method returns `Ok`, its effect is
/// durable; when it returns `Err`, nothing changed.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The backend's name, for logs and health.
    fn backend(&self) -> &'static str;

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

    /// Erases a customer with every event and summary. `None` if there was no such customer,
    /// otherwise the number of events erased.
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
