//! Patron's domain: identifiers, money, time, customers and events, their validation, and the
//! aggregation rules that keep per-customer summaries.
//!
//! [`clv`] holds the customer-lifetime-value mathematics (BG/NBD, Gamma-Gamma, discounted CLV,
//! RFM scores), following the Python `lifetimes` 0.11.3 conventions.
//!
//! Architecture Invariant: this crate does no I/O and knows nothing of gRPC, protobuf, SQL or
//! async runtimes. Every other crate converts to and from these types.

pub mod clv;
pub mod customer;
pub mod event;
pub mod id;
pub mod iso;
pub mod loyalty;
pub mod money;
pub mod summary;
pub mod time;
pub mod validation;
pub mod value;

pub use customer::{AttributeKey, AttributeValue, Attributes, Customer, CustomerProfile, Gender};
pub use event::{
    CustomEvent, Engagement, Event, EventData, EventKind, Purchase, Refund, SupportInteraction,
    Survey,
};
pub use id::{CustomerId, EventId, OrderId};
pub use money::{Currency, MAX_EVENT_AMOUNT, Money};
pub use summary::{
    BatchAggregate, CustomerSummary, OrderDelta, OrderRow, PurchaseStats, RatingTotal,
    SummaryDelta, derive_purchase_stats,
};
pub use time::{Date, Day, Timestamp};
pub use validation::{FieldViolation, Violations, quote};
