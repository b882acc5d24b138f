//! The change feed on SQLite.
//!
//! SQLite has one writer at a time, so positions are in commit order by construction: each write
//! transaction ends with [`append_changes`], which takes the next positions from the head row and
//! inserts its rows. A transaction's number (`txn`) is the first position it takes: unique among
//! transactions that append anything, and known from the start of the transaction (the head
//! cannot move while this connection holds the write lock), so `record_events` can stamp its
//! events with it before appending.

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use patron_domain::{CustomerId, Event, Timestamp};
use patron_store::feed::{Change, ChangeKind, FeedHead, FeedStore};
use patron_store::{StoreError, StoreResult};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use patron_store_sql::Sql;

use crate::{MAX_PARAMS, SqliteStore, db_err, event_from_row};

/// One change to append: what, its key, its scope (`""` when none).
pub(crate) type NewChange<'a> = (ChangeKind, &'a str, &'a str);

/// The number of the write transaction `conn` is in: the first position it will take. Call
/// with the write lock held (`BEGIN IMMEDIATE`).
pub(crate) async fn current_txn(conn: &mut SqliteConnection) -> StoreResult<i64> {
    sqlx::query_scalar("SELECT position + 1 FROM change_feed_head WHERE id = 1")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)
}

/// The clock's now, in microseconds since the epoch.
fn clock_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Appends `changes` to the feed, as the last statements of the write transaction `conn` is in:
/// takes the next `changes.len()` positions from the head row and inserts one row per change,
/// in order. `txn` is the transaction's number if it was taken earlier ([`current_txn`]), else
/// the first position taken. Nothing to append: nothing is done.
pub(crate) async fn append_changes(
    conn: &mut SqliteConnection,
    changes: &[NewChange<'_>],
    txn: Option<i64>,
) -> StoreResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let n = i64::try_from(changes.len())
        .map_err(|_| StoreError::Internal("too many changes in one commit".into()))?;
    let last: i64 = sqlx::query_scalar(
        "UPDATE change_feed_head SET position = position + ? WHERE id = 1 RETURNING position",
    )
    .bind(n)
    .fetch_one(&mut *conn)
    .await
    .map_err(db_err)?;
    let first = last - n + 1;
    let txn = txn.unwrap_or(first);
    if txn != first {
        // One writer: nothing can have taken positions since `current_txn`.
        return Err(StoreError::Internal(format!(
            "feed head moved within a write transaction (txn {txn}, first position {first})"
        )));
    }
    let committed_at = clock_now();
    let rows: Vec<(i64, &NewChange<'_>)> = (first..).zip(changes).collect();
    for chunk in rows.chunks(MAX_PARAMS / 6) {
        let mut qb = QueryBuilder::<Sqlite>::new(
            "INSERT INTO change_feed (position, kind, key, scope, txn, committed_at) ",
        );
        qb.push_values(chunk, |mut b, (position, (kind, key, scope))| {
            b.push_bind(*position)
                .push_bind(kind.code())
                .push_bind(*key)
                .push_bind(*scope)
                .push_bind(txn)
                .push_bind(committed_at);
        });
        qb.build().execute(&mut *conn).await.map_err(db_err)?;
    }
    Ok(())
}

#[async_trait]
impl FeedStore for SqliteStore {
    #[tracing::instrument(skip_all, name = "store.feed_head", fields(db.system = "sqlite"))]
    async fn feed_head(&self) -> StoreResult<FeedHead> {
        Sql::<Self>::feed_head(self).await
    }

    #[tracing::instrument(skip_all, name = "store.consumer_position", fields(db.system = "sqlite"))]
    async fn consumer_position(&self, name: &str) -> StoreResult<i64> {
        Sql::<Self>::consumer_position(self, name).await
    }

    #[tracing::instrument(skip_all, name = "store.read_changes", fields(db.system = "sqlite", after, limit))]
    async fn read_changes(&self, after: i64, limit: usize) -> StoreResult<Vec<Change>> {
        Sql::<Self>::read_changes(self, after, limit).await
    }

    #[tracing::instrument(skip_all, name = "store.events_of", fields(db.system = "sqlite", count = changes.len()))]
    async fn events_of(&self, changes: &[(CustomerId, i64)]) -> StoreResult<Vec<Event>> {
        // Sorted (ids bytewise, as SQLite compares text) and without repeats, so the chunks'
        // results, each in (customer, txn, event id) order, follow each other in that order.
        let mut pairs: Vec<(&str, i64)> = changes.iter().map(|(c, t)| (c.as_str(), *t)).collect();
        pairs.sort_unstable();
        pairs.dedup();
        let mut out = Vec::new();
        // One read transaction: every chunk reads the same snapshot.
        let mut tx = self.reader.begin().await.map_err(db_err)?;
        for chunk in pairs.chunks(MAX_PARAMS / 2) {
            let mut qb = QueryBuilder::<Sqlite>::new("WITH p (customer_id, txn) AS (");
            qb.push_values(chunk, |mut b, (customer, txn)| {
                b.push_bind(*customer).push_bind(*txn);
            });
            qb.push(
                ") SELECT e.customer_id, e.event_id, e.occurred_at, e.recorded_at, e.data \
                 FROM p JOIN events e ON e.customer_id = p.customer_id AND e.txn = p.txn \
                 ORDER BY e.customer_id, e.txn, e.event_id",
            );
            for row in qb.build().fetch_all(&mut *tx).await.map_err(db_err)? {
                out.push(event_from_row(&row)?.event);
            }
        }
        tx.commit().await.map_err(db_err)?;
        Ok(out)
    }

    #[tracing::instrument(skip_all, name = "store.feed_reader_heartbeat", fields(db.system = "sqlite", reader, position))]
    async fn feed_reader_heartbeat(
        &self,
        reader: &str,
        position: i64,
        now: Timestamp,
    ) -> StoreResult<()> {
        Sql::<Self>::feed_reader_heartbeat(self, reader, position, now).await
    }

    #[tracing::instrument(skip_all, name = "store.prune_feed", fields(db.system = "sqlite"))]
    async fn prune_feed(
        &self,
        committed_before: Timestamp,
        live_since: Timestamp,
    ) -> StoreResult<u64> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        sqlx::query("DELETE FROM change_feed_readers WHERE heartbeat_at < ?")
            .bind(live_since.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        // Everything up to the slowest live reader or consumer (the head when there are none),
        // and only a prefix committed before `committed_before`: rows are deleted from the
        // oldest on, never around one that must stay, so `pruned_through` stays exact.
        let cutoff: i64 = sqlx::query_scalar(
            "SELECT MIN( \
               COALESCE((SELECT MIN(position) FROM ( \
                   SELECT position FROM change_feed_readers \
                   UNION ALL SELECT position FROM feed_consumers)), \
                 (SELECT position FROM change_feed_head WHERE id = 1)), \
               COALESCE((SELECT position - 1 FROM change_feed WHERE committed_at >= ? \
                   ORDER BY position LIMIT 1), \
                 (SELECT position FROM change_feed_head WHERE id = 1)))",
        )
        .bind(committed_before.as_micros())
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        let highest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(position) FROM change_feed WHERE position <= ?")
                .bind(cutoff)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
        let mut deleted = 0;
        if let Some(highest) = highest {
            deleted = sqlx::query("DELETE FROM change_feed WHERE position <= ?")
                .bind(highest)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?
                .rows_affected();
            sqlx::query(
                "UPDATE change_feed_head SET pruned_through = MAX(pruned_through, ?) WHERE id = 1",
            )
            .bind(highest)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(deleted)
    }

    #[tracing::instrument(skip_all, name = "store.claim_consumer", fields(db.system = "sqlite", name, owner))]
    async fn claim_consumer(
        &self,
        name: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> StoreResult<Option<i64>> {
        Sql::<Self>::claim_consumer(self, name, owner, now, lease_until).await
    }

    #[tracing::instrument(skip_all, name = "store.advance_consumer", fields(db.system = "sqlite", name, owner, position))]
    async fn advance_consumer(&self, name: &str, owner: &str, position: i64) -> StoreResult<bool> {
        Sql::<Self>::advance_consumer(self, name, owner, position).await
    }
}
