//! Loyalty storage on Postgres: the statements are shared (`patron_store_sql::loyalty`, the
//! `UNNEST` inserts of a member's lots, entries and activity in `impl Backend`); here are the
//! member lock and the erasure's re-keying.
//!
//! Every member change (`LoyaltyStore::mutate_member`) is one READ COMMITTED transaction that
//! first takes `pg_advisory_xact_lock(<member key>)`, a 64-bit hash of the program and customer
//! ids ([`member_lock_key`]): the lock exists before the member's rows do (enrolment), is held
//! until commit or rollback, and — as each later statement sees what earlier holders committed —
//! the operation decides on exactly the state its changes replace. Rows of the member are written
//! in key order (lots by id, entries by id, activity by day); the one shared row a change may
//! touch, its reward's stock, is written last, so it is held for the shortest time.

use patron_store::StoreResult;
use patron_store_sql::loyalty::{MEMBER_TABLES, programs_with_rows_sql, rekey_set};
use sqlx::{Postgres, Transaction};

use crate::{PgStore, db_err};

patron_store_sql::loyalty_store!(PgStore, "postgresql");

/// The advisory lock key of a member: FNV-1a (64 bits) over a fixed prefix, the program id's
/// length and bytes, and the customer id's bytes. Stable across processes and releases, so
/// several servers sharing one database lock the same member with the same key.
pub(crate) fn member_lock_key(program_id: &str, customer_id: &str) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let len = (program_id.len() as u64).to_le_bytes();
    let bytes = b"patron.loyalty.member"
        .iter()
        .chain(&len)
        .chain(program_id.as_bytes())
        .chain(customer_id.as_bytes());
    let mut hash = OFFSET;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(PRIME);
    }
    i64::from_le_bytes(hash.to_le_bytes())
}

/// Keeps an erased customer's loyalty books under `pseudonym`, in the erasure's transaction:
/// every member-owned row of `customer` (member rows, lots, entries, orders, applied-event
/// markers, bonus counters, activity, redemptions) is re-keyed to the pseudonym, and every
/// occurrence of the customer id inside their text columns ([`MEMBER_TABLES`]: caller-chosen
/// event, order and request ids, issuers, reasons) is replaced by it too, so no stored value
/// still names the customer. Amounts, lots, stock and ids of global rows are untouched, so every
/// program's totals stay what they were. Returns the programs whose rows were kept, in id order.
///
/// Each program's rows move under that member's lock (taken in key order, as `mutate_member`
/// takes it), so no member change interleaves. A change that committed a row in a program not
/// seen yet (a concurrent enrolment) is found by looking again once the rows seen have moved:
/// its lock is taken and its rows follow, until no row names the customer.
pub(crate) async fn keep_books_as(
    tx: &mut Transaction<'_, Postgres>,
    customer: &str,
    pseudonym: &str,
) -> StoreResult<Vec<String>> {
    let programs_sql = programs_with_rows_sql();
    let moves = MEMBER_TABLES
        .iter()
        .enumerate()
        .map(|(i, (table, scrubbed))| {
            let set = rekey_set(scrubbed);
            format!(
                "m{i} AS (UPDATE {table} SET {set} \
                 WHERE customer_id = $1 AND program_id = ANY($3))"
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let move_sql = format!("WITH {moves} SELECT 1");
    let mut kept: Vec<String> = Vec::new();
    loop {
        let found: Vec<String> = sqlx::query_scalar(&programs_sql)
            .bind(customer)
            .fetch_all(&mut **tx)
            .await
            .map_err(db_err)?;
        let new: Vec<String> = found.into_iter().filter(|p| !kept.contains(p)).collect();
        if new.is_empty() {
            break;
        }
        let mut keys: Vec<i64> = new.iter().map(|p| member_lock_key(p, customer)).collect();
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(key)
                .execute(&mut **tx)
                .await
                .map_err(db_err)?;
        }
        sqlx::query(&move_sql)
            .bind(customer)
            .bind(pseudonym)
            .bind(&new)
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        kept.extend(new);
    }
    kept.sort_unstable();
    Ok(kept)
}

/// Takes the member's lock until the transaction ends.
pub(crate) async fn lock_member(
    tx: &mut Transaction<'_, Postgres>,
    program_id: &str,
    customer_id: &str,
) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(member_lock_key(program_id, customer_id))
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::member_lock_key;

    #[test]
    fn member_lock_keys_are_stable_and_unambiguous() {
        // Fixed across releases: several processes (of different versions, during a rolling
        // upgrade) must agree on them.
        assert_eq!(
            member_lock_key("points", "alice"),
            -2_703_967_341_379_362_226
        );
        assert_ne!(member_lock_key("ab", "c"), member_lock_key("a", "bc"));
        assert_ne!(member_lock_key("p", "c1"), member_lock_key("p", "c2"));
        assert_ne!(member_lock_key("p1", "c"), member_lock_key("p2", "c"));
    }
}
