//! The change feed on Postgres.
//!
//! Each write transaction ends with [`append_changes`]: one statement that takes the next
//! positions from the head row (`UPDATE change_feed_head … RETURNING position`), inserts its rows
//! and queues a notification on `patron_feed` (delivered at commit). The head row's lock, taken
//! by that last statement and held until the commit is visible, makes positions dense and
//! visible in position order: the next writer's UPDATE waits for this commit and then sees its
//! positions. Taking the lock last keeps it held for one round trip (the COMMIT) per write.
//!
//! A transaction's number (`txn`) is `pg_current_xact_id()`, stamped on the feed rows and on the
//! events `record_events` inserts.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use patron_domain::{CustomerId, Event, Timestamp};
use patron_store::feed::{Change, ChangeKind, FeedHead, FeedStore};
use patron_store::{StoreError, StoreResult};
use sqlx::PgConnection;
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::oneshot;

use patron_store_sql::Sql;

use crate::{PgStore, db_err, event_from_row};

/// The channel commits to the feed notify.
const CHANNEL: &str = "patron_feed";

/// How long the listener waits before connecting again after an error.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The transaction's number, as an expression evaluated once per statement.
pub(crate) const CURRENT_TXN: &str = "(SELECT pg_current_xact_id()::text::bigint)";

/// One change to append: what, its key, its scope (`""` when none).
pub(crate) type NewChange<'a> = (ChangeKind, &'a str, &'a str);

/// Appends `changes` to the feed and queues a notification, in one statement that must be the
/// last of the write transaction `conn` is in (see the module documentation). Nothing to append:
/// nothing is done, and the head is not locked.
pub(crate) async fn append_changes(
    conn: &mut PgConnection,
    changes: &[NewChange<'_>],
) -> StoreResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let n = i64::try_from(changes.len())
        .map_err(|_| StoreError::Internal("too many changes in one commit".into()))?;
    sqlx::query(&format!(
        "WITH head AS ( \
           UPDATE change_feed_head SET position = position + $4 WHERE id = 1 \
           RETURNING position - $4 AS before, {CURRENT_TXN} AS txn, \
             (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT AS at), \
         appended AS ( \
           INSERT INTO change_feed (position, kind, key, scope, txn, committed_at) \
           SELECT head.before + c.n, c.kind, c.key, c.scope, head.txn, head.at \
           FROM head, UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY \
             AS c(kind, key, scope, n)) \
         SELECT pg_notify('{CHANNEL}', '')"
    ))
    .bind(changes.iter().map(|c| c.0.code()).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| c.1).collect::<Vec<_>>())
    .bind(changes.iter().map(|c| c.2).collect::<Vec<_>>())
    .bind(n)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// A function to call when the feed may have grown.
type Wake = Arc<dyn Fn() + Send + Sync>;

/// The functions registered with [`FeedStore::on_feed_commit`], shared by the clones of one
/// [`PgStore`], and the listener task's stop signal.
#[derive(Default)]
pub(crate) struct FeedWakers {
    state: Mutex<WakersState>,
}

#[derive(Default)]
struct WakersState {
    wakes: Vec<Wake>,
    /// Set once the listener runs; dropped with the last clone of the store, which stops it.
    stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for FeedWakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("FeedWakers")
            .field("wakes", &state.wakes.len())
            .field("listening", &state.stop.is_some())
            .finish()
    }
}

impl FeedWakers {
    /// Calls every registered function; one that panics does not stop the others.
    fn wake_all(&self) {
        let wakes = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .wakes
            .clone();
        for wake in wakes {
            if std::panic::catch_unwind(AssertUnwindSafe(|| wake())).is_err() {
                tracing::error!("a change feed wake function panicked");
            }
        }
    }
}

/// Calls the wake functions if the store still exists; `false` once it is gone.
fn wake(wakers: &Weak<FeedWakers>) -> bool {
    match wakers.upgrade() {
        Some(w) => {
            w.wake_all();
            true
        }
        None => false,
    }
}

/// A listener on [`CHANNEL`].
async fn listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Listens on [`CHANNEL`] and wakes on every notification, and after every (re)connection
/// (notifications sent while not listening are lost). Errors are logged and retried after
/// [`RETRY_AFTER`]. Ends when the pool is closed or every clone of the store is dropped.
async fn listen(pool: PgPool, wakers: Weak<FeedWakers>, mut stop: oneshot::Receiver<()>) {
    loop {
        let connected = tokio::select! {
            _ = &mut stop => return,
            connected = listener(&pool) => connected,
        };
        match connected {
            Ok(mut listener) => {
                if !wake(&wakers) {
                    return;
                }
                loop {
                    let received = tokio::select! {
                        _ = &mut stop => return,
                        received = listener.try_recv() => received,
                    };
                    match received {
                        // A commit (Some), or the connection was lost and made again (None):
                        // either way the feed may have grown.
                        Ok(_) => {
                            if !wake(&wakers) {
                                return;
                            }
                        }
                        Err(sqlx::Error::PoolClosed) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, "change feed listener failed; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "change feed listener cannot connect; retrying");
            }
        }
        // Missed notifications are possible: wake, then try again after a pause.
        if !wake(&wakers) {
            return;
        }
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(RETRY_AFTER) => {}
        }
    }
}

#[async_trait]
impl FeedStore for PgStore {
    #[tracing::instrument(skip_all, name = "store.feed_head", fields(db.system = "postgresql"))]
    async fn feed_head(&self) -> StoreResult<FeedHead> {
        Sql::<Self>::feed_head(self).await
    }

    #[tracing::instrument(skip_all, name = "store.consumer_position", fields(db.system = "postgresql"))]
    async fn consumer_position(&self, name: &str) -> StoreResult<i64> {
        Sql::<Self>::consumer_position(self, name).await
    }

    #[tracing::instrument(skip_all, name = "store.read_changes", fields(db.system = "postgresql", after, limit))]
    async fn read_changes(&self, after: i64, limit: usize) -> StoreResult<Vec<Change>> {
        Sql::<Self>::read_changes(self, after, limit).await
    }

    #[tracing::instrument(skip_all, name = "store.events_of", fields(db.system = "postgresql", count = changes.len()))]
    async fn events_of(&self, changes: &[(CustomerId, i64)]) -> StoreResult<Vec<Event>> {
        let mut pairs: Vec<(&str, i64)> = changes.iter().map(|(c, t)| (c.as_str(), *t)).collect();
        pairs.sort_unstable();
        pairs.dedup();
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        // Each pair reaches its events through the primary key's customer_id prefix. The ids
        // compare in the "C" collation, as the key does.
        let rows = sqlx::query(
            "SELECT e.customer_id, e.event_id, e.occurred_at, e.recorded_at, e.data \
             FROM UNNEST($1::text[], $2::bigint[]) AS p(customer_id, txn) \
             JOIN events e ON e.customer_id = p.customer_id COLLATE \"C\" AND e.txn = p.txn \
             ORDER BY e.customer_id, e.txn, e.event_id",
        )
        .bind(pairs.iter().map(|p| p.0).collect::<Vec<_>>())
        .bind(pairs.iter().map(|p| p.1).collect::<Vec<_>>())
        .fetch_all(self.pool()?)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|row| event_from_row(row).map(|e| e.event))
            .collect()
    }

    #[tracing::instrument(skip_all, name = "store.feed_reader_heartbeat", fields(db.system = "postgresql", reader, position))]
    async fn feed_reader_heartbeat(
        &self,
        reader: &str,
        position: i64,
        now: Timestamp,
    ) -> StoreResult<()> {
        Sql::<Self>::feed_reader_heartbeat(self, reader, position, now).await
    }

    #[tracing::instrument(skip_all, name = "store.prune_feed", fields(db.system = "postgresql"))]
    async fn prune_feed(
        &self,
        committed_before: Timestamp,
        live_since: Timestamp,
    ) -> StoreResult<u64> {
        let mut tx = self.pool()?.begin().await.map_err(db_err)?;
        sqlx::query("DELETE FROM change_feed_readers WHERE heartbeat_at < $1")
            .bind(live_since.as_micros())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        // Everything up to the slowest live reader or consumer (the head when there are none),
        // and only a prefix committed before `committed_before`: rows are deleted from the
        // oldest on, never around one that must stay, so `pruned_through` stays exact.
        let (deleted, highest): (i64, Option<i64>) = sqlx::query_as(
            "WITH head AS (SELECT position FROM change_feed_head WHERE id = 1), \
             cutoff AS (SELECT LEAST( \
               COALESCE((SELECT MIN(position) FROM ( \
                   SELECT position FROM change_feed_readers \
                   UNION ALL SELECT position FROM feed_consumers) AS passed), \
                 (SELECT position FROM head)), \
               COALESCE((SELECT position - 1 FROM change_feed WHERE committed_at >= $1 \
                   ORDER BY position LIMIT 1), \
                 (SELECT position FROM head))) AS position), \
             deleted AS (DELETE FROM change_feed \
               WHERE position <= (SELECT position FROM cutoff) RETURNING position) \
             SELECT COUNT(*), MAX(position) FROM deleted",
        )
        .bind(committed_before.as_micros())
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        if let Some(highest) = highest {
            // The head row last, as in every write: held only until the commit.
            sqlx::query(
                "UPDATE change_feed_head SET pruned_through = GREATEST(pruned_through, $1) \
                 WHERE id = 1",
            )
            .bind(highest)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(u64::try_from(deleted).unwrap_or(0))
    }

    #[tracing::instrument(skip_all, name = "store.claim_consumer", fields(db.system = "postgresql", name, owner))]
    async fn claim_consumer(
        &self,
        name: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> StoreResult<Option<i64>> {
        Sql::<Self>::claim_consumer(self, name, owner, now, lease_until).await
    }

    #[tracing::instrument(skip_all, name = "store.advance_consumer", fields(db.system = "postgresql", name, owner, position))]
    async fn advance_consumer(&self, name: &str, owner: &str, position: i64) -> StoreResult<bool> {
        Sql::<Self>::advance_consumer(self, name, owner, position).await
    }

    fn on_feed_commit(&self, wake: Arc<dyn Fn() + Send + Sync>) {
        let mut state = self
            .feed
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.wakes.push(wake);
        if state.stop.is_some() {
            return;
        }
        // The listener runs on the caller's runtime; outside one, readers poll until a later
        // registration (from within a runtime) starts it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("on_feed_commit outside a Tokio runtime: no change feed listener");
            return;
        };
        let (stop, stopped) = oneshot::channel();
        state.stop = Some(stop);
        runtime.spawn(listen(
            self.pool.clone(),
            Arc::downgrade(&self.feed),
            stopped,
        ));
    }
}
