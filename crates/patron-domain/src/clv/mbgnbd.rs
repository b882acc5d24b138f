//! The MBG/NBD model (Batislam, Denizel & Filiztekin 2007; Wagner & Hoppe 2008): likelihood, fit
//! and predictions, as `lifetimes` 0.11.3's `ModifiedBetaGeoFitter` computes them.
//!
//! # Model
//!
//! As BG/NBD ([`bgnbd`](super::bgnbd)) — purchases at Poisson rate `λ ~ Gamma(r, α)`, dropout
//! with probability `p ~ Beta(a, b)` — except that the customer may also drop out **right after
//! the first purchase**, not only after repeat purchases. In BG/NBD a one-time buyer is alive
//! with certainty (`P(alive) = 1` whatever `T`); in MBG/NBD their `P(alive)` falls as the time
//! since that purchase grows, which is the reason to offer it.
//!
//! # Likelihood
//!
//! Per customer with summary `(x, t_x, T)`:
//!
//! ```text
//! L = B(a, b + x + 1) / B(a, b) · Γ(r + x) α^r / (Γ(r) (α + T)^(r + x))
//!   + B(a + 1, b + x) / B(a, b) · Γ(r + x) α^r / (Γ(r) (α + t_x)^(r + x))
//! ```
//!
//! (the second term for every `x`, `t_x = 0` when `x = 0`), computed in log space:
//!
//! ```text
//! A₁ = ln Γ(r + x) - ln Γ(r) + r ln α
//! A₂ = ln Γ(a + b) + ln Γ(b + x + 1) - ln Γ(b) - ln Γ(a + b + x + 1)
//! A₃ = -(r + x) ln(α + T)
//! A₄ = ln a - ln(b + x) - (r + x) ln(α + t_x)
//! ln L = A₁ + A₂ + ln(e^A₃ + e^A₄)
//! ```
//!
//! With `π₄ = 1 / (1 + e^(A₃ - A₄))` (posterior probability of "dropped out after the last
//! purchase") and `π₃ = 1 - π₄`, the gradient is
//!
//! ```text
//! ∂/∂r = ψ(r + x) - ψ(r) + ln α - π₃ ln(α + T) - π₄ ln(α + t_x)
//! ∂/∂α = r / α - (r + x) (π₃ / (α + T) + π₄ / (α + t_x))
//! ∂/∂a = ψ(a + b) - ψ(a + b + x + 1) + π₄ / a
//! ∂/∂b = ψ(a + b) + ψ(b + x + 1) - ψ(b) - ψ(a + b + x + 1) - π₄ / (b + x)
//! ```
//!
//! These are the BG/NBD formulas with `x` replaced by `x + 1` in the Beta part and the
//! dropout term present for every customer; the implementation is shared with BG/NBD
//! (`beta_geometric`, with a shift `δ = 1`). Fitting is exactly BG/NBD's (and `lifetimes`'):
//! BFGS in log-parameters from `θ = 0.1` in time rescaled to `max T = 1`, `penalizer_coef`
//! applied to `(r, α / max T, a, b)`; the reported log-likelihood is the unpenalised total in
//! the original unit (CDNOW: −9582.13).
//!
//! # Predictions
//!
//! * `P(alive | x, t_x, T) = 1 / (1 + a / (b + x) · ((α + T) / (α + t_x))^(r + x))` (Batislam
//!   et al., appendix A eq. 5). For a one-time buyer (`x = 0`, `t_x = 0`) this is
//!   `1 / (1 + a / b · (1 + T / α)^r)`, strictly decreasing in `T`.
//! * `E[X(t) | x, t_x, T] = P(alive) · (a + b + x) / (a - 1) · [1 - ((α + T) / (α + T + t))^(r + x)
//!   · ₂F₁(r + x, b + x + 1; a + b + x; z)]`, `z = t / (α + T + t)` (Wagner & Hoppe 2008). The
//!   ₂F₁ is evaluated through Euler's transformation as in BG/NBD, and at the `a, b → ∞`
//!   boundary through the constant-dropout limit (see `beta_geometric`).
//! * `E[X(t)] = b / (a - 1) · [1 - (α / (α + t))^r ₂F₁(r, b + 1; a + b; t / (α + t))]` for a new
//!   customer: the conditional formula at `x = t_x = T = 0`, where `P(alive) = b / (a + b)`
//!   (the customer may drop out at once).

use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use super::beta_geometric::{Core, FitSettings, Patterns, Variant, beta_geometric_params};
use super::optim::{BfgsOptions, Termination};
use super::value::TransactionModel;
use super::{ClvError, CustomerRfm, Periods, TimeUnit, TimeUnitKind};

beta_geometric_params!(MbgNbdParams, UntypedMbgNbdParams, "MBG/NBD");

/// An MBG/NBD model ready for predictions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MbgNbdModel<U: TimeUnit> {
    params: MbgNbdParams<U>,
    core: Core,
}

impl<U: TimeUnit> MbgNbdModel<U> {
    /// A model from (validated) parameters.
    pub fn new(params: MbgNbdParams<U>) -> Self {
        let MbgNbdParams { r, alpha, a, b, .. } = params;
        Self {
            params,
            core: Core::new(Variant::Mbg, r, alpha, a, b),
        }
    }

    /// The parameters.
    pub const fn params(&self) -> &MbgNbdParams<U> {
        &self.params
    }

    /// ln L of one customer (module docs), as `lifetimes` computes it per customer.
    pub fn log_likelihood(&self, c: &CustomerRfm<U>) -> f64 {
        self.core.log_likelihood(c)
    }

    /// P(alive | x, t_x, T): the probability that the customer has not dropped out (below 1
    /// also for one-time buyers, falling with the time since their purchase).
    pub fn probability_alive(&self, c: &CustomerRfm<U>) -> f64 {
        self.core.probability_alive(c)
    }

    /// E[X(t) | x, t_x, T]: expected number of repeat purchases in the next `t` units
    /// (`lifetimes`' `conditional_expected_number_of_purchases_up_to_time`).
    pub fn conditional_expected_purchases(
        &self,
        t: Periods<U>,
        c: &CustomerRfm<U>,
    ) -> Result<f64, ClvError> {
        let core = self
            .core
            .expectation_core(f64::from(c.frequency()), t.get(), c.age())?;
        Ok(self.probability_alive(c) * core)
    }

    /// [`Self::conditional_expected_purchases`] at each of `ts`, with P(alive) computed once
    /// (the same numbers).
    pub fn conditional_expected_purchases_at(
        &self,
        ts: &[Periods<U>],
        c: &CustomerRfm<U>,
    ) -> Result<Vec<f64>, ClvError> {
        self.core.conditional_expected_purchases_at(ts, c)
    }

    /// E[X(t) | x, t_x, T] / P(alive | x, t_x, T) at each of `ts`: the expected purchases of a
    /// customer of this frequency and age known to be alive (it does not depend on recency).
    /// [`Self::conditional_expected_purchases_at`] is P(alive) times these, exactly.
    pub fn expected_purchases_if_alive_at(
        &self,
        ts: &[Periods<U>],
        frequency: u32,
        age: f64,
    ) -> Result<Vec<f64>, ClvError> {
        self.core.expected_purchases_if_alive_at(ts, frequency, age)
    }

    /// E[X(t)]: expected number of repeat purchases in `(0, t]` of a new customer
    /// (`lifetimes`' `expected_number_of_purchases_up_to_time`).
    pub fn expected_purchases(&self, t: Periods<U>) -> Result<f64, ClvError> {
        let core = self.core.expectation_core(0.0, t.get(), 0.0)?;
        Ok(self.core.probability_alive_at_start() * core)
    }
}

impl<U: TimeUnit> TransactionModel<U> for MbgNbdModel<U> {
    fn probability_alive(&self, customer: &CustomerRfm<U>) -> f64 {
        MbgNbdModel::probability_alive(self, customer)
    }

    fn conditional_expected_purchases(
        &self,
        t: Periods<U>,
        customer: &CustomerRfm<U>,
    ) -> Result<f64, ClvError> {
        MbgNbdModel::conditional_expected_purchases(self, t, customer)
    }

    fn expected_purchases(&self, t: Periods<U>) -> Result<f64, ClvError> {
        MbgNbdModel::expected_purchases(self, t)
    }

    fn conditional_expected_purchases_at(
        &self,
        ts: &[Periods<U>],
        customer: &CustomerRfm<U>,
    ) -> Result<Vec<f64>, ClvError> {
        MbgNbdModel::conditional_expected_purchases_at(self, ts, customer)
    }

    fn expected_purchases_if_alive_at(
        &self,
        ts: &[Periods<U>],
        frequency: u32,
        age: f64,
    ) -> Option<Result<Vec<f64>, ClvError>> {
        Some(MbgNbdModel::expected_purchases_if_alive_at(
            self, ts, frequency, age,
        ))
    }
}

/// Customers prepared for MBG/NBD likelihood evaluations (identical `(x, t_x, T)` triples
/// aggregated with weights).
#[derive(Debug, Clone, PartialEq)]
pub struct MbgNbdData<U: TimeUnit> {
    patterns: Patterns,
    unit: PhantomData<U>,
}

impl<U: TimeUnit> MbgNbdData<U> {
    /// Aggregates customers (each with weight 1). Errors on an empty slice.
    pub fn from_customers(customers: &[CustomerRfm<U>]) -> Result<Self, ClvError> {
        Self::from_weighted(customers.iter().map(|c| (*c, 1)))
    }

    /// Aggregates `(summary, number of customers with it)` pairs; zero weights are ignored.
    /// Errors when the total weight is 0.
    pub fn from_weighted(
        customers: impl IntoIterator<Item = (CustomerRfm<U>, u64)>,
    ) -> Result<Self, ClvError> {
        Ok(Self {
            patterns: Patterns::from_weighted(customers)?,
            unit: PhantomData,
        })
    }

    /// Number of customers (total weight).
    pub const fn customers(&self) -> u64 {
        self.patterns.customers()
    }

    /// Number of distinct `(x, t_x, T)` patterns.
    pub fn patterns(&self) -> usize {
        self.patterns.patterns()
    }

    /// The largest age `T` (the time scale `lifetimes` fits in).
    pub const fn max_age(&self) -> f64 {
        self.patterns.max_age()
    }

    /// Total log-likelihood `Σ wᵢ ln Lᵢ`.
    pub fn log_likelihood(&self, params: &MbgNbdParams<U>) -> f64 {
        self.evaluate(params.ln(), false, 1).0
    }

    /// Total log-likelihood and its gradient with respect to `(ln r, ln α, ln a, ln b)`.
    pub fn log_likelihood_and_gradient(&self, params: &MbgNbdParams<U>) -> (f64, [f64; 4]) {
        self.evaluate(params.ln(), true, 1)
    }

    fn evaluate(&self, theta: [f64; 4], gradient: bool, threads: usize) -> (f64, [f64; 4]) {
        self.patterns
            .evaluate(Variant::Mbg, theta, gradient, threads)
    }

    /// Fits the model by maximum likelihood (see the module docs and [`MbgNbdFitOptions`]).
    pub fn fit(&self, options: &MbgNbdFitOptions<U>) -> Result<MbgNbdFit<U>, ClvError> {
        let settings = FitSettings {
            penalizer_coef: options.penalizer_coef,
            initial: options.initial.map(|p| p.ln()),
            bfgs: options.bfgs,
            threads: options.threads,
            standard_errors: options.standard_errors,
        };
        let out = self.patterns.fit(Variant::Mbg, &settings)?;
        let [r, alpha, a, b] = out.params;
        Ok(MbgNbdFit {
            params: MbgNbdParams::new(r, alpha, a, b)?,
            log_likelihood: out.log_likelihood,
            iterations: out.iterations,
            evaluations: out.evaluations,
            converged: out.termination.converged(),
            termination: out.termination,
            gradient_norm: out.gradient_norm,
            customers: self.customers(),
            patterns: self.patterns(),
            standard_errors: out.standard_errors,
            covariance: out.covariance,
        })
    }
}

/// Options of [`fit_mbg_nbd`] / [`MbgNbdData::fit`] (the same as BG/NBD's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MbgNbdFitOptions<U: TimeUnit> {
    /// L2 penalty coefficient, `lifetimes`' `penalizer_coef` (default 0): adds
    /// `penalizer_coef · (r² + (α / max T)² + a² + b²)` to the mean negative log-likelihood.
    pub penalizer_coef: f64,
    /// Starting point; default `lifetimes`' (all log-parameters 0.1 in rescaled time).
    pub initial: Option<MbgNbdParams<U>>,
    /// Stopping rules of the optimiser (on the mean objective, in log-parameters).
    pub bfgs: BfgsOptions,
    /// Worker threads for the likelihood sums; 0 = available parallelism.
    pub threads: usize,
    /// Whether to compute standard errors and the covariance (8 extra gradient evaluations).
    pub standard_errors: bool,
}

impl<U: TimeUnit> Default for MbgNbdFitOptions<U> {
    fn default() -> Self {
        Self {
            penalizer_coef: 0.0,
            initial: None,
            bfgs: BfgsOptions::default(),
            threads: 0,
            standard_errors: true,
        }
    }
}

/// The result of an MBG/NBD fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MbgNbdFit<U: TimeUnit> {
    /// The maximum-likelihood (or penalised) parameters.
    pub params: MbgNbdParams<U>,
    /// Unpenalised total log-likelihood `Σ wᵢ ln Lᵢ` at `params`, in time unit `U`.
    pub log_likelihood: f64,
    /// BFGS iterations (accepted steps).
    pub iterations: u32,
    /// Objective evaluations, line searches included.
    pub evaluations: u32,
    /// Whether the optimiser met its gradient or relative-change tolerance.
    pub converged: bool,
    /// Why the optimiser stopped.
    pub termination: Termination,
    /// `max |∂f/∂θᵢ|` of the mean penalised objective at the end.
    pub gradient_norm: f64,
    /// Number of customers fitted.
    pub customers: u64,
    /// Number of distinct `(x, t_x, T)` patterns after aggregation.
    pub patterns: usize,
    /// Standard errors of `(r, α, a, b)` (observed information, delta method, as `lifetimes`'
    /// `standard_errors_`), if requested and the Hessian is positive definite.
    pub standard_errors: Option<[f64; 4]>,
    /// Asymptotic covariance of the log-parameters `θ = ln(r, α, a, b)` (inverse observed
    /// information); present exactly when `standard_errors` is.
    ///
    /// `None` (with `standard_errors`) when the Hessian is not positive definite, as at the
    /// `a, b → ∞` boundary, where the likelihood is flat along `a / (a + b)` fixed.
    pub covariance: Option<[[f64; 4]; 4]>,
}

impl<U: TimeUnit> MbgNbdFit<U> {
    /// A prediction model from the fitted parameters.
    pub fn model(&self) -> MbgNbdModel<U> {
        MbgNbdModel::new(self.params)
    }
}

/// Aggregates `customers` and fits MBG/NBD by maximum likelihood.
pub fn fit_mbg_nbd<U: TimeUnit>(
    customers: &[CustomerRfm<U>],
    options: &MbgNbdFitOptions<U>,
) -> Result<MbgNbdFit<U>, ClvError> {
    MbgNbdData::from_customers(customers)?.fit(options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clv::{BgNbdModel, BgNbdParams, Days, Weeks};

    fn customers() -> Vec<CustomerRfm<Weeks>> {
        [
            (0, 0.0, 38.86),
            (0, 0.0, 0.0),
            (2, 30.43, 38.86),
            (1, 1.71, 38.86),
            (5, 20.0, 30.0),
            (5, 20.0, 30.0),
            (40, 38.0, 39.0),
            (500, 38.5, 39.0),
            (3, 0.5, 25.0),
        ]
        .iter()
        .map(|&(x, tx, t)| CustomerRfm::new(x, tx, t, 0.0).expect("valid"))
        .collect()
    }

    #[test]
    fn likelihood_is_the_closed_form_and_aggregation_agrees() {
        let cs = customers();
        let data = MbgNbdData::from_customers(&cs).expect("non-empty");
        assert_eq!((data.customers(), data.patterns()), (9, 8));
        let (r, alpha, a, b) = (0.52, 6.2, 0.89, 1.6);
        let params = MbgNbdParams::new(r, alpha, a, b).expect("valid");
        let model = MbgNbdModel::new(params);
        let lbeta =
            |p: f64, q: f64| crate::clv::special::ln_beta(p, q).expect("positive arguments");
        let lgamma = |v: f64| crate::clv::special::ln_gamma(v).expect("positive");
        for c in &cs {
            let x = f64::from(c.frequency());
            let common = lgamma(r + x) - lgamma(r) + r * alpha.ln();
            let first =
                lbeta(a, b + x + 1.0) - lbeta(a, b) + common - (r + x) * (alpha + c.age()).ln();
            let second =
                lbeta(a + 1.0, b + x) - lbeta(a, b) + common - (r + x) * (alpha + c.recency()).ln();
            let want = (first.exp() + second.exp()).ln();
            let got = model.log_likelihood(c);
            if want.is_finite() {
                assert!(
                    (got - want).abs() < 1e-9 * want.abs().max(1.0),
                    "{c:?}: {got} vs {want}"
                );
            }
        }
        let sum: f64 = cs.iter().map(|c| model.log_likelihood(c)).sum();
        let total = data.log_likelihood(&params);
        assert!((sum - total).abs() < 1e-9 * total.abs(), "{sum} vs {total}");
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let data = MbgNbdData::from_customers(&customers()).expect("non-empty");
        for (r, alpha, a, b) in [
            (0.52, 6.2, 0.89, 1.6),
            (1.3, 0.5, 2.5, 0.7),
            (0.05, 60.0, 0.2, 9.0),
        ] {
            let params = MbgNbdParams::<Weeks>::new(r, alpha, a, b).expect("valid");
            let theta = params.ln();
            let (_, g) = data.log_likelihood_and_gradient(&params);
            for i in 0..4 {
                let h = 1e-6;
                let mut up = theta;
                let mut down = theta;
                up[i] += h;
                down[i] -= h;
                let fd =
                    (data.evaluate(up, false, 1).0 - data.evaluate(down, false, 1).0) / (2.0 * h);
                assert!(
                    (fd - g[i]).abs() <= 1e-6 * g[i].abs().max(1.0),
                    "θ{i} at {params:?}: analytic {} vs finite difference {fd}",
                    g[i]
                );
            }
        }
    }

    #[test]
    fn one_time_buyers_can_be_gone_unlike_bg_nbd() {
        let (r, alpha, a, b) = (0.52, 6.2, 0.89, 1.6);
        let mbg = MbgNbdModel::new(MbgNbdParams::<Weeks>::new(r, alpha, a, b).expect("ok"));
        let bg = BgNbdModel::new(BgNbdParams::<Weeks>::new(r, alpha, a, b).expect("ok"));
        let mut previous = f64::INFINITY;
        for t in [0.0, 0.5, 1.0, 5.0, 38.86, 100.0, 1e4] {
            let c = CustomerRfm::new(0, 0.0, t, 0.0).expect("valid");
            let p = mbg.probability_alive(&c);
            let want = 1.0 / (1.0 + a / b * (1.0 + t / alpha).powf(r));
            assert!((p - want).abs() < 1e-14, "T {t}: {p} vs {want}");
            assert!(p < previous, "T {t}: {p} not below {previous}");
            previous = p;
            assert_eq!(bg.probability_alive(&c), 1.0);
        }
        // New customer: E[X(t)] = P(alive at 0) · conditional core.
        let t = Periods::new(39.0).expect("ok");
        let now = CustomerRfm::new(0, 0.0, 0.0, 0.0).expect("valid");
        let e = mbg.expected_purchases(t).expect("ok");
        let ce = mbg.conditional_expected_purchases(t, &now).expect("ok");
        assert!((e - ce).abs() < 1e-15 * e, "{e} vs {ce}");
    }

    #[test]
    fn untyped_round_trip_checks_the_unit() {
        let p = MbgNbdParams::<Weeks>::new(0.5, 6.0, 0.9, 1.6).expect("ok");
        let stored = p.to_untyped();
        assert_eq!(stored.into_typed::<Weeks>(), Ok(p));
        assert!(stored.into_typed::<Days>().is_err());
        let json = serde_json::to_string(&stored).expect("serialises");
        let back: UntypedMbgNbdParams = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, stored);
        assert_eq!(p.convert::<Days>().alpha(), 42.0);
        assert!(MbgNbdParams::<Weeks>::new(1.0, 1.0, -1.0, 1.0).is_err());
    }
}
