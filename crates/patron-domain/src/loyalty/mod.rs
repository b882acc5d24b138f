//! Loyalty: the points ledger (lots, entries, balances), and — as the service grows — programs,
//! tiers and reward eligibility. Pure: the stores persist what these functions decide, under the
//! member's lock.

pub mod ledger;
pub mod program;
pub mod reward;
pub mod tier;

pub use ledger::{Balances, Entry, EntryKind, LedgerError, Lot, Meta, Points, Source, Wallet};
