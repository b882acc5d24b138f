//! The SQL Patron's two storage backends share.
//!
//! Both backends run the same schema, so most of what they say to their databases is the same
//! statements in the same order. That part is written here once, generic over the database:
//!
//! - row types ([`rows`]) derived with `sqlx::FromRow`, which is database-generic, and read by
//!   column name; each type's column list is generated from its fields ([`rows::row!`]), so a
//!   SELECT names exactly the columns its row reads;
//! - statement sequences ([`loyalty`], [`catalog`]) over [`Backend`], the small trait through
//!   which a backend says what differs: how a write transaction takes its lock, how the change
//!   feed is appended to, how many rows go into one statement (bulk inserts), and a few words of
//!   dialect.
//!
//! Every statement here uses numbered parameters (`$1`), which SQLite (through sqlx) and
//! Postgres both accept. The hand-tuned hot paths (event ingest, summary updates, bulk summary
//! reads, the feed's notifications) stay in each backend.
//!
//! This crate names no driver: it depends on sqlx without a database feature, and is compiled
//! into each backend for that backend's database.

use std::future::Future;

use patron_store::feed::ChangeKind;
use patron_store::{StoreError, StoreResult};
use sqlx::{Database, Pool, Transaction};

mod bounds;
pub mod catalog;
mod delegate;
pub mod feed;
pub mod loyalty;
pub mod rows;
pub mod summaries;

pub use bounds::Sql;

#[doc(hidden)]
pub mod __private {
    pub use async_trait::async_trait;
    pub use tracing;
}

/// One change to append to the feed: what, its key, its scope (`""` when none).
pub type NewChange<'a> = (ChangeKind, &'a str, &'a str);

/// A backend's connection type.
pub type Conn<B> = <<B as Backend>::Db as Database>::Connection;

/// What a write transaction holds from its start until it ends, so that what it reads is the
/// state its writes replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock<'a> {
    /// One member of one program (every change to its points).
    Member {
        /// The program's id.
        program: &'a str,
        /// The customer's id.
        customer: &'a str,
    },
    /// One writer at a time for the rows of a table, also while a row does not exist yet
    /// (`segments`, `value_models`, `tier_policy`).
    Table(&'static str),
    /// Nothing beyond the row locks its statements take ([`Backend::FOR_UPDATE`]).
    Rows,
}

/// What differs between the backends for the shared statement sequences.
pub trait Backend: Send + Sync + 'static {
    /// The database.
    type Db: Database;

    /// Appended to a SELECT of a row the transaction then updates: `FOR UPDATE` where rows are
    /// locked one by one, empty where the transaction holds the database's write lock.
    const FOR_UPDATE: &'static str;
    /// Appended to a SELECT of a row another row will refer to (`FOR KEY SHARE`), or empty.
    const FOR_KEY_SHARE: &'static str;
    /// A boolean literal as the schema stores booleans (`1`/`0` on SQLite).
    const TRUE: &'static str;
    /// See [`Backend::TRUE`].
    const FALSE: &'static str;
    /// The condition "the lot is not activated", as the partial index on pending lots says it.
    const NOT_ACTIVATED: &'static str;
    /// The stored dependencies of the segment `s` as one JSON array of ids (a SELECT column).
    const SEGMENT_DEPENDENCIES: &'static str;

    /// Maps a driver error to a [`StoreError`].
    fn db_err(e: sqlx::Error) -> StoreError;

    /// The larger of two values (`MAX` on SQLite, `GREATEST` on Postgres).
    const GREATEST: &'static str;

    /// How many rows a statement changed.
    fn rows_affected(result: &<Self::Db as Database>::QueryResult) -> u64;

    /// The pool plain reads run on (failing at once when the database is known to be down).
    fn reader(&self) -> StoreResult<&Pool<Self::Db>>;

    /// The pool single-statement writes run on.
    fn writer(&self) -> StoreResult<&Pool<Self::Db>>;

    /// A read transaction whose statements all see one snapshot.
    fn begin_read(
        &self,
    ) -> impl Future<Output = StoreResult<Transaction<'static, Self::Db>>> + Send;

    /// A write transaction holding `lock` (and whatever the backend's writes always hold).
    fn begin_write(
        &self,
        lock: Lock<'_>,
    ) -> impl Future<Output = StoreResult<Transaction<'static, Self::Db>>> + Send;

    /// Appends `changes` to the change feed as the last statements of the write transaction
    /// `conn` is in. Nothing to append: nothing is done.
    fn append_changes(
        conn: &mut Conn<Self>,
        changes: &[NewChange<'_>],
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Upserts the lots of a member (sorted by lot id).
    fn upsert_lots(
        conn: &mut Conn<Self>,
        customer: &str,
        program: &str,
        lots: &[&patron_domain::loyalty::Lot],
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Inserts new ledger entries of a member (sorted by entry id), `lots` encoded beside them.
    fn insert_entries(
        conn: &mut Conn<Self>,
        customer: &str,
        program: &str,
        entries: &[(&patron_domain::loyalty::Entry, String)],
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Adds (day, points, spend) to a member's activity (one row per day, in day order).
    fn add_activity(
        conn: &mut Conn<Self>,
        customer: &str,
        program: &str,
        days: &[(i32, i64, i64)],
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Stores `deps` (sorted, not empty) as the dependencies of a segment that has none.
    fn insert_dependencies(
        conn: &mut Conn<Self>,
        segment: &str,
        deps: &[String],
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Which of `ids` (sorted, not empty) are stored segments.
    fn stored_segments(
        conn: &mut Conn<Self>,
        ids: &[String],
    ) -> impl Future<Output = StoreResult<Vec<String>>> + Send;
}

/// A `LIMIT` parameter: at most `i64::MAX`.
pub fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A customer id read back from the database.
pub fn customer_id(id: String) -> StoreResult<patron_domain::CustomerId> {
    patron_domain::CustomerId::parse(id)
        .map_err(|e| StoreError::Internal(format!("stored customer id: {e}")))
}

/// The error of an update whose expected revision is not the stored one.
pub fn revision_mismatch(what: &str, id: &str, expected: i64, stored: i64) -> StoreError {
    StoreError::PreconditionFailed(format!(
        "{what} {id} revision is {stored}, the write expected {expected}"
    ))
}

/// A fresh pseudonym for an erased customer's loyalty books: `erased-` and 32 hex digits (128
/// bits) from the operating system's random source. Random, not derived from the customer id, so
/// nothing links it back to the customer.
pub fn new_pseudonym() -> StoreResult<String> {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| StoreError::Unavailable(format!("no randomness for a pseudonym: {e}")))?;
    Ok(format!("erased-{:032x}", u128::from_be_bytes(bytes)))
}
