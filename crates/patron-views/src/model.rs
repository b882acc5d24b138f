//! Fitted value models: the stored document, and the runtime model that predicts from it.

use std::sync::Arc;

use patron_domain::clv::{
    BgNbdFitOptions, BgNbdModel, BgNbdParams, ClvHorizon, CustomerRfm, Days, GammaGammaFitOptions,
    GammaGammaModel, GammaGammaParams, MbgNbdFitOptions, MbgNbdModel, MbgNbdParams,
    ParetoNbdFitOptions, ParetoNbdModel, ParetoNbdParams, TimeUnit, TimeUnitKind, TransactionModel,
    Weeks, discount_steps, discounted_and_final_expected_purchases, fit_bg_nbd, fit_gamma_gamma,
    fit_mbg_nbd, fit_pareto_nbd, step_ends,
};
use patron_domain::value::{ChurnRisk, churn_risk};
use patron_domain::{CustomerSummary, Day, Timestamp};
use patron_store::OrderDay;
use serde::{Deserialize, Serialize};

use crate::cdf::Cdf;

/// BG/NBD parameters and diagnostics, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BgNbdDoc {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
    pub log_likelihood: f64,
    pub iterations: u32,
    pub converged: bool,
    /// `max |∂f/∂θ|` of the (mean, penalised) objective in log-parameters at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_norm: Option<f64>,
    /// Standard errors of `(r, α, a, b)` from the observed information; unset where the
    /// Hessian is not positive definite (the `a, b → ∞` boundary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard_errors: Option<[f64; 4]>,
    /// Covariance of the log-parameters `ln(r, α, a, b)` (inverse observed information), for
    /// intervals; present with `standard_errors` in fits since intervals came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covariance: Option<[[f64; 4]; 4]>,
}

impl BgNbdDoc {
    /// Parameters without diagnostics (to be filled in).
    const fn params(r: f64, alpha: f64, a: f64, b: f64) -> Self {
        Self {
            r,
            alpha,
            a,
            b,
            log_likelihood: f64::NAN,
            iterations: 0,
            converged: false,
            gradient_norm: None,
            standard_errors: None,
            covariance: None,
        }
    }
}

/// Gamma-Gamma parameters and diagnostics, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GammaGammaDoc {
    pub p: f64,
    pub q: f64,
    pub v: f64,
    pub log_likelihood: f64,
    pub iterations: u32,
    pub converged: bool,
    pub customers: u64,
    /// As [`BgNbdDoc::gradient_norm`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_norm: Option<f64>,
    /// Standard errors of `(p, q, v)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard_errors: Option<[f64; 3]>,
    /// Covariance of `ln(p, q, v)`, as [`BgNbdDoc::covariance`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covariance: Option<[[f64; 3]; 3]>,
}

/// Which model of purchase counts and dropout the scores come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurchaseModel {
    /// BG/NBD: dropout only after a repeat purchase (a one-time buyer's P(alive) is 1). Models
    /// stored before there was a choice are BG/NBD, hence the serde default.
    #[default]
    BgNbd,
    /// MBG/NBD: dropout after any purchase, the first included.
    MbgNbd,
    /// Pareto/NBD: dropout at any time.
    ParetoNbd,
}

impl PurchaseModel {
    /// The default for new fits (the evidence is in docs/model-choice.md).
    pub const DEFAULT: Self = Self::BgNbd;

    /// Display name: `BG/NBD`, `MBG/NBD`, `Pareto/NBD`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::BgNbd => "BG/NBD",
            Self::MbgNbd => "MBG/NBD",
            Self::ParetoNbd => "Pareto/NBD",
        }
    }

    /// Whether the model lets a customer drop out before a repeat purchase: without it, P(alive)
    /// of a one-time buyer is 1 by construction and says nothing.
    pub const fn one_time_buyers_can_drop_out(self) -> bool {
        !matches!(self, Self::BgNbd)
    }
}

/// Pareto/NBD parameters and diagnostics, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParetoNbdDoc {
    pub r: f64,
    pub alpha: f64,
    pub s: f64,
    pub beta: f64,
    pub log_likelihood: f64,
    pub iterations: u32,
    pub converged: bool,
    /// As [`BgNbdDoc::gradient_norm`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_norm: Option<f64>,
    /// Standard errors of `(r, α, s, β)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard_errors: Option<[f64; 4]>,
    /// Covariance of `ln(r, α, s, β)`, as [`BgNbdDoc::covariance`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covariance: Option<[[f64; 4]; 4]>,
}

/// Everything a fit produces, stored as the model's JSON body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDoc {
    /// As-of instant of the fitted summaries (micros).
    pub calibration_end: i64,
    pub time_unit: TimeUnitKind,
    /// A weekly model counts calendar weeks (`lifetimes`' `freq='W'`): true for every weekly
    /// fit since they were introduced. Older weekly documents (false) were fitted on the day
    /// statistics divided by 7 and keep being scored that way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub calendar_weeks: bool,
    /// The model the scores come from.
    #[serde(default)]
    pub purchase_model: PurchaseModel,
    /// BG/NBD, always fitted.
    pub bg_nbd: BgNbdDoc,
    /// MBG/NBD, when fitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mbg_nbd: Option<BgNbdDoc>,
    /// Pareto/NBD, when fitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pareto_nbd: Option<ParetoNbdDoc>,
    /// Unset when there were too few repeat buyers to fit spend.
    pub gamma_gamma: Option<GammaGammaDoc>,
    /// L2 penalty coefficient of the purchase-model fits (`lifetimes`' `penalizer_coef`); 0 =
    /// none.
    #[serde(default)]
    pub penalizer_coef: f64,
    pub customers: u64,
    /// Predicted against actual purchases after the calibration end, when the data go past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout: Option<HoldoutReport>,
    /// With `choose_by_holdout`: every purchase model's hold-out errors and which was chosen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holdout_comparison: Vec<HoldoutChoice>,
    pub horizon_months: u32,
    /// The horizon in days, when the fit asked for one instead of months (`horizon_months` is
    /// then 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon_days: Option<u32>,
    pub monthly_discount_rate: f64,
    pub fit_millis: u64,
    /// Population distributions at the fit, for RFM scores and percentiles.
    pub days_since_last_purchase: Cdf,
    pub purchase_days: Cdf,
    pub revenue: Cdf,
    pub predicted_clv: Cdf,
    pub value_index: Cdf,
}

impl ModelDoc {
    /// Whether the fits the scores come from converged: the chosen purchase model's and
    /// Gamma-Gamma's when fitted.
    pub fn converged(&self) -> bool {
        let purchases = match self.purchase_model {
            PurchaseModel::BgNbd => self.bg_nbd.converged,
            PurchaseModel::MbgNbd => self.mbg_nbd.as_ref().is_some_and(|m| m.converged),
            PurchaseModel::ParetoNbd => self.pareto_nbd.as_ref().is_some_and(|m| m.converged),
        };
        purchases && self.gamma_gamma.as_ref().is_none_or(|g| g.converged)
    }

    /// Whether storing this fit activates it: always when `asked`; otherwise only if it
    /// converged and no model is active yet (a fit that did not converge is stored for
    /// inspection, never served unasked).
    pub fn activation(&self, asked: bool) -> patron_store::Activation {
        use patron_store::Activation;
        if asked {
            Activation::Always
        } else if self.converged() {
            Activation::IfNoneActive
        } else {
            Activation::Never
        }
    }
}

/// A customer's purchase statistics as of an instant, in days (the `lifetimes` convention), and
/// in calendar weeks when built from the customer's orders.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DayRfm {
    /// Repeat purchase days.
    pub frequency: u32,
    /// Days between first and last purchase day.
    pub recency: f64,
    /// Days between the first purchase day and the as-of instant (fractional).
    pub age: f64,
    /// Mean net revenue of the repeat purchase days (minor units).
    pub monetary: f64,
    /// Days from the last purchase day to the as-of instant.
    pub days_since_last: f64,
    /// The same statistics in calendar weeks (`lifetimes`' `freq='W'`); `None` when built from
    /// a summary alone.
    pub weeks: Option<PeriodRfm>,
}

impl DayRfm {
    /// From a summary, as of `as_of`. `None` without purchases or if `as_of` precedes the first
    /// purchase day. Without the orders there are no weekly statistics: see [`DayRfm::from_row`].
    pub fn from_summary(s: &CustomerSummary, as_of: Timestamp) -> Option<Self> {
        let first = s.purchases.first_purchase_day?;
        let last = s.purchases.last_purchase_day?;
        let age = days_between(first, as_of)?;
        let frequency = u32::try_from(s.frequency()).unwrap_or(u32::MAX);
        let monetary = if frequency > 0 {
            (s.purchases.net_revenue - s.purchases.first_day_revenue) as f64 / f64::from(frequency)
        } else {
            0.0
        };
        Some(Self {
            frequency,
            recency: f64::from(last.as_days() - first.as_days()),
            age: age.max(f64::from(last.as_days() - first.as_days())),
            monetary: monetary.max(0.0),
            days_since_last: days_between(last, as_of).unwrap_or(0.0).max(0.0),
            weeks: None,
        })
    }

    /// From a customer's summary and active orders, as of `as_of`: [`DayRfm::from_summary`]
    /// plus the weekly statistics.
    pub fn from_row(s: &CustomerSummary, orders: &[OrderDay], as_of: Timestamp) -> Option<Self> {
        let mut rfm = Self::from_summary(s, as_of)?;
        rfm.weeks = PeriodRfm::weeks(orders, as_of);
        Some(rfm)
    }

    /// What `model` predicts from: [`DayRfm::from_row`] if it counts calendar weeks, else
    /// [`DayRfm::from_summary`] (the orders are not walked).
    pub fn for_model(
        s: &CustomerSummary,
        orders: &[OrderDay],
        as_of: Timestamp,
        model: Option<&ActiveModel>,
    ) -> Option<Self> {
        if model.is_some_and(ActiveModel::counts_calendar_weeks) {
            Self::from_row(s, orders, as_of)
        } else {
            Self::from_summary(s, as_of)
        }
    }

    /// The day statistics as `lifetimes` inputs.
    pub fn in_days(&self) -> PeriodRfm {
        PeriodRfm {
            frequency: self.frequency,
            recency: self.recency,
            age: self.age,
            monetary: self.monetary,
        }
    }
}

/// A customer's `lifetimes` inputs (frequency, recency, T, monetary_value) in one time unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeriodRfm {
    /// Repeat purchase periods.
    pub frequency: u32,
    /// Periods between the first and the last purchase period.
    pub recency: f64,
    /// Periods between the first purchase period and the as-of instant's (T).
    pub age: f64,
    /// Mean net revenue of the repeat purchase periods (minor units).
    pub monetary: f64,
}

impl PeriodRfm {
    /// `lifetimes`' `summary_data_from_transaction_data(..., freq='W')` for one customer: each
    /// order's day and `as_of`'s day floored to the Monday of its ISO week (pandas' `W-SUN`
    /// periods); frequency counts distinct purchase weeks after the first, recency and T are
    /// whole weeks, monetary the mean of the repeat weeks' summed net amounts. Orders after
    /// `as_of`'s day are ignored. `None` without orders by then.
    pub fn weeks(orders: &[OrderDay], as_of: Timestamp) -> Option<Self> {
        let end = week_of(as_of.day());
        let mut it = orders.iter().filter(|o| o.day <= as_of.day());
        let first = it.next()?;
        let first_week = week_of(first.day);
        let (mut last_week, mut weeks, mut total, mut first_total) =
            (first_week, 0u32, first.net_amount, first.net_amount);
        for o in it {
            let w = week_of(o.day);
            if w != last_week {
                weeks += 1;
                last_week = w;
            }
            if w == first_week {
                first_total += o.net_amount;
            }
            total += o.net_amount;
        }
        let monetary = if weeks > 0 {
            ((total - first_total) as f64 / f64::from(weeks)).max(0.0)
        } else {
            0.0
        };
        Some(Self {
            frequency: weeks,
            recency: f64::from(last_week - first_week),
            age: f64::from(end - first_week),
            monetary,
        })
    }

    fn to<U: TimeUnit>(self) -> Option<CustomerRfm<U>> {
        CustomerRfm::<U>::new(self.frequency, self.recency, self.age, self.monetary).ok()
    }
}

/// `c`'s `lifetimes` inputs in `unit`; weeks are calendar weeks unless `calendar_weeks` is false
/// (documents older than calendar weeks: the day statistics divided by 7).
fn inputs(unit: TimeUnitKind, calendar_weeks: bool, c: &DayRfm) -> Option<PeriodRfm> {
    match (unit, calendar_weeks) {
        (TimeUnitKind::Days, _) => Some(c.in_days()),
        (TimeUnitKind::Weeks, true) => c.weeks,
        (TimeUnitKind::Weeks, false) => Some(PeriodRfm {
            recency: c.recency / 7.0,
            age: c.age / 7.0,
            ..c.in_days()
        }),
    }
}

/// Index of the ISO week (Monday to Sunday) holding `day`: 1970-01-01 was a Thursday, so the
/// week of day 0 starts on day −3.
pub fn week_of(day: Day) -> i32 {
    (day.as_days() + 3).div_euclid(7)
}

/// Whole days from the start of `day` to `to`; `None` if `to` is before the day starts.
fn days_between(day: Day, to: Timestamp) -> Option<f64> {
    let micros = to.as_micros() - day.start().as_micros();
    if micros < 0 {
        return None;
    }
    // The lifetimes convention counts whole periods: T is the as-of day minus the first day.
    Some((micros / 86_400_000_000) as f64)
}

/// Model-based predictions for one customer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    pub probability_alive: f64,
    pub expected_purchases: f64,
    /// Gamma-Gamma expected order value; `None` without a spend model.
    pub expected_order_value: Option<f64>,
    /// Discounted CLV; `None` without a spend model.
    pub predicted_clv: Option<f64>,
}

/// The transaction model in its time unit.
#[derive(Clone)]
enum Bg {
    Days(Arc<dyn TransactionModel<Days> + Send + Sync>),
    Weeks(Arc<dyn TransactionModel<Weeks> + Send + Sync>),
}

impl std::fmt::Debug for Bg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bg::Days(_) => "Bg::Days",
            Bg::Weeks(_) => "Bg::Weeks",
        })
    }
}

/// The BG/NBD part of a prediction: it depends on (frequency, recency, age) alone, not on spend.
#[derive(Debug, Clone, Copy, PartialEq)]
struct BgPart {
    probability_alive: f64,
    expected_purchases: f64,
    /// [`discounted_expected_purchases`]; CLV = Gamma-Gamma m̂ · this.
    discounted_purchases: Option<f64>,
}

/// Shards of [`Memo`]; a power of two.
const MEMO_SHARDS: usize = 16;
/// Entries per shard before the shard is emptied (16 × 65,536 ≈ 1M entries, ~60 MB at most).
const MEMO_SHARD_CAPACITY: usize = 65_536;

/// Key of [`Memo`]: frequency and the bits of recency and age in days.
type MemoKey = (u32, u64, u64);

/// Key of the if-alive memo: frequency and the bits of age in the model's periods.
type AliveKey = (u32, u64);

/// The expected purchases of a customer known to be alive at each step of the CLV sum
/// ([`TransactionModel::expected_purchases_if_alive_at`]): `None` for a model without that
/// split (Pareto/NBD), `Some(None)` where the math failed.
type IfAlive = Option<Option<Arc<[f64]>>>;

/// Sharded, bounded memo of a pure function of the model's parameters, keyed by the part of a
/// customer it depends on. [`BgPart`] by (frequency, recency, age): the hypergeometric functions
/// behind P(alive), E[X(t)] and the CLV sum (13 of them for a 12-month CLV) run once per distinct
/// purchase history shape rather than once per call; customers share shapes (every one-time
/// buyer of the same age does), and a customer's own shape is stable within a UTC day. The CLV
/// sum's E[X(t)] are in turn P(alive) times factors of (frequency, age) alone, which far fewer
/// distinct values take: they have a memo of their own. Each lives and dies with the model.
struct Memo<K, V> {
    shards: [std::sync::Mutex<MemoShard<K, V>>; MEMO_SHARDS],
}

/// One shard's map, hashed by the same fixed foldhash as the shard choice: keys are a few
/// integers, and SipHash (twice per lookup) cost more than the lookup it guarded.
type MemoShard<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| std::sync::Mutex::default()),
        }
    }
}

impl<K, V> std::fmt::Debug for Memo<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo").finish_non_exhaustive()
    }
}

impl<K: std::hash::Hash + Eq, V: Clone> Memo<K, V> {
    fn shard(&self, key: &K) -> &std::sync::Mutex<MemoShard<K, V>> {
        use std::hash::BuildHasher;
        // Middle bits pick the shard: the map inside indexes by the low bits and tags its
        // slots with the top seven, which must still differ between a shard's keys.
        let h = foldhash::fast::FixedState::default().hash_one(key);
        &self.shards[(h >> 40) as usize % MEMO_SHARDS]
    }

    fn get_or_compute(&self, key: K, compute: impl FnOnce() -> V) -> V {
        let shard = self.shard(&key);
        {
            let map = match shard.lock() {
                Ok(m) => m,
                Err(poisoned) => poisoned.into_inner(),
            };
            if let Some(v) = map.get(&key) {
                return v.clone();
            }
        }
        let value = compute();
        let mut map = match shard.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if map.len() >= MEMO_SHARD_CAPACITY {
            map.clear();
        }
        map.insert(key, value.clone());
        value
    }
}

/// A model ready to predict.
#[derive(Debug, Clone)]
pub struct ActiveModel {
    pub version: i64,
    pub created_at: Timestamp,
    pub doc: ModelDoc,
    bg: Bg,
    gg: Option<GammaGammaModel>,
    horizon: ClvHorizon,
    memo: std::sync::Arc<Memo<MemoKey, Option<BgPart>>>,
    if_alive: std::sync::Arc<Memo<AliveKey, IfAlive>>,
    /// Models at the fitted log-parameters moved one at a time, for intervals (built at the
    /// first interval asked for).
    spread: std::sync::Arc<std::sync::OnceLock<Option<Spread>>>,
}

/// The delta method's raw material: for each log-parameter `θᵢ` of the purchase model, the model
/// at `θᵢ ± h`; the same for Gamma-Gamma; and the fit's covariances.
#[derive(Debug)]
struct Spread {
    purchase: Vec<MovedPair<ActiveModel>>,
    purchase_covariance: [[f64; 4]; 4],
    spend: Option<SpendSpread>,
}

/// Gamma-Gamma at each log-parameter moved, with the covariance of `ln(p, q, v)`.
type SpendSpread = (Vec<MovedPair<GammaGammaModel>>, [[f64; 3]; 3]);

/// A model at `θᵢ + h` and at `θᵢ − h`.
type MovedPair<M> = (M, M);

/// Step of the central differences in log-parameters.
const SPREAD_STEP: f64 = 1e-4;

/// z of a two-sided 90 % normal interval.
const Z_90: f64 = 1.644_853_626_951_472_2;

/// 90 % intervals of one customer's model values from the uncertainty of the fitted parameters:
/// normal on the log-parameters with the fit's covariance, carried to each value by the delta
/// method on the logit scale (P(alive)) or the log scale (the others).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intervals {
    /// `None` where P(alive) is exactly 0 or 1 (a one-time buyer under BG/NBD).
    pub probability_alive: Option<(f64, f64)>,
    pub expected_purchases: Option<(f64, f64)>,
    /// Minor units; `None` without a spend model.
    pub predicted_clv: Option<(f64, f64)>,
}

/// `gᵀ Σ g`.
fn quadratic<const N: usize>(g: &[f64; N], cov: &[[f64; N]; N]) -> f64 {
    let mut v = 0.0;
    for i in 0..N {
        for j in 0..N {
            v += g[i] * cov[i][j] * g[j];
        }
    }
    v
}

/// `center ± z·sd` on a transformed scale, mapped back by `back`; `None` unless finite.
fn interval(center: f64, variance: f64, back: impl Fn(f64) -> f64) -> Option<(f64, f64)> {
    let sd = variance.sqrt();
    let (lo, hi) = (back(center - Z_90 * sd), back(center + Z_90 * sd));
    (center.is_finite() && sd.is_finite() && lo.is_finite() && hi.is_finite()).then_some((lo, hi))
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The purchase model's parameters in `doc`, as stored, with their covariance.
fn purchase_params(doc: &mut ModelDoc) -> Option<([&mut f64; 4], [[f64; 4]; 4])> {
    match doc.purchase_model {
        PurchaseModel::BgNbd => {
            let b = &mut doc.bg_nbd;
            Some(([&mut b.r, &mut b.alpha, &mut b.a, &mut b.b], b.covariance?))
        }
        PurchaseModel::MbgNbd => {
            let m = doc.mbg_nbd.as_mut()?;
            Some(([&mut m.r, &mut m.alpha, &mut m.a, &mut m.b], m.covariance?))
        }
        PurchaseModel::ParetoNbd => {
            let p = doc.pareto_nbd.as_mut()?;
            Some((
                [&mut p.r, &mut p.alpha, &mut p.s, &mut p.beta],
                p.covariance?,
            ))
        }
    }
}

impl Spread {
    fn build(model: &ActiveModel) -> Option<Self> {
        let mut doc = model.doc.clone();
        let (_, purchase_covariance) = purchase_params(&mut doc)?;
        let moved = |i: usize, sign: f64| -> Option<ActiveModel> {
            let mut d = model.doc.clone();
            let (params, _) = purchase_params(&mut d)?;
            *params[i] *= (sign * SPREAD_STEP).exp();
            ActiveModel::from_doc(model.version, model.created_at, d).ok()
        };
        let purchase = (0..4)
            .map(|i| Some((moved(i, 1.0)?, moved(i, -1.0)?)))
            .collect::<Option<Vec<_>>>()?;
        let spend = model.doc.gamma_gamma.as_ref().and_then(|g| {
            let moved = |i: usize, sign: f64| {
                let mut p = [g.p, g.q, g.v];
                p[i] *= (sign * SPREAD_STEP).exp();
                GammaGammaModel::new(GammaGammaParams::new(p[0], p[1], p[2]).ok()?).ok()
            };
            let pairs = (0..3)
                .map(|i| Some((moved(i, 1.0)?, moved(i, -1.0)?)))
                .collect::<Option<Vec<_>>>()?;
            Some((pairs, g.covariance?))
        });
        Some(Self {
            purchase,
            purchase_covariance,
            spend,
        })
    }
}

/// Why a model could not be fitted or loaded.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelError {
    NotEnoughData(String),
    Math(String),
}

impl std::error::Error for ModelError {}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelError::NotEnoughData(m) | ModelError::Math(m) => f.write_str(m),
        }
    }
}

impl ActiveModel {
    /// Rebuilds the runtime model from its stored document.
    pub fn from_doc(
        version: i64,
        created_at: Timestamp,
        doc: ModelDoc,
    ) -> Result<Self, ModelError> {
        let math = |e: patron_domain::clv::ClvError| ModelError::Math(e.to_string());
        let bg = match doc.time_unit {
            TimeUnitKind::Days => Bg::Days(transaction_model::<Days>(&doc)?),
            TimeUnitKind::Weeks => Bg::Weeks(transaction_model::<Weeks>(&doc)?),
        };
        let gg = match &doc.gamma_gamma {
            Some(g) => Some(
                GammaGammaModel::new(GammaGammaParams::new(g.p, g.q, g.v).map_err(math)?)
                    .map_err(math)?,
            ),
            None => None,
        };
        let rate = doc.monthly_discount_rate;
        let horizon = match (doc.horizon_days.map(f64::from), doc.time_unit) {
            (None, _) => ClvHorizon::new(doc.horizon_months, rate),
            (Some(d), TimeUnitKind::Days) => ClvHorizon::of_periods::<Days>(d, rate),
            (Some(d), TimeUnitKind::Weeks) => {
                ClvHorizon::of_periods::<Weeks>(d / Weeks::DAYS, rate)
            }
        }
        .map_err(math)?;
        Ok(Self {
            version,
            created_at,
            doc,
            bg,
            gg,
            horizon,
            memo: std::sync::Arc::default(),
            if_alive: std::sync::Arc::default(),
            spread: std::sync::Arc::default(),
        })
    }

    /// E[X(t) | customer]: expected purchase periods in the next `periods` of the model's unit
    /// (any length, unlike
    /// [`ActiveModel::predict`]'s horizon); `None` out of the model's domain.
    pub fn expected_purchases_over(&self, c: &DayRfm, periods: f64) -> Option<f64> {
        fn e<U: TimeUnit>(
            m: &(dyn TransactionModel<U> + Send + Sync),
            c: PeriodRfm,
            periods: f64,
        ) -> Option<f64> {
            let t = patron_domain::clv::Periods::<U>::new(periods).ok()?;
            m.conditional_expected_purchases(t, &c.to::<U>()?)
                .ok()
                .filter(|x| x.is_finite())
        }
        let c = self.inputs(c)?;
        match &self.bg {
            Bg::Days(m) => e(m.as_ref(), c, periods),
            Bg::Weeks(m) => e(m.as_ref(), c, periods),
        }
    }

    /// E[X(t)]: a new customer's expected repeat purchase periods in its first `periods` of the
    /// model's unit; `None` out of the model's domain.
    pub fn expected_purchases_of_new(&self, periods: f64) -> Option<f64> {
        fn e<U: TimeUnit>(
            m: &(dyn TransactionModel<U> + Send + Sync),
            periods: f64,
        ) -> Option<f64> {
            let t = patron_domain::clv::Periods::<U>::new(periods).ok()?;
            m.expected_purchases(t).ok().filter(|x| x.is_finite())
        }
        match &self.bg {
            Bg::Days(m) => e(m.as_ref(), periods),
            Bg::Weeks(m) => e(m.as_ref(), periods),
        }
    }

    /// Whether this model predicts from calendar weeks (needs [`DayRfm::weeks`]).
    pub fn counts_calendar_weeks(&self) -> bool {
        self.doc.time_unit == TimeUnitKind::Weeks && self.doc.calendar_weeks
    }

    /// The customer's `lifetimes` inputs in this model's unit: days, calendar weeks, or (for a
    /// weekly document older than calendar weeks) days divided by 7. `None` for a calendar-week
    /// model given statistics without weeks.
    pub fn inputs(&self, c: &DayRfm) -> Option<PeriodRfm> {
        inputs(self.doc.time_unit, self.doc.calendar_weeks, c)
    }

    /// Predictions for one customer; `None` if the inputs are out of the model's domain.
    pub fn predict(&self, c: &DayRfm) -> Option<Prediction> {
        let c = self.inputs(c)?;
        match &self.bg {
            Bg::Days(m) => self.predict_in(m.as_ref(), c),
            Bg::Weeks(m) => self.predict_in(m.as_ref(), c),
        }
    }

    /// 90 % intervals of `c`'s P(alive), expected purchases and CLV ([`Intervals`]); `None`
    /// without a prediction or when the fit kept no covariance (a boundary fit, or a model
    /// fitted before intervals came).
    pub fn intervals(&self, c: &DayRfm) -> Option<Intervals> {
        let base = self.predict(c)?;
        let spread = self.spread.get_or_init(|| Spread::build(self)).as_ref()?;
        let two_h = 2.0 * SPREAD_STEP;
        let (mut gp, mut ge, mut gc) = ([0.0; 4], [0.0; 4], [0.0; 4]);
        for (i, (up, down)) in spread.purchase.iter().enumerate() {
            let (u, d) = (up.predict(c)?, down.predict(c)?);
            gp[i] = (logit(u.probability_alive) - logit(d.probability_alive)) / two_h;
            ge[i] = (u.expected_purchases.ln() - d.expected_purchases.ln()) / two_h;
            if let (Some(cu), Some(cd)) = (u.predicted_clv, d.predicted_clv) {
                gc[i] = (cu.ln() - cd.ln()) / two_h;
            }
        }
        let cov = &spread.purchase_covariance;
        let p = base.probability_alive;
        let probability_alive = (p > 0.0 && p < 1.0)
            .then(|| interval(logit(p), quadratic(&gp, cov), sigmoid))
            .flatten();
        let expected_purchases = (base.expected_purchases > 0.0)
            .then(|| interval(base.expected_purchases.ln(), quadratic(&ge, cov), f64::exp))
            .flatten();
        let predicted_clv = match (base.predicted_clv, &spread.spend, self.inputs(c)) {
            (Some(clv), Some((pairs, spend_cov)), Some(x)) if clv > 0.0 => {
                let mut gs = [0.0; 3];
                for (i, (up, down)) in pairs.iter().enumerate() {
                    let value = |m: &GammaGammaModel| {
                        m.conditional_expected_value_raw(x.frequency, x.monetary)
                            .ln()
                    };
                    gs[i] = (value(up) - value(down)) / two_h;
                }
                let variance = quadratic(&gc, cov) + quadratic(&gs, spend_cov);
                interval(clv.ln(), variance, f64::exp)
            }
            _ => None,
        };
        Some(Intervals {
            probability_alive,
            expected_purchases,
            predicted_clv,
        })
    }

    /// The model P(alive) and expected purchases come from.
    pub fn purchase_model(&self) -> PurchaseModel {
        self.doc.purchase_model
    }

    /// Whether P(alive) says anything about this customer: under BG/NBD a customer with one
    /// purchase day cannot have dropped out, so P(alive) is 1 by construction however long ago
    /// the purchase was.
    pub fn p_alive_informative(&self, c: &DayRfm) -> bool {
        self.purchase_model().one_time_buyers_can_drop_out()
            || self.inputs(c).is_some_and(|c| c.frequency > 0)
    }

    /// Churn risk from `p_alive` (this model's, for `c`): unknown where P(alive) is not
    /// informative ([`ActiveModel::p_alive_informative`]), never "low" by construction.
    pub fn churn_risk(&self, c: &DayRfm, p_alive: Option<f64>) -> ChurnRisk {
        if self.p_alive_informative(c) {
            churn_risk(p_alive)
        } else {
            ChurnRisk::default()
        }
    }

    /// P(alive) alone (no expected purchases or CLV: a fraction of [`ActiveModel::predict`]'s
    /// cost).
    pub fn probability_alive(&self, c: &DayRfm) -> Option<f64> {
        fn p<U: TimeUnit>(
            m: &(dyn TransactionModel<U> + Send + Sync),
            c: PeriodRfm,
        ) -> Option<f64> {
            Some(m.probability_alive(&c.to::<U>()?))
        }
        let c = self.inputs(c)?;
        match &self.bg {
            Bg::Days(m) => p(m.as_ref(), c),
            Bg::Weeks(m) => p(m.as_ref(), c),
        }
    }

    fn predict_in<U: TimeUnit>(
        &self,
        m: &(dyn TransactionModel<U> + Send + Sync),
        c: PeriodRfm,
    ) -> Option<Prediction> {
        let rfm = c.to::<U>()?;
        let key = (c.frequency, c.recency.to_bits(), c.age.to_bits());
        let bg = self.memo.get_or_compute(key, || {
            // One horizon for expected purchases and CLV: `horizon_days` days, else
            // `horizon_months` months of the unit's month (30 days, or 4.345 weeks as
            // `lifetimes` counts a month in weeks).
            let horizon = match self.doc.horizon_days {
                Some(d) => f64::from(d) / U::DAYS,
                None => f64::from(self.doc.horizon_months) * U::PERIODS_PER_MONTH,
            };
            let alive = m.probability_alive(&rfm);
            let discounted = self
                .gg
                .as_ref()
                .and_then(|_| self.discounted_purchases(m, &rfm, alive));
            // The CLV sum ends exactly at the horizon: its last E[X] is the one wanted.
            let expected_purchases = match discounted {
                Some((_, last)) if !self.horizon.is_empty() => last,
                _ => {
                    let t = patron_domain::clv::Periods::<U>::new(horizon).ok()?;
                    m.conditional_expected_purchases(t, &rfm).ok()?
                }
            };
            Some(BgPart {
                probability_alive: alive,
                expected_purchases,
                discounted_purchases: discounted.map(|(sum, _)| sum),
            })
        })?;
        let (expected_order_value, predicted_clv) = match &self.gg {
            Some(gg) => {
                let value = gg.conditional_expected_value(&rfm);
                (Some(value), bg.discounted_purchases.map(|d| value * d))
            }
            None => (None, None),
        };
        Some(Prediction {
            probability_alive: bg.probability_alive,
            expected_purchases: bg.expected_purchases,
            expected_order_value,
            predicted_clv,
        })
    }

    /// [`discounted_and_final_expected_purchases`] of `rfm`, whose P(alive) is `alive`: from the
    /// if-alive memo where the model splits its E[X(t)] (the same numbers, bit for bit).
    fn discounted_purchases<U: TimeUnit>(
        &self,
        m: &(dyn TransactionModel<U> + Send + Sync),
        rfm: &CustomerRfm<U>,
        alive: f64,
    ) -> Option<(f64, f64)> {
        let steps = step_ends::<U>(&self.horizon).ok()?;
        let key = (rfm.frequency(), rfm.age().to_bits());
        let if_alive = self.if_alive.get_or_compute(key, || {
            m.expected_purchases_if_alive_at(&steps, rfm.frequency(), rfm.age())
                .map(|values| values.ok().map(Arc::from))
        });
        let Some(if_alive) = if_alive else {
            return discounted_and_final_expected_purchases(m, rfm, &self.horizon).ok();
        };
        Some(discount_steps(
            &self.horizon,
            &steps,
            if_alive?.iter().map(|v| alive * v),
        ))
    }
}

/// The stored document's chosen transaction model, ready to predict in unit `U`.
fn transaction_model<U: TimeUnit>(
    doc: &ModelDoc,
) -> Result<Arc<dyn TransactionModel<U> + Send + Sync>, ModelError> {
    let math = |e: patron_domain::clv::ClvError| ModelError::Math(e.to_string());
    let missing =
        |what: &str| ModelError::Math(format!("the model names {what} but holds no {what} fit"));
    Ok(match doc.purchase_model {
        PurchaseModel::BgNbd => {
            let b = &doc.bg_nbd;
            Arc::new(BgNbdModel::new(
                BgNbdParams::<U>::new(b.r, b.alpha, b.a, b.b).map_err(math)?,
            ))
        }
        PurchaseModel::MbgNbd => {
            let m = doc.mbg_nbd.as_ref().ok_or_else(|| missing("MBG/NBD"))?;
            Arc::new(MbgNbdModel::new(
                MbgNbdParams::<U>::new(m.r, m.alpha, m.a, m.b).map_err(math)?,
            ))
        }
        PurchaseModel::ParetoNbd => {
            let p = doc
                .pareto_nbd
                .as_ref()
                .ok_or_else(|| missing("Pareto/NBD"))?;
            Arc::new(ParetoNbdModel::new(
                ParetoNbdParams::<U>::new(p.r, p.alpha, p.s, p.beta).map_err(math)?,
            ))
        }
    })
}

/// Fitting options chosen by the caller.
#[derive(Debug, Clone, Copy)]
pub struct FitRequest {
    pub calibration_end: Timestamp,
    pub time_unit: TimeUnitKind,
    pub horizon_months: u32,
    /// A horizon in days instead of months (`horizon_months` is then ignored).
    pub horizon_days: Option<u32>,
    pub monthly_discount_rate: f64,
    /// The transaction model to score with (BG/NBD is fitted in any case).
    pub purchase_model: PurchaseModel,
    /// L2 penalty coefficient of the purchase-model fits (not Gamma-Gamma), `lifetimes`'
    /// `penalizer_coef` semantics; 0 = none.
    pub penalizer_coef: f64,
    /// End of the hold-out period the report covers (after `calibration_end`).
    pub holdout_end: Timestamp,
    /// Fit every purchase model and score with the one of lowest hold-out RMSE (needs a
    /// hold-out; `purchase_model` is then ignored).
    pub choose_by_holdout: bool,
}

/// Fits both models on `population` (customers with at least one purchase by the calibration end)
/// and builds the population distributions. `value_indexes` are the customers' perceived value
/// indexes where known.
pub fn fit(
    request: FitRequest,
    population: &[DayRfm],
    revenues: &[f64],
    value_indexes: Vec<f64>,
) -> Result<ModelDoc, ModelError> {
    let started = std::time::Instant::now();
    if population.len() < 10 {
        return Err(ModelError::NotEnoughData(format!(
            "{} customers have purchases by the calibration end; at least 10 are needed to fit",
            population.len()
        )));
    }
    let fits = match request.time_unit {
        TimeUnitKind::Days => fit_in::<Days>(population, &request)?,
        TimeUnitKind::Weeks => fit_in::<Weeks>(population, &request)?,
    };
    let mut doc = ModelDoc {
        calibration_end: request.calibration_end.as_micros(),
        time_unit: request.time_unit,
        calendar_weeks: request.time_unit == TimeUnitKind::Weeks,
        purchase_model: request.purchase_model,
        bg_nbd: fits.bg_nbd,
        mbg_nbd: fits.mbg_nbd,
        pareto_nbd: fits.pareto_nbd,
        gamma_gamma: fits.gamma_gamma,
        penalizer_coef: request.penalizer_coef,
        customers: population.len() as u64,
        holdout: None,
        holdout_comparison: Vec::new(),
        horizon_months: if request.horizon_days.is_some() {
            0
        } else {
            request.horizon_months
        },
        horizon_days: request.horizon_days,
        monthly_discount_rate: request.monthly_discount_rate,
        fit_millis: 0,
        days_since_last_purchase: Cdf::from_values(
            population.iter().map(|c| c.days_since_last).collect(),
        ),
        purchase_days: Cdf::from_values(
            population
                .iter()
                .map(|c| f64::from(c.frequency) + 1.0)
                .collect(),
        ),
        revenue: Cdf::from_values(revenues.to_vec()),
        predicted_clv: Cdf::default(),
        value_index: Cdf::from_values(value_indexes),
    };
    let model = ActiveModel::from_doc(0, request.calibration_end, doc.clone())?;
    let clvs: Vec<f64> = crate::par::map(population, |c| {
        model.predict(c).and_then(|p| p.predicted_clv)
    })
    .into_iter()
    .flatten()
    .collect();
    doc.predicted_clv = Cdf::from_values(clvs);
    doc.fit_millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(doc)
}

/// Calibration frequencies reported one by one; higher ones share the last row.
pub const HOLDOUT_FREQUENCIES: u32 = 10;

/// How the model's predictions for the hold-out period (calibration end to the fit) compare with
/// the purchases made in it, over the customers it was fitted on (lifetimes'
/// `calibration_and_holdout_data` and `plot_calibration_purchases_vs_holdout_purchases`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldoutReport {
    /// End of the hold-out period (the fit's time), microseconds since the epoch.
    pub end: i64,
    /// Whole days from the calibration end's day to the hold-out end's day.
    pub days: u32,
    /// The span predicted, in the model's periods (`lifetimes`' `duration_holdout`): `days` for a
    /// daily model, calendar weeks from the calibration end's week to the hold-out end's for a
    /// weekly one. `None` in reports stored before it (daily: `days`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub periods: Option<u32>,
    /// Customers compared (fitted on and given a prediction).
    pub customers: u64,
    /// Purchase periods (days, or calendar weeks in a weekly model) in the hold-out, summed over
    /// the customers.
    pub actual_purchases: u64,
    /// Expected purchase periods in the hold-out, summed.
    pub predicted_purchases: f64,
    /// Mean over customers of |predicted − actual|.
    pub mean_absolute_error: f64,
    /// Root of the mean over customers of (predicted − actual)².
    pub root_mean_squared_error: f64,
    /// 100 × (predicted − actual) / actual over all customers; `None` without actual purchases.
    pub aggregate_error_percent: Option<f64>,
    /// By calibration frequency (repeat purchase periods) 0, 1, …; the last row holds
    /// [`HOLDOUT_FREQUENCIES`] and more.
    pub by_frequency: Vec<HoldoutRow>,
    /// Cumulative repeat purchases predicted against actual, period by period across the
    /// calibration and the hold-out; `None` in reports stored before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<Tracking>,
}

/// Longest tracking series computed, in periods (100 years of days); longer spans get none.
pub const MAX_TRACKING_PERIODS: usize = 36_600;

/// What a [`Tracking`] series counts from the data, whatever the model: per period from the
/// earliest first purchase on, how many customers made their first purchase in it (a cohort)
/// and how many made a repeat purchase in it (one per customer and period, `lifetimes`'
/// convention).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackingCounts {
    /// Period (a day, or an ISO week from [`week_of`]) of index 0.
    pub start: i32,
    /// Customers whose first purchase period is `start + k`.
    pub first: Vec<u64>,
    /// Repeat purchase periods in `start + k`, over the customers.
    pub repeat: Vec<u64>,
}

impl TrackingCounts {
    /// The counts over customers given as their purchase periods (any order, repeats allowed),
    /// up to and including `last`; `None` without a purchase or when the span is longer than
    /// [`MAX_TRACKING_PERIODS`].
    pub fn from_customers<I, P>(customers: I, last: i32) -> Option<Self>
    where
        I: IntoIterator<Item = P>,
        P: IntoIterator<Item = i32>,
    {
        // (first period, other periods) per customer, then dense arrays from the earliest.
        let mut firsts: Vec<i32> = Vec::new();
        let mut repeats: Vec<i32> = Vec::new();
        let mut periods: Vec<i32> = Vec::new();
        for customer in customers {
            periods.clear();
            periods.extend(customer.into_iter().filter(|p| *p <= last));
            periods.sort_unstable();
            periods.dedup();
            if let Some((first, rest)) = periods.split_first() {
                firsts.push(*first);
                repeats.extend_from_slice(rest);
            }
        }
        let start = *firsts.iter().min()?;
        let len = usize::try_from(i64::from(last) - i64::from(start) + 1).ok()?;
        if len > MAX_TRACKING_PERIODS {
            return None;
        }
        let mut counts = Self {
            start,
            first: vec![0; len],
            repeat: vec![0; len],
        };
        // Every period is in [start, last]: `start` is the least first period, and a repeat
        // period comes after its customer's first.
        for p in firsts {
            counts.first[(p - start) as usize] += 1;
        }
        for p in repeats {
            counts.repeat[(p - start) as usize] += 1;
        }
        Some(counts)
    }
}

/// Cumulative repeat purchases, actual and predicted, period by period (`lifetimes`'
/// `expected_cumulative_transactions`, the data of `plot_cumulative_transactions`; differences
/// of consecutive points are `plot_incremental_transactions`'). Point `k` covers periods
/// `0..=k` from the earliest first purchase's period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tracking {
    /// First day of period 0 (days since the epoch): the earliest first purchase's day, or the
    /// Monday of its week in a weekly model.
    pub start_day: i32,
    /// Points `0..calibration_points` end in the calibration period (the calibration end's
    /// period is the last of them); the rest in the hold-out.
    pub calibration_points: u32,
    /// Point `k`: repeat purchase periods in periods `0..=k`, over the customers.
    pub actual: Vec<u64>,
    /// Point `k`: the sum over the customers whose first purchase period `p` is at most `k` of
    /// E[X(k + 1 − p)], a new customer's expected repeat purchases in that many periods.
    pub predicted: Vec<f64>,
}

impl Tracking {
    /// The series of `counts` under `model`, whose calibration ended in period `calibration`;
    /// `None` where the model gives no E[X(t)].
    pub fn compute(model: &ActiveModel, counts: &TrackingCounts, calibration: i32) -> Option<Self> {
        let n = counts.first.len();
        // E[X(m)] for m = 1..=n, once: point k needs m = k + 1 − p for every cohort p ≤ k.
        let expected: Vec<f64> = (1..=n)
            .map(|m| model.expected_purchases_of_new(m as f64))
            .collect::<Option<_>>()?;
        let cohorts: Vec<(usize, f64)> = counts
            .first
            .iter()
            .enumerate()
            .filter(|(_, size)| **size > 0)
            .map(|(p, size)| (p, *size as f64))
            .collect();
        let predicted = (0..n)
            .map(|k| {
                cohorts
                    .iter()
                    .take_while(|(p, _)| *p <= k)
                    .map(|(p, size)| size * expected[k - p])
                    .sum()
            })
            .collect();
        let actual = counts
            .repeat
            .iter()
            .scan(0u64, |sum, r| {
                *sum += r;
                Some(*sum)
            })
            .collect();
        let start_day = match model.doc.time_unit {
            TimeUnitKind::Days => counts.start,
            TimeUnitKind::Weeks => counts.start * 7 - 3,
        };
        Some(Self {
            start_day,
            calibration_points: u32::try_from((calibration - counts.start + 1).max(0)).unwrap_or(0),
            actual,
            predicted,
        })
    }
}

/// One purchase model's hold-out errors, when FitValueModel chose between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldoutChoice {
    pub purchase_model: PurchaseModel,
    pub mean_absolute_error: f64,
    pub root_mean_squared_error: f64,
    pub aggregate_error_percent: Option<f64>,
    /// The lowest RMSE (the first in BG/NBD, MBG/NBD, Pareto/NBD order on a tie).
    pub chosen: bool,
}

/// Fits every purchase model on the same data and keeps the one whose hold-out RMSE is lowest:
/// its document, with the other models' fits and every model's errors beside it. `evaluate`
/// gives a fitted document's hold-out report.
pub fn choose_by_holdout(
    request: FitRequest,
    population: &[DayRfm],
    revenues: &[f64],
    value_indexes: &[f64],
    evaluate: impl Fn(&ModelDoc) -> Result<HoldoutReport, ModelError>,
) -> Result<ModelDoc, ModelError> {
    let mut fitted = Vec::new();
    for purchase_model in [
        PurchaseModel::BgNbd,
        PurchaseModel::MbgNbd,
        PurchaseModel::ParetoNbd,
    ] {
        let request = FitRequest {
            purchase_model,
            ..request
        };
        let doc = fit(request, population, revenues, value_indexes.to_vec())?;
        let report = evaluate(&doc)?;
        fitted.push((doc, report));
    }
    let best = fitted
        .iter()
        .enumerate()
        .min_by(|(_, a), (_, b)| {
            a.1.root_mean_squared_error
                .total_cmp(&b.1.root_mean_squared_error)
        })
        .map_or(0, |(i, _)| i);
    let comparison = fitted
        .iter()
        .enumerate()
        .map(|(i, (doc, r))| HoldoutChoice {
            purchase_model: doc.purchase_model,
            mean_absolute_error: r.mean_absolute_error,
            root_mean_squared_error: r.root_mean_squared_error,
            aggregate_error_percent: r.aggregate_error_percent,
            chosen: i == best,
        })
        .collect();
    let mbg_nbd = fitted[1].0.mbg_nbd.clone();
    let pareto_nbd = fitted[2].0.pareto_nbd.clone();
    let (mut doc, report) = fitted.swap_remove(best);
    doc.mbg_nbd = mbg_nbd;
    doc.pareto_nbd = pareto_nbd;
    doc.holdout = Some(report);
    doc.holdout_comparison = comparison;
    Ok(doc)
}

/// One calibration frequency of a [`HoldoutReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldoutRow {
    pub frequency: u32,
    /// This frequency and every higher one.
    pub or_more: bool,
    pub customers: u64,
    pub mean_actual: f64,
    pub mean_predicted: f64,
}

impl HoldoutReport {
    /// The report over `(customer as of the calibration end, purchase periods in the
    /// hold-out)`, predicting `(days, periods)` ahead with `model` (`periods` of its unit).
    pub fn compute(
        model: &ActiveModel,
        end: Timestamp,
        (days, periods): (u32, u32),
        rows: &[(DayRfm, u64)],
    ) -> Self {
        let n = HOLDOUT_FREQUENCIES as usize;
        let mut buckets = vec![(0u64, 0.0f64, 0.0f64); n + 1];
        let (mut customers, mut actual_sum, mut predicted_sum) = (0u64, 0u64, 0.0f64);
        let (mut abs_sum, mut sq_sum) = (0.0f64, 0.0f64);
        // Predictions on every core; the sums below in the customers' order.
        let predictions = crate::par::map(rows, |(c, _)| {
            Some((
                model.expected_purchases_over(c, f64::from(periods))?,
                model.inputs(c)?,
            ))
        });
        for ((_, actual), prediction) in rows.iter().zip(predictions) {
            let Some((predicted, inputs)) = prediction else {
                continue;
            };
            customers += 1;
            actual_sum += actual;
            predicted_sum += predicted;
            let diff = predicted - *actual as f64;
            abs_sum += diff.abs();
            sq_sum += diff * diff;
            let b = &mut buckets[(inputs.frequency as usize).min(n)];
            b.0 += 1;
            b.1 += *actual as f64;
            b.2 += predicted;
        }
        let per = |x: f64, k: u64| if k == 0 { 0.0 } else { x / k as f64 };
        Self {
            end: end.as_micros(),
            days,
            periods: Some(periods),
            customers,
            actual_purchases: actual_sum,
            predicted_purchases: predicted_sum,
            mean_absolute_error: per(abs_sum, customers),
            root_mean_squared_error: per(sq_sum, customers).sqrt(),
            aggregate_error_percent: (actual_sum > 0)
                .then(|| 100.0 * (predicted_sum - actual_sum as f64) / actual_sum as f64),
            by_frequency: buckets
                .iter()
                .enumerate()
                .filter(|(_, b)| b.0 > 0)
                .map(|(f, b)| HoldoutRow {
                    frequency: f as u32,
                    or_more: f == n,
                    customers: b.0,
                    mean_actual: per(b.1, b.0),
                    mean_predicted: per(b.2, b.0),
                })
                .collect(),
            tracking: None,
        }
    }
}

/// The fitted parts of a [`ModelDoc`].
struct Fits {
    bg_nbd: BgNbdDoc,
    mbg_nbd: Option<BgNbdDoc>,
    pareto_nbd: Option<ParetoNbdDoc>,
    gamma_gamma: Option<GammaGammaDoc>,
}

fn fit_in<U: TimeUnit>(population: &[DayRfm], request: &FitRequest) -> Result<Fits, ModelError> {
    let (purchase_model, penalizer_coef) = (request.purchase_model, request.penalizer_coef);
    let math = |e: patron_domain::clv::ClvError| ModelError::Math(e.to_string());
    let customers: Vec<CustomerRfm<U>> = population
        .iter()
        .filter_map(|c| inputs(U::KIND, true, c)?.to::<U>())
        .collect();
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    let bg_options = BgNbdFitOptions::<U> {
        threads,
        penalizer_coef,
        ..BgNbdFitOptions::default()
    };
    let bg = fit_bg_nbd(&customers, &bg_options).map_err(math)?;
    let p = bg.params.to_untyped();
    let bg_doc = BgNbdDoc {
        log_likelihood: bg.log_likelihood,
        iterations: bg.iterations,
        converged: bg.converged,
        gradient_norm: Some(bg.gradient_norm),
        standard_errors: bg.standard_errors,
        covariance: bg.covariance,
        ..BgNbdDoc::params(p.r, p.alpha, p.a, p.b)
    };
    let mbg_nbd = match purchase_model {
        PurchaseModel::MbgNbd => {
            let options = MbgNbdFitOptions::<U> {
                threads,
                penalizer_coef,
                ..MbgNbdFitOptions::default()
            };
            let m = fit_mbg_nbd(&customers, &options).map_err(math)?;
            let p = m.params.to_untyped();
            Some(BgNbdDoc {
                log_likelihood: m.log_likelihood,
                iterations: m.iterations,
                converged: m.converged,
                gradient_norm: Some(m.gradient_norm),
                standard_errors: m.standard_errors,
                covariance: m.covariance,
                ..BgNbdDoc::params(p.r, p.alpha, p.a, p.b)
            })
        }
        _ => None,
    };
    let pareto_nbd = match purchase_model {
        PurchaseModel::ParetoNbd => {
            let options = ParetoNbdFitOptions::<U> {
                threads,
                penalizer_coef,
                ..ParetoNbdFitOptions::default()
            };
            let m = fit_pareto_nbd(&customers, &options).map_err(math)?;
            let p = m.params.to_untyped();
            Some(ParetoNbdDoc {
                r: p.r,
                alpha: p.alpha,
                s: p.s,
                beta: p.beta,
                log_likelihood: m.log_likelihood,
                iterations: m.iterations,
                // A supremum on the boundary is not an estimate, whatever the optimiser says.
                converged: m.converged && m.interior_optimum,
                gradient_norm: Some(m.gradient_norm),
                standard_errors: m.standard_errors,
                covariance: m.covariance,
            })
        }
        _ => None,
    };
    // Unpenalised: the penalty is on the parameters themselves, and `v` is in minor units of
    // money (thousands), so a coefficient suited to the purchase models would swamp it.
    let gg_options = GammaGammaFitOptions {
        threads,
        ..GammaGammaFitOptions::default()
    };
    // Too few repeat buyers leave spend unmodelled rather than failing the whole fit.
    let gg_doc = fit_gamma_gamma(&customers, &gg_options).ok().and_then(|g| {
        let model_ok = g.model().is_ok();
        model_ok.then(|| GammaGammaDoc {
            p: g.params.p(),
            q: g.params.q(),
            v: g.params.v(),
            log_likelihood: g.log_likelihood,
            iterations: g.iterations,
            converged: g.converged,
            customers: g.customers,
            gradient_norm: Some(g.gradient_norm),
            standard_errors: g.standard_errors,
            covariance: g.covariance,
        })
    });
    Ok(Fits {
        bg_nbd: bg_doc,
        mbg_nbd,
        pareto_nbd,
        gamma_gamma: gg_doc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use patron_domain::clv::simulate::{Rng, simulate_bg_nbd_customer, simulate_mean_spend};
    use patron_domain::summary::PurchaseStats;

    const DAY: i64 = 86_400_000_000;

    /// A BG/NBD fit in days at the epoch, 12 months ahead at 1 % a month, no hold-out.
    fn day_request() -> FitRequest {
        FitRequest {
            calibration_end: Timestamp::from_micros(0),
            time_unit: TimeUnitKind::Days,
            horizon_months: 12,
            horizon_days: None,
            monthly_discount_rate: 0.01,
            purchase_model: PurchaseModel::BgNbd,
            penalizer_coef: 0.0,
            holdout_end: Timestamp::from_micros(0),
            choose_by_holdout: false,
        }
    }

    fn summary(first: i32, last: i32, days: i64, net: i64, first_day: i64) -> CustomerSummary {
        CustomerSummary {
            purchases: PurchaseStats {
                order_count: days,
                purchase_days: days,
                first_purchase_day: Some(Day::from_days(first)),
                last_purchase_day: Some(Day::from_days(last)),
                net_revenue: net,
                refunded: 0,
                first_day_revenue: first_day,
            },
            ..CustomerSummary::default()
        }
    }

    #[test]
    fn summaries_become_lifetimes_inputs() {
        let as_of = Timestamp::from_micros(120 * DAY + DAY / 2);
        // Three purchase days: 100, 110, 118; 1,000 on the first day, 3,000 on the repeats.
        let c = DayRfm::from_summary(&summary(100, 118, 3, 4_000, 1_000), as_of).expect("buyer");
        assert_eq!(
            (c.frequency, c.recency, c.age, c.monetary, c.days_since_last),
            (2, 18.0, 20.0, 1_500.0, 2.0)
        );
        // A one-time buyer: no repeat value.
        let c = DayRfm::from_summary(&summary(100, 100, 1, 700, 700), as_of).expect("buyer");
        assert_eq!((c.frequency, c.recency, c.monetary), (0, 0.0, 0.0));
        // First purchase at the as-of instant: T = 0.
        let c = DayRfm::from_summary(&summary(120, 120, 1, 700, 700), Day::from_days(120).start())
            .expect("buyer");
        assert_eq!((c.age, c.days_since_last), (0.0, 0.0));
        // No purchases, or an as-of before the first purchase day: nothing to model.
        assert!(DayRfm::from_summary(&CustomerSummary::default(), as_of).is_none());
        assert!(DayRfm::from_summary(&summary(130, 131, 2, 10, 5), as_of).is_none());
    }

    /// `n` customers simulated from BG/NBD (r 0.4, α 20, a 0.7, b 2.5) and Gamma-Gamma (p 6, q 4,
    /// v 2,000), ages spread over 30–729 days, in whole days as stored summaries have them.
    fn simulated(n: u32, rng: &mut Rng) -> Vec<DayRfm> {
        let truth = BgNbdParams::<Days>::new(0.4, 20.0, 0.7, 2.5).expect("params");
        let spend = GammaGammaParams::new(6.0, 4.0, 2_000.0).expect("params");
        (0..n)
            .map(|i| {
                let age = f64::from(30 + (i * 37) % 700);
                let s = simulate_bg_nbd_customer(&truth, age, rng);
                let recency = s.recency.floor();
                DayRfm {
                    frequency: s.frequency,
                    recency,
                    age,
                    monetary: simulate_mean_spend(&spend, s.frequency, rng),
                    days_since_last: age - recency,
                    weeks: None,
                }
            })
            .collect()
    }

    #[test]
    fn fit_on_simulated_data_and_predict_for_extremes() {
        let mut rng = Rng::seed(7);
        let population = simulated(3_000, &mut rng);
        let revenues: Vec<f64> = population
            .iter()
            .map(|c| c.monetary * f64::from(c.frequency + 1))
            .collect();
        let request = day_request();
        let doc = fit(request, &population, &revenues, vec![50.0, 75.0]).expect("fit");
        assert!(doc.bg_nbd.converged);
        assert_eq!(doc.customers, 3_000);
        // Within a loose band of the truth for 3,000 customers; the domain's tests hold the tight bars.
        assert!((doc.bg_nbd.r - 0.4).abs() < 0.15, "{:?}", doc.bg_nbd);
        assert!(doc.gamma_gamma.is_some());
        let model =
            ActiveModel::from_doc(3, Timestamp::from_micros(0), doc.clone()).expect("model");
        // A heavy buyer (500 repeat days) and a brand-new one: finite, sane predictions.
        for c in [
            DayRfm {
                frequency: 500,
                recency: 690.0,
                age: 700.0,
                monetary: 4_000.0,
                days_since_last: 10.0,
                weeks: None,
            },
            DayRfm {
                frequency: 0,
                recency: 0.0,
                age: 0.0,
                monetary: 0.0,
                days_since_last: 0.0,
                weeks: None,
            },
            DayRfm {
                frequency: 3,
                recency: 30.0,
                age: 400.0,
                monetary: 0.0,
                days_since_last: 370.0,
                weeks: None,
            },
        ] {
            let p = model.predict(&c).expect("prediction");
            assert!((0.0..=1.0).contains(&p.probability_alive), "{p:?}");
            assert!(
                p.expected_purchases.is_finite() && p.expected_purchases >= 0.0,
                "{p:?}"
            );
            assert!(
                p.predicted_clv.is_some_and(|v| v.is_finite() && v >= 0.0),
                "{p:?}"
            );
        }
        // The memos return what the model math gives, bit for bit, for customers sharing a
        // shape too, and for customers sharing only frequency and age (the if-alive memo).
        let bg = BgNbdModel::new(
            BgNbdParams::<Days>::new(doc.bg_nbd.r, doc.bg_nbd.alpha, doc.bg_nbd.a, doc.bg_nbd.b)
                .expect("params"),
        );
        let gg_doc = doc.gamma_gamma.as_ref().expect("gg");
        let gg = GammaGammaModel::new(
            GammaGammaParams::new(gg_doc.p, gg_doc.q, gg_doc.v).expect("params"),
        )
        .expect("gg");
        let horizon = ClvHorizon::new(12, 0.01).expect("horizon");
        let earlier_last = population.iter().take(400).map(|c| DayRfm {
            recency: (c.recency * 0.5).floor(),
            ..*c
        });
        for c in population
            .iter()
            .take(400)
            .copied()
            .chain(earlier_last)
            .chain(population.iter().take(400).copied())
        {
            let c = &c;
            let p = model.predict(c).expect("prediction");
            let rfm =
                CustomerRfm::<Days>::new(c.frequency, c.recency, c.age, c.monetary).expect("rfm");
            assert_eq!(p.probability_alive, bg.probability_alive(&rfm));
            let year = patron_domain::clv::Periods::<Days>::new(360.0).expect("t");
            let e = bg
                .conditional_expected_purchases(year, &rfm)
                .expect("expected purchases");
            assert_eq!(p.expected_purchases, e);
            let clv =
                patron_domain::clv::customer_lifetime_value(&bg, &gg, &rfm, &horizon).expect("clv");
            assert_eq!(p.predicted_clv, Some(clv), "{c:?}");
            let other = DayRfm {
                monetary: c.monetary * 2.0 + 1.0,
                ..*c
            };
            let q = model.predict(&other).expect("prediction");
            assert_eq!(q.probability_alive, p.probability_alive);
            if c.frequency > 0 {
                assert_ne!(
                    q.predicted_clv, p.predicted_clv,
                    "spend must not be memoised"
                );
            }
        }
        // The stored document round-trips through JSON into an identical model.
        let json = serde_json::to_string(&doc).expect("encode");
        let back: ModelDoc = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, doc);
        // Too small a population is refused, not fitted on noise.
        assert!(matches!(
            fit(request, &population[..5], &revenues[..5], vec![]),
            Err(ModelError::NotEnoughData(_))
        ));
    }

    /// Calendar weeks against `lifetimes`' `calibration_and_holdout_data(..., freq='W')` on its
    /// CDNOW sample (tests/fixtures/generate_cdnow_holdout.py): every customer's frequency,
    /// recency, T and monetary value as of 1997-09-30.
    #[test]
    fn calendar_weeks_match_lifetimes_freq_w() {
        use patron_domain::Date;
        let transactions = include_str!("../../../tests/fixtures/cdnow_sample_transactions.csv");
        let reference = include_str!("../../../tests/fixtures/cdnow_holdout_weekly_reference.csv");
        let as_of = Date::parse_iso("1997-09-30")
            .expect("date")
            .to_day()
            .start();
        let mut orders: std::collections::HashMap<&str, Vec<OrderDay>> = Default::default();
        for line in transactions.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let day = Date::parse_iso(f[1]).expect("date").to_day();
            if day.start() <= as_of {
                orders.entry(f[0]).or_default().push(OrderDay {
                    day,
                    net_amount: f[2].parse().expect("cents"),
                });
            }
        }
        let mut checked = 0;
        for line in reference.lines().skip(2) {
            let f: Vec<&str> = line.split(',').collect();
            let mut mine = orders.remove(f[0]).expect("customer");
            mine.sort();
            let w = PeriodRfm::weeks(&mine, as_of).expect("weeks");
            let want_monetary: f64 = f[4].parse().expect("monetary");
            assert_eq!(
                (w.frequency, w.recency, w.age),
                (
                    f[1].parse().expect("frequency"),
                    f[2].parse().expect("recency"),
                    f[3].parse().expect("T"),
                ),
                "customer {}",
                f[0]
            );
            assert!(
                (w.monetary - want_monetary).abs() <= 1e-9 * want_monetary.max(1.0),
                "customer {}: {} against {want_monetary}",
                f[0],
                w.monetary
            );
            checked += 1;
        }
        assert_eq!(checked, 2_357);
        assert!(orders.is_empty(), "customers lifetimes does not have");
    }

    /// The delta-method intervals against the parameters' sampling distribution itself: 3,000
    /// draws of the log-parameters from N(θ̂, Σ), each customer's values under every draw, and
    /// their 5 % and 95 % quantiles.
    #[test]
    fn intervals_match_the_spread_of_sampled_parameters() {
        let mut rng = Rng::seed(23);
        let population = simulated(2_000, &mut rng);
        let request = day_request();
        let doc = fit(request, &population, &vec![1.0; 2_000], vec![]).expect("fit");
        let cov = doc.bg_nbd.covariance.expect("covariance");
        let model = ActiveModel::from_doc(1, Timestamp::from_micros(0), doc.clone()).expect("m");
        // Cholesky of Σ, for draws.
        let mut l = [[0.0f64; 4]; 4];
        for i in 0..4 {
            for j in 0..=i {
                let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
                l[i][j] = if i == j {
                    (cov[i][i] - s).sqrt()
                } else {
                    (cov[i][j] - s) / l[j][j]
                };
            }
        }
        let draws: Vec<ActiveModel> = (0..3_000)
            .map(|_| {
                let z: Vec<f64> = (0..4).map(|_| rng.normal()).collect();
                let mut d = doc.clone();
                let (params, _) = purchase_params(&mut d).expect("params");
                for (i, p) in params.into_iter().enumerate() {
                    let shift: f64 = (0..=i).map(|k| l[i][k] * z[k]).sum();
                    *p *= shift.exp();
                }
                ActiveModel::from_doc(1, Timestamp::from_micros(0), d).expect("draw")
            })
            .collect();
        let quantiles = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[v.len() * 5 / 100], v[v.len() * 95 / 100])
        };
        let customers = [
            (1, 60.0, 400.0, 1_500.0),
            (4, 300.0, 330.0, 2_500.0),
            (2, 40.0, 500.0, 900.0),
            (12, 600.0, 650.0, 3_000.0),
        ];
        for (frequency, recency, age, monetary) in customers {
            let c = DayRfm {
                frequency,
                recency,
                age,
                monetary,
                days_since_last: age - recency,
                weeks: None,
            };
            let got = model.intervals(&c).expect("intervals");
            let p = model.predict(&c).expect("prediction");
            let sampled_p = quantiles(
                draws
                    .iter()
                    .map(|m| m.probability_alive(&c).expect("p"))
                    .collect(),
            );
            let sampled_e = quantiles(
                draws
                    .iter()
                    .map(|m| m.predict(&c).expect("p").expected_purchases)
                    .collect(),
            );
            // Each end's distance from the point value within 15 % of the sampled one.
            let near = |point: f64, got: (f64, f64), want: (f64, f64)| {
                let ok =
                    |g: f64, w: f64| ((g - point) - (w - point)).abs() <= 0.15 * (w - point).abs();
                assert!(
                    ok(got.0, want.0) && ok(got.1, want.1),
                    "{got:?} against sampled {want:?} around {point}"
                );
            };
            near(
                p.probability_alive,
                got.probability_alive.expect("p"),
                sampled_p,
            );
            near(
                p.expected_purchases,
                got.expected_purchases.expect("e"),
                sampled_e,
            );
            let clv = got.predicted_clv.expect("clv");
            let point = p.predicted_clv.expect("clv");
            assert!(clv.0 < point && point < clv.1, "{clv:?} {point}");
        }
        // No covariance (a boundary fit, an older document): no intervals.
        let mut bare = doc;
        bare.bg_nbd.covariance = None;
        let bare = ActiveModel::from_doc(1, Timestamp::from_micros(0), bare).expect("model");
        let c = DayRfm {
            frequency: 3,
            recency: 100.0,
            age: 200.0,
            monetary: 1_000.0,
            days_since_last: 100.0,
            weeks: None,
        };
        assert!(bare.predict(&c).is_some());
        assert_eq!(bare.intervals(&c), None);
    }

    /// `c` with weekly statistics as if every purchase day fell in a week of its own.
    fn with_weeks(c: DayRfm) -> DayRfm {
        DayRfm {
            weeks: Some(PeriodRfm {
                frequency: c.frequency,
                recency: (c.recency / 7.0).floor(),
                age: (c.age / 7.0).floor(),
                monetary: c.monetary,
            }),
            ..c
        }
    }

    /// A customer's CLV straight from the model math, without the memos.
    fn direct_clv<U: TimeUnit>(model: &ActiveModel, c: PeriodRfm) -> Option<f64> {
        let m = transaction_model::<U>(&model.doc).expect("model");
        let rfm = c.to::<U>()?;
        let (discounted, _) =
            discounted_and_final_expected_purchases(m.as_ref(), &rfm, &model.horizon).ok()?;
        Some(model.gg.as_ref()?.conditional_expected_value(&rfm) * discounted)
    }

    #[test]
    fn each_purchase_model_fits_and_one_time_buyers_follow_it() {
        let mut rng = Rng::seed(11);
        let population = simulated(2_000, &mut rng);
        let population: Vec<DayRfm> = population.into_iter().map(with_weeks).collect();
        let revenues = vec![1_000.0; population.len()];
        let once = |days: f64| {
            with_weeks(DayRfm {
                frequency: 0,
                recency: 0.0,
                age: days,
                monetary: 0.0,
                days_since_last: days,
                weeks: None,
            })
        };
        for purchase_model in [
            PurchaseModel::BgNbd,
            PurchaseModel::MbgNbd,
            PurchaseModel::ParetoNbd,
        ] {
            for time_unit in [TimeUnitKind::Days, TimeUnitKind::Weeks] {
                let request = FitRequest {
                    time_unit,
                    purchase_model,
                    ..day_request()
                };
                let doc = fit(request, &population, &revenues, vec![]).expect("fit");
                let name = purchase_model.name();
                assert_eq!(doc.purchase_model, purchase_model);
                assert!(doc.bg_nbd.converged, "{name}");
                assert_eq!(
                    doc.mbg_nbd.is_some(),
                    purchase_model == PurchaseModel::MbgNbd,
                    "{name}"
                );
                assert_eq!(
                    doc.pareto_nbd.is_some(),
                    purchase_model == PurchaseModel::ParetoNbd,
                    "{name}"
                );
                let model = ActiveModel::from_doc(1, Timestamp::from_micros(0), doc.clone())
                    .expect("model");
                assert_eq!(model.purchase_model(), purchase_model);
                let p: Vec<f64> = [1.0, 30.0, 200.0, 400.0, 700.0]
                    .iter()
                    .map(|d| model.predict(&once(*d)).expect("p").probability_alive)
                    .collect();
                let old = once(400.0);
                if purchase_model == PurchaseModel::BgNbd {
                    assert!(p.iter().all(|p| *p == 1.0), "{name}: {p:?}");
                    assert!(!model.p_alive_informative(&old));
                    assert_eq!(model.churn_risk(&old, Some(1.0)), ChurnRisk::default());
                } else {
                    assert!(
                        p.windows(2).all(|w| w[1] < w[0]),
                        "{name} {time_unit:?}: {p:?}"
                    );
                    assert!(p[4] < 0.99 && p[4] > 0.0, "{name}: {p:?}");
                    assert!(model.p_alive_informative(&old));
                    assert_eq!(model.churn_risk(&old, Some(p[3])), churn_risk(Some(p[3])));
                }
                // Repeat buyers are informative under every model.
                let repeat = with_weeks(DayRfm {
                    frequency: 2,
                    recency: 100.0,
                    age: 400.0,
                    monetary: 1_000.0,
                    days_since_last: 300.0,
                    weeks: None,
                });
                assert!(model.p_alive_informative(&repeat));
                // CLV through the memos is the model math, bit for bit, whether the model splits
                // E[X(t)] into P(alive) times a factor of frequency and age (BG/NBD, MBG/NBD) or
                // not (Pareto/NBD): customers sharing frequency and age, each asked twice.
                for c in population.iter().take(200).flat_map(|c| {
                    let earlier_last = with_weeks(DayRfm {
                        recency: (c.recency * 0.5).floor(),
                        weeks: None,
                        ..*c
                    });
                    [*c, earlier_last, *c, earlier_last]
                }) {
                    let p = model.predict(&c).expect("prediction");
                    let inputs = model.inputs(&c).expect("inputs");
                    let want = match time_unit {
                        TimeUnitKind::Days => direct_clv::<Days>(&model, inputs),
                        TimeUnitKind::Weeks => direct_clv::<Weeks>(&model, inputs),
                    };
                    assert!(want.is_some(), "{name} {time_unit:?} {c:?}");
                    assert_eq!(p.predicted_clv, want, "{name} {time_unit:?} {c:?}");
                }
                let json = serde_json::to_string(&doc).expect("encode");
                let back: ModelDoc = serde_json::from_str(&json).expect("decode");
                assert_eq!(back, doc);
            }
        }
        // A document stored before the choice existed reads as BG/NBD.
        let request = day_request();
        let doc = fit(request, &population, &revenues, vec![]).expect("fit");
        let mut json: serde_json::Value = serde_json::to_value(&doc).expect("encode");
        json.as_object_mut()
            .expect("object")
            .remove("purchase_model");
        let back: ModelDoc = serde_json::from_value(json).expect("decode");
        assert_eq!(back.purchase_model, PurchaseModel::BgNbd);
        // Activation: asked, always; unasked, only a converged fit, and only as the first.
        assert!(doc.converged());
        assert_eq!(
            doc.activation(false),
            patron_store::Activation::IfNoneActive
        );
        assert_eq!(doc.activation(true), patron_store::Activation::Always);
        let mut stalled = doc.clone();
        stalled.bg_nbd.converged = false;
        assert_eq!(stalled.activation(false), patron_store::Activation::Never);
        assert_eq!(stalled.activation(true), patron_store::Activation::Always);
        let mut spend_stalled = doc.clone();
        if let Some(g) = spend_stalled.gamma_gamma.as_mut() {
            g.converged = false;
        }
        assert!(!spend_stalled.converged());
        assert_eq!(
            spend_stalled.activation(false),
            patron_store::Activation::Never
        );
        // Only the model that scores counts: a stalled BG/NBD beside a converged MBG/NBD is fine.
        let mbg = ModelDoc {
            purchase_model: PurchaseModel::MbgNbd,
            mbg_nbd: Some(doc.bg_nbd.clone()),
            ..stalled.clone()
        };
        assert!(mbg.converged());
        // A document naming a model it does not hold is refused, not scored with another.
        let broken = ModelDoc {
            purchase_model: PurchaseModel::MbgNbd,
            ..doc
        };
        assert!(ActiveModel::from_doc(1, Timestamp::from_micros(0), broken).is_err());
    }

    /// The tracking series: a customer's periods count once each and only up to the last one,
    /// the first is a cohort, not a repeat; each point sums the cohorts so far, each over its
    /// own age (`lifetimes`' `expected_cumulative_transactions`; the end-to-end test holds the
    /// comparison on CDNOW).
    #[test]
    fn tracking_counts_cohorts_and_repeats() {
        let counts =
            TrackingCounts::from_customers([vec![7, 5, 5, 20], vec![6, 9], vec![11], vec![]], 10)
                .expect("counts");
        assert_eq!(counts.start, 5);
        assert_eq!(counts.first, [1, 1, 0, 0, 0, 0]);
        assert_eq!(counts.repeat, [0, 0, 1, 0, 1, 0]);
        assert_eq!(TrackingCounts::from_customers([vec![11]], 10), None);
        assert_eq!(
            TrackingCounts::from_customers([vec![0, MAX_TRACKING_PERIODS as i32]], i32::MAX),
            None
        );

        let mut rng = Rng::seed(3);
        let population = simulated(1_000, &mut rng);
        let revenues = vec![0.0; population.len()];
        let request = day_request();
        let doc = fit(request, &population, &revenues, vec![]).expect("fit");
        let model = ActiveModel::from_doc(1, Timestamp::from_micros(0), doc).expect("model");
        let t = Tracking::compute(&model, &counts, 7).expect("tracking");
        assert_eq!((t.start_day, t.calibration_points), (5, 3));
        assert_eq!(t.actual, [0, 0, 1, 1, 2, 2]);
        let e = |m: f64| model.expected_purchases_of_new(m).expect("E[X(t)]");
        for (k, predicted) in t.predicted.iter().enumerate() {
            // Cohort 0 (period 5) is k + 1 periods old at point k, cohort 1 (period 6) k.
            let want = e(k as f64 + 1.0) + if k >= 1 { e(k as f64) } else { 0.0 };
            assert!(
                (predicted - want).abs() < 1e-12,
                "point {k}: {predicted} {want}"
            );
        }
        assert!(t.predicted.windows(2).all(|w| w[0] < w[1]));
    }
}
