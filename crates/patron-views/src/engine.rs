//! The read path: every customer's summary in memory, the active model and the tier policy.
//!
//! Scoring a customer never touches the database: GetCustomerValue reads one entry of an ordered
//! map under a read lock and computes the profile. The change feed keeps the map, the model and
//! the policy current ([`FeedView`]): every committed write, by this process or another sharing
//! the database, reaches it in commit order.

use std::collections::{BTreeMap, HashMap};
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

/// Every customer's entry, in id order for scans and hashed for point lookups (GetCustomerValue
/// reads one entry per call: a hash lookup is a fraction of a search among a million string keys).
#[derive(Debug, Default)]
struct Index {
    ordered: BTreeMap<CustomerId, Arc<SummaryRow>>,
    by_id: std::collections::HashMap<CustomerId, Arc<SummaryRow>>,
}

impl Index {
    fn insert(&mut self, row: Arc<SummaryRow>) {
        self.by_id.insert(row.customer_id.clone(), Arc::clone(&row));
        self.ordered.insert(row.customer_id.clone(), row);
    }

    fn remove(&mut self, id: &CustomerId) {
        self.by_id.remove(id);
        self.ordered.remove(id);
    }

    fn get(&self, id: &CustomerId) -> Option<&Arc<SummaryRow>> {
        self.by_id.get(id)
    }

    fn len(&self) -> usize {
        self.ordered.len()
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

async fn load_index(store: &dyn Store) -> StoreResult<Index> {
    let mut index = Index::default();
    let mut after: Option<CustomerId> = None;
    loop {
        let page = store.scan_summaries(after.as_ref(), LOAD_PAGE).await?;
        let done = page.len() < LOAD_PAGE;
        after = page.last().map(|r| r.customer_id.clone());
        for row in page {
            index.insert(Arc::new(row));
        }
        if done {
            return Ok(index);
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

impl Engine {
    /// Loads every summary, the active model and the tier policy from the store.
    pub async fn load(store: Arc<dyn Store>, currency: Currency) -> StoreResult<Arc<Self>> {
        let started = std::time::Instant::now();
        let index = load_index(store.as_ref()).await?;
        let model = read_model(store.as_ref()).await?;
        let (policy, policy_revision, policy_updated) = read_policy(store.as_ref()).await?;
        tracing::info!(
            customers = index.len(),
            model = model.as_ref().map(|m| m.version),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "scoring index loaded"
        );
        Ok(Arc::new(Self {
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
        }))
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
        let fresh = load_index(self.store.as_ref()).await?;
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
            Some(id) => Bound::Excluded(id.clone()),
            None => Bound::Unbounded,
        };
        index
            .ordered
            .range((lower, Bound::Unbounded))
            .take(limit)
            .map(|(_, v)| Arc::clone(v))
            .collect()
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
            let rows: Vec<Arc<SummaryRow>> = index.ordered.values().cloned().collect();
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

/// What a fit takes from one customer as of the calibration end.
struct FitCustomer {
    /// The `lifetimes` inputs; `None` without a purchase by then.
    rfm: Option<DayRfm>,
    revenue: f64,
    value_index: Option<f64>,
    /// Had an active order by then.
    bought: bool,
    /// Purchase periods in the hold-out; `None` without one.
    holdout: Option<u64>,
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
    let pairs: Vec<(&Arc<SummaryRow>, &Option<Arc<DatedHistory>>)> =
        rows.iter().zip(histories).collect();
    let customers: Vec<Option<FitCustomer>> = crate::par::map(&pairs, |(today, history)| {
        if history::began_after(today, calibration_end) {
            return None;
        }
        let then = history.as_ref().map(|h| h.then(calibration_end));
        let (summary, orders) = match &then {
            Some(t) => (&t.summary, t.orders.as_slice()),
            None => (&today.summary, today.orders.as_slice()),
        };
        // Purchase periods after the calibration end, from today's active orders (counted only
        // if there is a hold-out). The calibration end's own day counts when an order of that
        // day came after the instant (today's row has more orders that day than then).
        let holdout = holdout_days.map(|_| {
            let on_end_day =
                |orders: &[OrderDay]| orders.iter().filter(|o| o.day == calibration_day).count();
            // Distinct periods, counted in one pass: the orders ascend by day, so their periods
            // never decrease, and the calibration end's comes before any later day's.
            let mut last =
                (on_end_day(&today.orders) > on_end_day(orders)).then(|| period(calibration_day));
            let mut count = u64::from(last.is_some());
            for day in today.orders.iter().map(|o| o.day) {
                if day > calibration_day && day <= holdout_end.day() && last != Some(period(day)) {
                    last = Some(period(day));
                    count += 1;
                }
            }
            count
        });
        Some(FitCustomer {
            rfm: DayRfm::from_row(summary, orders, calibration_end),
            revenue: summary.purchases.net_revenue as f64,
            value_index: PerceivedValue::from_summary(summary).value_index,
            bought: !orders.is_empty(),
            holdout,
        })
    });
    // The tracking series' counts: every purchase period up to the hold-out end's of the
    // customers who had bought by the calibration end, from today's orders.
    let tracking_counts = holdout_days.and_then(|_| {
        model::TrackingCounts::from_customers(
            pairs
                .iter()
                .zip(&customers)
                .filter(|(_, c)| c.as_ref().is_some_and(|c| c.bought))
                .map(|((today, _), _)| today.orders.iter().map(|o| period(o.day))),
            period(holdout_end.day()),
        )
    });
    let calibration_period = period(calibration_day);
    let mut population = Vec::with_capacity(customers.len());
    let mut revenues = Vec::with_capacity(customers.len());
    let mut value_indexes = Vec::new();
    let mut compared = Vec::new();
    for c in customers.iter().flatten() {
        if let Some(rfm) = c.rfm {
            if let Some(actual) = c.holdout {
                compared.push((rfm, actual));
            }
            population.push(rfm);
            revenues.push(c.revenue);
        }
        if let Some(vi) = c.value_index {
            value_indexes.push(vi);
        }
    }
    drop(customers);
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
