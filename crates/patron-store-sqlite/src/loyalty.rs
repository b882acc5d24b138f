//! Loyalty storage on SQLite: the statements are shared (`patron_store_sql::loyalty`, the
//! multi-row inserts of a member's lots, entries and activity in `impl Backend`); here is the
//! erasure's re-keying.
//!
//! Every member change (`LoyaltyStore::mutate_member`) is one transaction of the single writer
//! connection begun with `BEGIN IMMEDIATE`: the database's write lock is the member lock (also
//! against other processes on the same file), taken before anything is read, so the operation
//! decides on exactly the state its changes replace.

use patron_store::StoreResult;
use patron_store_sql::loyalty::{MEMBER_TABLES, programs_with_rows_sql, rekey_set};
use sqlx::SqliteConnection;

use crate::{SqliteStore, db_err};

patron_store_sql::loyalty_store!(SqliteStore, "sqlite");

/// Keeps an erased customer's loyalty books under `pseudonym`, in the erasure's transaction:
/// every member-owned row of `customer` (member rows, lots, entries, orders, applied-event
/// markers, bonus counters, activity, redemptions) is re-keyed to the pseudonym, and every
/// occurrence of the customer id inside their text columns ([`MEMBER_TABLES`]: caller-chosen
/// event, order and request ids, issuers, reasons) is replaced by it too, so no stored value
/// still names the customer. Amounts, lots, stock and ids of global rows are untouched, so every
/// program's totals stay what they were. Returns the programs whose rows were kept, in id order.
///
/// The caller holds the write lock (`BEGIN IMMEDIATE`): no member change interleaves.
pub(crate) async fn keep_books_as(
    conn: &mut SqliteConnection,
    customer: &str,
    pseudonym: &str,
) -> StoreResult<Vec<String>> {
    let programs: Vec<String> = sqlx::query_scalar(&programs_with_rows_sql())
        .bind(customer)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
    if programs.is_empty() {
        return Ok(programs);
    }
    for (table, scrubbed) in MEMBER_TABLES {
        let set = rekey_set(scrubbed);
        sqlx::query(&format!("UPDATE {table} SET {set} WHERE customer_id = $1"))
            .bind(customer)
            .bind(pseudonym)
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
    }
    Ok(programs)
}
