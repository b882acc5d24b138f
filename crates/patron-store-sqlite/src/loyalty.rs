//! Loyalty storage on SQLite: the statements are shared (`patron_store_sql::loyalty`); here are
//! the multi-row inserts of a member's lots, entries and activity, and the erasure's re-keying.
//!
//! Every member change (`LoyaltyStore::mutate_member`) is one transaction of the single writer
//! connection begun with `BEGIN IMMEDIATE`: the database's write lock is the member lock (also
//! against other processes on the same file), taken before anything is read, so the operation
//! decides on exactly the state its changes replace.

use patron_domain::Timestamp;
use patron_domain::loyalty::{Entry, Lot};
use patron_store::StoreResult;
use patron_store_sql::loyalty::{MEMBER_TABLES, programs_with_rows_sql, rekey_set};
use patron_store_sql::rows::{EntryRow, LotRow};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use crate::{MAX_PARAMS, SqliteStore, db_err};

patron_store_sql::loyalty_store!(SqliteStore, "sqlite");

/// Upserts a member's lots, in statements of at most [`MAX_PARAMS`] parameters.
pub(crate) async fn upsert_lots(
    conn: &mut SqliteConnection,
    customer: &str,
    program: &str,
    lots: &[&Lot],
) -> StoreResult<()> {
    for chunk in lots.chunks(MAX_PARAMS / 9) {
        let mut qb = QueryBuilder::<Sqlite>::new(format!(
            "INSERT INTO loyalty_lots (customer_id, program_id, {}) ",
            LotRow::COLUMNS
        ));
        qb.push_values(chunk, |mut b, l| {
            b.push_bind(customer)
                .push_bind(program)
                .push_bind(l.lot_id)
                .push_bind(l.original)
                .push_bind(l.remaining)
                .push_bind(l.earned_at.as_micros())
                .push_bind(l.available_at.as_micros())
                .push_bind(l.expires_at.map(Timestamp::as_micros))
                .push_bind(l.activated);
        });
        qb.push(
            " ON CONFLICT (customer_id, program_id, lot_id) DO UPDATE SET \
             original = excluded.original, remaining = excluded.remaining, \
             earned_at = excluded.earned_at, available_at = excluded.available_at, \
             expires_at = excluded.expires_at, activated = excluded.activated",
        );
        qb.build().execute(&mut *conn).await.map_err(db_err)?;
    }
    Ok(())
}

/// Inserts a member's new entries, in statements of at most [`MAX_PARAMS`] parameters.
pub(crate) async fn insert_entries(
    conn: &mut SqliteConnection,
    customer: &str,
    program: &str,
    entries: &[(&Entry, String)],
) -> StoreResult<()> {
    for chunk in entries.chunks(MAX_PARAMS / 15) {
        let mut qb = QueryBuilder::<Sqlite>::new(format!(
            "INSERT INTO loyalty_entries (customer_id, program_id, {}) ",
            EntryRow::COLUMNS
        ));
        qb.push_values(chunk, |mut b, (e, lots)| {
            b.push_bind(customer)
                .push_bind(program)
                .push_bind(e.entry_id)
                .push_bind(e.kind.name())
                .push_bind(e.amount)
                .push_bind(e.points)
                .push_bind(lots.as_str())
                .push_bind(e.source.event_id.as_deref())
                .push_bind(e.source.redemption_id.as_deref())
                .push_bind(e.source.rule.as_deref())
                .push_bind(e.issuer.as_str())
                .push_bind(e.reason.as_str())
                .push_bind(e.created_at.as_micros())
                .push_bind(e.effective_at.as_micros())
                .push_bind(e.expires_at.map(Timestamp::as_micros));
        });
        qb.build().execute(&mut *conn).await.map_err(db_err)?;
    }
    Ok(())
}

/// Adds to a member's activity, in statements of at most [`MAX_PARAMS`] parameters.
pub(crate) async fn add_activity(
    conn: &mut SqliteConnection,
    customer: &str,
    program: &str,
    days: &[(i32, i64, i64)],
) -> StoreResult<()> {
    for chunk in days.chunks(MAX_PARAMS / 5) {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "INSERT INTO loyalty_activity (customer_id, program_id, day, points, spend) ",
        );
        qb.push_values(chunk, |mut b, (day, points, spend)| {
            b.push_bind(customer)
                .push_bind(program)
                .push_bind(*day)
                .push_bind(*points)
                .push_bind(*spend);
        });
        qb.push(
            " ON CONFLICT (customer_id, program_id, day) DO UPDATE SET \
             points = loyalty_activity.points + excluded.points, \
             spend = loyalty_activity.spend + excluded.spend",
        );
        qb.build().execute(&mut *conn).await.map_err(db_err)?;
    }
    Ok(())
}

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
