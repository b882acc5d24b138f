//! The read path: every customer's summary in memory, the active model and the tier policy.
//!
//! Scoring a customer never touches the database: GetCustomerValue reads one entry of an ordered
//! map under a read lock and computes the profile. The change feed keeps the map, the model and
//! the policy current ([`FeedView`]): every committed write, by this process or another sharing
//! the database, reaches it in commit order.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tracing::Instrument;

use patron_domain::clv::TimeUnitKind;
use patron_domain::value::PerceivedValue;
use patron_domain::value::TierPolicy;
use patron_domain::{Currency, CustomerId, Day, Event, Timestamp};
use patron_store::feed::{Change, ChangeKind, FeedView};
use patron_store::{OrderDay, Store, StoreError, StoreResult, StoredModel, SummaryRow};

use crate::dated::{self, DatedCache, DatedHistory};
use crate::history;
use crate::snapshot;

use crate::model::{self, ActiveModel, DayRfm, FitRequest, ModelDoc, ModelError};

/// Customers read per page when loading the index.
const LOAD_PAGE: usize = 10_000;

/// Every index entry in id order, shared.
pub type Snapshot = Arc<Vec<Arc<SummaryRow>>>;

/// The model and policy scores are computed with; replaced as a whole when either changes.
#[derive(Debug, Clone)]
pub struct State {
    pub model: Option<Arc<ActiveModel>>,
    pub policy: TierPolicy,
    /// 0 for the built-in default policy.
    pub policy_revision: i64,
    pub policy_updated: Option<Timestamp>,
}

/// One index entry: a customer's row, ordered, compared and hashed by its customer id, so the id
/// is stored once (in the row) rather than once more as a key in each map.
#[derive(Debug, Clone)]
struct Entry(Arc<SummaryRow>);

impl std::borrow::Borrow<CustomerId> for Entry {
    fn borrow(&self) -> &CustomerId {
        &self.0.customer_id
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.0.customer_id == other.0.customer_id
    }
}

impl Eq for Entry {}

impl std::hash::Hash for Entry {
    // As `CustomerId` hashes: lookups hash the id they are given.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.customer_id.hash(state);
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.customer_id.cmp(&other.0.customer_id)
    }
}

/// Every customer's entry, in id order for scans and hashed for point lookups (GetCustomerValue
/// reads one entry per call: a hash lookup is a fraction of a search among a million string keys).
/// Both hold one pointer per customer. The hasher is foldhash, seeded per process: SipHash was
/// several per cent of a lookup's and a fit's CPU.
#[derive(Debug, Default)]
struct Index {
    ordered: BTreeSet<Entry>,
    by_id: HashSet<Entry, foldhash::fast::RandomState>,
}

impl Index {
    fn insert(&mut self, row: Arc<SummaryRow>) {
        // `replace`, not `insert`: a set keeps its old element when an equal one is inserted.
        self.by_id.replace(Entry(Arc::clone(&row)));
        self.ordered.replace(Entry(row));
    }

    fn remove(&mut self, id: &CustomerId) {
        self.by_id.remove(id);
        self.ordered.remove(id);
    }

    fn get(&self, id: &CustomerId) -> Option<&Arc<SummaryRow>> {
        self.by_id.get(id).map(|e| &e.0)
    }

    fn len(&self) -> usize {
        self.ordered.len()
    }

    /// Entries after `lower`, in id order.
    fn after(&self, lower: std::ops::Bound<&CustomerId>) -> impl Iterator<Item = &Arc<SummaryRow>> {
        self.ordered
            .range::<CustomerId, _>((lower, std::ops::Bound::Unbounded))
            .map(|e| &e.0)
    }
}

/// The in-memory index and scoring state.
#[derive(Debug)]
pub struct Engine {
    store: Arc<dyn Store>,
    currency: Currency,
    index: RwLock<Index>,
    state: RwLock<Arc<State>>,
    /// Refreshes read and apply one at a time, so an older read never overwrites a newer one.
    refresh_lock: tokio::sync::Mutex<()>,
    /// Bumped (under the index's write lock) by every change of the index.
    version: std::sync::atomic::AtomicU64,
    /// Every entry in id order as of `version`, for whole-population scans; rebuilt on the first
    /// scan after a change, shared by all scans until the next one.
    snapshot: std::sync::Mutex<Option<(u64, Snapshot)>>,
    /// The dated purchases, refunds and survey ratings fits at an earlier calibration end have
    /// read, by customer ([`crate::dated`]). Locked inside the index lock where both are taken:
    /// a customer's history is forgotten under the index's write lock when its row changes or
    /// goes, and kept only under the read lock while the row is the one it was read for.
    dated: std::sync::Mutex<DatedCache>,
}

/// Reads every summary into a new index. The customers are cut into two runs per core
/// ([`Store::customer_id_cuts`]), each read page by page by its own task into rows in id order;
/// the runs joined in order are every row in id order, from which [`index_of`] builds the index
/// at once. A run that fails stops the others.
async fn load_index(store: &Arc<dyn Store>) -> StoreResult<Index> {
    // Two runs per core: while one run's connection steps the database, the other's rows are
    // being parsed.
    let readers = 2 * std::thread::available_parallelism().map_or(1, usize::from);
    let started = std::time::Instant::now();
    let cuts = store.customer_id_cuts(readers).await?;
    let cut = started.elapsed();
    let mut starts: Vec<Option<CustomerId>> = vec![None];
    starts.extend(cuts.iter().cloned().map(Some));
    let mut reads = Vec::with_capacity(starts.len());
    for (k, start) in starts.into_iter().enumerate() {
        let end = cuts.get(k).cloned();
        let reader = Arc::clone(store);
        reads.push(tokio::spawn(
            async move { read_run(reader.as_ref(), start, end.as_ref()).await }.in_current_span(),
        ));
    }
    // Aborts the reads still running if this returns early (a run failed) or is dropped.
    let mut reads = AbortOnDrop(reads);
    let mut rows = Vec::new();
    for read in &mut reads.0 {
        let run = read
            .await
            .map_err(|e| StoreError::Internal(format!("reading the index: {e}")))??;
        if rows.is_empty() {
            rows = run;
        } else {
            rows.extend(run);
        }
    }
    let read = started.elapsed();
    let index = tokio::task::spawn_blocking(move || index_of(rows))
        .await
        .map_err(|e| StoreError::Internal(format!("building the index: {e}")))?;
    tracing::debug!(
        runs = reads.0.len(),
        cuts_ms = cut.as_millis() as u64,
        read_ms = read.as_millis() as u64,
        build_ms = (started.elapsed() - read).as_millis() as u64,
        "index read from the database"
    );
    Ok(index)
}

/// Tasks aborted when dropped.
struct AbortOnDrop<T>(Vec<tokio::task::JoinHandle<T>>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The rows of the customers after `start` up to and including `end` (to the last one without
/// an end), in id order.
async fn read_run(
    store: &dyn Store,
    start: Option<CustomerId>,
    end: Option<&CustomerId>,
) -> StoreResult<Vec<Arc<SummaryRow>>> {
    let mut out = Vec::new();
    let mut after = start;
    loop {
        let mut rows = store.scan_summaries(after.as_ref(), LOAD_PAGE).await?;
        let full = rows.len() == LOAD_PAGE;
        let past_end = end.is_some_and(|e| rows.last().is_some_and(|r| &r.customer_id >= e));
        if let Some(e) = end {
            rows.retain(|r| &r.customer_id <= e);
        }
        after = rows.last().map(|r| r.customer_id.clone());
        out.extend(rows.into_iter().map(Arc::new));
        if !full || past_end {
            return Ok(out);
        }
    }
}

async fn read_model(store: &dyn Store) -> StoreResult<Option<Arc<ActiveModel>>> {
    Ok(match store.active_value_model().await? {
        Some(stored) => Some(Arc::new(load_model(&stored)?)),
        None => None,
    })
}

async fn read_policy(store: &dyn Store) -> StoreResult<(TierPolicy, i64, Option<Timestamp>)> {
    Ok(match store.get_tier_policy().await? {
        Some(stored) => (
            load_policy(&stored)?,
            stored.revision,
            Some(stored.updated_at),
        ),
        None => (TierPolicy::default(), 0, None),
    })
}

/// Parses a stored model document into a runtime model.
pub fn load_model(stored: &patron_store::StoredModel) -> StoreResult<ActiveModel> {
    let doc: ModelDoc = serde_json::from_str(&stored.body)
        .map_err(|e| StoreError::Internal(format!("stored model {}: {e}", stored.version)))?;
    ActiveModel::from_doc(stored.version, stored.created_at, doc)
        .map_err(|e| StoreError::Internal(format!("stored model {}: {e}", stored.version)))
}

/// Parses a stored tier policy.
pub fn load_policy(stored: &patron_store::StoredPolicy) -> StoreResult<TierPolicy> {
    serde_json::from_str(&stored.body)
        .map_err(|e| StoreError::Internal(format!("stored tier policy: {e}")))
}

/// Builds an index of rows in id order (a later row replaces an earlier one with its id), on the
/// calling thread and one more: the ordered set is built in bulk from the sorted rows (a fraction
/// of inserting them one by one) while the other thread fills the hashed set, sized beforehand.
fn index_of(rows: Vec<Arc<SummaryRow>>) -> Index {
    std::thread::scope(|scope| {
        let by_id = scope.spawn(|| {
            let mut by_id = HashSet::with_capacity_and_hasher(
                rows.len(),
                foldhash::fast::RandomState::default(),
            );
            for row in &rows {
                by_id.replace(Entry(Arc::clone(row)));
            }
            by_id
        });
        let ordered: BTreeSet<Entry> = rows.iter().map(|row| Entry(Arc::clone(row))).collect();
        let by_id = by_id
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Index { ordered, by_id }
    })
}

/// Where the index came from at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadedFrom {
    /// Every customer read from the database.
    Database,
    /// The snapshot of this feed position, then the customers changed after it up to the start
    /// position, from the database.
    Snapshot { position: i64, changed: usize },
}

/// The index from the snapshot at `path` brought up to `start` from the feed, or `None` when
/// there is no usable snapshot (logged with the reason): none, unreadable, of another database,
/// older than the feed keeps, ahead of the feed, or further behind than re-reading every
/// customer would cost.
async fn index_from_snapshot(
    store: &Arc<dyn Store>,
    path: &Path,
    start: i64,
) -> StoreResult<Option<(Index, LoadedFrom)>> {
    let owned = path.to_owned();
    let header = tokio::task::spawn_blocking(move || snapshot::read_header(&owned))
        .await
        .map_err(|e| StoreError::Internal(format!("reading the index snapshot: {e}")))?;
    let header = match header {
        Ok(Some(h)) => h,
        Ok(None) => {
            tracing::info!(path = %path.display(), "no index snapshot yet: reading the database");
            return Ok(None);
        }
        Err(e) => {
            tracing::warn!(error = %e, "index snapshot unusable: reading the database");
            return Ok(None);
        }
    };
    let head = store.feed_head().await?;
    let behind = start.saturating_sub(header.position);
    let unusable = if header.database_id != head.database_id {
        Some("it is of another database")
    } else if header.position < head.pruned_through {
        Some("the feed no longer holds every change after it")
    } else if header.position > start {
        Some("it is ahead of the feed (a restored database?)")
    } else if u64::try_from(behind).unwrap_or(u64::MAX) > header.rows.max(100_000) {
        Some("it is more changes behind than there are customers")
    } else {
        None
    };
    if let Some(reason) = unusable {
        tracing::warn!(
            path = %path.display(),
            snapshot_position = header.position,
            feed_position = start,
            pruned_through = head.pruned_through,
            "index snapshot not used, {reason}: reading the database"
        );
        return Ok(None);
    }
    let owned = path.to_owned();
    let read = tokio::task::spawn_blocking(move || {
        snapshot::read(&owned).map(|(header, rows)| (header, index_of(rows)))
    })
    .await
    .map_err(|e| StoreError::Internal(format!("reading the index snapshot: {e}")))?;
    let (header, mut index) = match read {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "index snapshot unusable: reading the database");
            return Ok(None);
        }
    };
    // Every customer changed after the snapshot, as the database has it now.
    let mut after = header.position;
    let mut changed: Vec<CustomerId> = Vec::new();
    while after < start {
        let page = store.read_changes(after, 10_000).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        changed.extend(
            page.iter()
                .filter(|c| c.kind == ChangeKind::Customer)
                .filter_map(|c| CustomerId::parse(&c.key).ok()),
        );
    }
    changed.sort_unstable();
    changed.dedup();
    for ids in changed.chunks(patron_store::SUMMARY_IDS_PER_STATEMENT) {
        let rows = store.get_summaries(ids).await?;
        for id in ids {
            index.remove(id);
        }
        for row in rows {
            index.insert(Arc::new(row));
        }
    }
    Ok(Some((
        index,
        LoadedFrom::Snapshot {
            position: header.position,
            changed: changed.len(),
        },
    )))
}

impl Engine {
    /// Loads every summary, the active model and the tier policy from the store.
    pub async fn load(store: Arc<dyn Store>, currency: Currency) -> StoreResult<Arc<Self>> {
        Self::load_from(store, currency, None, 0)
            .await
            .map(|(engine, _)| engine)
    }

    /// As [`Engine::load`], reading the index from the snapshot at `snapshot` where one is
    /// usable and bringing it up to the feed position `start` (read before any view loaded);
    /// from the database otherwise.
    pub async fn load_from(
        store: Arc<dyn Store>,
        currency: Currency,
        snapshot: Option<&Path>,
        start: i64,
    ) -> StoreResult<(Arc<Self>, LoadedFrom)> {
        let started = std::time::Instant::now();
        let from_snapshot = match snapshot {
            Some(path) => index_from_snapshot(&store, path, start).await?,
            None => None,
        };
        let (index, from) = match from_snapshot {
            Some(loaded) => loaded,
            None => (load_index(&store).await?, LoadedFrom::Database),
        };
        let model = read_model(store.as_ref()).await?;
        let (policy, policy_revision, policy_updated) = read_policy(store.as_ref()).await?;
        tracing::info!(
            customers = index.len(),
            model = model.as_ref().map(|m| m.version),
            from = ?from,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "scoring index loaded"
        );
        let engine = Arc::new(Self {
            store,
            currency,
            index: RwLock::new(index),
            state: RwLock::new(Arc::new(State {
                model,
                policy,
                policy_revision,
                policy_updated,
            })),
            refresh_lock: tokio::sync::Mutex::new(()),
            version: std::sync::atomic::AtomicU64::new(0),
            snapshot: std::sync::Mutex::new(None),
            dated: std::sync::Mutex::new(DatedCache::default()),
        });
        Ok((engine, from))
    }

    /// Writes the index as the snapshot at `path`, as of the feed position `position`: the
    /// caller has read `position` as applied by every view before this call, so the rows hold
    /// at least every change up to it. Runs on a blocking thread.
    pub async fn write_snapshot(
        &self,
        path: &Path,
        database_id: &str,
        position: i64,
    ) -> Result<snapshot::Header, snapshot::SnapshotError> {
        let rows = self.all();
        let header = snapshot::Header {
            database_id: database_id.to_owned(),
            position,
            rows: rows.len() as u64,
        };
        let path = path.to_owned();
        let written = header.clone();
        tokio::task::spawn_blocking(move || snapshot::write(&path, &written, &rows))
            .await
            .map_err(|e| snapshot::SnapshotError::Io {
                path: PathBuf::new(),
                source: std::io::Error::other(e.to_string()),
            })??;
        Ok(header)
    }

    /// Re-reads the active model from the store (it changed).
    pub async fn reload_model(&self) -> StoreResult<()> {
        let model = read_model(self.store.as_ref()).await?;
        self.update_state(|s| State { model, ..s.clone() });
        Ok(())
    }

    /// Re-reads the tier policy from the store (it changed).
    pub async fn reload_policy(&self) -> StoreResult<()> {
        let (policy, policy_revision, policy_updated) = read_policy(self.store.as_ref()).await?;
        self.update_state(|s| State {
            policy,
            policy_revision,
            policy_updated,
            ..s.clone()
        });
        Ok(())
    }

    /// Replaces the whole index with the store's summaries.
    pub async fn reload_index(&self) -> StoreResult<()> {
        let _serial = self.refresh_lock.lock().await;
        let fresh = load_index(&self.store).await?;
        let mut index = match self.index.write() {
            Ok(i) => i,
            Err(poisoned) => poisoned.into_inner(),
        };
        *index = fresh;
        self.dated_cache().clear();
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The current model and policy.
    pub fn state(&self) -> Arc<State> {
        match self.state.read() {
            Ok(s) => Arc::clone(&s),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the model and/or policy.
    pub fn update_state(&self, f: impl FnOnce(&State) -> State) {
        let mut guard = match self.state.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let next = f(&guard);
        *guard = Arc::new(next);
    }

    /// One customer's entry.
    pub fn get(&self, id: &CustomerId) -> Option<Arc<SummaryRow>> {
        let index = match self.index.read() {
            Ok(i) => i,
            Err(poisoned) => poisoned.into_inner(),
        };
        index.get(id).cloned()
    }

    /// One customer's entry, reading it from the store if the index does not hold it (a customer
    /// created through another server process sharing the database).
    pub async fn get_or_load(&self, id: &CustomerId) -> StoreResult<Option<Arc<SummaryRow>>> {
        if let Some(row) = self.get(id) {
            return Ok(Some(row));
        }
        self.refresh(std::slice::from_ref(id)).await?;
        Ok(self.get(id))
    }

    /// Up to `limit` entries strictly after `after`, in id order. Holds the read lock only while
    /// copying the handles of one chunk.
    pub fn range_after(&self, after: Option<&CustomerId>, limit: usize) -> Vec<Arc<SummaryRow>> {
        use std::ops::Bound;
        let index = match self.index.read() {
            Ok(i) => i,
            Err(poisoned) => poisoned.into_inner(),
        };
        let lower = match after {
            Some(id) => Bound::Excluded(id),
            None => Bound::Unbounded,
        };
        index.after(lower).take(limit).cloned().collect()
    }

    /// Every entry in id order: a shared snapshot, rebuilt only after the index changed.
    pub fn all(&self) -> Snapshot {
        use std::sync::atomic::Ordering;
        let current = self.version.load(Ordering::Acquire);
        {
            let cached = match self.snapshot.lock() {
                Ok(c) => c,
                Err(poisoned) => poisoned.into_inner(),
            };
            if let Some((v, rows)) = cached.as_ref()
                && *v == current
            {
                return Arc::clone(rows);
            }
        }
        let (version, rows) = {
            let index = match self.index.read() {
                Ok(i) => i,
                Err(poisoned) => poisoned.into_inner(),
            };
            // The version only changes under the write lock: this pair is consistent.
            let version = self.version.load(Ordering::Acquire);
            let rows: Vec<Arc<SummaryRow>> =
                index.ordered.iter().map(|e| Arc::clone(&e.0)).collect();
            (version, Arc::new(rows))
        };
        let mut cached = match self.snapshot.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if cached.as_ref().is_none_or(|(v, _)| *v < version) {
            *cached = Some((version, Arc::clone(&rows)));
        }
        rows
    }

    /// Number of customers in the index.
    pub fn len(&self) -> usize {
        match self.index.read() {
            Ok(i) => i.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-reads the given customers from the store and updates the index; customers no longer
    /// stored (erased) are removed.
    pub async fn refresh(&self, ids: &[CustomerId]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let _serial = self.refresh_lock.lock().await;
        let rows = self.store.get_summaries(ids).await?;
        let mut index = match self.index.write() {
            Ok(i) => i,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut dated = self.dated_cache();
        for id in ids {
            index.remove(id);
            dated.forget(id);
        }
        drop(dated);
        for row in rows {
            index.insert(Arc::new(row));
        }
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }
}

impl Engine {
    fn dated_cache(&self) -> std::sync::MutexGuard<'_, DatedCache> {
        match self.dated.lock() {
            Ok(d) => d,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Customers whose dated histories a fit holds in memory ([`crate::dated`]).
    pub fn dated_customers(&self) -> usize {
        self.dated_cache().len()
    }

    /// For each of `rows`, its dated history if an event after `as_of` changed it (and it had
    /// begun by then): from memory where the one kept was read for the row as it is, else read
    /// from the store in bulk, a chunk of customers at a time, and kept.
    async fn dated_histories(
        &self,
        rows: &[Arc<SummaryRow>],
        as_of: Timestamp,
    ) -> Result<Vec<Option<Arc<DatedHistory>>>, FitError> {
        const CHUNK: usize = 5_000;
        const READS_IN_FLIGHT: usize = 2;
        let mut histories: Vec<Option<Arc<DatedHistory>>> = vec![None; rows.len()];
        let mut missing: Vec<usize> = Vec::new();
        {
            let dated = self.dated_cache();
            for (i, row) in rows.iter().enumerate() {
                if history::changed_after(row, as_of) && !history::began_after(row, as_of) {
                    match dated.current(row) {
                        Some(h) => histories[i] = Some(h),
                        None => missing.push(i),
                    }
                }
            }
        }
        // Chunks are read by tasks of their own, READS_IN_FLIGHT at a time, so that reading (on
        // its own connection each) and decoding overlap; they are taken in order.
        let read_chunk = |chunk: &[usize]| {
            let ids: Vec<CustomerId> = chunk.iter().map(|&i| rows[i].customer_id.clone()).collect();
            let store = Arc::clone(&self.store);
            tokio::spawn(
                async move {
                    store
                        .events_until(&ids, Timestamp::from_micros(i64::MAX), &dated::FIT_KINDS)
                        .await
                }
                // The read's spans and logs stay under the fit's request.
                .in_current_span(),
            )
        };
        let mut chunks = missing.chunks(CHUNK);
        let mut in_flight: std::collections::VecDeque<_> = chunks
            .by_ref()
            .take(READS_IN_FLIGHT)
            .map(|chunk| (chunk, read_chunk(chunk)))
            .collect();
        while let Some((chunk, read)) = in_flight.pop_front() {
            if let Some(next) = chunks.next() {
                in_flight.push_back((next, read_chunk(next)));
            }
            let events = read
                .await
                .map_err(|e| FitError::Internal(format!("history read task failed: {e}")))?
                .map_err(FitError::Store)?;
            // In customer id order: each customer's events are one run.
            let runs: HashMap<&CustomerId, &[Event]> = events
                .chunk_by(|a, b| a.customer_id == b.customer_id)
                .map(|run| (&run[0].customer_id, run))
                .collect();
            let read: Vec<(usize, Arc<DatedHistory>)> = chunk
                .iter()
                .map(|&i| {
                    let run = runs.get(&rows[i].customer_id).copied().unwrap_or(&[]);
                    (i, Arc::new(DatedHistory::from_events(&rows[i], run)))
                })
                .collect();
            {
                let index = match self.index.read() {
                    Ok(i) => i,
                    Err(poisoned) => poisoned.into_inner(),
                };
                let mut dated = self.dated_cache();
                for (i, h) in &read {
                    // Only while the index holds the row it was read for: never for a customer
                    // erased or changed meanwhile.
                    let row = &rows[*i];
                    if index
                        .get(&row.customer_id)
                        .is_some_and(|r| Arc::ptr_eq(r, row))
                    {
                        dated.keep(row.customer_id.clone(), Arc::clone(h));
                    }
                }
            }
            for (i, h) in read {
                histories[i] = Some(h);
            }
        }
        tracing::info!(
            changed = histories.iter().filter(|h| h.is_some()).count(),
            read = missing.len(),
            kept = self.dated_customers(),
            "fit: dated histories of the customers changed since the calibration end"
        );
        Ok(histories)
    }
}

/// Why a fit did not produce a model./// Why a fit did not produce a model.
#[derive(Debug)]
pub enum FitError {
    Model(ModelError),
    Store(StoreError),
    /// Not the caller's, not storage's: e.g. the model did not encode.
    Internal(String),
}

impl Engine {
    /// Fits a model on every customer in the index as of `request.calibration_end`, stores it,
    /// and makes it the active one if it became active in the store.
    pub async fn fit(
        &self,
        request: FitRequest,
        activate: bool,
        now: Timestamp,
    ) -> Result<(StoredModel, ModelDoc), FitError> {
        let rows = self.all();
        let histories = self.dated_histories(&rows, request.calibration_end).await?;
        let doc = tokio::task::spawn_blocking(move || fit_on(request, &rows, &histories))
            .await
            .map_err(|e| FitError::Model(ModelError::Math(format!("fit task failed: {e}"))))?
            .map_err(FitError::Model)?;
        let body = serde_json::to_string(&doc)
            .map_err(|e| FitError::Internal(format!("encode model: {e}")))?;
        let stored = self
            .store
            .insert_value_model(&body, now, doc.activation(activate))
            .await
            .map_err(FitError::Store)?;
        // The active model reaches this process's state (and every other's) through the change
        // feed.
        Ok((stored, doc))
    }
}

/// What a fit takes from a run of customers, in row order: the `lifetimes` inputs and revenue
/// of those who had purchased by the calibration end, value indexes, hold-out pairs and who had
/// bought. Kept per run and joined in order, rather than a record per customer, so a fit over
/// millions of customers holds only what it uses.
#[derive(Default)]
struct FitPart {
    population: Vec<DayRfm>,
    revenues: Vec<f64>,
    value_indexes: Vec<f64>,
    /// (inputs, purchase periods in the hold-out), with a hold-out.
    compared: Vec<(DayRfm, u64)>,
    /// Indexes into the rows of the customers with an active order by the calibration end.
    bought: Vec<usize>,
}

/// Fits a model on `rows` (every customer in the index) as of `request.calibration_end`, with a
/// hold-out report when the data go past it. `histories` holds the dated history of every row an
/// event after the calibration end changed ([`Engine::dated_histories`]).
fn fit_on(
    request: FitRequest,
    rows: &[Arc<SummaryRow>],
    histories: &[Option<Arc<DatedHistory>>],
) -> Result<ModelDoc, ModelError> {
    let calibration_end = request.calibration_end;
    let calibration_day = calibration_end.day();
    let holdout_end = request.holdout_end;
    // Only when the data go past the calibration end.
    let holdout_days = u32::try_from(holdout_end.day().as_days() - calibration_day.as_days())
        .ok()
        .filter(|d| *d > 0);
    // The model's periods: days, or calendar weeks (`lifetimes`' `freq='W'`).
    let period = |d: Day| match request.time_unit {
        TimeUnitKind::Days => d.as_days(),
        TimeUnitKind::Weeks => model::week_of(d),
    };
    // `lifetimes`' `duration_holdout`: the hold-out end's period minus the calibration end's.
    let holdout_periods = holdout_days
        .map(|_| u32::try_from(period(holdout_end.day()) - period(calibration_day)).unwrap_or(0));
    // Each customer who had had an event by the calibration end (or has none at all), on every
    // core: as of then, and its purchase periods in the hold-out.
    let parts = crate::par::map_chunks(rows, |offset, chunk| {
        let mut part = FitPart::default();
        for (i, today) in chunk.iter().enumerate() {
            if history::began_after(today, calibration_end) {
                continue;
            }
            let then = histories[offset + i]
                .as_ref()
                .map(|h| h.then(calibration_end));
            let (summary, orders) = match &then {
                Some(t) => (&t.summary, t.orders.as_slice()),
                None => (&today.summary, today.orders.as_slice()),
            };
            // Purchase periods after the calibration end, from today's active orders (counted
            // only if there is a hold-out). The calibration end's own day counts when an order of
            // that day came after the instant (today's row has more orders that day than then).
            let holdout = holdout_days.map(|_| {
                let on_end_day = |orders: &[OrderDay]| {
                    orders.iter().filter(|o| o.day == calibration_day).count()
                };
                // Distinct periods, counted in one pass: the orders ascend by day, so their
                // periods never decrease, and the calibration end's comes before any later day's.
                let mut last = (on_end_day(&today.orders) > on_end_day(orders))
                    .then(|| period(calibration_day));
                let mut count = u64::from(last.is_some());
                for day in today.orders.iter().map(|o| o.day) {
                    if day > calibration_day
                        && day <= holdout_end.day()
                        && last != Some(period(day))
                    {
                        last = Some(period(day));
                        count += 1;
                    }
                }
                count
            });
            if let Some(rfm) = DayRfm::from_row(summary, orders, calibration_end) {
                if let Some(actual) = holdout {
                    part.compared.push((rfm, actual));
                }
                part.population.push(rfm);
                part.revenues.push(summary.purchases.net_revenue as f64);
            }
            if let Some(vi) = PerceivedValue::from_summary(summary).value_index {
                part.value_indexes.push(vi);
            }
            if !orders.is_empty() {
                part.bought.push(offset + i);
            }
        }
        part
    });
    let sum = |f: fn(&FitPart) -> usize| parts.iter().map(f).sum::<usize>();
    let mut population = Vec::with_capacity(sum(|p| p.population.len()));
    let mut revenues = Vec::with_capacity(population.capacity());
    let mut value_indexes = Vec::with_capacity(sum(|p| p.value_indexes.len()));
    let mut compared = Vec::with_capacity(sum(|p| p.compared.len()));
    let mut bought = Vec::with_capacity(sum(|p| p.bought.len()));
    // In row order; each run is freed once copied.
    for part in parts {
        population.extend(part.population);
        revenues.extend(part.revenues);
        value_indexes.extend(part.value_indexes);
        compared.extend(part.compared);
        bought.extend(part.bought);
    }
    // The tracking series' counts: every purchase period up to the hold-out end's of the
    // customers who had bought by the calibration end, from today's orders.
    let tracking_counts = holdout_days.and_then(|_| {
        model::TrackingCounts::from_customers(
            bought
                .iter()
                .map(|&i| rows[i].orders.iter().map(|o| period(o.day))),
            period(holdout_end.day()),
        )
    });
    drop(bought);
    let calibration_period = period(calibration_day);
    let evaluate = |doc: &ModelDoc| -> Result<model::HoldoutReport, ModelError> {
        let model = model::ActiveModel::from_doc(0, calibration_end, doc.clone())?;
        let mut report = model::HoldoutReport::compute(
            &model,
            holdout_end,
            (holdout_days.unwrap_or(0), holdout_periods.unwrap_or(0)),
            &compared,
        );
        report.tracking = tracking_counts
            .as_ref()
            .and_then(|c| model::Tracking::compute(&model, c, calibration_period));
        Ok(report)
    };
    if request.choose_by_holdout && holdout_days.is_some() {
        return model::choose_by_holdout(request, &population, &revenues, &value_indexes, evaluate);
    }
    let mut doc = model::fit(request, &population, &revenues, value_indexes)?;
    if holdout_days.is_some() {
        doc.holdout = Some(evaluate(&doc)?);
    }
    Ok(doc)
}

#[async_trait::async_trait]
impl FeedView for Engine {
    async fn apply(&self, changes: &[Change]) -> StoreResult<()> {
        let mut customers: Vec<CustomerId> = Vec::new();
        let mut model = false;
        let mut policy = false;
        for c in changes {
            match c.kind {
                ChangeKind::Customer => {
                    if let Ok(id) = CustomerId::parse(&c.key) {
                        customers.push(id);
                    }
                }
                ChangeKind::Model => model = true,
                ChangeKind::TierPolicy => policy = true,
                _ => {}
            }
        }
        customers.sort_unstable();
        customers.dedup();
        for chunk in customers.chunks(patron_store::SUMMARY_IDS_PER_STATEMENT) {
            self.refresh(chunk).await?;
        }
        if model {
            self.reload_model().await?;
        }
        if policy {
            self.reload_policy().await?;
        }
        Ok(())
    }

    async fn reload(&self) -> StoreResult<()> {
        self.reload_index().await?;
        self.reload_model().await?;
        self.reload_policy().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use patron_domain::{
        Currency, CustomerId, Day, Event, EventData, EventId, OrderId, Purchase, Timestamp,
    };
    use patron_store::Store;
    use patron_store_sqlite::SqliteStore;

    use super::{Engine, LoadedFrom};

    fn at(day: i32) -> Timestamp {
        Day::from_days(day).start()
    }

    fn buy(customer: &str, id: &str, day: i32, amount: i64) -> Event {
        Event {
            customer_id: CustomerId::parse(customer).expect("id"),
            event_id: EventId::parse(id).expect("id"),
            occurred_at: at(day),
            data: EventData::Purchase(Purchase {
                order_id: OrderId::parse(id).expect("id"),
                amount,
                item_count: 1,
                channel: "web".into(),
            }),
        }
    }

    fn cid(id: &str) -> CustomerId {
        CustomerId::parse(id).expect("id")
    }

    fn usd() -> Currency {
        Currency::parse("USD").expect("currency")
    }

    /// Every entry of the engine's index, in id order.
    fn rows(engine: &Engine) -> Vec<patron_store::SummaryRow> {
        engine.all().iter().map(|r| (**r).clone()).collect()
    }

    /// An index read from a snapshot and brought up to date from the feed is the index read
    /// from the database: customers changed, created and erased after the snapshot included.
    /// A snapshot of another database, or one the feed has been pruned past, is not used.
    #[tokio::test]
    async fn a_snapshot_caught_up_from_the_feed_is_the_index_of_the_database() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let sqlite = SqliteStore::connect(&url).await.expect("store");
        sqlite.migrate().await.expect("migrate");
        let store: Arc<dyn Store> = Arc::new(sqlite);
        let first: Vec<Event> = (0..50)
            .map(|i| {
                buy(
                    &format!("c{i:02}"),
                    &format!("e{i:02}"),
                    100 + i,
                    1_000 + i64::from(i),
                )
            })
            .collect();
        store.record_events(&first, at(400)).await.expect("record");

        let path = dir.path().join("index.snapshot");
        let head = store.feed_head().await.expect("head");
        let (engine, from) =
            Engine::load_from(Arc::clone(&store), usd(), Some(&path), head.position)
                .await
                .expect("load");
        assert_eq!(from, LoadedFrom::Database, "no snapshot yet");
        engine
            .write_snapshot(&path, &head.database_id, head.position)
            .await
            .expect("write");

        // After the snapshot: a changed customer, a new one, an erased one.
        store
            .record_events(
                &[buy("c03", "e90", 300, 5_000), buy("new", "e91", 301, 700)],
                at(400),
            )
            .await
            .expect("record");
        store
            .delete_customer(&CustomerId::parse("c07").expect("id"))
            .await
            .expect("erase");
        let now = store.feed_head().await.expect("head").position;
        assert!(now > head.position);

        let (caught_up, from) = Engine::load_from(Arc::clone(&store), usd(), Some(&path), now)
            .await
            .expect("load");
        assert_eq!(
            from,
            LoadedFrom::Snapshot {
                position: head.position,
                changed: 3
            }
        );
        let fresh = Engine::load(Arc::clone(&store), usd()).await.expect("load");
        let expected = rows(&fresh);
        assert_eq!(expected.len(), 50, "49 of the first and the new one");
        // The load reads runs of customers at once: the same rows as asking for each by id.
        let mut ids: Vec<CustomerId> = (0..50).map(|i| cid(&format!("c{i:02}"))).collect();
        ids.push(cid("new"));
        let mut by_id = store.get_summaries(&ids).await.expect("rows");
        by_id.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
        assert_eq!(by_id, expected);
        assert_eq!(
            store.customer_id_cuts(2).await.expect("cuts").len(),
            1,
            "the load above read two runs (with two cores)"
        );
        assert_eq!(rows(&caught_up), expected);
        assert_ne!(rows(&engine), expected, "the snapshot itself is older");

        // A snapshot of another database is not used.
        engine
            .write_snapshot(&path, "another-database", head.position)
            .await
            .expect("write");
        let (other, from) = Engine::load_from(Arc::clone(&store), usd(), Some(&path), now)
            .await
            .expect("load");
        assert_eq!(from, LoadedFrom::Database);
        assert_eq!(rows(&other), expected);

        // Nor one the feed has been pruned past: what changed after it is gone from the feed.
        engine
            .write_snapshot(&path, &head.database_id, head.position)
            .await
            .expect("write");
        let later = Timestamp::from_micros(i64::MAX / 2);
        store.prune_feed(later, later).await.expect("prune");
        let pruned = store.feed_head().await.expect("head");
        assert!(pruned.pruned_through > head.position, "{pruned:?}");
        let (after_prune, from) = Engine::load_from(Arc::clone(&store), usd(), Some(&path), now)
            .await
            .expect("load");
        assert_eq!(from, LoadedFrom::Database);
        assert_eq!(rows(&after_prune), expected);

        // A damaged file: the database instead, and no error.
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 12;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        let (damaged, from) = Engine::load_from(Arc::clone(&store), usd(), Some(&path), now)
            .await
            .expect("load");
        assert_eq!(from, LoadedFrom::Database);
        assert_eq!(rows(&damaged), expected);
    }
}
