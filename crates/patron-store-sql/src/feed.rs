//! The change feed's reads and its consumers' positions, for both backends. Appending to the
//! feed, pruning it and telling readers of new commits stay in each backend: they are where the
//! two databases order commits differently.

use patron_domain::Timestamp;
use patron_store::StoreResult;
use patron_store::feed::{Change, FeedHead};

use crate::Lock;
use crate::bounds::shared_impl;
use crate::limit_param;
use crate::rows::{ChangeRow, HeadRow};

shared_impl! {
    /// The feed's head.
    pub async fn feed_head(b: &B) -> StoreResult<FeedHead> {
        let sql = format!("SELECT {} FROM change_feed_head WHERE id = 1", HeadRow::COLUMNS);
        let row: HeadRow = sqlx::query_as(&sql)
            .fetch_one(b.reader()?)
            .await
            .map_err(B::db_err)?;
        Ok(row.into())
    }

    /// A consumer's durable position (0 before its first claim).
    pub async fn consumer_position(b: &B, name: &str) -> StoreResult<i64> {
        let position: Option<i64> =
            sqlx::query_scalar("SELECT position FROM feed_consumers WHERE name = $1")
                .bind(name)
                .fetch_optional(b.reader()?)
                .await
                .map_err(B::db_err)?;
        Ok(position.unwrap_or(0))
    }

    /// Changes after `after`, in position order.
    pub async fn read_changes(b: &B, after: i64, limit: usize) -> StoreResult<Vec<Change>> {
        let sql = format!(
            "SELECT {} FROM change_feed WHERE position > $1 ORDER BY position LIMIT $2",
            ChangeRow::COLUMNS
        );
        let rows: Vec<ChangeRow> = sqlx::query_as(&sql)
            .bind(after)
            .bind(limit_param(limit))
            .fetch_all(b.reader()?)
            .await
            .map_err(B::db_err)?;
        rows.into_iter().map(Change::try_from).collect()
    }

    /// Records a live reader's position.
    pub async fn feed_reader_heartbeat(
        b: &B,
        reader: &str,
        position: i64,
        now: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO change_feed_readers (reader, position, heartbeat_at) \
             VALUES ($1, $2, $3) \
             ON CONFLICT (reader) DO UPDATE SET position = excluded.position, \
             heartbeat_at = excluded.heartbeat_at",
        )
        .bind(reader)
        .bind(position)
        .bind(now.as_micros())
        .execute(b.writer()?)
        .await
        .map_err(B::db_err)?;
        Ok(())
    }

    /// Takes (or renews) a consumer's lease; its position if `owner` holds it now.
    pub async fn claim_consumer(
        b: &B,
        name: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> StoreResult<Option<i64>> {
        let mut tx = b.begin_write(Lock::Rows).await?;
        sqlx::query(
            "INSERT INTO feed_consumers (name, position, owner, lease_until) \
             VALUES ($1, 0, NULL, 0) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(B::db_err)?;
        // A concurrent claim waits for the row (on SQLite, for the write lock) and then
        // re-checks the condition on what this one committed: one owner at a time.
        let position: Option<i64> = sqlx::query_scalar(
            "UPDATE feed_consumers SET owner = $2, lease_until = $3 \
             WHERE name = $1 AND (owner IS NULL OR owner = $2 OR lease_until < $4) \
             RETURNING position",
        )
        .bind(name)
        .bind(owner)
        .bind(lease_until.as_micros())
        .bind(now.as_micros())
        .fetch_optional(&mut *tx)
        .await
        .map_err(B::db_err)?;
        tx.commit().await.map_err(B::db_err)?;
        Ok(position)
    }

    /// Moves a consumer's position forward while `owner` holds its lease.
    pub async fn advance_consumer(
        b: &B,
        name: &str,
        owner: &str,
        position: i64,
    ) -> StoreResult<bool> {
        // Matches while `owner` holds the lease, also when the stored position is already at
        // or past `position` (which it keeps: a consumer never moves back).
        let matched = sqlx::query(&format!(
            "UPDATE feed_consumers SET position = {}(position, $3) \
             WHERE name = $1 AND owner = $2",
            B::GREATEST
        ))
        .bind(name)
        .bind(owner)
        .bind(position)
        .execute(b.writer()?)
        .await
        .map_err(B::db_err)?;
        Ok(B::rows_affected(&matched) > 0)
    }
}
