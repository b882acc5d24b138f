//! `patron.loyalty.v1.LoyaltyService`: loyalty programs over Patron's customers and events — a
//! points ledger of lots and entries (in `patron-domain::loyalty`), earning from recorded events
//! exactly once, stateless tiers, rewards, eligibility with reasons, idempotent redemption, and
//! a background expiry task. Every balance change runs as one operation under the member's lock
//! in the store (`ops`).

pub mod convert;
pub mod earner;
pub mod ops;
pub mod service;
pub mod view;

pub use earner::Earner;
pub use service::{LoyaltyApi, Settings};
