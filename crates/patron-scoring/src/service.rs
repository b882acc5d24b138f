//! The ScoringService handlers.

use std::collections::HashSet;
use std::sync::Arc;

use patron_domain::value::{TierDef, TierMetric, TierMode, TierPolicy};
use patron_domain::{
    CustomerId, CustomerSummary, Day, RatingTotal, Timestamp, Violations, clv::TimeUnitKind,
};
use patron_grpc::time::{from_proto, to_proto};
use patron_grpc::{ApiError, ApiResult, PageToken, Reason, Respond, page_size};
use patron_proto::scoring::v1 as pb;
use patron_proto::scoring::v1::scoring_service_server::ScoringService;
use patron_store::{OrderDay, StoredModel, SummaryRow};
use tonic::{Request, Response, Status};

use patron_views::engine::{Engine, FitError, State, load_model, load_policy};
use patron_views::history;
use patron_views::model::{self, BgNbdDoc, FitRequest, ModelDoc, PurchaseModel};
use patron_views::profile::{self, Subject};

use crate::convert;

/// Most ids one BatchGetCustomerValues call may carry.
pub const MAX_BATCH_IDS: usize = 1_000;
/// Default and largest StreamCustomerValues chunk.
pub const DEFAULT_CHUNK: usize = 100;
pub const MAX_CHUNK: usize = 10_000;

/// The ScoringService implementation.
#[derive(Debug, Clone)]
pub struct ScoringApi {
    engine: Arc<Engine>,
}

impl ScoringApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

fn subject_of(row: &SummaryRow) -> Subject<'_> {
    Subject {
        customer_id: row.customer_id.as_str(),
        summary: &row.summary,
        orders: &row.orders,
        since: Some(row.since()),
    }
}

/// What a value read returns besides the profile's numbers.
#[derive(Debug, Clone, Copy)]
struct View {
    /// The driver sentences (not in StreamCustomerValues' BASIC view).
    drivers: bool,
    /// The model values' intervals (`intervals` on the request).
    intervals: bool,
}

fn value_of(
    row: &SummaryRow,
    as_of: Timestamp,
    state: &State,
    engine: &Engine,
    intervals: bool,
) -> pb::CustomerValue {
    let view = View {
        drivers: true,
        intervals,
    };
    value_view(row, as_of, state, engine, view)
}

/// [`value_of`], with what `view` asks for.
fn value_view(
    row: &SummaryRow,
    as_of: Timestamp,
    state: &State,
    engine: &Engine,
    view: View,
) -> pb::CustomerValue {
    let subject = subject_of(row);
    let scored = profile::compute(&subject, as_of, state);
    let currency = engine.currency();
    let mut value = convert::to_proto_view(&subject, as_of, state, &scored, currency, view.drivers);
    if view.intervals
        && let (Some(model), Some(rfm), Some(clv)) = (
            state.model.as_deref(),
            scored.rfm.as_ref(),
            value.clv.as_mut(),
        )
    {
        clv.intervals = model
            .intervals(rfm)
            .map(|i| convert::intervals_to_proto(&i, currency));
    }
    value
}

fn unit_from_proto(u: i32) -> Result<TimeUnitKind, String> {
    match pb::TimeUnit::try_from(u) {
        Ok(pb::TimeUnit::Unspecified | pb::TimeUnit::Day) => Ok(TimeUnitKind::Days),
        Ok(pb::TimeUnit::Week) => Ok(TimeUnitKind::Weeks),
        Err(_) => Err(format!("{u} is not a TimeUnit value")),
    }
}

/// The proto name of a purchase model.
pub fn purchase_model_to_proto(m: PurchaseModel) -> pb::PurchaseModel {
    match m {
        PurchaseModel::BgNbd => pb::PurchaseModel::BgNbd,
        PurchaseModel::MbgNbd => pb::PurchaseModel::MbgNbd,
        PurchaseModel::ParetoNbd => pb::PurchaseModel::ParetoNbd,
    }
}

fn purchase_model_from_proto(m: i32) -> Result<PurchaseModel, String> {
    match pb::PurchaseModel::try_from(m) {
        Ok(pb::PurchaseModel::Unspecified) => Ok(PurchaseModel::DEFAULT),
        Ok(pb::PurchaseModel::BgNbd) => Ok(PurchaseModel::BgNbd),
        Ok(pb::PurchaseModel::MbgNbd) => Ok(PurchaseModel::MbgNbd),
        Ok(pb::PurchaseModel::ParetoNbd) => Ok(PurchaseModel::ParetoNbd),
        Err(_) => Err(format!("{m} is not a PurchaseModel value")),
    }
}

fn bg_fit_to_proto(b: &BgNbdDoc) -> pb::BgNbdFit {
    pb::BgNbdFit {
        r: b.r,
        alpha: b.alpha,
        a: b.a,
        b: b.b,
        log_likelihood: b.log_likelihood,
        iterations: i32::try_from(b.iterations).unwrap_or(i32::MAX),
        converged: b.converged,
        gradient_norm: b.gradient_norm,
        standard_errors: b.standard_errors.map(Vec::from).unwrap_or_default(),
    }
}

/// A stored model as proto.
fn holdout_to_proto(h: &model::HoldoutReport) -> pb::HoldoutReport {
    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    pb::HoldoutReport {
        holdout_end: Some(to_proto(Timestamp::from_micros(h.end))),
        holdout_days: i32::try_from(h.days).unwrap_or(i32::MAX),
        holdout_periods: i32::try_from(h.periods.unwrap_or(h.days)).unwrap_or(i32::MAX),
        customers: int(h.customers),
        actual_purchases: int(h.actual_purchases),
        predicted_purchases: h.predicted_purchases,
        mean_absolute_error: h.mean_absolute_error,
        root_mean_squared_error: h.root_mean_squared_error,
        aggregate_error_percent: h.aggregate_error_percent,
        by_frequency: h
            .by_frequency
            .iter()
            .map(|r| pb::HoldoutByFrequency {
                calibration_frequency: i32::try_from(r.frequency).unwrap_or(i32::MAX),
                or_more: r.or_more,
                customers: int(r.customers),
                mean_actual_purchases: r.mean_actual,
                mean_predicted_purchases: r.mean_predicted,
            })
            .collect(),
        tracking: h.tracking.as_ref().map(|t| pb::HoldoutTracking {
            start: Some(to_proto(Day::from_days(t.start_day).start())),
            calibration_points: i32::try_from(t.calibration_points).unwrap_or(i32::MAX),
            actual_cumulative: t.actual.iter().map(|n| int(*n)).collect(),
            predicted_cumulative: t.predicted.clone(),
        }),
    }
}

pub fn model_to_proto(
    stored_version: i64,
    created_at: Timestamp,
    active: bool,
    doc: &ModelDoc,
) -> pb::ValueModel {
    pb::ValueModel {
        version: stored_version,
        create_time: Some(to_proto(created_at)),
        active,
        calibration_end: Some(to_proto(Timestamp::from_micros(doc.calibration_end))),
        time_unit: match doc.time_unit {
            TimeUnitKind::Days => pb::TimeUnit::Day,
            TimeUnitKind::Weeks => pb::TimeUnit::Week,
        }
        .into(),
        calendar_weeks: doc.calendar_weeks,
        bg_nbd: Some(bg_fit_to_proto(&doc.bg_nbd)),
        purchase_model: purchase_model_to_proto(doc.purchase_model).into(),
        mbg_nbd: doc.mbg_nbd.as_ref().map(bg_fit_to_proto),
        pareto_nbd: doc.pareto_nbd.as_ref().map(|p| pb::ParetoNbdFit {
            r: p.r,
            alpha: p.alpha,
            s: p.s,
            beta: p.beta,
            log_likelihood: p.log_likelihood,
            iterations: i32::try_from(p.iterations).unwrap_or(i32::MAX),
            converged: p.converged,
            gradient_norm: p.gradient_norm,
            standard_errors: p.standard_errors.map(Vec::from).unwrap_or_default(),
        }),
        gamma_gamma: doc.gamma_gamma.as_ref().map(|g| pb::GammaGammaFit {
            p: g.p,
            q: g.q,
            v: g.v,
            log_likelihood: g.log_likelihood,
            iterations: i32::try_from(g.iterations).unwrap_or(i32::MAX),
            converged: g.converged,
            customers: i64::try_from(g.customers).unwrap_or(i64::MAX),
            gradient_norm: g.gradient_norm,
            standard_errors: g.standard_errors.map(Vec::from).unwrap_or_default(),
        }),
        penalizer_coef: doc.penalizer_coef,
        holdout: doc.holdout.as_ref().map(holdout_to_proto),
        holdout_comparison: doc
            .holdout_comparison
            .iter()
            .map(|c| pb::HoldoutComparison {
                purchase_model: purchase_model_to_proto(c.purchase_model).into(),
                mean_absolute_error: c.mean_absolute_error,
                root_mean_squared_error: c.root_mean_squared_error,
                aggregate_error_percent: c.aggregate_error_percent,
                chosen: c.chosen,
            })
            .collect(),
        customers: i64::try_from(doc.customers).unwrap_or(i64::MAX),
        horizon_months: i32::try_from(doc.horizon_months).unwrap_or(i32::MAX),
        horizon_days: doc
            .horizon_days
            .map_or(0, |d| i32::try_from(d).unwrap_or(i32::MAX)),
        monthly_discount_rate: doc.monthly_discount_rate,
        fit_millis: i64::try_from(doc.fit_millis).unwrap_or(i64::MAX),
    }
}

fn stored_to_proto(stored: &StoredModel) -> ApiResult<pb::ValueModel> {
    let m = load_model(stored)?;
    Ok(model_to_proto(
        stored.version,
        stored.created_at,
        stored.active,
        &m.doc,
    ))
}

fn policy_to_proto(state: &State) -> pb::TierPolicy {
    let p = &state.policy;
    pb::TierPolicy {
        metric: convert::metric_to_proto(p.metric).into(),
        mode: match p.mode {
            TierMode::Percentile => pb::TierMode::Percentile,
            TierMode::Absolute => pb::TierMode::Absolute,
        }
        .into(),
        tiers: p
            .tiers
            .iter()
            .map(|t| pb::TierDefinition {
                name: t.name.clone(),
                min_value: t.min_value,
                share_percent: t.share_percent,
            })
            .collect(),
        revision: state.policy_revision,
        update_time: state.policy_updated.map(to_proto),
    }
}

fn policy_from_proto(
    p: &pb::TierPolicy,
    current: &TierPolicy,
    mask: &[String],
    v: &mut Violations,
) -> TierPolicy {
    let pb::TierPolicy {
        metric,
        mode,
        tiers,
        revision: _,
        update_time: _,
    } = p;
    let all = mask.is_empty();
    let wants = |f: &str| all || mask.iter().any(|m| m == f);
    let metric = if wants("metric") {
        match pb::TierMetric::try_from(*metric) {
            Ok(pb::TierMetric::Unspecified | pb::TierMetric::PredictedClv) => {
                TierMetric::PredictedClv
            }
            Ok(pb::TierMetric::HistoricalRevenue) => TierMetric::HistoricalRevenue,
            Ok(pb::TierMetric::Composite) => TierMetric::Composite,
            Err(_) => {
                v.add(
                    "policy.metric",
                    format!("{metric} is not a TierMetric value"),
                );
                current.metric
            }
        }
    } else {
        current.metric
    };
    let mode = if wants("mode") {
        match pb::TierMode::try_from(*mode) {
            Ok(pb::TierMode::Unspecified | pb::TierMode::Percentile) => TierMode::Percentile,
            Ok(pb::TierMode::Absolute) => TierMode::Absolute,
            Err(_) => {
                v.add("policy.mode", format!("{mode} is not a TierMode value"));
                current.mode
            }
        }
    } else {
        current.mode
    };
    let tiers = if wants("tiers") {
        tiers
            .iter()
            .map(|t| {
                let pb::TierDefinition {
                    name,
                    min_value,
                    share_percent,
                } = t;
                TierDef {
                    name: name.clone(),
                    min_value: *min_value,
                    share_percent: *share_percent,
                }
            })
            .collect()
    } else {
        current.tiers.clone()
    };
    TierPolicy {
        metric,
        mode,
        tiers,
    }
}

/// The `as_of` of a request: unset means now; not in the future.
fn parse_as_of(as_of: Option<prost_types::Timestamp>) -> ApiResult<Timestamp> {
    let now = patron_grpc::time::now();
    let Some(t) = as_of else {
        return Ok(now);
    };
    let t = from_proto(&t)
        .map_err(|e| ApiError::invalid_field(Reason::InvalidField, "as_of", e.to_string()))?;
    if t > now {
        return Err(ApiError::invalid_field(
            Reason::InvalidField,
            "as_of",
            "must not be in the future",
        ));
    }
    Ok(t)
}

/// Per-customer filter of StreamCustomerValues.
#[derive(Debug, Default)]
struct Filter {
    tiers: HashSet<String>,
    segments: HashSet<i32>,
    quadrants: HashSet<i32>,
    min_clv: Option<i64>,
}

impl Filter {
    fn parse(
        f: Option<&pb::CustomerValueFilter>,
        state: &State,
        engine: &Engine,
    ) -> ApiResult<Self> {
        let Some(pb::CustomerValueFilter {
            tiers,
            segments,
            quadrants,
            min_predicted_clv,
        }) = f
        else {
            return Ok(Self::default());
        };
        let mut v = Violations::new();
        for (i, t) in tiers.iter().enumerate() {
            if state.policy.rank_of(t).is_none() {
                v.add(
                    format!("filter.tiers[{i}]"),
                    format!("{t:?} is not a tier of the current policy"),
                );
            }
        }
        for (i, s) in segments.iter().enumerate() {
            if !matches!(pb::RfmSegment::try_from(*s), Ok(x) if x != pb::RfmSegment::Unspecified) {
                v.add(
                    format!("filter.segments[{i}]"),
                    format!("{s} is not an RFM segment"),
                );
            }
        }
        for (i, q) in quadrants.iter().enumerate() {
            if !matches!(pb::Quadrant::try_from(*q), Ok(x) if x != pb::Quadrant::Unspecified) {
                v.add(
                    format!("filter.quadrants[{i}]"),
                    format!("{q} is not a quadrant"),
                );
            }
        }
        let min_clv = min_predicted_clv.as_ref().and_then(|m| {
            if m.currency_code != engine.currency().as_str() {
                v.add(
                    "filter.min_predicted_clv.currency_code",
                    format!("must be {}", engine.currency()),
                );
                return None;
            }
            if m.minor_units < 0 {
                v.add(
                    "filter.min_predicted_clv.minor_units",
                    "must not be negative",
                );
                return None;
            }
            Some(m.minor_units)
        });
        if !v.is_empty() {
            return Err(ApiError::invalid(v));
        }
        Ok(Self {
            tiers: tiers.iter().map(|t| t.to_lowercase()).collect(),
            segments: segments.iter().copied().collect(),
            quadrants: quadrants.iter().copied().collect(),
            min_clv,
        })
    }

    /// Whether every profile passes.
    fn is_empty(&self) -> bool {
        self.tiers.is_empty()
            && self.segments.is_empty()
            && self.quadrants.is_empty()
            && self.min_clv.is_none()
    }

    fn matches(&self, value: &pb::CustomerValue) -> bool {
        if !self.tiers.is_empty()
            && !value
                .tier
                .as_ref()
                .is_some_and(|t| self.tiers.contains(&t.name.to_lowercase()))
        {
            return false;
        }
        if !self.segments.is_empty()
            && !value
                .rfm
                .as_ref()
                .is_some_and(|r| self.segments.contains(&r.segment))
        {
            return false;
        }
        if !self.quadrants.is_empty() && !self.quadrants.contains(&value.quadrant) {
            return false;
        }
        if let Some(min) = self.min_clv {
            let clv = value
                .clv
                .as_ref()
                .and_then(|c| c.predicted_clv.as_ref())
                .map(|m| m.minor_units);
            if clv.is_none_or(|c| c < min) {
                return false;
            }
        }
        true
    }
}

fn check_rating(
    v: Option<i32>,
    min: i32,
    max: i32,
    field: &str,
    violations: &mut Violations,
) -> Option<u8> {
    let r = v?;
    if (min..=max).contains(&r) {
        u8::try_from(r).ok()
    } else {
        violations.add(field, format!("must be between {min} and {max}"));
        None
    }
}

/// The answer stream of StreamCustomerValues.
type ValueStream = std::pin::Pin<
    Box<
        dyn tokio_stream::Stream<Item = Result<pb::StreamCustomerValuesResponse, Status>>
            + Send
            + 'static,
    >,
>;

/// The handlers, one per RPC: each returns an [`ApiResult`], which the `ScoringService` impl
/// below converts to a `Status` once, in [`Respond::respond`].
impl ScoringApi {
    async fn get_customer_value(
        &self,
        request: Request<pb::GetCustomerValueRequest>,
    ) -> ApiResult<pb::GetCustomerValueResponse> {
        let pb::GetCustomerValueRequest {
            customer_id,
            as_of,
            intervals,
        } = request.into_inner();
        let id = patron_grpc::parse_customer_id(&customer_id, "customer_id")?;
        let as_of = parse_as_of(as_of)?;
        let row = self.engine.get(&id).ok_or_else(|| {
            ApiError::not_found(Reason::CustomerNotFound, "customer", id.as_str())
        })?;
        let state = self.engine.state();
        if !history::changed_after(&row, as_of) && !history::began_after(&row, as_of) {
            // Nothing after `as_of` changed the row (every call without `as_of`): as it is.
            return Ok(pb::GetCustomerValueResponse {
                value: Some(value_of(&row, as_of, &state, &self.engine, intervals)),
            });
        }
        let then = history::rows_as_of(self.engine.store().as_ref(), vec![row], as_of).await?;
        let Some(row) = then.rows.first() else {
            return Err(ApiError::invalid_field(
                Reason::AsOfBeforeFirstEvent,
                "as_of",
                "is before the customer's first event; there is nothing to describe",
            ));
        };
        Ok(pb::GetCustomerValueResponse {
            value: Some(value_of(row, as_of, &state, &self.engine, intervals)),
        })
    }

    async fn batch_get_customer_values(
        &self,
        request: Request<pb::BatchGetCustomerValuesRequest>,
    ) -> ApiResult<pb::BatchGetCustomerValuesResponse> {
        let pb::BatchGetCustomerValuesRequest {
            customer_ids,
            as_of,
            intervals,
        } = request.into_inner();
        let as_of = parse_as_of(as_of)?;
        if customer_ids.is_empty() {
            return Err(ApiError::invalid_field(
                Reason::EmptyBatch,
                "customer_ids",
                "must contain 1 to 1000 ids",
            ));
        }
        if customer_ids.len() > MAX_BATCH_IDS {
            return Err(ApiError::invalid_field(
                Reason::BatchTooLarge,
                "customer_ids",
                format!(
                    "has {} ids; at most {MAX_BATCH_IDS} are allowed per call",
                    customer_ids.len()
                ),
            ));
        }
        let mut v = Violations::new();
        let ids: Vec<Option<CustomerId>> = customer_ids
            .iter()
            .enumerate()
            .map(|(i, s)| v.check(&format!("customer_ids[{i}]"), CustomerId::parse(s.as_str())))
            .collect();
        if !v.is_empty() {
            return Err(ApiError::invalid(v));
        }
        let state = self.engine.state();
        let mut rows = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids.into_iter().flatten() {
            match self.engine.get(&id) {
                Some(row) => rows.push(row),
                None => missing.push(id.into_string()),
            }
        }
        let then = history::rows_as_of(self.engine.store().as_ref(), rows, as_of).await?;
        Ok(pb::BatchGetCustomerValuesResponse {
            values: then
                .rows
                .iter()
                .map(|row| value_of(row, as_of, &state, &self.engine, intervals))
                .collect(),
            missing_customer_ids: missing,
            before_first_event_customer_ids: then
                .before_first_event
                .into_iter()
                .map(CustomerId::into_string)
                .collect(),
        })
    }

    async fn stream_customer_values(
        &self,
        request: Request<pb::StreamCustomerValuesRequest>,
    ) -> ApiResult<ValueStream> {
        let pb::StreamCustomerValuesRequest {
            filter,
            chunk_size,
            view,
            as_of,
            intervals,
        } = request.into_inner();
        let as_of = parse_as_of(as_of)?;
        // Today's rows need no rebuilding: the walk reads the store only for an earlier instant.
        let past = as_of < patron_grpc::time::now();
        let drivers = match pb::CustomerValueView::try_from(view) {
            Ok(pb::CustomerValueView::Unspecified | pb::CustomerValueView::Full) => true,
            Ok(pb::CustomerValueView::Basic) => false,
            Err(_) => {
                return Err(ApiError::invalid_field(
                    Reason::InvalidField,
                    "view",
                    format!("{view} is not a CustomerValueView value"),
                ));
            }
        };
        let chunk = match chunk_size {
            0 => DEFAULT_CHUNK,
            n if n < 0 || n as usize > MAX_CHUNK => {
                return Err(ApiError::invalid_field(
                    Reason::InvalidField,
                    "chunk_size",
                    format!("must be between 0 and {MAX_CHUNK}"),
                ));
            }
            n => n as usize,
        };
        let state = self.engine.state();
        let filter = Filter::parse(filter.as_ref(), &state, &self.engine)?;
        let walk = Walk {
            engine: Arc::clone(&self.engine),
            state,
            filter: Arc::new(filter),
            now: as_of,
            past,
            view: View { drivers, intervals },
            chunk,
            after: None,
            exhausted: false,
            ready: std::collections::VecDeque::new(),
            out: Vec::new(),
        };
        let stream = futures::stream::unfold(walk, |mut walk| async move {
            walk.next_message().await.map(|m| (m, walk))
        });
        Ok(Box::pin(stream))
    }

    async fn fit_value_model(
        &self,
        request: Request<pb::FitValueModelRequest>,
    ) -> ApiResult<pb::FitValueModelResponse> {
        let pb::FitValueModelRequest {
            calibration_end,
            time_unit,
            horizon_months,
            monthly_discount_rate,
            activate,
            purchase_model,
            penalizer_coef,
            holdout_end,
            choose_by_holdout,
            horizon_days,
        } = request.into_inner();
        let now = patron_grpc::time::now();
        let mut v = Violations::new();
        let calibration_end = match calibration_end {
            None => Some(now),
            Some(t) => match from_proto(&t) {
                Ok(t) if t > now => {
                    v.add("calibration_end", "must not be in the future");
                    None
                }
                Ok(t) => Some(t),
                Err(e) => {
                    v.add("calibration_end", e.to_string());
                    None
                }
            },
        };
        let unit = v.check("time_unit", unit_from_proto(time_unit));
        let purchase_model_given = purchase_model != 0;
        let purchase_model = v.check("purchase_model", purchase_model_from_proto(purchase_model));
        let horizon = match horizon_months {
            0 => Some(12),
            1..=120 => u32::try_from(horizon_months).ok(),
            _ => {
                v.add("horizon_months", "must be between 1 and 120 (0 means 12)");
                None
            }
        };
        let horizon_days = match horizon_days {
            0 => None,
            1..=36_500 if horizon_months != 0 => {
                v.add(
                    "horizon_days",
                    "set horizon_months or horizon_days, not both",
                );
                None
            }
            1..=36_500 => u32::try_from(horizon_days).ok(),
            _ => {
                v.add(
                    "horizon_days",
                    "must be between 1 and 36500 (0: use horizon_months)",
                );
                None
            }
        };
        let rate = monthly_discount_rate.unwrap_or(0.01);
        if !(0.0..1.0).contains(&rate) {
            v.add("monthly_discount_rate", "must be at least 0 and below 1");
        }
        let holdout_end = match holdout_end {
            None => Some(now),
            Some(t) => match from_proto(&t) {
                Ok(t) if t > now => {
                    v.add("holdout_end", "must not be in the future");
                    None
                }
                Ok(t) if calibration_end.is_some_and(|c| t <= c) => {
                    v.add("holdout_end", "must be after calibration_end");
                    None
                }
                Ok(t) => Some(t),
                Err(e) => {
                    v.add("holdout_end", e.to_string());
                    None
                }
            },
        };
        if choose_by_holdout {
            if purchase_model_given {
                v.add(
                    "purchase_model",
                    "leave unspecified with choose_by_holdout: every model is fitted",
                );
            }
            if let (Some(c), Some(h)) = (calibration_end, holdout_end)
                && c.day() >= h.day()
            {
                v.add(
                    "choose_by_holdout",
                    "needs a hold-out: a calibration_end before the day of holdout_end (or of now)",
                );
            }
        }
        let penalizer_coef = penalizer_coef.unwrap_or(0.0);
        if !(0.0..=10.0).contains(&penalizer_coef) {
            v.add("penalizer_coef", "must be between 0 and 10");
        }
        let (
            Some(calibration_end),
            Some(holdout_end),
            Some(unit),
            Some(horizon),
            Some(purchase_model),
            true,
        ) = (
            calibration_end,
            holdout_end,
            unit,
            horizon,
            purchase_model,
            v.is_empty(),
        )
        else {
            return Err(ApiError::invalid(v));
        };
        let request = FitRequest {
            calibration_end,
            time_unit: unit,
            horizon_months: horizon,
            horizon_days,
            monthly_discount_rate: rate,
            purchase_model,
            penalizer_coef,
            holdout_end,
            choose_by_holdout,
        };
        let (stored, doc) = self
            .engine
            .fit(request, activate, now)
            .await
            .map_err(|e| match e {
                FitError::Model(model::ModelError::NotEnoughData(m)) => {
                    ApiError::FailedPrecondition {
                        reason: Reason::NotEnoughData,
                        message: m,
                    }
                }
                FitError::Model(model::ModelError::Math(m)) => ApiError::FailedPrecondition {
                    reason: Reason::FitFailed,
                    message: m,
                },
                FitError::Store(e) => ApiError::from(e),
                FitError::Internal(detail) => ApiError::Internal(detail),
            })?;
        tracing::info!(
            version = stored.version,
            customers = doc.customers,
            fit_ms = doc.fit_millis,
            "value model fitted"
        );
        Ok(pb::FitValueModelResponse {
            model: Some(model_to_proto(
                stored.version,
                stored.created_at,
                stored.active,
                &doc,
            )),
        })
    }

    async fn get_value_model(
        &self,
        request: Request<pb::GetValueModelRequest>,
    ) -> ApiResult<pb::GetValueModelResponse> {
        let pb::GetValueModelRequest { version } = request.into_inner();
        if version < 0 {
            return Err(ApiError::invalid_field(
                Reason::InvalidField,
                "version",
                "must not be negative (0 means the active model)",
            ));
        }
        let store = self.engine.store();
        let stored = if version == 0 {
            store.active_value_model().await?
        } else {
            store.get_value_model(version).await?
        }
        .ok_or_else(|| {
            ApiError::not_found(Reason::ModelNotFound, "value model", version.to_string())
        })?;
        Ok(pb::GetValueModelResponse {
            model: Some(stored_to_proto(&stored)?),
        })
    }

    async fn list_value_models(
        &self,
        request: Request<pb::ListValueModelsRequest>,
    ) -> ApiResult<pb::ListValueModelsResponse> {
        const SCOPE: &str = "models";
        let pb::ListValueModelsRequest {
            page_size: size,
            page_token,
        } = request.into_inner();
        let limit = page_size(size)?;
        let before = match PageToken::decode(&page_token, SCOPE, 1)? {
            None => None,
            Some(t) => Some(t.position[0].parse::<i64>().map_err(|_| {
                ApiError::invalid_field(
                    Reason::InvalidPageToken,
                    "page_token",
                    "is not a valid page token",
                )
            })?),
        };
        let mut models = self
            .engine
            .store()
            .list_value_models(before, limit + 1)
            .await?;
        let more = models.len() > limit;
        models.truncate(limit);
        let next_page_token = match (more, models.last()) {
            (true, Some(last)) => PageToken::encode(SCOPE, &[&last.version.to_string()]),
            _ => String::new(),
        };
        let models = models
            .iter()
            .map(stored_to_proto)
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(pb::ListValueModelsResponse {
            models,
            next_page_token,
        })
    }

    async fn activate_value_model(
        &self,
        request: Request<pb::ActivateValueModelRequest>,
    ) -> ApiResult<pb::ActivateValueModelResponse> {
        let pb::ActivateValueModelRequest { version } = request.into_inner();
        if version <= 0 {
            return Err(ApiError::invalid_field(
                Reason::InvalidField,
                "version",
                "must be a model version (1 or more)",
            ));
        }
        // Check it loads before making it the one every score comes from.
        let stored = self
            .engine
            .store()
            .get_value_model(version)
            .await?
            .ok_or_else(|| {
                ApiError::not_found(Reason::ModelNotFound, "value model", version.to_string())
            })?;
        load_model(&stored)?;
        let activated = self
            .engine
            .store()
            .activate_value_model(version)
            .await?
            .ok_or_else(|| {
                ApiError::not_found(Reason::ModelNotFound, "value model", version.to_string())
            })?;
        // Every process (this one too) switches to it through the change feed.
        Ok(pb::ActivateValueModelResponse {
            model: Some(stored_to_proto(&activated)?),
        })
    }

    async fn get_tier_policy(
        &self,
        _request: Request<pb::GetTierPolicyRequest>,
    ) -> ApiResult<pb::GetTierPolicyResponse> {
        Ok(pb::GetTierPolicyResponse {
            policy: Some(policy_to_proto(&self.engine.state())),
        })
    }

    async fn update_tier_policy(
        &self,
        request: Request<pb::UpdateTierPolicyRequest>,
    ) -> ApiResult<pb::UpdateTierPolicyResponse> {
        let pb::UpdateTierPolicyRequest {
            policy,
            update_mask,
        } = request.into_inner();
        let Some(policy) = policy else {
            return Err(ApiError::required("policy"));
        };
        let mut v = Violations::new();
        let paths = update_mask.map(|m| m.paths).unwrap_or_default();
        for (i, p) in paths.iter().enumerate() {
            if !["metric", "mode", "tiers"].contains(&p.as_str()) {
                v.add(
                    format!("update_mask.paths[{i}]"),
                    format!("{p:?} is not a policy field (metric, mode, tiers)"),
                );
            }
        }
        // Fields the mask leaves out keep their stored values: read them from the store, not from
        // this process's view, which may be behind another replica's write.
        let current = match self.engine.store().get_tier_policy().await? {
            Some(stored) => load_policy(&stored)?,
            None => TierPolicy::default(),
        };
        let next = policy_from_proto(&policy, &current, &paths, &mut v);
        if let Err(problems) = next.validate() {
            v.extend_prefixed("policy", problems);
        }
        if !v.is_empty() {
            return Err(ApiError::invalid(v));
        }
        let body = serde_json::to_string(&next)
            .map_err(|e| ApiError::internal(format!("encode policy: {e}")))?;
        let expected = (policy.revision != 0).then_some(policy.revision);
        let stored = self
            .engine
            .store()
            .put_tier_policy(&body, patron_grpc::time::now(), expected)
            .await?;
        let loaded = load_policy(&stored)?;
        // Every process (this one too) applies it through the change feed; answer with what was
        // stored.
        let answer = State {
            policy: loaded,
            policy_revision: stored.revision,
            policy_updated: Some(stored.updated_at),
            ..(*self.engine.state()).clone()
        };
        Ok(pb::UpdateTierPolicyResponse {
            policy: Some(policy_to_proto(&answer)),
        })
    }

    async fn score_profile(
        &self,
        request: Request<pb::ScoreProfileRequest>,
    ) -> ApiResult<pb::ScoreProfileResponse> {
        let pb::ScoreProfileRequest {
            frequency,
            recency_days,
            age_days,
            monetary_mean,
            historical_revenue,
            survey,
        } = request.into_inner();
        let mut v = Violations::new();
        let currency = self.engine.currency();
        let mut money = |m: Option<&patron_proto::common::v1::Money>, field: &str| -> i64 {
            match m {
                None => 0,
                Some(m) if m.currency_code != currency.as_str() => {
                    v.add(
                        format!("{field}.currency_code"),
                        format!("must be {currency}"),
                    );
                    0
                }
                Some(m)
                    if !(0..=patron_domain::MAX_EVENT_AMOUNT * 1_000).contains(&m.minor_units) =>
                {
                    v.add(
                        format!("{field}.minor_units"),
                        "must be between 0 and 10^15",
                    );
                    0
                }
                Some(m) => m.minor_units,
            }
        };
        let mean = money(monetary_mean.as_ref(), "monetary_mean");
        let revenue = money(historical_revenue.as_ref(), "historical_revenue");
        if !(0..=100_000).contains(&frequency) {
            v.add("frequency", "must be between 0 and 100000");
        }
        if !(0..=36_500).contains(&recency_days) {
            v.add("recency_days", "must be between 0 and 36500");
        }
        if !(0..=36_500).contains(&age_days) || age_days < recency_days {
            v.add("age_days", "must be between recency_days and 36500");
        }
        let mut summary = CustomerSummary::default();
        if let Some(s) = &survey {
            let pb::SurveyAnswers {
                economic_benefit,
                functional_benefit,
                experiential_benefit,
                symbolic_benefit,
                price_cost,
                time_cost,
                effort_cost,
                emotional_cost,
                csat,
                nps,
            } = *s;
            let mut rate = |x, f: &str| check_rating(x, 1, 5, &format!("survey.{f}"), &mut v);
            let total = |r: Option<u8>| {
                r.map_or(RatingTotal::default(), |r| RatingTotal {
                    sum: i32::from(r),
                    count: 1,
                })
            };
            summary.totals.benefits = [
                total(rate(economic_benefit, "economic_benefit")),
                total(rate(functional_benefit, "functional_benefit")),
                total(rate(experiential_benefit, "experiential_benefit")),
                total(rate(symbolic_benefit, "symbolic_benefit")),
            ];
            summary.totals.costs = [
                total(rate(price_cost, "price_cost")),
                total(rate(time_cost, "time_cost")),
                total(rate(effort_cost, "effort_cost")),
                total(rate(emotional_cost, "emotional_cost")),
            ];
            if let Some(c) = rate(csat, "csat") {
                summary.totals.csat_sum = i64::from(c);
                summary.totals.csat_count = 1;
            }
            summary.totals.last_nps = check_rating(nps, 0, 10, "survey.nps", &mut v);
            if let Some(nps) = summary.totals.last_nps {
                summary.totals.count_nps(nps);
            }
        }
        if !v.is_empty() {
            return Err(ApiError::invalid(v));
        }
        let now = patron_grpc::time::now();
        let today = now.day().as_days();
        let first = Day::from_days(today - i32::try_from(age_days).unwrap_or(0));
        let last = Day::from_days(first.as_days() + i32::try_from(recency_days).unwrap_or(0));
        let p = &mut summary.purchases;
        p.purchase_days = frequency + 1;
        p.order_count = frequency + 1;
        p.first_purchase_day = Some(first);
        p.last_purchase_day = Some(last);
        let repeat = mean.saturating_mul(frequency);
        p.net_revenue = revenue.max(repeat);
        p.first_day_revenue = p.net_revenue - repeat;
        let state = self.engine.state();
        // A model counting calendar weeks needs the purchase days themselves: the repeat days
        // are taken as evenly spread from the first to the last purchase day.
        let orders: Vec<OrderDay> = match state.model.as_deref() {
            Some(m) if m.counts_calendar_weeks() => {
                let (f, r) = (frequency.max(0), recency_days.max(0));
                let first_net = p.first_day_revenue;
                std::iter::once(OrderDay {
                    day: first,
                    net_amount: first_net,
                })
                .chain((1..=f).map(|i| OrderDay {
                    day: Day::from_days(first.as_days() + i32::try_from(i * r / f).unwrap_or(0)),
                    net_amount: mean,
                }))
                .collect()
            }
            _ => Vec::new(),
        };
        let subject = Subject {
            customer_id: "",
            summary: &summary,
            orders: &orders,
            since: Some(first.start()),
        };
        let scored = profile::compute(&subject, now, &state);
        let value = convert::to_proto(&subject, now, &state, &scored, currency);
        Ok(pb::ScoreProfileResponse { value: Some(value) })
    }
}

#[tonic::async_trait]
impl ScoringService for ScoringApi {
    #[tracing::instrument(level = "debug", skip_all, fields(customer_id = %request.get_ref().customer_id))]
    async fn get_customer_value(
        &self,
        request: Request<pb::GetCustomerValueRequest>,
    ) -> Result<Response<pb::GetCustomerValueResponse>, Status> {
        self.get_customer_value(request).await.respond()
    }

    #[tracing::instrument(level = "debug", skip_all, fields(count = request.get_ref().customer_ids.len()))]
    async fn batch_get_customer_values(
        &self,
        request: Request<pb::BatchGetCustomerValuesRequest>,
    ) -> Result<Response<pb::BatchGetCustomerValuesResponse>, Status> {
        self.batch_get_customer_values(request).await.respond()
    }

    type StreamCustomerValuesStream = ValueStream;

    #[tracing::instrument(level = "debug", skip_all)]
    async fn stream_customer_values(
        &self,
        request: Request<pb::StreamCustomerValuesRequest>,
    ) -> Result<Response<Self::StreamCustomerValuesStream>, Status> {
        self.stream_customer_values(request).await.respond()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn fit_value_model(
        &self,
        request: Request<pb::FitValueModelRequest>,
    ) -> Result<Response<pb::FitValueModelResponse>, Status> {
        self.fit_value_model(request).await.respond()
    }

    async fn get_value_model(
        &self,
        request: Request<pb::GetValueModelRequest>,
    ) -> Result<Response<pb::GetValueModelResponse>, Status> {
        self.get_value_model(request).await.respond()
    }

    async fn list_value_models(
        &self,
        request: Request<pb::ListValueModelsRequest>,
    ) -> Result<Response<pb::ListValueModelsResponse>, Status> {
        self.list_value_models(request).await.respond()
    }

    async fn activate_value_model(
        &self,
        request: Request<pb::ActivateValueModelRequest>,
    ) -> Result<Response<pb::ActivateValueModelResponse>, Status> {
        self.activate_value_model(request).await.respond()
    }

    async fn get_tier_policy(
        &self,
        request: Request<pb::GetTierPolicyRequest>,
    ) -> Result<Response<pb::GetTierPolicyResponse>, Status> {
        self.get_tier_policy(request).await.respond()
    }

    async fn update_tier_policy(
        &self,
        request: Request<pb::UpdateTierPolicyRequest>,
    ) -> Result<Response<pb::UpdateTierPolicyResponse>, Status> {
        self.update_tier_policy(request).await.respond()
    }

    async fn score_profile(
        &self,
        request: Request<pb::ScoreProfileRequest>,
    ) -> Result<Response<pb::ScoreProfileResponse>, Status> {
        self.score_profile(request).await.respond()
    }
}

/// Rows a stream computes at a time, about: whole messages of `chunk` profiles where they fit,
/// so a stream's memory is a few messages.
const STREAM_JOB_ROWS: usize = 512;

/// Profiles a stream computes per unit of tokio's cooperative budget (about 80 µs of work).
const ROWS_PER_TURN: usize = 32;

/// The rows of one job for messages of `chunk` profiles: the most whole messages within
/// [`STREAM_JOB_ROWS`], at least one message.
fn job_rows(chunk: usize) -> usize {
    let chunk = chunk.max(1);
    (STREAM_JOB_ROWS / chunk).max(1) * chunk
}

/// Stream jobs computing at once, across all streams: one per core. The others wait without
/// taking a worker thread, so unary calls keep their turns under many streams.
fn stream_cpu() -> &'static tokio::sync::Semaphore {
    static CPU: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    CPU.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        tokio::sync::Semaphore::new(cores.max(2))
    })
}

/// Profiles in messages of at most `chunk`, as a job computes them: without a filter every
/// message but the last is whole and is sent as built, never copied into another.
struct Groups {
    chunk: usize,
    every: bool,
    left: usize,
    done: Vec<Vec<pb::CustomerValue>>,
    group: Vec<pb::CustomerValue>,
}

impl Groups {
    fn new(chunk: usize, every: bool, rows: usize) -> Self {
        let mut groups = Self {
            chunk: chunk.max(1),
            every,
            left: rows,
            done: Vec::with_capacity(rows.div_ceil(chunk.max(1))),
            group: Vec::new(),
        };
        groups.group = Vec::with_capacity(groups.capacity());
        groups
    }

    /// A new message's capacity: whole at once without a filter.
    fn capacity(&self) -> usize {
        if self.every {
            self.chunk.min(self.left)
        } else {
            0
        }
    }

    /// One row's profile, or `None` where the filter left it out.
    fn push(&mut self, value: Option<pb::CustomerValue>) {
        self.left = self.left.saturating_sub(1);
        let Some(value) = value else { return };
        self.group.push(value);
        if self.group.len() == self.chunk {
            let next = Vec::with_capacity(self.capacity());
            self.done.push(std::mem::replace(&mut self.group, next));
        }
    }

    fn finish(mut self) -> Vec<Vec<pb::CustomerValue>> {
        if !self.group.is_empty() {
            self.done.push(self.group);
        }
        self.done
    }
}

/// A StreamCustomerValues call walking the index lazily: when the client has taken every
/// message computed, it computes the next job's rows (a few messages), and nothing while the
/// client does not read. Its memory is about a job's messages and the message being sent,
/// whatever the population.
///
/// A job runs as a task of its own on the runtime's worker threads (the call's task meanwhile
/// leaves its worker to the connection's writes), spending a unit of its cooperative budget
/// every [`ROWS_PER_TURN`] rows. Handing each batch to a blocking thread instead, one batch
/// ahead (as before), cost a fifth of the stream's CPU in thread wake-ups and in freeing on one
/// thread what another allocated.
struct Walk {
    engine: Arc<Engine>,
    state: Arc<State>,
    filter: Arc<Filter>,
    /// The instant described (`as_of`, else the call's start).
    now: patron_domain::Timestamp,
    /// Whether `now` is an earlier instant asked for: rows changed since are rebuilt.
    past: bool,
    view: View,
    chunk: usize,
    after: Option<patron_domain::CustomerId>,
    exhausted: bool,
    /// Whole messages computed and not yet sent.
    ready: std::collections::VecDeque<Vec<pb::CustomerValue>>,
    /// Profiles computed and not yet in a whole message (fewer than `chunk`; with a filter).
    out: Vec<pb::CustomerValue>,
}

impl Walk {
    /// The next job's rows, if any are left.
    fn next_rows(&mut self) -> Option<Vec<Arc<SummaryRow>>> {
        if self.exhausted {
            return None;
        }
        let rows = self
            .engine
            .range_after(self.after.as_ref(), job_rows(self.chunk));
        let Some(last) = rows.last() else {
            self.exhausted = true;
            return None;
        };
        self.after = Some(last.customer_id.clone());
        Some(rows)
    }

    /// Computes the profiles of `rows` in messages (`None` if reading the history failed).
    fn job(
        &self,
        rows: Vec<Arc<SummaryRow>>,
    ) -> tokio::task::JoinHandle<Option<Vec<Vec<pb::CustomerValue>>>> {
        let (engine, state, filter) = (
            Arc::clone(&self.engine),
            Arc::clone(&self.state),
            Arc::clone(&self.filter),
        );
        let (now, past, view, chunk) = (self.now, self.past, self.view, self.chunk);
        tokio::spawn(async move {
            let rows = if past {
                match history::rows_as_of(engine.store().as_ref(), rows, now).await {
                    Ok(then) => then.rows,
                    Err(e) => {
                        tracing::warn!(error = %e, "stream: reading the history failed");
                        return None;
                    }
                }
            } else {
                rows
            };
            let _permit = stream_cpu().acquire().await.ok()?;
            let mut groups = Groups::new(chunk, filter.is_empty(), rows.len());
            for part in rows.chunks(ROWS_PER_TURN) {
                // Once the task's budget is spent, other tasks of this worker get a turn.
                tokio::task::consume_budget().await;
                for row in part {
                    let value = value_view(row, now, &state, &engine, view);
                    groups.push(filter.matches(&value).then_some(value));
                }
            }
            Some(groups.finish())
        })
    }

    /// The next message: `chunk` profiles, or the last few; `None` at the end.
    async fn next_message(&mut self) -> Option<Result<pb::StreamCustomerValuesResponse, Status>> {
        loop {
            if let Some(values) = self.ready.pop_front() {
                return Some(Ok(pb::StreamCustomerValuesResponse { values }));
            }
            let Some(rows) = self.next_rows() else {
                if self.out.is_empty() {
                    return None;
                }
                let values = std::mem::take(&mut self.out);
                return Some(Ok(pb::StreamCustomerValuesResponse { values }));
            };
            match self.job(rows).await {
                Ok(Some(groups)) => {
                    for group in groups {
                        self.take_group(group);
                    }
                }
                Ok(None) | Err(_) => {
                    self.exhausted = true;
                    self.ready.clear();
                    self.out = Vec::new();
                    return Some(Err(
                        ApiError::internal("computing customer values failed").into()
                    ));
                }
            }
        }
    }

    /// Queues a job's message of at most `chunk` profiles: as it is when whole and nothing is
    /// waiting before it, else joined to what is.
    fn take_group(&mut self, group: Vec<pb::CustomerValue>) {
        if self.out.is_empty() {
            if group.len() == self.chunk {
                self.ready.push_back(group);
            } else {
                self.out = group;
            }
            return;
        }
        self.out.extend(group);
        if self.out.len() >= self.chunk {
            let rest = self.out.split_off(self.chunk);
            let values = std::mem::replace(&mut self.out, rest);
            self.ready.push_back(values);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(id: usize) -> pb::CustomerValue {
        pb::CustomerValue {
            customer_id: format!("c-{id}"),
            ..pb::CustomerValue::default()
        }
    }

    fn ids(groups: &[Vec<pb::CustomerValue>]) -> Vec<Vec<String>> {
        groups
            .iter()
            .map(|g| g.iter().map(|v| v.customer_id.clone()).collect())
            .collect()
    }

    #[test]
    fn a_job_holds_whole_messages() {
        assert_eq!(job_rows(100), 500);
        assert_eq!(job_rows(1), STREAM_JOB_ROWS);
        assert_eq!(job_rows(1000), 1000, "at least one message");
        assert_eq!(job_rows(0), STREAM_JOB_ROWS);
    }

    #[test]
    fn without_a_filter_messages_are_whole_and_allocated_once() {
        let mut groups = Groups::new(3, true, 7);
        for i in 0..7 {
            groups.push(Some(profile(i)));
        }
        let done = groups.finish();
        assert_eq!(done.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
        assert_eq!(
            done.iter().map(Vec::capacity).collect::<Vec<_>>(),
            [3, 3, 1],
            "each message allocated at its size"
        );
        assert_eq!(ids(&done)[2], ["c-6"]);
    }

    #[test]
    fn with_a_filter_the_left_out_rows_leave_no_gap() {
        let mut groups = Groups::new(2, false, 6);
        for i in 0..6 {
            groups.push((i % 3 != 0).then(|| profile(i)));
        }
        let done = groups.finish();
        assert_eq!(ids(&done), [vec!["c-1", "c-2"], vec!["c-4", "c-5"]]);
        let mut none = Groups::new(2, false, 3);
        for _ in 0..3 {
            none.push(None);
        }
        assert!(none.finish().is_empty(), "no empty message");
    }
}
