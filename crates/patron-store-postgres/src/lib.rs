//! Patron's Postgres backend: the production store.
//!
//! Every bulk path is a fixed number of statements per call, whatever the batch size: rows travel
//! as one array per column and are expanded with `UNNEST`, id lists are matched with `= ANY`.
//!
//! Several server processes may write the same customers at once, so every multi-row write is
//! sorted by its key (customers, events, summaries, orders, engagement days) and every
//! transaction touches the tables in the same order: customers, events, summaries, orders,
//! engagement days. Row locks are thus always taken in one global order and writers queue
//! instead of deadlocking. `record_events` holds a `FOR KEY SHARE` lock on its customers, which
//! concurrent recorders share but which `delete_customer` (which deletes the customer row first)
//! must wait for: an erasure never interleaves with a batch for the same customer.
//!
//! Every write that changes something ends by appending to the change feed (`feed.rs`): the
//! feed's one-row head is the last lock each write transaction takes, held only until its commit,
//! so feed positions become visible in commit order.

mod feed;
mod loyalty;
#[cfg(feature = "testing")]
pub mod testing;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row, Transaction};

use feed::{CURRENT_TXN, FeedWakers, append_changes};
use patron_domain::loyalty::{Entry, Lot};
use patron_store::feed::ChangeKind;
use patron_store_sql::loyalty::{ON_ACTIVITY_CONFLICT, ON_LOT_CONFLICT};
use patron_store_sql::rows::{
    EntryRow, EventRow, LotRow, SUMMARY_VALUES, SummaryHeadRow, intern, summary_row,
};
use patron_store_sql::{Backend, Lock, NewChange, Sql, limit_param};
use sqlx::FromRow;
use sqlx::PgConnection;

/// Connections per process; several processes may share one server.
const MAX_CONNECTIONS: u32 = 16;

/// How long a call waits for a free connection before reporting the store unavailable, unless
/// the caller says otherwise ([`PgSettings`]).
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// Pool settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgSettings {
    /// How long a call waits for a connection (a free one, or a new one while the server does
    /// not answer) before failing with [`StoreError::Unavailable`].
    pub acquire_timeout: Duration,
    /// Connections per process.
    pub max_connections: u32,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self {
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// The Postgres store. Clones share the pool and the change feed's listener.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// False from a failed connection check (or a lost connection) to the next good check:
    /// calls then fail at once instead of each waiting `acquire_timeout`.
    reachable: Arc<AtomicBool>,
    /// How to connect: the connection checks use their own connection.
    options: PgConnectOptions,
    /// The connection of the checks, reconnected after a failure.
    check: Arc<tokio::sync::Mutex<Option<sqlx::PgConnection>>>,
    /// The functions registered with `on_feed_commit`; the listener stops when the last clone
    /// is dropped.
    feed: Arc<FeedWakers>,
}

/// What Postgres says differently from SQLite in the shared statements.
impl Backend for PgStore {
    type Db = Postgres;
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const FOR_KEY_SHARE: &'static str = " FOR KEY SHARE";
    const TRUE: &'static str = "TRUE";
    const FALSE: &'static str = "FALSE";
    const NOT_ACTIVATED: &'static str = "NOT activated";
    const GREATEST: &'static str = "GREATEST";
    const SEGMENT_DEPENDENCIES: &'static str = "(SELECT COALESCE(json_agg(d.depends_on \
         ORDER BY d.depends_on), '[]')::TEXT FROM segment_dependencies d \
         WHERE d.segment_id = s.segment_id)";

    fn db_err(e: sqlx::Error) -> StoreError {
        db_err(e)
    }

    fn rows_affected(result: &sqlx::postgres::PgQueryResult) -> u64 {
        result.rows_affected()
    }

    fn reader(&self) -> StoreResult<&PgPool> {
        self.pool()
    }

    fn writer(&self) -> StoreResult<&PgPool> {
        self.pool()
    }

    async fn begin_read(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.begin_snapshot().await
    }

    /// A READ COMMITTED transaction: a member's advisory lock, or a table in EXCLUSIVE mode
    /// (readers are not blocked; each later statement sees what earlier writers committed).
    async fn begin_write(&self, lock: Lock<'_>) -> StoreResult<Transaction<'static, Postgres>> {
        let mut tx = self.pool()?.begin().await.map_err(db_err)?;
        match lock {
            Lock::Member { program, customer } => {
                loyalty::lock_member(&mut tx, program, customer).await?;
            }
            Lock::Table(table) => lock_exclusive(&mut tx, table).await?,
            Lock::Rows => {}
        }
        Ok(tx)
    }

    async fn append_changes(conn: &mut PgConnection, changes: &[NewChange<'_>]) -> StoreResult<()> {
        append_changes(conn, changes).await
    }

    /// Upserts a member's lots (sorted by lot id) in one statement.
    async fn upsert_lots(
        conn: &mut PgConnection,
        customer: &str,
        program: &str,
        lots: &[&Lot],
    ) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO loyalty_lots (customer_id, program_id, {}) \
             SELECT $1::TEXT, $2::TEXT, t.* FROM UNNEST({}) AS t{ON_LOT_CONFLICT}",
            LotRow::COLUMNS,
            unnest_args(
                &[
                    "bigint", "bigint", "bigint", "bigint", "bigint", "bigint", "boolean"
                ],
                3
            )
        );
        sqlx::query(&sql)
            .bind(customer)
            .bind(program)
            .bind(lots.iter().map(|l| l.lot_id).collect::<Vec<_>>())
            .bind(lots.iter().map(|l| l.original).collect::<Vec<_>>())
            .bind(lots.iter().map(|l| l.remaining).collect::<Vec<_>>())
            .bind(
                lots.iter()
                    .map(|l| l.earned_at.as_micros())
                    .collect::<Vec<_>>(),
            )
            .bind(
                lots.iter()
                    .map(|l| l.available_at.as_micros())
                    .collect::<Vec<_>>(),
            )
            .bind(
                lots.iter()
                    .map(|l| l.expires_at.map(Timestamp::as_micros))
                    .collect::<Vec<_>>(),
            )
            .bind(lots.iter().map(|l| l.activated).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Inserts a member's new entries (sorted by entry id) in one statement.
    async fn insert_entries(
        conn: &mut PgConnection,
        customer: &str,
        program: &str,
        entries: &[(&Entry, String)],
    ) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO loyalty_entries (customer_id, program_id, {}) \
             SELECT $1::TEXT, $2::TEXT, t.* FROM UNNEST({}) AS t",
            EntryRow::COLUMNS,
            unnest_args(
                &[
                    "bigint", "text", "bigint", "bigint", "text", "text", "text", "text", "text",
                    "text", "bigint", "bigint", "bigint",
                ],
                3
            )
        );
        let column =
            |f: fn(&Entry) -> Option<&str>| entries.iter().map(|(e, _)| f(e)).collect::<Vec<_>>();
        let number = |f: fn(&Entry) -> i64| entries.iter().map(|(e, _)| f(e)).collect::<Vec<_>>();
        sqlx::query(&sql)
            .bind(customer)
            .bind(program)
            .bind(number(|e| e.entry_id))
            .bind(
                entries
                    .iter()
                    .map(|(e, _)| e.kind.name())
                    .collect::<Vec<_>>(),
            )
            .bind(number(|e| e.amount))
            .bind(number(|e| e.points))
            .bind(
                entries
                    .iter()
                    .map(|(_, lots)| lots.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(column(|e| e.source.event_id.as_deref()))
            .bind(column(|e| e.source.redemption_id.as_deref()))
            .bind(column(|e| e.source.rule.as_deref()))
            .bind(column(|e| Some(e.issuer.as_str())))
            .bind(column(|e| Some(e.reason.as_str())))
            .bind(number(|e| e.created_at.as_micros()))
            .bind(number(|e| e.effective_at.as_micros()))
            .bind(
                entries
                    .iter()
                    .map(|(e, _)| e.expires_at.map(Timestamp::as_micros))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Adds to a member's activity (one row per day, in day order) in one statement.
    async fn add_activity(
        conn: &mut PgConnection,
        customer: &str,
        program: &str,
        days: &[(i32, i64, i64)],
    ) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO loyalty_activity (customer_id, program_id, day, points, spend) \
             SELECT $1::TEXT, $2::TEXT, t.* FROM UNNEST({}) AS t{ON_ACTIVITY_CONFLICT}",
            unnest_args(&["integer", "bigint", "bigint"], 3)
        );
        sqlx::query(&sql)
            .bind(customer)
            .bind(program)
            .bind(days.iter().map(|d| d.0).collect::<Vec<i32>>())
            .bind(days.iter().map(|d| d.1).collect::<Vec<i64>>())
            .bind(days.iter().map(|d| d.2).collect::<Vec<i64>>())
            .execute(&mut *conn)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn insert_dependencies(
        conn: &mut PgConnection,
        segment: &str,
        deps: &[String],
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO segment_dependencies (segment_id, depends_on) \
             SELECT $1::TEXT, d FROM UNNEST($2::text[]) AS t(d)",
        )
        .bind(segment)
        .bind(deps)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn stored_segments(conn: &mut PgConnection, ids: &[String]) -> StoreResult<Vec<String>> {
        sqlx::query_scalar("SELECT segment_id FROM segments WHERE segment_id = ANY($1::text[])")
            .bind(ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_err)
    }
}

/// Maps a driver error to a [`StoreError`] by kind and SQLSTATE.
fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            let message = format!("{} (SQLSTATE {code})", d.message());
            match code.as_str() {
                // deadlock_detected, serialization_failure
                "40P01" | "40001" => StoreError::Conflict(message),
                // numeric_value_out_of_range
                "22003" => StoreError::Overflow(message),
                // connection_exception class; too_many_connections; admin_shutdown,
                // crash_shutdown, cannot_connect_now
                c if c.starts_with("08") || matches!(c, "53300" | "57P01" | "57P02" | "57P03") => {
                    StoreError::Unavailable(message)
                }
                _ => StoreError::Internal(message),
            }
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

impl PgStore {
    /// Connects a pool to the database at `url`, e.g. `postgres://user@host:5432/patron`.
    /// Does not migrate: call [`PgStore::migrate`].
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, PgSettings::default()).await
    }

    /// [`PgStore::connect`] with pool settings.
    pub async fn connect_with(url: &str, settings: PgSettings) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Internal(format!("bad Postgres URL: {e}")))?
            .application_name("patron");
        // One plain connection first: an unreachable server fails at once with its real cause
        // ("connection refused"), where the pool would retry until its timeout and report only
        // that it timed out.
        {
            use sqlx::Connection;
            let first = tokio::time::timeout(
                settings.acquire_timeout,
                sqlx::PgConnection::connect_with(&options),
            )
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "no answer from the database within {:?}",
                    settings.acquire_timeout
                ))
            })?
            .map_err(db_err)?;
            let _ = first.close().await;
        }
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(db_err)?;
        Ok(Self {
            pool,
            reachable: Arc::new(AtomicBool::new(true)),
            options,
            check: Arc::default(),
            feed: Arc::default(),
        })
    }

    /// The pool, unless the database is known to be unreachable: then a call fails at once.
    fn pool(&self) -> StoreResult<&PgPool> {
        if self.reachable.load(Ordering::Acquire) {
            Ok(&self.pool)
        } else {
            Err(StoreError::Unavailable(
                "the database did not answer the last connection check".into(),
            ))
        }
    }

    /// Applies pending migrations from `migrations/postgres`. Safe to run from several processes
    /// at once: sqlx serializes them with an advisory lock.
    pub async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("../../migrations/postgres")
            .run(self.pool()?)
            .await
            .map_err(|e| StoreError::Internal(format!("migration failed: {e}")))
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A read-only transaction whose statements all see one snapshot.
    async fn begin_snapshot(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool()?
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(db_err)
    }
}

/// The customer columns of a record, integers widened to BIGINT; `c` is the customer row.
const CUSTOMER_COLUMNS: &str = "c.customer_id, c.birth_date::BIGINT, c.gender, c.country, \
     c.signed_up_at, c.attributes, c.create_time, c.update_time";

/// The summary columns of a record in [`columns::all`] order, all read as BIGINT.
fn summary_select() -> String {
    columns::all()
        .map(|c| format!("s.{c}::BIGINT"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A row of [`CUSTOMER_COLUMNS`] and the summary's columns, read by name.
fn record_from_row(row: &PgRow) -> StoreResult<CustomerRecord> {
    patron_store_sql::rows::customer_record(row, db_err)
}

/// The columns [`summary_row_from_row`] reads; `c` is the customer row, `s` its summary.
///
/// The summary travels as one `BIGINT[]` in [`columns::all`] order: for bulk reads of a million
/// rows, one array per row is about a quarter cheaper to send and decode than 39 fields.
fn summary_row_select() -> String {
    format!(
        "c.customer_id, c.signed_up_at, c.create_time, c.birth_date::BIGINT, \
         ARRAY[{}] AS summary_values, \
         c.gender, c.country, c.attributes",
        summary_select()
    )
}

/// A row of [`summary_row_select`], without its orders and engagement (see [`fill_history`]).
fn summary_row_from_row(row: &PgRow) -> StoreResult<SummaryRow> {
    let head = SummaryHeadRow::from_row(row).map_err(db_err)?;
    let values: Vec<Option<i64>> = row.try_get(SUMMARY_VALUES).map_err(db_err)?;
    summary_row(head, &values)
}

/// Which customers' orders and engagement [`fill_history`] reads: those of a page of
/// [`Store::scan_summaries`] (`after < customer_id <= last`) or a list of ids.
enum HistoryOf<'a> {
    Range { after: &'a str, last: &'a str },
    Ids(&'a [&'a str]),
}

impl HistoryOf<'_> {
    /// The condition on `customer_id`, with `$1` (and `$2`) bound by [`HistoryOf::bind`].
    fn condition(&self) -> &'static str {
        match self {
            HistoryOf::Range { .. } => "customer_id > $1 AND customer_id <= $2",
            HistoryOf::Ids(_) => "customer_id = ANY($1::text[])",
        }
    }

    fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        match self {
            HistoryOf::Range { after, last } => query.bind(*after).bind(*last),
            HistoryOf::Ids(ids) => query.bind(*ids),
        }
    }
}

/// Fills the orders and engagement of `rows` (sorted by customer id): one statement for each,
/// over the customers `of` names, each customer's rows aggregated into arrays (one result row
/// per customer, not per order or day). Activity names are shared through `names`.
async fn fill_history(
    conn: &mut sqlx::PgConnection,
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

    let sql = format!(
        "SELECT customer_id, array_agg(day), array_agg(amount - refunded) FROM orders \
         WHERE {} AND day IS NOT NULL AND (refunded = 0 OR refunded < amount) \
         GROUP BY customer_id",
        of.condition()
    );
    for row in of
        .bind(sqlx::query(&sql))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?
    {
        let id: &str = row.try_get(0).map_err(db_err)?;
        let days: Vec<i32> = row.try_get(1).map_err(db_err)?;
        let nets: Vec<i64> = row.try_get(2).map_err(db_err)?;
        let i = position(rows, id)?;
        let mut orders: Vec<OrderDay> = days
            .into_iter()
            .zip(nets)
            .map(|(day, net_amount)| OrderDay {
                day: Day::from_days(day),
                net_amount,
            })
            .collect();
        orders.sort_unstable();
        rows[i].orders = orders;
    }

    let sql = format!(
        "SELECT customer_id, array_agg(day), array_agg(activity), array_agg(count) \
         FROM engagement_days WHERE {} GROUP BY customer_id",
        of.condition()
    );
    for row in of
        .bind(sqlx::query(&sql))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?
    {
        let id: &str = row.try_get(0).map_err(db_err)?;
        let days: Vec<i32> = row.try_get(1).map_err(db_err)?;
        let activities: Vec<String> = row.try_get(2).map_err(db_err)?;
        let counts: Vec<i64> = row.try_get(3).map_err(db_err)?;
        let i = position(rows, id)?;
        let mut engagement: Vec<EngagementDay> = days
            .into_iter()
            .zip(activities)
            .zip(counts)
            .map(|((day, activity), count)| EngagementDay {
                day: Day::from_days(day),
                activity: intern(names, &activity),
                count,
            })
            .collect();
        engagement.sort_unstable();
        rows[i].engagement = engagement;
    }
    Ok(())
}

/// Serializes the writers of `table` (readers are not blocked) until the transaction ends.
async fn lock_exclusive(tx: &mut Transaction<'_, Postgres>, table: &str) -> StoreResult<()> {
    sqlx::query(&format!("LOCK TABLE {table} IN EXCLUSIVE MODE"))
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// A row of [`EventRow::COLUMNS`].
fn event_from_row(row: &PgRow) -> StoreResult<StoredEvent> {
    EventRow::from_row(row).map_err(db_err)?.try_into()
}

fn date_days(d: Option<Date>) -> Option<i32> {
    d.map(|d| d.to_day().as_days())
}

/// `$first::<type>[], $first+1::<type>[], …` for `types`, for an `UNNEST(…)` argument list.
fn unnest_args(types: &[&str], first: usize) -> String {
    types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", first + i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes the aggregates of a batch's new events: summary deltas, order deltas, the purchase
/// statistics of every customer whose orders changed, and engagement days. One statement each,
/// rows sorted by key, tables in the order summaries, orders, engagement days.
async fn apply_aggregate(
    tx: &mut Transaction<'_, Postgres>,
    agg: &BatchAggregate,
) -> StoreResult<()> {
    // Summaries, sorted by customer. BatchAggregate holds one delta per customer, so the upsert
    // never touches a row twice.
    if !agg.summaries.is_empty() {
        let mut summaries: Vec<&(CustomerId, _)> = agg.summaries.iter().collect();
        summaries.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let value_columns: Vec<&str> = columns::delta_columns().collect();
        let mut types = vec!["text"];
        types.extend(std::iter::repeat_n("bigint", value_columns.len()));
        let sql = format!(
            "INSERT INTO customer_summaries (customer_id, {}) SELECT * FROM UNNEST({}) \
             ON CONFLICT (customer_id) DO UPDATE SET {}",
            value_columns.join(", "),
            unnest_args(&types, 1),
            columns::upsert_set_clause("customer_summaries"),
        );
        let ids: Vec<&str> = summaries.iter().map(|(c, _)| c.as_str()).collect();
        let mut values: Vec<Vec<Option<i64>>> =
            vec![Vec::with_capacity(summaries.len()); value_columns.len()];
        for (_, delta) in &summaries {
            for (col, v) in values.iter_mut().zip(columns::delta_values(delta)) {
                col.push(v);
            }
        }
        let mut query = sqlx::query(&sql).bind(ids);
        for col in values {
            query = query.bind(col);
        }
        query.execute(&mut **tx).await.map_err(db_err)?;
    }

    apply_orders(tx, agg).await?;

    // Engagement days, sorted by (customer, day, activity); one delta per key.
    if !agg.engagement.is_empty() {
        let mut days: Vec<_> = agg.engagement.iter().collect();
        days.sort_unstable_by(|a, b| {
            (a.0.as_str(), a.1, a.2.as_str()).cmp(&(b.0.as_str(), b.1, b.2.as_str()))
        });
        let sql = format!(
            "INSERT INTO engagement_days (customer_id, day, activity, count) \
             SELECT * FROM UNNEST({}) \
             ON CONFLICT (customer_id, day, activity) DO UPDATE SET \
             count = engagement_days.count + excluded.count",
            unnest_args(&["text", "integer", "text", "bigint"], 1)
        );
        sqlx::query(&sql)
            .bind(days.iter().map(|g| g.0.as_str()).collect::<Vec<_>>())
            .bind(days.iter().map(|g| g.1.as_days()).collect::<Vec<_>>())
            .bind(days.iter().map(|g| g.2.as_str()).collect::<Vec<_>>())
            .bind(days.iter().map(|g| g.3).collect::<Vec<_>>())
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
    }
    Ok(())
}

/// Writes the order deltas of a batch and recomputes the purchase statistics of every customer
/// whose orders changed.
async fn apply_orders(tx: &mut Transaction<'_, Postgres>, agg: &BatchAggregate) -> StoreResult<()> {
    if agg.orders.is_empty() {
        return Ok(());
    }

    // Orders, sorted by (customer, order); one delta per order, so no row is touched twice.
    let mut orders: Vec<_> = agg.orders.iter().collect();
    orders.sort_unstable_by(|a, b| (a.0.as_str(), a.1.as_str()).cmp(&(b.0.as_str(), b.1.as_str())));
    let sql = format!(
        "INSERT INTO orders (customer_id, order_id, day, amount, item_count, refunded) \
         SELECT * FROM UNNEST({}) \
         ON CONFLICT (customer_id, order_id) DO UPDATE SET \
         day = CASE WHEN orders.day IS NULL OR excluded.day < orders.day \
               THEN COALESCE(excluded.day, orders.day) ELSE orders.day END, \
         amount = orders.amount + excluded.amount, \
         item_count = orders.item_count + excluded.item_count, \
         refunded = orders.refunded + excluded.refunded",
        unnest_args(
            &["text", "text", "integer", "bigint", "bigint", "bigint"],
            1
        )
    );
    sqlx::query(&sql)
        .bind(orders.iter().map(|o| o.0.as_str()).collect::<Vec<_>>())
        .bind(orders.iter().map(|o| o.1.as_str()).collect::<Vec<_>>())
        .bind(
            orders
                .iter()
                .map(|o| o.2.day.map(|d| d.as_days()))
                .collect::<Vec<Option<i32>>>(),
        )
        .bind(orders.iter().map(|o| o.2.amount).collect::<Vec<_>>())
        .bind(orders.iter().map(|o| o.2.item_count).collect::<Vec<_>>())
        .bind(orders.iter().map(|o| o.2.refunded).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;

    // Purchase statistics of the customers whose orders changed. Their summary rows are already
    // locked by the upsert above, so this takes no new locks.
    let mut touched: Vec<&str> = orders.iter().map(|o| o.0.as_str()).collect();
    touched.dedup();
    const ACTIVE: &str = "day IS NOT NULL AND (refunded = 0 OR refunded < amount)";
    let sql = format!(
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
           FROM orders WHERE customer_id = ANY($1::text[]) GROUP BY customer_id) AS a \
         WHERE customer_summaries.customer_id = a.customer_id"
    );
    sqlx::query(&sql)
        .bind(touched)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    #[tracing::instrument(skip_all, name = "store.check_connection", fields(db.system = "postgresql"))]
    async fn check_connection(&self, timeout: Duration) -> StoreResult<Duration> {
        use sqlx::Connection;
        // Its own connection, not one of the pool's: a pool busy with a burst of calls must not
        // look like an unreachable database.
        let started = std::time::Instant::now();
        let mut slot = self.check.lock().await;
        let check = async {
            if slot.is_none() {
                *slot = Some(
                    sqlx::PgConnection::connect_with(&self.options)
                        .await
                        .map_err(db_err)?,
                );
            }
            if let Some(conn) = slot.as_mut() {
                sqlx::query("SELECT 1")
                    .execute(&mut *conn)
                    .await
                    .map_err(db_err)?;
            }
            Ok::<_, StoreError>(())
        };
        let result = match tokio::time::timeout(timeout, check).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer from the database within {timeout:?}"
            ))),
        };
        if result.is_err() {
            // Reconnect next time.
            *slot = None;
        }
        self.reachable.store(result.is_ok(), Ordering::Release);
        result.map(|()| started.elapsed())
    }

    fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Acquire)
    }

    fn pool_state(&self) -> patron_store::PoolState {
        let open = self.pool.size();
        patron_store::PoolState {
            open,
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        }
    }

    #[tracing::instrument(skip_all, name = "store.upsert_customers", fields(db.system = "postgresql", count = customers.len()))]
    async fn upsert_customers(
        &self,
        customers: &[Customer],
        now: Timestamp,
    ) -> StoreResult<Vec<UpsertedCustomer>> {
        if customers.is_empty() {
            return Ok(Vec::new());
        }
        let encoded = customers
            .iter()
            .map(|c| encode_attributes(&c.profile.attributes))
            .collect::<StoreResult<Vec<_>>>()?;
        let mut rows: Vec<(&Customer, &String)> = customers.iter().zip(&encoded).collect();
        rows.sort_unstable_by(|a, b| a.0.customer_id.as_str().cmp(b.0.customer_id.as_str()));
        // One statement: upsert in id order, then read the records (with their summaries) back.
        // `xmax = 0` holds only for rows this statement inserted.
        let sql = format!(
            "WITH c AS ( \
               INSERT INTO customers (customer_id, birth_date, gender, country, signed_up_at, \
                 attributes, create_time, update_time) \
               SELECT t.*, $7::BIGINT, $7::BIGINT FROM UNNEST({}) AS t \
               ON CONFLICT (customer_id) DO UPDATE SET birth_date = excluded.birth_date, \
                 gender = excluded.gender, country = excluded.country, \
                 signed_up_at = excluded.signed_up_at, attributes = excluded.attributes, \
                 update_time = excluded.update_time \
               RETURNING customers.*, (xmax = 0) AS created) \
             SELECT {CUSTOMER_COLUMNS}, {}, c.created FROM c \
             LEFT JOIN customer_summaries s ON s.customer_id = c.customer_id",
            unnest_args(&["text", "integer", "text", "text", "bigint", "text"], 1),
            summary_select()
        );
        let mut tx = self.pool()?.begin().await.map_err(db_err)?;
        let result = sqlx::query(&sql)
            .bind(
                rows.iter()
                    .map(|(c, _)| c.customer_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|(c, _)| date_days(c.profile.birth_date))
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|(c, _)| c.profile.gender.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|(c, _)| c.profile.country.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|(c, _)| c.profile.signed_up_at.map(Timestamp::as_micros))
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|(_, a)| a.as_str()).collect::<Vec<_>>())
            .bind(now.as_micros())
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let changes: Vec<_> = rows
            .iter()
            .map(|(c, _)| (ChangeKind::Customer, c.customer_id.as_str(), ""))
            .collect();
        append_changes(&mut tx, &changes).await?;
        tx.commit().await.map_err(db_err)?;
        let mut by_id = HashMap::with_capacity(result.len());
        for row in &result {
            let record = record_from_row(row)?;
            let created: bool = row.try_get("created").map_err(db_err)?;
            by_id.insert(
                record.customer.customer_id.clone(),
                UpsertedCustomer { record, created },
            );
        }
        customers
            .iter()
            .map(|c| {
                by_id.remove(&c.customer_id).ok_or_else(|| {
                    StoreError::Internal(format!("upserted customer {} not found", c.customer_id))
                })
            })
            .collect()
    }

    #[tracing::instrument(skip_all, name = "store.get_customer", fields(db.system = "postgresql", customer_id = %id))]
    async fn get_customer(&self, id: &CustomerId) -> StoreResult<Option<CustomerRecord>> {
        let sql = format!(
            "SELECT {CUSTOMER_COLUMNS}, {} FROM customers c LEFT JOIN customer_summaries s \
             ON s.customer_id = c.customer_id WHERE c.customer_id = $1",
            summary_select()
        );
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(self.pool()?)
            .await
            .map_err(db_err)?;
        row.as_ref().map(record_from_row).transpose()
    }

    #[tracing::instrument(skip_all, name = "store.list_customers", fields(db.system = "postgresql", limit))]
    async fn list_customers(
        &self,
        after: Option<&CustomerId>,
        limit: usize,
    ) -> StoreResult<Vec<CustomerRecord>> {
        // customer_id is COLLATE "C": bytewise order, as in SQLite. The bound is repeated for
        // the summaries: the planner does not carry it to the nullable side of a LEFT JOIN, and
        // without it a merge join reads every summary before the page (quadratic when paging).
        let sql = format!(
            "SELECT {CUSTOMER_COLUMNS}, {} FROM customers c LEFT JOIN customer_summaries s \
             ON s.customer_id = c.customer_id AND s.customer_id > $1 \
             WHERE c.customer_id > $1 ORDER BY c.customer_id LIMIT $2",
            summary_select()
        );
        let rows = sqlx::query(&sql)
            .bind(after.map_or("", CustomerId::as_str))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(self.pool()?)
            .await
            .map_err(db_err)?;
        rows.iter().map(record_from_row).collect()
    }

    #[tracing::instrument(skip_all, name = "store.delete_customer", fields(db.system = "postgresql", customer_id = %id))]
    async fn delete_customer(&self, id: &CustomerId) -> StoreResult<Option<u64>> {
        let mut tx = self.pool()?.begin().await.map_err(db_err)?;
        // The customer row goes first: this waits for every `record_events` holding it (they
        // lock it FOR KEY SHARE) and makes later ones wait for this erasure, so the statement
        // below sees every event of the customer and none can arrive after it.
        let existed = sqlx::query("DELETE FROM customers WHERE customer_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected()
            > 0;
        if !existed {
            return Ok(None);
        }
        let events: i64 = sqlx::query_scalar(
            "WITH e AS (DELETE FROM events WHERE customer_id = $1 RETURNING 1), \
               s AS (DELETE FROM customer_summaries WHERE customer_id = $1), \
               o AS (DELETE FROM orders WHERE customer_id = $1), \
               g AS (DELETE FROM engagement_days WHERE customer_id = $1) \
             SELECT COUNT(*) FROM e",
        )
        .bind(id.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        // The loyalty books stay, under a pseudonym nothing links back to the customer, moved
        // under each membership's lock.
        let pseudonym = patron_store_sql::new_pseudonym()?;
        let programs = loyalty::keep_books_as(&mut tx, id.as_str(), &pseudonym).await?;
        // Earlier changes of the customer name the pseudonym from now on (rewritten, not
        // deleted: positions stay dense; locked in position order, as pruning deletes them).
        // This erasure's own changes below name the customer, so that every view forgets them;
        // they go when the feed is pruned.
        sqlx::query(
            "UPDATE change_feed SET key = $2 WHERE position IN ( \
               SELECT position FROM change_feed \
               WHERE key = $1 AND kind IN ('customer', 'member') \
               ORDER BY position FOR UPDATE)",
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
        append_changes(&mut tx, &changes).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(Some(u64::try_from(events).unwrap_or(0)))
    }

    #[tracing::instrument(skip_all, name = "store.record_events", fields(db.system = "postgresql", count = events.len()))]
    async fn record_events(&self, events: &[Event], now: Timestamp) -> StoreResult<RecordOutcome> {
        let (mut firsts, mut duplicate_indexes) = dedupe_batch(events);
        if firsts.is_empty() {
            return Ok(RecordOutcome {
                duplicate_indexes,
                ..RecordOutcome::default()
            });
        }
        // Events in key order, so concurrent batches wait on each other's rows in one order.
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
        customers.dedup();

        let mut tx = self.pool()?.begin().await.map_err(db_err)?;
        let created_customers = sqlx::query(
            "INSERT INTO customers (customer_id, create_time) \
             SELECT id, $2::BIGINT FROM UNNEST($1::text[]) AS t(id) \
             ON CONFLICT (customer_id) DO NOTHING",
        )
        .bind(&customers)
        .bind(now.as_micros())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected();
        // Hold the customers (shared with other recorders) so no erasure interleaves. A customer
        // erased between the insert and this lock is missing: the caller retries.
        let held: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM customers WHERE customer_id = ANY($1::text[]) \
             ORDER BY customer_id FOR KEY SHARE) AS held",
        )
        .bind(&customers)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        if usize::try_from(held).ok() != Some(customers.len()) {
            return Err(StoreError::Conflict(
                "a customer of the batch was erased concurrently".into(),
            ));
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
        // Each event carries the transaction's number, as the feed rows appended below do.
        let sql = format!(
            "INSERT INTO events (customer_id, event_id, kind, occurred_at, recorded_at, data, \
               txn) \
             SELECT t.customer_id, t.event_id, t.kind, t.occurred_at, $6::BIGINT, t.data, \
               {CURRENT_TXN} \
             FROM UNNEST($1::text[], $2::text[], $3::smallint[], $4::bigint[], $5::text[]) \
               AS t(customer_id, event_id, kind, occurred_at, data) \
             ON CONFLICT (customer_id, event_id) DO NOTHING RETURNING customer_id, event_id"
        );
        let inserted = sqlx::query(&sql)
            .bind(
                firsts
                    .iter()
                    .map(|&i| events[i].customer_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                firsts
                    .iter()
                    .map(|&i| events[i].event_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                firsts
                    .iter()
                    .map(|&i| events[i].data.kind().code())
                    .collect::<Vec<_>>(),
            )
            .bind(
                firsts
                    .iter()
                    .map(|&i| events[i].occurred_at.as_micros())
                    .collect::<Vec<_>>(),
            )
            .bind(encoded.iter().map(String::as_str).collect::<Vec<_>>())
            .bind(now.as_micros())
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let mut is_new = vec![false; events.len()];
        for row in &inserted {
            let c: &str = row.try_get(0).map_err(db_err)?;
            let e: &str = row.try_get(1).map_err(db_err)?;
            if let Some(&i) = position.get(&(c, e)) {
                is_new[i] = true;
            }
        }
        firsts.sort_unstable();
        let mut new_events = Vec::with_capacity(inserted.len());
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
        append_changes(&mut tx, &changes).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(RecordOutcome {
            recorded: new_events.len(),
            duplicate_indexes,
            created_customers: usize::try_from(created_customers).unwrap_or(usize::MAX),
        })
    }

    #[tracing::instrument(skip_all, name = "store.list_events", fields(db.system = "postgresql", customer_id = %customer, limit))]
    async fn list_events(
        &self,
        customer: &CustomerId,
        kinds: &[EventKind],
        after: Option<&EventCursor>,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        let mut qb = QueryBuilder::<Postgres>::new(format!(
            "SELECT {} FROM events WHERE customer_id = ",
            EventRow::COLUMNS
        ));
        qb.push_bind(customer.as_str());
        if !kinds.is_empty() {
            qb.push(" AND kind = ANY(")
                .push_bind(kinds.iter().map(|k| k.code()).collect::<Vec<_>>())
                .push("::smallint[])");
        }
        if let Some(c) = after {
            // event_id is COLLATE "C": ties break bytewise, as in SQLite.
            qb.push(" AND (occurred_at, event_id) < (")
                .push_bind(c.occurred_at.as_micros())
                .push("::BIGINT, ")
                .push_bind(c.event_id.as_str())
                .push("::TEXT)");
        }
        qb.push(" ORDER BY occurred_at DESC, event_id DESC LIMIT ")
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = qb.build().fetch_all(self.pool()?).await.map_err(db_err)?;
        rows.iter().map(event_from_row).collect()
    }

    #[tracing::instrument(skip_all, name = "store.events_until", fields(db.system = "postgresql", customers = customers.len()))]
    async fn events_until(
        &self,
        customers: &[CustomerId],
        until: Timestamp,
        kinds: &[EventKind],
    ) -> StoreResult<Vec<Event>> {
        let mut ids: Vec<&str> = customers.iter().map(CustomerId::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Through the primary key's customer_id prefix; ids compare in the "C" collation, as the
        // key does, so the order is SQLite's.
        let sql = format!(
            "SELECT {} FROM events WHERE customer_id = ANY($1::text[]) AND occurred_at <= $2 \
             AND (cardinality($3::smallint[]) = 0 OR kind = ANY($3::smallint[])) \
             ORDER BY customer_id COLLATE \"C\", occurred_at, event_id COLLATE \"C\"",
            EventRow::COLUMNS
        );
        let kinds: Vec<i16> = kinds.iter().map(|k| k.code()).collect();
        let rows = sqlx::query(&sql)
            .bind(ids)
            .bind(until.as_micros())
            .bind(kinds)
            .fetch_all(self.pool()?)
            .await
            .map_err(db_err)?;
        rows.iter()
            .map(|row| event_from_row(row).map(|e| e.event))
            .collect()
    }

    #[tracing::instrument(skip_all, name = "store.scan_summaries", fields(db.system = "postgresql", limit))]
    async fn scan_summaries(
        &self,
        after: Option<&CustomerId>,
        limit: usize,
    ) -> StoreResult<Vec<SummaryRow>> {
        // customer_id is COLLATE "C": bytewise order, as in SQLite. The bound is repeated for
        // the summaries, as in `list_customers`: each page then reads only its own rows.
        let sql = format!(
            "SELECT {} FROM customers c LEFT JOIN customer_summaries s \
             ON s.customer_id = c.customer_id AND s.customer_id > $1 \
             WHERE c.customer_id > $1 ORDER BY c.customer_id LIMIT $2",
            summary_row_select()
        );
        let after = after.map_or("", CustomerId::as_str);
        // One snapshot for the page and its history.
        let mut tx = self.begin_snapshot().await?;
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

    #[tracing::instrument(skip_all, name = "store.customer_id_cuts", fields(db.system = "postgresql", parts))]
    async fn customer_id_cuts(&self, parts: usize) -> StoreResult<Vec<CustomerId>> {
        Sql::<Self>::customer_id_cuts(self, parts).await
    }

    #[tracing::instrument(skip_all, name = "store.get_summaries", fields(db.system = "postgresql", count = ids.len()))]
    async fn get_summaries(&self, ids: &[CustomerId]) -> StoreResult<Vec<SummaryRow>> {
        let mut ids: Vec<&str> = ids.iter().map(CustomerId::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {} FROM customers c LEFT JOIN customer_summaries s \
             ON s.customer_id = c.customer_id WHERE c.customer_id = ANY($1::text[]) \
             ORDER BY c.customer_id",
            summary_row_select()
        );
        let mut out = Vec::with_capacity(ids.len());
        let mut names = HashSet::new();
        let mut tx = self.begin_snapshot().await?;
        for chunk in ids.chunks(SUMMARY_IDS_PER_STATEMENT) {
            let mut rows = sqlx::query(&sql)
                .bind(chunk)
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

    #[tracing::instrument(skip_all, name = "store.insert_value_model", fields(db.system = "postgresql"))]
    async fn insert_value_model(
        &self,
        body: &str,
        created_at: Timestamp,
        activation: Activation,
    ) -> StoreResult<StoredModel> {
        Sql::<Self>::insert_value_model(self, body, created_at, activation).await
    }

    #[tracing::instrument(skip_all, name = "store.get_value_model", fields(db.system = "postgresql", version))]
    async fn get_value_model(&self, version: i64) -> StoreResult<Option<StoredModel>> {
        Sql::<Self>::get_value_model(self, version).await
    }

    #[tracing::instrument(skip_all, name = "store.list_value_models", fields(db.system = "postgresql", before, limit))]
    async fn list_value_models(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<StoredModel>> {
        Sql::<Self>::list_value_models(self, before, limit).await
    }

    #[tracing::instrument(skip_all, name = "store.activate_value_model", fields(db.system = "postgresql", version))]
    async fn activate_value_model(&self, version: i64) -> StoreResult<Option<StoredModel>> {
        Sql::<Self>::activate_value_model(self, version).await
    }

    #[tracing::instrument(skip_all, name = "store.active_value_model", fields(db.system = "postgresql"))]
    async fn active_value_model(&self) -> StoreResult<Option<StoredModel>> {
        Sql::<Self>::active_value_model(self).await
    }

    #[tracing::instrument(skip_all, name = "store.get_tier_policy", fields(db.system = "postgresql"))]
    async fn get_tier_policy(&self) -> StoreResult<Option<StoredPolicy>> {
        Sql::<Self>::get_tier_policy(self).await
    }

    #[tracing::instrument(skip_all, name = "store.put_tier_policy", fields(db.system = "postgresql", expected_revision))]
    async fn put_tier_policy(
        &self,
        body: &str,
        updated_at: Timestamp,
        expected_revision: Option<i64>,
    ) -> StoreResult<StoredPolicy> {
        Sql::<Self>::put_tier_policy(self, body, updated_at, expected_revision).await
    }
}

// Segment writes take `LOCK TABLE segments IN EXCLUSIVE MODE` first (readers are not blocked).
patron_store_sql::segment_store!(PgStore, "postgresql");
