//! Patron's SQLite backend: the embedded default.
//!
//! One file in WAL mode with `synchronous = FULL`, so a commit that returned is on disk. Writes go
//! through a single writer connection (SQLite allows one writer at a time; queueing them here
//! avoids lock timeouts), reads through a small pool that WAL lets run beside the writer.
//! Every write that changes something appends to the change feed in its own transaction
//! (`feed.rs`).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use patron_domain::{
    Customer, CustomerId, Date, Day, Event, EventKind, Timestamp, summary::BatchAggregate,
};
use patron_store::{
    Activation, CustomerRecord, EngagementDay, EventCursor, OrderDay, RecordOutcome,
    SUMMARY_IDS_PER_STATEMENT, Store, StoreError, StoreResult, StoredEvent, StoredModel,
    StoredPolicy, SummaryRow, UpsertedCustomer, columns, dedupe_batch, encode_attributes,
    encode_event_data,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use feed::{append_changes, current_txn};
use patron_domain::loyalty::{Entry, Lot};
use patron_store::feed::ChangeKind;
use patron_store_sql::loyalty::{ON_ACTIVITY_CONFLICT, ON_LOT_CONFLICT};
use patron_store_sql::rows::{
    EntryRow, EventRow, LotRow, SUMMARY_VALUES, SummaryHeadRow, intern, summary_row,
};
use patron_store_sql::{Backend, Lock, NewChange, Sql, limit_param};
use sqlx::FromRow;
use sqlx::SqliteConnection;

mod feed;
mod loyalty;
#[cfg(feature = "testing")]
pub mod testing;

/// SQLite allows 32,766 bound parameters per statement; chunks stay well below.
const MAX_PARAMS: usize = 30_000;

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// The last connection check's answer (an embedded file: calls are not gated on it).
    reachable: Arc<std::sync::atomic::AtomicBool>,
}

fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(d) if d.message().contains("integer overflow") => {
            StoreError::Overflow(d.message().to_owned())
        }
        sqlx::Error::Database(d)
            if d.message().contains("database is locked") || d.message().contains("busy") =>
        {
            StoreError::Conflict(d.message().to_owned())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

/// `PRAGMA cache_size` of each reading connection: 16 MiB (negative: KiB).
const READER_CACHE_SIZE: &str = "-16384";

impl SqliteStore {
    /// Opens (creating if missing) the database at `url`, e.g. `sqlite://patron.db` or
    /// `sqlite::memory:`. Does not migrate: call [`SqliteStore::migrate`].
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Internal(format!("bad SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            // sqlx's default, stated: segment_dependencies relies on its foreign keys.
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-262144")
            .pragma("wal_autocheckpoint", "16384")
            // Rows a connection's worker thread may send ahead of the reader (sqlx's default is
            // 50): bulk reads (the index load, a fit's histories) hand over fewer times.
            .row_buffer_size(1_024);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.clone())
            .await
            .map_err(db_err)?;
        // An in-memory database exists once per connection: read through the writer.
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(30))
                // A smaller page cache than the writer's: bulk reads (the index load, a fit's
                // histories) pass over most of the file once, and the operating system caches
                // the file anyway; a 256 MiB cache per reader would only hold memory.
                .connect_with(
                    options
                        .read_only(true)
                        .pragma("cache_size", READER_CACHE_SIZE),
                )
                .await
                .map_err(db_err)?
        };
        Ok(Self {
            writer,
            reader,
            reachable: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        })
    }

    /// Applies pending migrations from `migrations/sqlite`.
    pub async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("../../migrations/sqlite")
            .run(&self.writer)
            .await
            .map_err(|e| StoreError::Internal(format!("migration failed: {e}")))
    }

    /// Closes both pools, waiting for connections to finish.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// What SQLite says differently from Postgres in the shared statements.
impl Backend for SqliteStore {
    type Db = Sqlite;
    // Every write transaction holds the database's write lock from its start.
    const FOR_UPDATE: &'static str = "";
    const FOR_KEY_SHARE: &'static str = "";
    const TRUE: &'static str = "1";
    const FALSE: &'static str = "0";
    const NOT_ACTIVATED: &'static str = "activated = 0";
    const GREATEST: &'static str = "MAX";
    const SEGMENT_DEPENDENCIES: &'static str = "(SELECT json_group_array(d.depends_on) \
         FROM segment_dependencies d WHERE d.segment_id = s.segment_id)";

    fn db_err(e: sqlx::Error) -> StoreError {
        db_err(e)
    }

    fn rows_affected(result: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    fn reader(&self) -> StoreResult<&SqlitePool> {
        Ok(&self.reader)
    }

    fn writer(&self) -> StoreResult<&SqlitePool> {
        Ok(&self.writer)
    }

    async fn begin_read(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.reader.begin().await.map_err(db_err)
    }

    /// `BEGIN IMMEDIATE` on the writer, whatever the lock: the database's write lock, taken
    /// before anything is read (also against other processes on the same file), covers them all.
    async fn begin_write(&self, _lock: Lock<'_>) -> StoreResult<Transaction<'static, Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)
    }

    async fn append_changes(
        conn: &mut SqliteConnection,
        changes: &[NewChange<'_>],
    ) -> StoreResult<()> {
        append_changes(conn, changes, None).await
    }

    /// Upserts a member's lots, in statements of at most [`MAX_PARAMS`] parameters.
    async fn upsert_lots(
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
            qb.push(ON_LOT_CONFLICT);
            qb.build().execute(&mut *conn).await.map_err(db_err)?;
        }
        Ok(())
    }

    /// Inserts a member's new entries, in statements of at most [`MAX_PARAMS`] parameters.
    async fn insert_entries(
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
    async fn add_activity(
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
            qb.push(ON_ACTIVITY_CONFLICT);
            qb.build().execute(&mut *conn).await.map_err(db_err)?;
        }
        Ok(())
    }

    async fn insert_dependencies(
        conn: &mut SqliteConnection,
        segment: &str,
        deps: &[String],
    ) -> StoreResult<()> {
        for chunk in deps.chunks(MAX_PARAMS / 2) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO segment_dependencies (segment_id, depends_on) ",
            );
            qb.push_values(chunk, |mut b, d| {
                b.push_bind(segment).push_bind(d.as_str());
            });
            qb.build().execute(&mut *conn).await.map_err(db_err)?;
        }
        Ok(())
    }

    async fn stored_segments(
        conn: &mut SqliteConnection,
        ids: &[String],
    ) -> StoreResult<Vec<String>> {
        let mut stored = Vec::new();
        for chunk in ids.chunks(MAX_PARAMS) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "SELECT segment_id FROM segments WHERE segment_id IN (",
            );
            let mut sep = qb.separated(", ");
            for d in chunk {
                sep.push_bind(d.as_str());
            }
            qb.push(")");
            for row in qb.build().fetch_all(&mut *conn).await.map_err(db_err)? {
                stored.push(row.try_get::<String, _>(0).map_err(db_err)?);
            }
        }
        Ok(stored)
    }
}

const CUSTOMER_COLUMNS: &str = "c.customer_id, c.birth_date, c.gender, c.country, c.signed_up_at, \
     c.attributes, c.create_time, c.update_time";

fn summary_select() -> String {
    columns::all()
        .map(|c| format!("s.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A row of [`CUSTOMER_COLUMNS`] and the summary's columns, read by name.
fn record_from_row(row: &SqliteRow) -> StoreResult<CustomerRecord> {
    patron_store_sql::rows::customer_record(row, db_err)
}

/// The columns [`summary_row_from_row`] reads; `c` is the customer row, `s` its summary.
///
/// The summary travels as one JSON array of integers (`[3,0,null,…]` in [`columns::all`]
/// order): sqlx copies every SQLite value out of its row one by one, so 39 separate columns cost
/// about three times as much as one text value parsed here, and bulk reads of a million rows
/// are dominated by that cost.
fn summary_row_select() -> String {
    format!(
        "c.customer_id, c.signed_up_at, c.create_time, c.birth_date, \
         json_array({}) AS summary_values, \
         c.gender, c.country, c.attributes",
        summary_select()
    )
}

/// Parses the JSON array of [`summary_row_select`]: integers or `null`, exactly
/// [`columns::COUNT`] of them.
fn parse_summary_values(json: &str) -> StoreResult<[Option<i64>; columns::COUNT]> {
    let bad = || StoreError::Internal(format!("stored summary values: {json:?}"));
    let inner = json
        .strip_prefix('[')
        .and_then(|j| j.strip_suffix(']'))
        .ok_or_else(bad)?;
    let mut values = [None; columns::COUNT];
    let mut items = inner.split(',');
    for v in &mut values {
        let item = items.next().ok_or_else(bad)?.trim();
        *v = match item {
            "null" => None,
            n => Some(n.parse::<i64>().map_err(|_| bad())?),
        };
    }
    if items.next().is_some() {
        return Err(bad());
    }
    Ok(values)
}

/// A row of [`summary_row_select`], without its orders and engagement (see [`fill_history`]).
fn summary_row_from_row(row: &SqliteRow) -> StoreResult<SummaryRow> {
    let head = SummaryHeadRow::from_row(row).map_err(db_err)?;
    let values: &str = row.try_get(SUMMARY_VALUES).map_err(db_err)?;
    summary_row(head, &parse_summary_values(values)?)
}

/// Which customers' orders and engagement [`fill_history`] reads: those of a page of
/// [`Store::scan_summaries`] (`after < customer_id <= last`) or a list of ids.
enum HistoryOf<'a> {
    Range { after: &'a str, last: &'a str },
    Ids(&'a [&'a str]),
}

impl<'a> HistoryOf<'a> {
    /// Appends ` WHERE <customer_id matches>`.
    fn push_where(&self, qb: &mut QueryBuilder<'a, Sqlite>) {
        match *self {
            HistoryOf::Range { after, last } => {
                qb.push(" WHERE customer_id > ")
                    .push_bind(after)
                    .push(" AND customer_id <= ")
                    .push_bind(last);
            }
            HistoryOf::Ids(ids) => {
                qb.push(" WHERE customer_id IN (");
                let mut sep = qb.separated(", ");
                for &id in ids {
                    sep.push_bind(id);
                }
                qb.push(")");
            }
        }
    }
}

/// Fills the orders and engagement of `rows` (sorted by customer id): one statement for each,
/// over the customers `of` names. Activity names are shared through `names`.
///
/// As with the summary, each customer's rows travel as one text value (one row per customer,
/// not per order or day) and are parsed here: orders as `day net,day net,…`, engagement days as
/// `day count bytes activity` items back to back, the activity's length in bytes first so that
/// any name reads back whole.
async fn fill_history(
    conn: &mut sqlx::SqliteConnection,
    of: &HistoryOf<'_>,
    rows: &mut [SummaryRow],
    names: &mut HashSet<Arc<str>>,
) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let position = |rows: &[SummaryRow], id: &str| {
        rows.binary_search_by(|r| r.customer_id.as_str().cmp(id))
            .map_err(|_| StoreError::Internal(format!("history of an unread customer {id}")))
    };

    let mut qb = QueryBuilder::<Sqlite>::new(
        "SELECT customer_id, group_concat(day || ' ' || (amount - refunded), ',') FROM orders",
    );
    of.push_where(&mut qb);
    qb.push(" AND day IS NOT NULL AND (refunded = 0 OR refunded < amount) GROUP BY customer_id");
    for row in qb.build().fetch_all(&mut *conn).await.map_err(db_err)? {
        let id: &str = row.try_get(0).map_err(db_err)?;
        let text: &str = row.try_get(1).map_err(db_err)?;
        let i = position(rows, id)?;
        rows[i].orders = parse_orders(text)?;
    }

    let mut qb = QueryBuilder::<Sqlite>::new(
        "SELECT customer_id, group_concat(day || ' ' || count || ' ' || \
         length(CAST(activity AS BLOB)) || ' ' || activity, '') FROM engagement_days",
    );
    of.push_where(&mut qb);
    qb.push(" GROUP BY customer_id");
    for row in qb.build().fetch_all(&mut *conn).await.map_err(db_err)? {
        let id: &str = row.try_get(0).map_err(db_err)?;
        let text: &str = row.try_get(1).map_err(db_err)?;
        let i = position(rows, id)?;
        rows[i].engagement = parse_engagement(text, names)?;
    }
    Ok(())
}

/// Parses `day net,day net,…` into orders sorted by (day, net amount).
fn parse_orders(text: &str) -> StoreResult<Vec<OrderDay>> {
    let bad = || StoreError::Internal(format!("stored order days: {text:?}"));
    let mut out = Vec::with_capacity(text.bytes().filter(|&b| b == b',').count() + 1);
    for item in text.split(',') {
        let (day, net) = item.split_once(' ').ok_or_else(bad)?;
        out.push(OrderDay {
            day: Day::from_days(day.parse().map_err(|_| bad())?),
            net_amount: net.parse().map_err(|_| bad())?,
        });
    }
    out.sort_unstable();
    Ok(out)
}

/// Parses `day count bytes activity` items (back to back) into engagement days sorted by (day,
/// activity), sharing one `Arc` per distinct name through `names`.
fn parse_engagement(text: &str, names: &mut HashSet<Arc<str>>) -> StoreResult<Vec<EngagementDay>> {
    let bad = || StoreError::Internal(format!("stored engagement days: {text:?}"));
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (day, r) = rest.split_once(' ').ok_or_else(bad)?;
        let (count, r) = r.split_once(' ').ok_or_else(bad)?;
        let (len, r) = r.split_once(' ').ok_or_else(bad)?;
        let len: usize = len.parse().map_err(|_| bad())?;
        let (name, r) = (r.get(..len).ok_or_else(bad)?, r.get(len..).ok_or_else(bad)?);
        rest = r;
        out.push(EngagementDay {
            day: Day::from_days(day.parse().map_err(|_| bad())?),
            activity: intern(names, name),
            count: count.parse().map_err(|_| bad())?,
        });
    }
    out.sort_unstable();
    Ok(out)
}

/// A row of [`EventRow::COLUMNS`].
/// ` AND kind IN (…)` for `kinds`; nothing when empty (every kind).
fn push_kinds(qb: &mut QueryBuilder<'_, Sqlite>, kinds: &[EventKind]) {
    if !kinds.is_empty() {
        qb.push(" AND kind IN (");
        let mut sep = qb.separated(", ");
        for k in kinds {
            sep.push_bind(k.code());
        }
        qb.push(")");
    }
}

fn event_from_row(row: &SqliteRow) -> StoreResult<StoredEvent> {
    EventRow::from_row(row).map_err(db_err)?.try_into()
}

fn date_days(d: Option<Date>) -> Option<i64> {
    d.map(|d| i64::from(d.to_day().as_days()))
}

async fn fetch_records(
    tx: &mut Transaction<'_, Sqlite>,
    ids: &[&CustomerId],
) -> StoreResult<Vec<CustomerRecord>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_PARAMS) {
        let mut qb = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {CUSTOMER_COLUMNS}, {} FROM customers c LEFT JOIN customer_summaries s \
             ON s.customer_id = c.customer_id WHERE c.customer_id IN (",
            summary_select()
        ));
        let mut sep = qb.separated(", ");
        for id in chunk {
            sep.push_bind(id.as_str());
        }
        qb.push(")");
        for row in qb.build().fetch_all(&mut **tx).await.map_err(db_err)? {
            out.push(record_from_row(&row)?);
        }
    }
    Ok(out)
}

/// The INSERT of a chunk of new events (index into `events`, encoded data), stamped with the
/// transaction's number `txn`; with `returning`, it returns the keys of the rows it inserted.
fn events_insert<'a>(
    events: &'a [Event],
    chunk: &'a [(usize, &'a String)],
    now: Timestamp,
    txn: i64,
    returning: bool,
) -> QueryBuilder<'a, Sqlite> {
    let mut qb = QueryBuilder::<Sqlite>::new(
        "INSERT INTO events (customer_id, event_id, kind, occurred_at, recorded_at, data, txn) ",
    );
    qb.push_values(chunk, |mut b, (i, data)| {
        let e = &events[*i];
        b.push_bind(e.customer_id.as_str())
            .push_bind(e.event_id.as_str())
            .push_bind(e.data.kind().code())
            .push_bind(e.occurred_at.as_micros())
            .push_bind(now.as_micros())
            .push_bind(data.as_str())
            .push_bind(txn);
    });
    qb.push(" ON CONFLICT (customer_id, event_id) DO NOTHING");
    if returning {
        qb.push(" RETURNING customer_id, event_id");
    }
    qb
}

/// Writes the aggregates of a batch's new events: summary deltas, order deltas, and the purchase
/// statistics of every customer whose orders changed.
async fn apply_aggregate(
    tx: &mut Transaction<'_, Sqlite>,
    agg: &BatchAggregate,
) -> StoreResult<()> {
    let all_columns: Vec<&str> = columns::delta_columns().collect();
    let set_clause = columns::upsert_set_clause("customer_summaries");
    let per_row = all_columns.len() + 1;
    for chunk in agg.summaries.chunks(MAX_PARAMS / per_row) {
        let mut qb = QueryBuilder::<Sqlite>::new(format!(
            "INSERT INTO customer_summaries (customer_id, {}) ",
            all_columns.join(", ")
        ));
        qb.push_values(chunk, |mut b, (customer, delta)| {
            b.push_bind(customer.as_str());
            for v in columns::delta_values(delta) {
                b.push_bind(v);
            }
        });
        qb.push(format!(
            " ON CONFLICT (customer_id) DO UPDATE SET {set_clause}"
        ));
        qb.build().execute(&mut **tx).await.map_err(db_err)?;
    }

    for chunk in agg.orders.chunks(MAX_PARAMS / 6) {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "INSERT INTO orders (customer_id, order_id, day, amount, item_count, refunded) ",
        );
        qb.push_values(chunk, |mut b, (customer, order, d)| {
            b.push_bind(customer.as_str())
                .push_bind(order.as_str())
                .push_bind(d.day.map(|d| i64::from(d.as_days())))
                .push_bind(d.amount)
                .push_bind(d.item_count)
                .push_bind(d.refunded);
        });
        qb.push(
            " ON CONFLICT (customer_id, order_id) DO UPDATE SET \
             day = CASE WHEN orders.day IS NULL OR excluded.day < orders.day \
                   THEN COALESCE(excluded.day, orders.day) ELSE orders.day END, \
             amount = orders.amount + excluded.amount, \
             item_count = orders.item_count + excluded.item_count, \
             refunded = orders.refunded + excluded.refunded",
        );
        qb.build().execute(&mut **tx).await.map_err(db_err)?;
    }

    let mut touched: Vec<&str> = agg.orders.iter().map(|(c, _, _)| c.as_str()).collect();
    touched.sort_unstable();
    touched.dedup();
    const ACTIVE: &str = "day IS NOT NULL AND (refunded = 0 OR refunded < amount)";
    for chunk in touched.chunks(MAX_PARAMS) {
        let mut qb = QueryBuilder::<Sqlite>::new(format!(
            "UPDATE customer_summaries SET \
               order_count = a.order_count, purchase_days = a.purchase_days, \
               first_purchase_day = a.first_day, last_purchase_day = a.last_day, \
               net_revenue = a.net, refunded = a.refunded, \
               first_day_revenue = COALESCE((SELECT SUM(o.amount - o.refunded) FROM orders o \
                 WHERE o.customer_id = customer_summaries.customer_id AND o.day = a.first_day \
                 AND (o.refunded = 0 OR o.refunded < o.amount)), 0) \
             FROM (SELECT customer_id, \
                 SUM(CASE WHEN {ACTIVE} THEN 1 ELSE 0 END) AS order_count, \
                 COUNT(DISTINCT CASE WHEN {ACTIVE} THEN day END) AS purchase_days, \
                 MIN(CASE WHEN {ACTIVE} THEN day END) AS first_day, \
                 MAX(CASE WHEN {ACTIVE} THEN day END) AS last_day, \
                 SUM(CASE WHEN {ACTIVE} THEN amount - refunded ELSE 0 END) AS net, \
                 SUM(refunded) AS refunded \
               FROM orders WHERE customer_id IN ("
        ));
        let mut sep = qb.separated(", ");
        for id in chunk {
            sep.push_bind(*id);
        }
        qb.push(
            ") GROUP BY customer_id) AS a WHERE customer_summaries.customer_id = a.customer_id",
        );
        qb.build().execute(&mut **tx).await.map_err(db_err)?;
    }

    for chunk in agg.engagement.chunks(MAX_PARAMS / 4) {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "INSERT INTO engagement_days (customer_id, day, activity, count) ",
        );
        qb.push_values(chunk, |mut b, (customer, day, activity, count)| {
            b.push_bind(customer.as_str())
                .push_bind(day.as_days())
                .push_bind(activity.as_str())
                .push_bind(*count);
        });
        qb.push(
            " ON CONFLICT (customer_id, day, activity) DO UPDATE SET \
             count = engagement_days.count + excluded.count",
        );
        qb.build().execute(&mut **tx).await.map_err(db_err)?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    #[tracing::instrument(skip_all, name = "store.check_connection", fields(db.system = "sqlite"))]
    async fn check_connection(&self, timeout: Duration) -> StoreResult<Duration> {
        use std::sync::atomic::Ordering;
        let started = std::time::Instant::now();
        let check = sqlx::query("SELECT 1").execute(&self.reader);
        let result = match tokio::time::timeout(timeout, check).await {
            Ok(r) => r.map(|_| ()).map_err(db_err),
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer from the database within {timeout:?}"
            ))),
        };
        self.reachable.store(result.is_ok(), Ordering::Release);
        result.map(|()| started.elapsed())
    }

    fn reachable(&self) -> bool {
        self.reachable.load(std::sync::atomic::Ordering::Acquire)
    }

    fn pool_state(&self) -> patron_store::PoolState {
        // An in-memory database reads through the writer: its pool is counted twice.
        let mut state = patron_store::PoolState::default();
        for p in [&self.writer, &self.reader] {
            state.open += p.size();
            state.idle += u32::try_from(p.num_idle()).unwrap_or(u32::MAX);
            state.max += p.options().get_max_connections();
        }
        state
    }

    #[tracing::instrument(skip_all, name = "store.upsert_customers", fields(db.system = "sqlite", count = customers.len()))]
    async fn upsert_customers(
        &self,
        customers: &[Customer],
        now: Timestamp,
    ) -> StoreResult<Vec<UpsertedCustomer>> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let ids: Vec<&CustomerId> = customers.iter().map(|c| &c.customer_id).collect();
        let existing: HashSet<String> = {
            let mut set = HashSet::new();
            for chunk in ids.chunks(MAX_PARAMS) {
                let mut qb = QueryBuilder::<Sqlite>::new(
                    "SELECT customer_id FROM customers WHERE customer_id IN (",
                );
                let mut sep = qb.separated(", ");
                for id in chunk {
                    sep.push_bind(id.as_str());
                }
                qb.push(")");
                for row in qb.build().fetch_all(&mut *tx).await.map_err(db_err)? {
                    set.insert(row.try_get::<String, _>(0).map_err(db_err)?);
                }
            }
            set
        };
        let encoded = customers
            .iter()
            .map(|c| encode_attributes(&c.profile.attributes))
            .collect::<StoreResult<Vec<_>>>()?;
        let rows: Vec<(&Customer, &String)> = customers.iter().zip(&encoded).collect();
        for chunk in rows.chunks(MAX_PARAMS / 8) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO customers (customer_id, birth_date, gender, country, signed_up_at, \
                 attributes, create_time, update_time) ",
            );
            qb.push_values(chunk, |mut b, (c, attrs)| {
                let p = &c.profile;
                b.push_bind(c.customer_id.as_str())
                    .push_bind(date_days(p.birth_date))
                    .push_bind(p.gender.as_str())
                    .push_bind(p.country.as_deref())
                    .push_bind(p.signed_up_at.map(Timestamp::as_micros))
                    .push_bind(attrs.as_str())
                    .push_bind(now.as_micros())
                    .push_bind(now.as_micros());
            });
            qb.push(
                " ON CONFLICT (customer_id) DO UPDATE SET birth_date = excluded.birth_date, \
                 gender = excluded.gender, country = excluded.country, \
                 signed_up_at = excluded.signed_up_at, attributes = excluded.attributes, \
                 update_time = excluded.update_time",
            );
            qb.build().execute(&mut *tx).await.map_err(db_err)?;
        }
        let records = fetch_records(&mut tx, &ids).await?;
        let mut changed: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
        changed.sort_unstable();
        let changes: Vec<_> = changed
            .iter()
            .map(|&id| (ChangeKind::Customer, id, ""))
            .collect();
        append_changes(&mut tx, &changes, None).await?;
        tx.commit().await.map_err(db_err)?;
        let mut by_id: std::collections::HashMap<CustomerId, CustomerRecord> = records
            .into_iter()
            .map(|r| (r.customer.customer_id.clone(), r))
            .collect();
        customers
            .iter()
            .map(|c| {
                let record = by_id.remove(&c.customer_id).ok_or_else(|| {
                    StoreError::Internal(format!("upserted customer {} not found", c.customer_id))
                })?;
                Ok(UpsertedCustomer {
                    created: !existing.contains(c.customer_id.as_str()),
                    record,
                })
            })
            .collect()
    }

    #[tracing::instrument(skip_all, name = "store.get_customer", fields(db.system = "sqlite", customer_id = %id))]
    async fn get_customer(&self, id: &CustomerId) -> StoreResult<Option<CustomerRecord>> {
        let sql = format!(
            "SELECT {CUSTOMER_COLUMNS}, {} FROM customers c LEFT JOIN customer_summaries s \
             ON s.customer_id = c.customer_id WHERE c.customer_id = ?",
            summary_select()
        );
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?;
        row.as_ref().map(record_from_row).transpose()
    }

    #[tracing::instrument(skip_all, name = "store.list_customers", fields(db.system = "sqlite", limit))]
    async fn list_customers(
        &self,
        after: Option<&CustomerId>,
        limit: usize,
    ) -> StoreResult<Vec<CustomerRecord>> {
        let sql = format!(
            "SELECT {CUSTOMER_COLUMNS}, {} FROM customers c LEFT JOIN customer_summaries s \
             ON s.customer_id = c.customer_id WHERE c.customer_id > ? \
             ORDER BY c.customer_id LIMIT ?",
            summary_select()
        );
        let rows = sqlx::query(&sql)
            .bind(after.map_or("", CustomerId::as_str))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        rows.iter().map(record_from_row).collect()
    }

    #[tracing::instrument(skip_all, name = "store.delete_customer", fields(db.system = "sqlite", customer_id = %id))]
    async fn delete_customer(&self, id: &CustomerId) -> StoreResult<Option<u64>> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let exists = sqlx::query("SELECT 1 FROM customers WHERE customer_id = ?")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let events = sqlx::query("DELETE FROM events WHERE customer_id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        for table in [
            "orders",
            "engagement_days",
            "customer_summaries",
            "customers",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE customer_id = ?"))
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        // The loyalty books stay, under a pseudonym nothing links back to the customer.
        let pseudonym = patron_store_sql::new_pseudonym()?;
        let programs = loyalty::keep_books_as(&mut tx, id.as_str(), &pseudonym).await?;
        // Earlier changes of the customer name the pseudonym from now on (rewritten, not
        // deleted: positions stay dense). This erasure's own changes below name the customer,
        // so that every view forgets them; they go when the feed is pruned.
        sqlx::query(
            "UPDATE change_feed SET key = ?2 WHERE key = ?1 AND kind IN ('customer', 'member')",
        )
        .bind(id.as_str())
        .bind(&pseudonym)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let mut changes = vec![(ChangeKind::Customer, id.as_str(), "")];
        changes.extend(
            programs
                .iter()
                .map(|p| (ChangeKind::Member, id.as_str(), p.as_str())),
        );
        changes.extend(
            programs
                .iter()
                .map(|p| (ChangeKind::Member, pseudonym.as_str(), p.as_str())),
        );
        append_changes(&mut tx, &changes, None).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Some(events))
    }

    #[tracing::instrument(skip_all, name = "store.record_events", fields(db.system = "sqlite", count = events.len()))]
    async fn record_events(&self, events: &[Event], now: Timestamp) -> StoreResult<RecordOutcome> {
        let (mut firsts, mut duplicate_indexes) = dedupe_batch(events);
        // Writing in key order keeps consecutive B-tree inserts on neighbouring pages.
        firsts.sort_unstable_by(|&a, &b| {
            let (a, b) = (&events[a], &events[b]);
            (a.customer_id.as_str(), a.event_id.as_str())
                .cmp(&(b.customer_id.as_str(), b.event_id.as_str()))
        });
        let encoded = firsts
            .iter()
            .map(|&i| encode_event_data(&events[i].data))
            .collect::<StoreResult<Vec<_>>>()?;
        let mut customers: Vec<&str> = firsts
            .iter()
            .map(|&i| events[i].customer_id.as_str())
            .collect();
        customers.sort_unstable();
        customers.dedup();

        // IMMEDIATE: the write lock first, so the feed's head (and with it this transaction's
        // number, which the events carry) cannot move until the commit.
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let txn = current_txn(&mut tx).await?;
        let mut created_customers = 0;
        for chunk in customers.chunks(MAX_PARAMS / 2) {
            let mut qb =
                QueryBuilder::<Sqlite>::new("INSERT INTO customers (customer_id, create_time) ");
            qb.push_values(chunk, |mut b, id| {
                b.push_bind(*id).push_bind(now.as_micros());
            });
            qb.push(" ON CONFLICT (customer_id) DO NOTHING");
            created_customers += qb
                .build()
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
        }

        let position: HashMap<(&str, &str), usize> = firsts
            .iter()
            .map(|&i| {
                (
                    (events[i].customer_id.as_str(), events[i].event_id.as_str()),
                    i,
                )
            })
            .collect();
        let mut is_new = vec![false; events.len()];
        let rows: Vec<(usize, &String)> = firsts.iter().copied().zip(&encoded).collect();
        for chunk in rows.chunks(MAX_PARAMS / 7) {
            // Streams rarely repeat events: insert without RETURNING and count. Only a chunk that
            // met a stored event is rolled back and inserted again, returning which rows are new.
            sqlx::query("SAVEPOINT events_chunk")
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            let inserted = events_insert(events, chunk, now, txn, false)
                .build()
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            if usize::try_from(inserted).is_ok_and(|n| n == chunk.len()) {
                for (i, _) in chunk {
                    is_new[*i] = true;
                }
            } else {
                sqlx::query("ROLLBACK TO events_chunk")
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                for row in events_insert(events, chunk, now, txn, true)
                    .build()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err)?
                {
                    let c: &str = row.try_get(0).map_err(db_err)?;
                    let e: &str = row.try_get(1).map_err(db_err)?;
                    if let Some(&i) = position.get(&(c, e)) {
                        is_new[i] = true;
                    }
                }
            }
            sqlx::query("RELEASE events_chunk")
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        let mut new_events = Vec::with_capacity(firsts.len());
        for &i in &firsts {
            if is_new[i] {
                new_events.push(&events[i]);
            } else {
                duplicate_indexes.push(i);
            }
        }
        duplicate_indexes.sort_unstable();
        let agg = BatchAggregate::from_events(new_events.iter().copied());
        apply_aggregate(&mut tx, &agg).await?;
        // One change per customer with a new event, in id order.
        let mut changed: Vec<&str> = new_events.iter().map(|e| e.customer_id.as_str()).collect();
        changed.sort_unstable();
        changed.dedup();
        let changes: Vec<_> = changed
            .iter()
            .map(|&id| (ChangeKind::Customer, id, ""))
            .collect();
        append_changes(&mut tx, &changes, Some(txn)).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(RecordOutcome {
            recorded: new_events.len(),
            duplicate_indexes,
            created_customers: usize::try_from(created_customers).unwrap_or(usize::MAX),
        })
    }

    #[tracing::instrument(skip_all, name = "store.list_events", fields(db.system = "sqlite", customer_id = %customer, limit))]
    async fn list_events(
        &self,
        customer: &CustomerId,
        kinds: &[EventKind],
        after: Option<&EventCursor>,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        let mut qb = QueryBuilder::<Sqlite>::new(&format!(
            "SELECT {} FROM events WHERE customer_id = ",
            EventRow::COLUMNS
        ));
        qb.push_bind(customer.as_str());
        push_kinds(&mut qb, kinds);
        if let Some(c) = after {
            qb.push(" AND (occurred_at < ")
                .push_bind(c.occurred_at.as_micros())
                .push(" OR (occurred_at = ")
                .push_bind(c.occurred_at.as_micros())
                .push(" AND event_id < ")
                .push_bind(c.event_id.as_str())
                .push("))");
        }
        qb.push(" ORDER BY occurred_at DESC, event_id DESC LIMIT ")
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = qb.build().fetch_all(&self.reader).await.map_err(db_err)?;
        rows.iter().map(event_from_row).collect()
    }

    #[tracing::instrument(skip_all, name = "store.events_until", fields(db.system = "sqlite", customers = customers.len()))]
    async fn events_until(
        &self,
        customers: &[CustomerId],
        until: Timestamp,
        kinds: &[EventKind],
    ) -> StoreResult<Vec<Event>> {
        let mut ids: Vec<&str> = customers.iter().map(CustomerId::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut out = Vec::new();
        // One read transaction: every chunk reads the same snapshot; chunks follow each other
        // in id order (SQLite compares text bytewise).
        let mut tx = self.reader.begin().await.map_err(db_err)?;
        for chunk in ids.chunks(MAX_PARAMS - 1 - kinds.len()) {
            // Through the primary key, which holds every column: the (customer, occurred_at)
            // index would cost a primary-key lookup per event (`+occurred_at` keeps the planner
            // off it). Each chunk is put in occurred_at order here instead: a stable sort keeps
            // the event id order within an instant.
            let mut qb = QueryBuilder::<Sqlite>::new(format!(
                "SELECT {} FROM events WHERE +occurred_at <= ",
                EventRow::COLUMNS
            ));
            qb.push_bind(until.as_micros());
            push_kinds(&mut qb, kinds);
            qb.push(" AND customer_id IN (");
            let mut sep = qb.separated(", ");
            for id in chunk {
                sep.push_bind(*id);
            }
            qb.push(") ORDER BY customer_id, event_id");
            let start = out.len();
            for row in qb.build().fetch_all(&mut *tx).await.map_err(db_err)? {
                out.push(event_from_row(&row)?.event);
            }
            out[start..].sort_by(|a, b| {
                (&a.customer_id, a.occurred_at).cmp(&(&b.customer_id, b.occurred_at))
            });
        }
        tx.commit().await.map_err(db_err)?;
        Ok(out)
    }

    #[tracing::instrument(skip_all, name = "store.scan_summaries", fields(db.system = "sqlite", limit))]
    async fn scan_summaries(
        &self,
        after: Option<&CustomerId>,
        limit: usize,
    ) -> StoreResult<Vec<SummaryRow>> {
        let sql = format!(
            "SELECT {} FROM customers c LEFT JOIN customer_summaries s \
             ON s.customer_id = c.customer_id WHERE c.customer_id > ? \
             ORDER BY c.customer_id LIMIT ?",
            summary_row_select()
        );
        let after = after.map_or("", CustomerId::as_str);
        // One read transaction: the page and its history are one snapshot.
        let mut tx = self.reader.begin().await.map_err(db_err)?;
        let mut rows = sqlx::query(&sql)
            .bind(after)
            .bind(limit_param(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .iter()
            .map(summary_row_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        if let Some(last) = rows.last().map(|r| r.customer_id.clone()) {
            let of = HistoryOf::Range {
                after,
                last: last.as_str(),
            };
            fill_history(&mut tx, &of, &mut rows, &mut HashSet::new()).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(rows)
    }

    #[tracing::instrument(skip_all, name = "store.customer_id_cuts", fields(db.system = "sqlite", parts))]
    async fn customer_id_cuts(&self, parts: usize) -> StoreResult<Vec<CustomerId>> {
        Sql::<Self>::customer_id_cuts(self, parts).await
    }

    #[tracing::instrument(skip_all, name = "store.get_summaries", fields(db.system = "sqlite", count = ids.len()))]
    async fn get_summaries(&self, ids: &[CustomerId]) -> StoreResult<Vec<SummaryRow>> {
        let mut ids: Vec<&str> = ids.iter().map(CustomerId::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(ids.len());
        let mut names = HashSet::new();
        let mut tx = self.reader.begin().await.map_err(db_err)?;
        for chunk in ids.chunks(SUMMARY_IDS_PER_STATEMENT.min(MAX_PARAMS)) {
            let mut qb = QueryBuilder::<Sqlite>::new(format!(
                "SELECT {} FROM customers c LEFT JOIN customer_summaries s \
                 ON s.customer_id = c.customer_id WHERE c.customer_id IN (",
                summary_row_select()
            ));
            let mut sep = qb.separated(", ");
            for id in chunk {
                sep.push_bind(*id);
            }
            qb.push(") ORDER BY c.customer_id");
            let mut rows = qb
                .build()
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
                .iter()
                .map(summary_row_from_row)
                .collect::<StoreResult<Vec<_>>>()?;
            fill_history(&mut tx, &HistoryOf::Ids(chunk), &mut rows, &mut names).await?;
            out.append(&mut rows);
        }
        tx.commit().await.map_err(db_err)?;
        Ok(out)
    }

    #[tracing::instrument(skip_all, name = "store.insert_value_model", fields(db.system = "sqlite", activate))]
    async fn insert_value_model(
        &self,
        body: &str,
        created_at: Timestamp,
        activation: Activation,
    ) -> StoreResult<StoredModel> {
        Sql::<Self>::insert_value_model(self, body, created_at, activation).await
    }

    #[tracing::instrument(skip_all, name = "store.get_value_model", fields(db.system = "sqlite", version))]
    async fn get_value_model(&self, version: i64) -> StoreResult<Option<StoredModel>> {
        Sql::<Self>::get_value_model(self, version).await
    }

    #[tracing::instrument(skip_all, name = "store.list_value_models", fields(db.system = "sqlite", before, limit))]
    async fn list_value_models(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<StoredModel>> {
        Sql::<Self>::list_value_models(self, before, limit).await
    }

    #[tracing::instrument(skip_all, name = "store.activate_value_model", fields(db.system = "sqlite", version))]
    async fn activate_value_model(&self, version: i64) -> StoreResult<Option<StoredModel>> {
        Sql::<Self>::activate_value_model(self, version).await
    }

    #[tracing::instrument(skip_all, name = "store.active_value_model", fields(db.system = "sqlite"))]
    async fn active_value_model(&self) -> StoreResult<Option<StoredModel>> {
        Sql::<Self>::active_value_model(self).await
    }

    #[tracing::instrument(skip_all, name = "store.get_tier_policy", fields(db.system = "sqlite"))]
    async fn get_tier_policy(&self) -> StoreResult<Option<StoredPolicy>> {
        Sql::<Self>::get_tier_policy(self).await
    }

    #[tracing::instrument(skip_all, name = "store.put_tier_policy", fields(db.system = "sqlite", expected_revision))]
    async fn put_tier_policy(
        &self,
        body: &str,
        updated_at: Timestamp,
        expected_revision: Option<i64>,
    ) -> StoreResult<StoredPolicy> {
        Sql::<Self>::put_tier_policy(self, body, updated_at, expected_revision).await
    }
}

patron_store_sql::segment_store!(SqliteStore, "sqlite");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_values_parse_strictly() {
        let mut want = [None; columns::COUNT];
        want[0] = Some(3);
        want[1] = Some(-4);
        want[columns::COUNT - 1] = Some(i64::MAX);
        let mut text: Vec<String> = want
            .iter()
            .map(|v| v.map_or("null".to_owned(), |n| n.to_string()))
            .collect();
        let json = format!("[{}]", text.join(","));
        assert_eq!(parse_summary_values(&json).expect("parses"), want);
        text.pop();
        assert!(parse_summary_values(&format!("[{}]", text.join(","))).is_err());
        text.push("1".into());
        text.push("2".into());
        assert!(parse_summary_values(&format!("[{}]", text.join(","))).is_err());
        assert!(parse_summary_values("[1.5]").is_err());
        assert!(parse_summary_values("").is_err());
    }
}
