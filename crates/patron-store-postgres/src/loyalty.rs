//! Loyalty storage on Postgres.
//!
//! Every member change ([`LoyaltyStore::mutate_member`]) is one READ COMMITTED transaction that
//! first takes `pg_advisory_xact_lock(<member key>)`, a 64-bit hash of the program and customer
//! ids ([`member_lock_key`]): the lock exists before the member's rows do (enrolment), is held
//! until commit or rollback, and — as each later statement sees what earlier holders committed —
//! the operation decides on exactly the state its changes replace. Rows of the member are written
//! in key order (lots by id, entries by id, activity by day); the one shared row a change may
//! touch, its reward's stock, is written last, so it is held for the shortest time.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use patron_domain::loyalty::tier::DayActivity;
use patron_domain::loyalty::{Entry, EntryKind, Lot, Points, Source, Wallet};
use patron_domain::{CustomerId, Day, Timestamp};
use patron_store::loyalty::{
    Changes, Loaded, LoyaltyOrder, LoyaltyStore, MemberOp, MemberRow, MutateOutcome, Needs,
    ProgramRecord, RedemptionRecord, RedemptionStatus, RewardRecord,
};
use patron_store::{StoreError, StoreResult};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, Row, Transaction};

use crate::feed::{NewChange, append_changes};
use crate::{PgStore, db_err, limit_param, unnest_args};
use patron_store::feed::ChangeKind;

/// One member of one program: the leading columns of every member-owned table's key.
#[derive(Debug, Clone, Copy)]
struct MemberKey<'a> {
    customer: &'a str,
    program: &'a str,
}

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

/// The member-owned tables, each with the text columns an erasure scrubs (see
/// [`keep_books_as`]): every text column but `customer_id` (re-keyed), `program_id` and
/// `reward_id` (names of global rows that stay), the fixed vocabularies `kind` and `status`, and
/// `lots` (numbers).
const MEMBER_TABLES: &[(&str, &[&str])] = &[
    ("loyalty_members", &[]),
    ("loyalty_lots", &[]),
    (
        "loyalty_entries",
        &["event_id", "redemption_id", "rule", "issuer", "reason"],
    ),
    ("loyalty_orders", &["order_id"]),
    ("loyalty_applied_events", &["event_id"]),
    ("loyalty_bonus_counts", &["event_name"]),
    ("loyalty_activity", &[]),
    (
        "loyalty_redemptions",
        &["redemption_id", "request_id", "fingerprint"],
    ),
];

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
    let programs_sql = MEMBER_TABLES
        .iter()
        .map(|(table, _)| format!("SELECT program_id FROM {table} WHERE customer_id = $1"))
        .collect::<Vec<_>>()
        .join(" UNION ")
        + " ORDER BY 1";
    let moves = MEMBER_TABLES
        .iter()
        .enumerate()
        .map(|(i, (table, scrubbed))| {
            let mut set = String::from("customer_id = $2");
            for column in *scrubbed {
                set.push_str(&format!(", {column} = replace({column}, $1, $2)"));
            }
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
async fn lock_member(
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

fn encode_lots(lots: &[(i64, Points)]) -> StoreResult<String> {
    serde_json::to_string(lots).map_err(|e| StoreError::Internal(format!("encode lots: {e}")))
}

fn decode_lots(json: &str) -> StoreResult<Vec<(i64, Points)>> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Internal(format!("stored lots {json:?}: {e}")))
}

fn status_name(status: RedemptionStatus) -> &'static str {
    match status {
        RedemptionStatus::Completed => "COMPLETED",
        RedemptionStatus::Cancelled => "CANCELLED",
    }
}

fn parse_status(s: &str) -> StoreResult<RedemptionStatus> {
    match s {
        "COMPLETED" => Ok(RedemptionStatus::Completed),
        "CANCELLED" => Ok(RedemptionStatus::Cancelled),
        other => Err(StoreError::Internal(format!(
            "stored redemption status {other:?}"
        ))),
    }
}

const PROGRAM_COLUMNS: &str =
    "program_id, body, target_segment, revision, create_time, update_time";

fn program_from_row(row: &PgRow) -> StoreResult<ProgramRecord> {
    Ok(ProgramRecord {
        program_id: row.try_get(0).map_err(db_err)?,
        body: row.try_get(1).map_err(db_err)?,
        target_segment: row.try_get(2).map_err(db_err)?,
        revision: row.try_get(3).map_err(db_err)?,
        create_time: Timestamp::from_micros(row.try_get(4).map_err(db_err)?),
        update_time: Timestamp::from_micros(row.try_get(5).map_err(db_err)?),
    })
}

const REWARD_COLUMNS: &str = "reward_id, program_id, body, required_segment, stock_remaining, \
     revision, create_time, update_time";

fn reward_from_row(row: &PgRow) -> StoreResult<RewardRecord> {
    Ok(RewardRecord {
        reward_id: row.try_get(0).map_err(db_err)?,
        program_id: row.try_get(1).map_err(db_err)?,
        body: row.try_get(2).map_err(db_err)?,
        required_segment: row.try_get(3).map_err(db_err)?,
        stock_remaining: row.try_get(4).map_err(db_err)?,
        revision: row.try_get(5).map_err(db_err)?,
        create_time: Timestamp::from_micros(row.try_get(6).map_err(db_err)?),
        update_time: Timestamp::from_micros(row.try_get(7).map_err(db_err)?),
    })
}

const ENTRY_COLUMNS: &str = "entry_id, kind, amount, points, lots, event_id, redemption_id, \
     rule, issuer, reason, created_at, effective_at, expires_at";

fn entry_from_row(row: &PgRow) -> StoreResult<Entry> {
    let kind: &str = row.try_get(1).map_err(db_err)?;
    let lots: &str = row.try_get(4).map_err(db_err)?;
    Ok(Entry {
        entry_id: row.try_get(0).map_err(db_err)?,
        kind: EntryKind::parse(kind)
            .ok_or_else(|| StoreError::Internal(format!("stored entry kind {kind:?}")))?,
        amount: row.try_get(2).map_err(db_err)?,
        points: row.try_get(3).map_err(db_err)?,
        lots: decode_lots(lots)?,
        source: Source {
            event_id: row.try_get(5).map_err(db_err)?,
            redemption_id: row.try_get(6).map_err(db_err)?,
            rule: row.try_get(7).map_err(db_err)?,
        },
        issuer: row.try_get(8).map_err(db_err)?,
        reason: row.try_get(9).map_err(db_err)?,
        created_at: Timestamp::from_micros(row.try_get(10).map_err(db_err)?),
        effective_at: Timestamp::from_micros(row.try_get(11).map_err(db_err)?),
        expires_at: row
            .try_get::<Option<i64>, _>(12)
            .map_err(db_err)?
            .map(Timestamp::from_micros),
    })
}

const REDEMPTION_COLUMNS: &str = "redemption_id, request_id, reward_id, cost, lots, fingerprint, \
     status, created_at, cancelled_at";

fn redemption_from_row(row: &PgRow) -> StoreResult<RedemptionRecord> {
    let lots: &str = row.try_get(4).map_err(db_err)?;
    let status: &str = row.try_get(6).map_err(db_err)?;
    Ok(RedemptionRecord {
        redemption_id: row.try_get(0).map_err(db_err)?,
        request_id: row.try_get(1).map_err(db_err)?,
        reward_id: row.try_get(2).map_err(db_err)?,
        cost: row.try_get(3).map_err(db_err)?,
        lots: decode_lots(lots)?,
        fingerprint: row.try_get(5).map_err(db_err)?,
        status: parse_status(status)?,
        created_at: Timestamp::from_micros(row.try_get(7).map_err(db_err)?),
        cancelled_at: row
            .try_get::<Option<i64>, _>(8)
            .map_err(db_err)?
            .map(Timestamp::from_micros),
    })
}

fn program_revision_mismatch(id: &str, expected: i64, stored: i64) -> StoreError {
    StoreError::PreconditionFailed(format!(
        "program {id} revision is {stored}, the write expected {expected}"
    ))
}

fn reward_revision_mismatch(id: &str, expected: i64, stored: i64) -> StoreError {
    StoreError::PreconditionFailed(format!(
        "reward {id} revision is {stored}, the write expected {expected}"
    ))
}

const MEMBER_COLUMNS: &str = "enrolled_at, debt, lifetime_earned, lifetime_redeemed, \
     next_lot_id, next_entry_id, first_purchase_done";

/// A member row from [`MEMBER_COLUMNS`] starting at column `at`, without lots or activity.
fn member_from_row(row: &PgRow, at: usize) -> StoreResult<MemberRow> {
    Ok(MemberRow {
        enrolled_at: Timestamp::from_micros(row.try_get(at).map_err(db_err)?),
        wallet: Wallet {
            lots: Vec::new(),
            debt: row.try_get(at + 1).map_err(db_err)?,
            lifetime_earned: row.try_get(at + 2).map_err(db_err)?,
            lifetime_redeemed: row.try_get(at + 3).map_err(db_err)?,
            next_lot_id: row.try_get(at + 4).map_err(db_err)?,
            next_entry_id: row.try_get(at + 5).map_err(db_err)?,
            new_entries: Vec::new(),
        },
        first_purchase_done: row.try_get(at + 6).map_err(db_err)?,
        activity: Vec::new(),
    })
}

const LOT_COLUMNS: &str =
    "lot_id, original, remaining, earned_at, available_at, expires_at, activated";

/// A lot from [`LOT_COLUMNS`] starting at column `at`.
fn lot_from_row(row: &PgRow, at: usize) -> StoreResult<Lot> {
    Ok(Lot {
        lot_id: row.try_get(at).map_err(db_err)?,
        original: row.try_get(at + 1).map_err(db_err)?,
        remaining: row.try_get(at + 2).map_err(db_err)?,
        earned_at: Timestamp::from_micros(row.try_get(at + 3).map_err(db_err)?),
        available_at: Timestamp::from_micros(row.try_get(at + 4).map_err(db_err)?),
        expires_at: row
            .try_get::<Option<i64>, _>(at + 5)
            .map_err(db_err)?
            .map(Timestamp::from_micros),
        activated: row.try_get(at + 6).map_err(db_err)?,
    })
}

const ACTIVITY_COLUMNS: &str = "day, points, spend";

/// A day of activity from [`ACTIVITY_COLUMNS`] starting at column `at`.
fn activity_from_row(row: &PgRow, at: usize) -> StoreResult<DayActivity> {
    Ok(DayActivity {
        day: Day::from_days(row.try_get(at).map_err(db_err)?),
        points: row.try_get(at + 1).map_err(db_err)?,
        spend: row.try_get(at + 2).map_err(db_err)?,
    })
}

/// The member row with all its lots (by lot id) and activity (by day); `None` if not a member.
async fn load_member(
    conn: &mut PgConnection,
    key: MemberKey<'_>,
) -> StoreResult<Option<MemberRow>> {
    let sql = format!(
        "SELECT {MEMBER_COLUMNS} FROM loyalty_members WHERE customer_id = $1 AND program_id = $2"
    );
    let row = sqlx::query(&sql)
        .bind(key.customer)
        .bind(key.program)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let mut member = member_from_row(&row, 0)?;

    let sql = format!(
        "SELECT {LOT_COLUMNS} FROM loyalty_lots WHERE customer_id = $1 AND program_id = $2 \
         ORDER BY lot_id"
    );
    let lots = sqlx::query(&sql)
        .bind(key.customer)
        .bind(key.program)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
    member.wallet.lots = lots
        .iter()
        .map(|row| lot_from_row(row, 0))
        .collect::<StoreResult<_>>()?;

    let sql = format!(
        "SELECT {ACTIVITY_COLUMNS} FROM loyalty_activity \
         WHERE customer_id = $1 AND program_id = $2 ORDER BY day"
    );
    let days = sqlx::query(&sql)
        .bind(key.customer)
        .bind(key.program)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
    member.activity = days
        .iter()
        .map(|row| activity_from_row(row, 0))
        .collect::<StoreResult<_>>()?;
    Ok(Some(member))
}

/// A page of members strictly after `after` in (customer id, program id) order, each with all
/// its lots and activity: three statements, the lots and activity read over the page's key range
/// (row comparisons on the primary keys, text in the "C" collation like the keys' order here).
async fn scan_members(
    conn: &mut PgConnection,
    after: Option<(&CustomerId, &str)>,
    limit: usize,
) -> StoreResult<Vec<(CustomerId, String, MemberRow)>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let rows = match after {
        Some((customer, program)) => {
            let sql = format!(
                "SELECT customer_id, program_id, {MEMBER_COLUMNS} FROM loyalty_members \
                 WHERE (customer_id, program_id) > ($1, $2) \
                 ORDER BY customer_id, program_id LIMIT $3"
            );
            sqlx::query(&sql)
                .bind(customer.as_str())
                .bind(program)
                .bind(limit_param(limit))
                .fetch_all(&mut *conn)
                .await
        }
        None => {
            let sql = format!(
                "SELECT customer_id, program_id, {MEMBER_COLUMNS} FROM loyalty_members \
                 ORDER BY customer_id, program_id LIMIT $1"
            );
            sqlx::query(&sql)
                .bind(limit_param(limit))
                .fetch_all(&mut *conn)
                .await
        }
    }
    .map_err(db_err)?;
    let mut keys = Vec::with_capacity(rows.len());
    let mut members = Vec::with_capacity(rows.len());
    for row in &rows {
        let customer: String = row.try_get(0).map_err(db_err)?;
        let program: String = row.try_get(1).map_err(db_err)?;
        keys.push((customer, program));
        members.push(member_from_row(row, 2)?);
    }
    let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
        return Ok(Vec::new());
    };
    // Rows of the page's key range; any of a key not in the page (no member row) is skipped.
    let index: HashMap<(&str, &str), usize> = keys
        .iter()
        .enumerate()
        .map(|(i, (c, p))| ((c.as_str(), p.as_str()), i))
        .collect();
    let range = "(customer_id, program_id) >= ($1, $2) AND (customer_id, program_id) <= ($3, $4)";

    let sql = format!(
        "SELECT customer_id, program_id, {LOT_COLUMNS} FROM loyalty_lots WHERE {range} \
         ORDER BY customer_id, program_id, lot_id"
    );
    let lots = sqlx::query(&sql)
        .bind(first.0.as_str())
        .bind(first.1.as_str())
        .bind(last.0.as_str())
        .bind(last.1.as_str())
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
    for row in &lots {
        let key: (&str, &str) = (
            row.try_get(0).map_err(db_err)?,
            row.try_get(1).map_err(db_err)?,
        );
        if let Some(&i) = index.get(&key) {
            members[i].wallet.lots.push(lot_from_row(row, 2)?);
        }
    }

    let sql = format!(
        "SELECT customer_id, program_id, {ACTIVITY_COLUMNS} FROM loyalty_activity \
         WHERE {range} ORDER BY customer_id, program_id, day"
    );
    let days = sqlx::query(&sql)
        .bind(first.0.as_str())
        .bind(first.1.as_str())
        .bind(last.0.as_str())
        .bind(last.1.as_str())
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
    for row in &days {
        let key: (&str, &str) = (
            row.try_get(0).map_err(db_err)?,
            row.try_get(1).map_err(db_err)?,
        );
        if let Some(&i) = index.get(&key) {
            members[i].activity.push(activity_from_row(row, 2)?);
        }
    }

    keys.into_iter()
        .zip(members)
        .map(|((customer, program), member)| {
            let customer = CustomerId::parse(customer)
                .map_err(|e| StoreError::Internal(format!("stored customer id: {e}")))?;
            Ok((customer, program, member))
        })
        .collect()
}

async fn load_redemption(
    conn: &mut PgConnection,
    key: MemberKey<'_>,
    column: &str,
    value: &str,
) -> StoreResult<Option<RedemptionRecord>> {
    let sql = format!(
        "SELECT {REDEMPTION_COLUMNS} FROM loyalty_redemptions \
         WHERE customer_id = $1 AND program_id = $2 AND {column} = $3"
    );
    let row = sqlx::query(&sql)
        .bind(key.customer)
        .bind(key.program)
        .bind(value)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    row.as_ref().map(redemption_from_row).transpose()
}

/// Loads what `needs` asks for (and the member row), under the member's lock.
async fn load(conn: &mut PgConnection, key: MemberKey<'_>, needs: &Needs) -> StoreResult<Loaded> {
    let mut loaded = Loaded {
        member: load_member(conn, key).await?,
        ..Loaded::default()
    };
    if let Some(order_id) = &needs.order_id {
        let row = sqlx::query(
            "SELECT order_id, amount, refunded, purchased, day, multiplier_percent, points \
             FROM loyalty_orders WHERE customer_id = $1 AND program_id = $2 AND order_id = $3",
        )
        .bind(key.customer)
        .bind(key.program)
        .bind(order_id.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
        if let Some(row) = row {
            let multiplier: i64 = row.try_get(5).map_err(db_err)?;
            loaded.order = Some(LoyaltyOrder {
                order_id: row.try_get(0).map_err(db_err)?,
                amount: row.try_get(1).map_err(db_err)?,
                refunded: row.try_get(2).map_err(db_err)?,
                purchased: row.try_get(3).map_err(db_err)?,
                day: row
                    .try_get::<Option<i32>, _>(4)
                    .map_err(db_err)?
                    .map(Day::from_days),
                multiplier_percent: u32::try_from(multiplier).map_err(|_| {
                    StoreError::Internal(format!("stored multiplier {multiplier} out of range"))
                })?,
                points: row.try_get(6).map_err(db_err)?,
            });
        }
    }
    if let Some((name, period_start)) = &needs.bonus {
        let count: Option<i64> = sqlx::query_scalar(
            "SELECT count FROM loyalty_bonus_counts WHERE customer_id = $1 AND program_id = $2 \
             AND event_name = $3 AND period_start = $4",
        )
        .bind(key.customer)
        .bind(key.program)
        .bind(name.as_str())
        .bind(period_start.as_days())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
        loaded.bonus_count = count.unwrap_or(0);
    }
    if let Some(reward_id) = &needs.reward_id {
        // The reward is shared by all members and not locked here: its stock is only ever
        // changed by conditional updates (see `take_stock`).
        let sql = format!("SELECT {REWARD_COLUMNS} FROM loyalty_rewards WHERE reward_id = $1");
        let row = sqlx::query(&sql)
            .bind(reward_id.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
        loaded.reward = row.as_ref().map(reward_from_row).transpose()?;
        loaded.reward_redemptions = sqlx::query_scalar(
            "SELECT COUNT(*) FROM loyalty_redemptions WHERE customer_id = $1 \
             AND program_id = $2 AND reward_id = $3 AND status = 'COMPLETED'",
        )
        .bind(key.customer)
        .bind(key.program)
        .bind(reward_id.as_str())
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    // By request id first (a replayed redemption), else by redemption id (a cancellation).
    if let Some(request_id) = &needs.request_id {
        loaded.redemption = load_redemption(conn, key, "request_id", request_id).await?;
    }
    if loaded.redemption.is_none()
        && let Some(redemption_id) = &needs.redemption_id
    {
        loaded.redemption = load_redemption(conn, key, "redemption_id", redemption_id).await?;
    }
    if let Some(event_id) = &needs.event_id {
        loaded.event_applied = sqlx::query(
            "SELECT 1 FROM loyalty_applied_events WHERE customer_id = $1 AND program_id = $2 \
             AND event_id = $3",
        )
        .bind(key.customer)
        .bind(key.program)
        .bind(event_id.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?
        .is_some();
    }
    Ok(loaded)
}

/// The error of changes that write what `needs` did not ask for.
fn not_asked(what: &str) -> StoreError {
    StoreError::Internal(format!("the operation changed {what} it did not ask for"))
}

/// What [`write_changes`] did.
enum Written {
    /// The reward's stock ran out: the caller rolls back.
    OutOfStock,
    /// Written; `stock_of`: the program of the reward whose stock changed, if one did.
    Done { stock_of: Option<String> },
}

/// Whether `changes` write anything at all (a member operation that only looked writes nothing,
/// and appends nothing to the feed).
fn writes_anything(changes: &Changes) -> bool {
    let Changes {
        member,
        order,
        bonus_count,
        activity,
        take_stock,
        return_stock,
        redemption,
        mark_event_applied,
    } = changes;
    member.is_some()
        || order.is_some()
        || bonus_count.is_some()
        || !activity.is_empty()
        || *take_stock
        || *return_stock
        || redemption.is_some()
        || *mark_event_applied
}

/// Writes `changes` under the member's lock.
async fn write_changes(
    conn: &mut PgConnection,
    key: MemberKey<'_>,
    needs: &Needs,
    loaded: &Loaded,
    changes: &Changes,
) -> StoreResult<Written> {
    if let Some(member) = &changes.member {
        write_member(conn, key, loaded.member.as_ref(), member).await?;
    }
    if let Some(order) = &changes.order {
        sqlx::query(
            "INSERT INTO loyalty_orders (customer_id, program_id, order_id, amount, refunded, \
             purchased, day, multiplier_percent, points) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (customer_id, program_id, order_id) DO UPDATE SET \
             amount = excluded.amount, refunded = excluded.refunded, \
             purchased = excluded.purchased, day = excluded.day, \
             multiplier_percent = excluded.multiplier_percent, points = excluded.points",
        )
        .bind(key.customer)
        .bind(key.program)
        .bind(order.order_id.as_str())
        .bind(order.amount)
        .bind(order.refunded)
        .bind(order.purchased)
        .bind(order.day.map(Day::as_days))
        .bind(i64::from(order.multiplier_percent))
        .bind(order.points)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    if let Some(count) = changes.bonus_count {
        let (name, period_start) = needs.bonus.as_ref().ok_or_else(|| not_asked("a bonus"))?;
        sqlx::query(
            "INSERT INTO loyalty_bonus_counts (customer_id, program_id, event_name, \
             period_start, count) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (customer_id, program_id, event_name, period_start) DO UPDATE SET \
             count = excluded.count",
        )
        .bind(key.customer)
        .bind(key.program)
        .bind(name.as_str())
        .bind(period_start.as_days())
        .bind(count)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    if !changes.activity.is_empty() {
        // One row per day (a day named twice adds up: an upsert may not touch a row twice), in
        // day order.
        let mut days: BTreeMap<i32, (Points, i64)> = BTreeMap::new();
        for a in &changes.activity {
            let d = days.entry(a.day.as_days()).or_insert((0, 0));
            d.0 =
                d.0.checked_add(a.points)
                    .ok_or_else(|| StoreError::Overflow("activity points".into()))?;
            d.1 =
                d.1.checked_add(a.spend)
                    .ok_or_else(|| StoreError::Overflow("activity spend".into()))?;
        }
        let sql = format!(
            "INSERT INTO loyalty_activity (customer_id, program_id, day, points, spend) \
             SELECT $1::TEXT, $2::TEXT, t.* FROM UNNEST({}) AS t \
             ON CONFLICT (customer_id, program_id, day) DO UPDATE SET \
             points = loyalty_activity.points + excluded.points, \
             spend = loyalty_activity.spend + excluded.spend",
            unnest_args(&["integer", "bigint", "bigint"], 3)
        );
        sqlx::query(&sql)
            .bind(key.customer)
            .bind(key.program)
            .bind(days.keys().copied().collect::<Vec<i32>>())
            .bind(days.values().map(|d| d.0).collect::<Vec<i64>>())
            .bind(days.values().map(|d| d.1).collect::<Vec<i64>>())
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
    }
    if let Some(r) = &changes.redemption {
        let result = sqlx::query(
            "INSERT INTO loyalty_redemptions (customer_id, program_id, redemption_id, \
             request_id, reward_id, cost, lots, fingerprint, status, created_at, cancelled_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (customer_id, program_id, redemption_id) DO UPDATE SET \
             request_id = excluded.request_id, reward_id = excluded.reward_id, \
             cost = excluded.cost, lots = excluded.lots, fingerprint = excluded.fingerprint, \
             status = excluded.status, created_at = excluded.created_at, \
             cancelled_at = excluded.cancelled_at",
        )
        .bind(key.customer)
        .bind(key.program)
        .bind(r.redemption_id.as_str())
        .bind(r.request_id.as_str())
        .bind(r.reward_id.as_str())
        .bind(r.cost)
        .bind(encode_lots(&r.lots)?)
        .bind(r.fingerprint.as_str())
        .bind(status_name(r.status))
        .bind(r.created_at.as_micros())
        .bind(r.cancelled_at.map(Timestamp::as_micros))
        .execute(&mut *conn)
        .await;
        match result {
            Ok(_) => {}
            // Another redemption of the member has this request id.
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                return Err(StoreError::Conflict(format!(
                    "redemption request id {} is taken",
                    r.request_id
                )));
            }
            Err(e) => return Err(db_err(e)),
        }
    }
    if changes.mark_event_applied {
        let event_id = needs
            .event_id
            .as_ref()
            .ok_or_else(|| not_asked("an event"))?;
        sqlx::query(
            "INSERT INTO loyalty_applied_events (customer_id, program_id, event_id) \
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(key.customer)
        .bind(key.program)
        .bind(event_id.as_str())
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    let mut stock_of = None;
    if changes.take_stock || changes.return_stock {
        let reward_id = needs
            .reward_id
            .as_deref()
            .ok_or_else(|| not_asked("a reward's stock"))?;
        if changes.take_stock {
            match take_stock(conn, reward_id).await? {
                Stock::Taken(program) => stock_of = Some(program),
                Stock::Unlimited => {}
                Stock::SoldOut => return Ok(Written::OutOfStock),
            }
        }
        if changes.return_stock {
            let returned: Option<String> = sqlx::query_scalar(
                "UPDATE loyalty_rewards SET stock_remaining = stock_remaining + 1 \
                 WHERE reward_id = $1 AND stock_remaining IS NOT NULL RETURNING program_id",
            )
            .bind(reward_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
            stock_of = stock_of.or(returned);
        }
    }
    Ok(Written::Done { stock_of })
}

/// What [`take_stock`] found.
enum Stock {
    /// A unit was taken from the reward of this program.
    Taken(String),
    /// The reward is unlimited: nothing to take.
    Unlimited,
    /// None left, or the reward is gone.
    SoldOut,
}

/// Takes one unit of a reward's stock. The decrement is conditional, and Postgres re-checks its
/// condition after waiting for a concurrent taker, so two members never take the last unit.
async fn take_stock(conn: &mut PgConnection, reward_id: &str) -> StoreResult<Stock> {
    let taken: Option<String> = sqlx::query_scalar(
        "UPDATE loyalty_rewards SET stock_remaining = stock_remaining - 1 \
         WHERE reward_id = $1 AND stock_remaining IS NOT NULL AND stock_remaining > 0 \
         RETURNING program_id",
    )
    .bind(reward_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    if let Some(program) = taken {
        return Ok(Stock::Taken(program));
    }
    let stock: Option<Option<i64>> =
        sqlx::query_scalar("SELECT stock_remaining FROM loyalty_rewards WHERE reward_id = $1")
            .bind(reward_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_err)?;
    Ok(if matches!(stock, Some(None)) {
        Stock::Unlimited
    } else {
        Stock::SoldOut
    })
}

/// Writes the member row, the lots that differ from the loaded ones (by lot id), and the new
/// entries (by entry id).
async fn write_member(
    conn: &mut PgConnection,
    key: MemberKey<'_>,
    before: Option<&MemberRow>,
    member: &MemberRow,
) -> StoreResult<()> {
    let w = &member.wallet;
    sqlx::query(
        "INSERT INTO loyalty_members (customer_id, program_id, enrolled_at, debt, \
         lifetime_earned, lifetime_redeemed, next_lot_id, next_entry_id, first_purchase_done) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (customer_id, program_id) DO UPDATE SET enrolled_at = excluded.enrolled_at, \
         debt = excluded.debt, lifetime_earned = excluded.lifetime_earned, \
         lifetime_redeemed = excluded.lifetime_redeemed, next_lot_id = excluded.next_lot_id, \
         next_entry_id = excluded.next_entry_id, \
         first_purchase_done = excluded.first_purchase_done",
    )
    .bind(key.customer)
    .bind(key.program)
    .bind(member.enrolled_at.as_micros())
    .bind(w.debt)
    .bind(w.lifetime_earned)
    .bind(w.lifetime_redeemed)
    .bind(w.next_lot_id)
    .bind(w.next_entry_id)
    .bind(member.first_purchase_done)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;

    let stored: HashMap<i64, &Lot> = before
        .map(|m| m.wallet.lots.iter().map(|l| (l.lot_id, l)).collect())
        .unwrap_or_default();
    let mut changed: Vec<&Lot> = w
        .lots
        .iter()
        .filter(|l| stored.get(&l.lot_id) != Some(l))
        .collect();
    changed.sort_unstable_by_key(|l| l.lot_id);
    if !changed.is_empty() {
        let sql = format!(
            "INSERT INTO loyalty_lots (customer_id, program_id, lot_id, original, remaining, \
             earned_at, available_at, expires_at, activated) \
             SELECT $1::TEXT, $2::TEXT, t.* FROM UNNEST({}) AS t \
             ON CONFLICT (customer_id, program_id, lot_id) DO UPDATE SET \
             original = excluded.original, remaining = excluded.remaining, \
             earned_at = excluded.earned_at, available_at = excluded.available_at, \
             expires_at = excluded.expires_at, activated = excluded.activated",
            unnest_args(
                &[
                    "bigint", "bigint", "bigint", "bigint", "bigint", "bigint", "boolean"
                ],
                3
            )
        );
        sqlx::query(&sql)
            .bind(key.customer)
            .bind(key.program)
            .bind(changed.iter().map(|l| l.lot_id).collect::<Vec<_>>())
            .bind(changed.iter().map(|l| l.original).collect::<Vec<_>>())
            .bind(changed.iter().map(|l| l.remaining).collect::<Vec<_>>())
            .bind(
                changed
                    .iter()
                    .map(|l| l.earned_at.as_micros())
                    .collect::<Vec<_>>(),
            )
            .bind(
                changed
                    .iter()
                    .map(|l| l.available_at.as_micros())
                    .collect::<Vec<_>>(),
            )
            .bind(
                changed
                    .iter()
                    .map(|l| l.expires_at.map(Timestamp::as_micros))
                    .collect::<Vec<_>>(),
            )
            .bind(changed.iter().map(|l| l.activated).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
    }

    if !w.new_entries.is_empty() {
        let mut entries: Vec<&Entry> = w.new_entries.iter().collect();
        entries.sort_unstable_by_key(|e| e.entry_id);
        let lots = entries
            .iter()
            .map(|e| encode_lots(&e.lots))
            .collect::<StoreResult<Vec<_>>>()?;
        let sql = format!(
            "INSERT INTO loyalty_entries (customer_id, program_id, {ENTRY_COLUMNS}) \
             SELECT $1::TEXT, $2::TEXT, t.* FROM UNNEST({}) AS t",
            unnest_args(
                &[
                    "bigint", "text", "bigint", "bigint", "text", "text", "text", "text", "text",
                    "text", "bigint", "bigint", "bigint",
                ],
                3
            )
        );
        sqlx::query(&sql)
            .bind(key.customer)
            .bind(key.program)
            .bind(entries.iter().map(|e| e.entry_id).collect::<Vec<_>>())
            .bind(entries.iter().map(|e| e.kind.name()).collect::<Vec<_>>())
            .bind(entries.iter().map(|e| e.amount).collect::<Vec<_>>())
            .bind(entries.iter().map(|e| e.points).collect::<Vec<_>>())
            .bind(lots)
            .bind(
                entries
                    .iter()
                    .map(|e| e.source.event_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                entries
                    .iter()
                    .map(|e| e.source.redemption_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                entries
                    .iter()
                    .map(|e| e.source.rule.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                entries
                    .iter()
                    .map(|e| e.issuer.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                entries
                    .iter()
                    .map(|e| e.reason.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                entries
                    .iter()
                    .map(|e| e.created_at.as_micros())
                    .collect::<Vec<_>>(),
            )
            .bind(
                entries
                    .iter()
                    .map(|e| e.effective_at.as_micros())
                    .collect::<Vec<_>>(),
            )
            .bind(
                entries
                    .iter()
                    .map(|e| e.expires_at.map(Timestamp::as_micros))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
    }
    Ok(())
}

#[async_trait]
impl LoyaltyStore for PgStore {
    #[tracing::instrument(skip_all, name = "store.create_program", fields(db.system = "postgresql", program_id = %record.program_id))]
    async fn create_program(&self, record: &ProgramRecord) -> StoreResult<ProgramRecord> {
        let mut tx = self.pool()?.begin().await.map_err(db_err)?;
        let inserted = sqlx::query(
            "INSERT INTO loyalty_programs (program_id, body, target_segment, revision, \
             create_time, update_time) VALUES ($1, $2, $3, 1, $4, $5) \
             ON CONFLICT (program_id) DO NOTHING",
        )
        .bind(record.program_id.as_str())
        .bind(record.body.as_str())
        .bind(record.target_segment.as_deref())
        .bind(record.create_time.as_micros())
        .bind(record.update_time.as_micros())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::AlreadyExists(format!(
                "program {}",
                record.program_id
            )));
        }
        append_changes(
            &mut tx,
            &[(ChangeKind::Program, record.program_id.as_str(), "")],
        )
        .await?;
        tx.commit().await.map_err(db_err)?;
        Ok(ProgramRecord {
            revision: 1,
            ..record.clone()
        })
    }

    #[tracing::instrument(skip_all, name = "store.get_program", fields(db.system = "postgresql", program_id = %id))]
    async fn get_program(&self, id: &str) -> StoreResult<Option<ProgramRecord>> {
        let sql = format!("SELECT {PROGRAM_COLUMNS} FROM loyalty_programs WHERE program_id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool()?)
            .await
            .map_err(db_err)?;
        row.as_ref().map(program_from_row).transpose()
    }

    #[tracing::instrument(skip_all, name = "store.list_programs", fields(db.system = "postgresql", limit))]
    async fn list_programs(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<ProgramRecord>> {
        // program_id is COLLATE "C": bytewise order, as in SQLite.
        let sql = format!(
            "SELECT {PROGRAM_COLUMNS} FROM loyalty_programs WHERE program_id > $1 \
             ORDER BY program_id LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(after.unwrap_or(""))
            .bind(limit_param(limit))
            .fetch_all(self.pool()?)
            .await
            .map_err(db_err)?;
        rows.iter().map(program_from_row).collect()
    }

    #[tracing::instrument(skip_all, name = "store.update_program", fields(db.system = "postgresql", program_id = %id, expected_revision))]
    async fn update_program(
        &self,
        id: &str,
        body: &str,
        target_segment: Option<&str>,
        now: Timestamp,
        expected_revision: Option<i64>,
    ) -> StoreResult<Option<ProgramRecord>> {
        let mut tx = self.pool()?.begin().await.map_err(db_err)?;
        let stored: Option<i64> = sqlx::query_scalar(
            "SELECT revision FROM loyalty_programs WHERE program_id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some(revision) = stored else {
            return Ok(None);
        };
        if let Some(expected) = expected_revision.filter(|&e| e != revision) {
            return Err(program_revision_mismatch(id, expected, revision));
        }
        let sql = format!(
            "UPDATE loyalty_programs SET body = $2, target_segment = $3, \
             revision = revision + 1, update_time = $4 WHERE program_id = $1 \
             RETURNING {PROGRAM_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(body)
            .bind(target_segment)
            .bind(now.as_micros())
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        let record = program_from_row(&row)?;
        append_changes(
            &mut tx,
            &[(ChangeKind::Program, record.program_id.as_str(), "")],
        )
        .await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Some(record))
    }

    #[tracing::instrument(skip_all, name = "store.create_reward", fields(db.system = "postgresql", reward_id = %record.reward_id))]
    async fn create_reward(&self, record: &RewardRecord) -> StoreResult<RewardRecord> {
        let taken = || StoreError::AlreadyExists(format!("reward {}", record.reward_id));
        let mut tx = self.pool()?.begin().await.map_err(db_err)?;
        let exists = sqlx::query("SELECT 1 FROM loyalty_rewards WHERE reward_id = $1")
            .bind(record.reward_id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?
            .is_some();
        if exists {
            return Err(taken());
        }
        // Held (as the foreign key would) until the reward is committed.
        let program =
            sqlx::query("SELECT 1 FROM loyalty_programs WHERE program_id = $1 FOR KEY SHARE")
                .bind(record.program_id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .is_some();
        if !program {
            return Err(StoreError::MissingDependency(record.program_id.clone()));
        }
        let inserted = sqlx::query(
            "INSERT INTO loyalty_rewards (reward_id, program_id, body, required_segment, \
             stock_remaining, revision, create_time, update_time) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $7) ON CONFLICT (reward_id) DO NOTHING",
        )
        .bind(record.reward_id.as_str())
        .bind(record.program_id.as_str())
        .bind(record.body.as_str())
        .bind(record.required_segment.as_deref())
        .bind(record.stock_remaining)
        .bind(record.create_time.as_micros())
        .bind(record.update_time.as_micros())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected();
        if inserted == 0 {
            // Created concurrently since the check above.
            return Err(taken());
        }
        append_changes(
            &mut tx,
            &[(
                ChangeKind::Reward,
                record.reward_id.as_str(),
                record.program_id.as_str(),
            )],
        )
        .await?;
        tx.commit().await.map_err(db_err)?;
        Ok(RewardRecord {
            revision: 1,
            ..record.clone()
        })
    }

    #[tracing::instrument(skip_all, name = "store.get_reward", fields(db.system = "postgresql", reward_id = %id))]
    async fn get_reward(&self, id: &str) -> StoreResult<Option<RewardRecord>> {
        let sql = format!("SELECT {REWARD_COLUMNS} FROM loyalty_rewards WHERE reward_id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool()?)
            .await
            .map_err(db_err)?;
        row.as_ref().map(reward_from_row).transpose()
    }

    #[tracing::instrument(skip_all, name = "store.list_rewards", fields(db.system = "postgresql", program_id = %program_id, limit))]
    async fn list_rewards(
        &self,
        program_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<RewardRecord>> {
        let sql = format!(
            "SELECT {REWARD_COLUMNS} FROM loyalty_rewards WHERE program_id = $1 \
             AND reward_id > $2 ORDER BY reward_id LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(program_id)
            .bind(after.unwrap_or(""))
            .bind(limit_param(limit))
            .fetch_all(self.pool()?)
            .await
            .map_err(db_err)?;
        rows.iter().map(reward_from_row).collect()
    }

    #[tracing::instrument(skip_all, name = "store.update_reward", fields(db.system = "postgresql", reward_id = %id, expected_revision))]
    async fn update_reward(
        &self,
        id: &str,
        body: &str,
        required_segment: Option<&str>,
        stock_remaining: Option<Option<i64>>,
        now: Timestamp,
        expected_revision: Option<i64>,
    ) -> StoreResult<Option<RewardRecord>> {
        let mut tx = self.pool()?.begin().await.map_err(db_err)?;
        let stored: Option<i64> = sqlx::query_scalar(
            "SELECT revision FROM loyalty_rewards WHERE reward_id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some(revision) = stored else {
            return Ok(None);
        };
        if let Some(expected) = expected_revision.filter(|&e| e != revision) {
            return Err(reward_revision_mismatch(id, expected, revision));
        }
        let sql = format!(
            "UPDATE loyalty_rewards SET body = $2, required_segment = $3, \
             stock_remaining = CASE WHEN $4 THEN $5::BIGINT ELSE stock_remaining END, \
             revision = revision + 1, update_time = $6 WHERE reward_id = $1 \
             RETURNING {REWARD_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(body)
            .bind(required_segment)
            .bind(stock_remaining.is_some())
            .bind(stock_remaining.flatten())
            .bind(now.as_micros())
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        let record = reward_from_row(&row)?;
        append_changes(
            &mut tx,
            &[(
                ChangeKind::Reward,
                record.reward_id.as_str(),
                record.program_id.as_str(),
            )],
        )
        .await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Some(record))
    }

    #[tracing::instrument(skip_all, name = "store.mutate_member", fields(db.system = "postgresql", program_id = %program_id, customer_id = %customer))]
    async fn mutate_member(
        &self,
        program_id: &str,
        customer: &CustomerId,
        now: Timestamp,
        op: &dyn MemberOp,
    ) -> StoreResult<MutateOutcome> {
        let key = MemberKey {
            customer: customer.as_str(),
            program: program_id,
        };
        let needs = op.needs();
        let mut tx = self.pool()?.begin().await.map_err(db_err)?;
        lock_member(&mut tx, program_id, customer.as_str()).await?;
        let loaded = load(&mut tx, key, &needs).await?;
        let changes = match op.apply(&loaded, now) {
            Ok(changes) => changes,
            Err(reason) => {
                tx.rollback().await.map_err(db_err)?;
                return Ok(MutateOutcome::Refused(reason));
            }
        };
        let stock_of = match write_changes(&mut tx, key, &needs, &loaded, &changes).await? {
            Written::OutOfStock => {
                tx.rollback().await.map_err(db_err)?;
                return Ok(MutateOutcome::OutOfStock);
            }
            Written::Done { stock_of } => stock_of,
        };
        let mut feed: Vec<NewChange<'_>> = Vec::with_capacity(2);
        if writes_anything(&changes) {
            feed.push((ChangeKind::Member, key.customer, key.program));
        }
        if let (Some(program), Some(reward)) = (&stock_of, &needs.reward_id) {
            feed.push((ChangeKind::Reward, reward.as_str(), program.as_str()));
        }
        append_changes(&mut tx, &feed).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(MutateOutcome::Applied { loaded, changes })
    }

    #[tracing::instrument(skip_all, name = "store.get_member", fields(db.system = "postgresql", program_id = %program_id, customer_id = %customer))]
    async fn get_member(
        &self,
        program_id: &str,
        customer: &CustomerId,
    ) -> StoreResult<Option<MemberRow>> {
        // One snapshot: the row, its lots and its activity as one commit left them.
        let mut tx = self.begin_snapshot().await?;
        let member = load_member(
            &mut tx,
            MemberKey {
                customer: customer.as_str(),
                program: program_id,
            },
        )
        .await?;
        tx.commit().await.map_err(db_err)?;
        Ok(member)
    }

    #[tracing::instrument(skip_all, name = "store.scan_members", fields(db.system = "postgresql", limit))]
    async fn scan_members(
        &self,
        after: Option<(&CustomerId, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<(CustomerId, String, MemberRow)>> {
        // One snapshot: the page's members, lots and activity as one commit left them.
        let mut tx = self.begin_snapshot().await?;
        let page = scan_members(&mut tx, after, limit).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(page)
    }

    #[tracing::instrument(skip_all, name = "store.member_programs", fields(db.system = "postgresql", customer_id = %customer))]
    async fn member_programs(&self, customer: &CustomerId) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT program_id FROM loyalty_members WHERE customer_id = $1 ORDER BY program_id",
        )
        .bind(customer.as_str())
        .fetch_all(self.pool()?)
        .await
        .map_err(db_err)
    }

    #[tracing::instrument(skip_all, name = "store.list_entries", fields(db.system = "postgresql", program_id = %program_id, customer_id = %customer, limit))]
    async fn list_entries(
        &self,
        program_id: &str,
        customer: &CustomerId,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<Entry>> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM loyalty_entries WHERE customer_id = $1 \
             AND program_id = $2 AND entry_id < $3 ORDER BY entry_id DESC LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(customer.as_str())
            .bind(program_id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit_param(limit))
            .fetch_all(self.pool()?)
            .await
            .map_err(db_err)?;
        rows.iter().map(entry_from_row).collect()
    }

    #[tracing::instrument(skip_all, name = "store.get_redemption", fields(db.system = "postgresql", program_id = %program_id, customer_id = %customer))]
    async fn get_redemption(
        &self,
        program_id: &str,
        customer: &CustomerId,
        redemption_id: &str,
    ) -> StoreResult<Option<RedemptionRecord>> {
        let mut conn = self.pool()?.acquire().await.map_err(db_err)?;
        load_redemption(
            &mut conn,
            MemberKey {
                customer: customer.as_str(),
                program: program_id,
            },
            "redemption_id",
            redemption_id,
        )
        .await
    }

    #[tracing::instrument(skip_all, name = "store.completed_redemptions", fields(db.system = "postgresql", program_id = %program_id, customer_id = %customer))]
    async fn completed_redemptions(
        &self,
        program_id: &str,
        customer: &CustomerId,
    ) -> StoreResult<HashMap<String, i64>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT reward_id, COUNT(*) FROM loyalty_redemptions \
             WHERE customer_id = $1 AND program_id = $2 AND status = 'COMPLETED' \
             GROUP BY reward_id",
        )
        .bind(customer.as_str())
        .bind(program_id)
        .fetch_all(self.pool()?)
        .await
        .map_err(db_err)?;
        Ok(rows.into_iter().collect())
    }

    #[tracing::instrument(skip_all, name = "store.members_to_settle", fields(db.system = "postgresql", limit))]
    async fn members_to_settle(
        &self,
        now: Timestamp,
        after: Option<(&str, &CustomerId)>,
        limit: usize,
    ) -> StoreResult<Vec<(String, CustomerId)>> {
        // Each half reads one partial index (loyalty_lots_expiring, loyalty_lots_maturing).
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT program_id, customer_id FROM loyalty_lots \
             WHERE remaining > 0 AND expires_at <= $1 AND (program_id, customer_id) > ($2, $3) \
             UNION \
             SELECT program_id, customer_id FROM loyalty_lots \
             WHERE NOT activated AND available_at <= $1 AND (program_id, customer_id) > ($2, $3) \
             ORDER BY program_id, customer_id LIMIT $4",
        )
        .bind(now.as_micros())
        .bind(after.map_or("", |a| a.0))
        .bind(after.map_or("", |a| a.1.as_str()))
        .bind(limit_param(limit))
        .fetch_all(self.pool()?)
        .await
        .map_err(db_err)?;
        rows.into_iter()
            .map(|(program, customer)| {
                let customer = CustomerId::parse(customer)
                    .map_err(|e| StoreError::Internal(format!("stored customer id: {e}")))?;
                Ok((program, customer))
            })
            .collect()
    }
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
