//! The BG/NBD model (Fader, Hardie & Lee 2005a): likelihood, fit and predictions.
//!
//! # Likelihood
//!
//! Per customer with summary `(x, t_x, T)` (Hardie's note 004, as `lifetimes` 0.11.3 computes it):
//!
//! ```text
//! A₁ = ln Γ(r + x) - ln Γ(r) + r ln α
//! A₂ = ln Γ(a + b) + ln Γ(b + x) - ln Γ(b) - ln Γ(a + b + x)
//! A₃ = -(r + x) ln(α + T)
//! A₄ = ln a - ln(b + x - 1) - (r + x) ln(α + t_x)            (only when x > 0)
//! ln L = A₁ + A₂ + ln(e^A₃ + [x > 0] e^A₄)
//! ```
//!
//! With `d = A₄ - A₃`, `π₄ = 1 / (1 + e^-d)` and `π₃ = 1 - π₄` (the posterior weights of
//! "dropped out after the last purchase" and "still alive"), the gradient is
//!
//! ```text
//! ∂/∂r = ψ(r + x) - ψ(r) + ln α - π₃ ln(α + T) - π₄ ln(α + t_x)
//! ∂/∂α = r / α - (r + x) (π₃ / (α + T) + π₄ / (α + t_x))
//! ∂/∂a = ψ(a + b) - ψ(a + b + x) + π₄ / a
//! ∂/∂b = ψ(a + b) + ψ(b + x) - ψ(b) - ψ(a + b + x) - π₄ / (b + x - 1)
//! ```
//!
//! and the optimiser works on `θ = ln(r, α, a, b)`, so `∂/∂θᵢ = pᵢ ∂/∂pᵢ`.
//!
//! # Fitting, as `lifetimes` does it
//!
//! `lifetimes` minimises `-ΣwᵢlnLᵢ / Σwᵢ + penalizer_coef · (r² + α̃² + a² + b²)`, where
//! `α̃ = α / max(T)` is `α` in units of the oldest customer's age (it rescales time so that
//! `max(T) = 1` before fitting), from `θ = 0.1` in rescaled units. This module minimises the
//! same objective from the same start, so fits with a penalizer agree too; the reported
//! `log_likelihood` is the unpenalised total `Σwᵢ ln Lᵢ` in the original time unit (CDNOW:
//! −9582.43, the value of the paper).
//!
//! Speed: identical `(x, t_x, T)` triples are aggregated with weights; terms that depend only on
//! `x` (log-gammas, digammas) are computed once per distinct `x`; the per-pattern work is two
//! logarithms, one exponential and one `ln_1p`; the sums are split into fixed blocks (so the
//! result does not depend on the number of threads) and the blocks are shared among
//! `std::thread::scope` workers.
//!
//! # Predictions
//!
//! * `P(alive | x, t_x, T) = 1 / (1 + [x > 0] a / (b + x - 1) · ((α + T) / (α + t_x))^(r + x))`
//!   (Hardie's note 021).
//! * `E[X(t) | x, t_x, T] = P(alive) · (a + b + x - 1) / (a - 1) · [1 - ((α + T) / (α + T + t))^(r + x)
//!   · ₂F₁(r + x, b + x; a + b + x - 1; z)]` with `z = t / (α + T + t)` (eq. 10). Euler's
//!   transformation turns `(1 - z)^(r + x) ₂F₁(r + x, b + x; c; z)` into
//!   `(1 - z)^(a - 1) ₂F₁(a - 1, a + b - 1 - r; c; z)`: the big parameters disappear (no overflow
//!   for hundreds of purchases) and writing `F = 1 + (a - 1) S` gives
//!   `[1 - (1 - z)^(a-1) F] / (a - 1) = -expm1((a - 1) ln(1 - z)) / (a - 1) - (1 - z)^(a - 1) S`,
//!   which has no 0/0 at `a = 1`.
//! * Towards the `a, b → ∞` boundary (from `a - 1 >= 50` on, where the series above loses
//!   digits and then overflows), the expectation is evaluated without ₂F₁: by the
//!   constant-dropout limit `(1 - (1 + p t / (α + T))^-(r+x)) / p`, `p = a / (a + b)`, with its
//!   `O(1 / a)` corrections when they are accurate to `1e-15`, else by an exact series; see the [module docs](super#the-a-b---boundary-of-bgnbd-and-mbgnbd).
//! * `E[X(t)]` for a new customer is the same with `x = t_x = T = 0` (eq. 9).
//! * `P(X(t) = n)` (eq. 8), with the negative-binomial tail summed in log space from the side
//!   that avoids cancellation.

use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use super::beta_geometric::{Core, FitSettings, Patterns, Variant, beta_geometric_params};
use super::optim::{BfgsOptions, Termination};
use super::special::lgamma_pos;
use super::{ClvError, CustomerRfm, Periods, TimeUnit, TimeUnitKind};

pub(crate) use super::beta_geometric::block_sums;

beta_geometric_params!(BgNbdParams, UntypedBgNbdParams, "BG/NBD");

/// A BG/NBD model ready for predictions: parameters plus precomputed constants, so each
/// per-customer prediction costs a few logarithms (and a short series for expectations).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbdModel<U: TimeUnit> {
    params: BgNbdParams<U>,
    core: Core,
    ln_beta_ab: f64,
}

impl<U: TimeUnit> BgNbdModel<U> {
    /// A model from (validated) parameters.
    pub fn new(params: BgNbdParams<U>) -> Self {
        let BgNbdParams { r, alpha, a, b, .. } = params;
        Self {
            params,
            core: Core::new(Variant::Bg, r, alpha, a, b),
            ln_beta_ab: lgamma_pos(a) + lgamma_pos(b) - lgamma_pos(a + b),
        }
    }

    /// The parameters.
    pub const fn params(&self) -> &BgNbdParams<U> {
        &self.params
    }

    /// ln L of one customer (module docs), as `lifetimes` computes it per customer.
    pub fn log_likelihood(&self, c: &CustomerRfm<U>) -> f64 {
        self.core.log_likelihood(c)
    }

    /// P(alive | x, t_x, T): the probability that the customer has not dropped out.
    /// 1 for customers without repeat purchases (in BG/NBD they cannot have dropped out).
    pub fn probability_alive(&self, c: &CustomerRfm<U>) -> f64 {
        self.core.probability_alive(c)
    }

    /// E[X(t) | x, t_x, T]: expected number of repeat purchases in the next `t` units
    /// (`lifetimes`' `conditional_expected_number_of_purchases_up_to_time`, `predict`).
    /// Finite also at the `a, b → ∞` boundary (module docs of `beta_geometric`).
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
        self.core.expectation_core(0.0, t.get(), 0.0)
    }

    /// P(X(t) = n): probability that a new customer makes exactly `n` repeat purchases in
    /// `(0, t]` (`lifetimes`' `probability_of_n_purchases_up_to_time`, eq. 8).
    pub fn probability_of_n_purchases(&self, t: Periods<U>, n: u32) -> Result<f64, ClvError> {
        let t = t.get();
        if t == 0.0 {
            return Ok(if n == 0 { 1.0 } else { 0.0 });
        }
        let BgNbdParams { r, alpha, a, b, .. } = self.params;
        let nf = f64::from(n);
        let ln_q = t.ln() - (alpha + t).ln();
        let ln_1mq = -(t / alpha).ln_1p();
        // ln of the negative-binomial pmf at n: Γ(r+n)/(Γ(r) n!) (1-q)^r q^n
        let ln_pmf_n =
            lgamma_pos(r + nf) - self.core.lgamma_r - lgamma_pos(nf + 1.0) + r * ln_1mq + nf * ln_q;
        let ln_beta_ratio_1 =
            lgamma_pos(a) + lgamma_pos(b + nf) - lgamma_pos(a + b + nf) - self.ln_beta_ab;
        let first = (ln_beta_ratio_1 + ln_pmf_n).exp();
        if n == 0 {
            return Ok(first);
        }
        let ln_beta_ratio_2 = lgamma_pos(a + 1.0) + lgamma_pos(b + nf - 1.0)
            - lgamma_pos(a + b + nf)
            - self.ln_beta_ab;
        let tail = negative_binomial_upper_tail(r, ln_q, ln_1mq, n, ln_pmf_n)?;
        let value = first + ln_beta_ratio_2.exp() * tail;
        if value.is_finite() {
            Ok(value)
        } else {
            Err(ClvError::Overflow {
                what: "probability of n purchases",
            })
        }
    }
}

/// P(N ≥ n) for N ~ NegBin(r, q) (pmf Γ(r+j)/(Γ(r) j!) (1-q)^r q^j), given ln pmf(n).
/// Sums the upper tail directly when `n` is above the mean (no cancellation), otherwise
/// `1 - Σ_{j<n} pmf(j)`.
fn negative_binomial_upper_tail(
    r: f64,
    ln_q: f64,
    ln_1mq: f64,
    n: u32,
    ln_pmf_n: f64,
) -> Result<f64, ClvError> {
    const BUDGET: u64 = 20_000_000;
    let q = ln_q.exp();
    let mean = r * (ln_q - ln_1mq).exp();
    let nf = f64::from(n);
    if nf > mean {
        // Terms decrease from j = n on: pmf(j+1)/pmf(j) = (r+j) q / (j+1) < 1 for j > mean.
        let mut term = 1.0;
        let mut sum = 1.0;
        for k in 0..BUDGET {
            let j = nf + k as f64;
            term *= (r + j) / (j + 1.0) * q;
            sum += term;
            if term <= 1e-17 * sum {
                return Ok((ln_pmf_n + sum.ln()).exp().min(1.0));
            }
        }
    } else if u64::from(n) <= BUDGET {
        let mut pmf = (r * ln_1mq).exp();
        let mut cdf = 0.0;
        for j in 0..n {
            cdf += pmf;
            let jf = f64::from(j);
            pmf *= (r + jf) / (jf + 1.0) * q;
        }
        return Ok((1.0 - cdf).max(0.0));
    }
    Err(ClvError::NoConvergence {
        what: "negative binomial tail",
    })
}

/// Customers prepared for BG/NBD likelihood evaluations: identical `(x, t_x, T)` triples
/// aggregated with weights, distinct frequencies indexed.
#[derive(Debug, Clone, PartialEq)]
pub struct BgNbdData<U: TimeUnit> {
    patterns: Patterns,
    unit: PhantomData<U>,
}

impl<U: TimeUnit> BgNbdData<U> {
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
    pub fn log_likelihood(&self, params: &BgNbdParams<U>) -> f64 {
        self.evaluate(params.ln(), false, 1).0
    }

    /// Total log-likelihood and its gradient with respect to `(ln r, ln α, ln a, ln b)`.
    pub fn log_likelihood_and_gradient(&self, params: &BgNbdParams<U>) -> (f64, [f64; 4]) {
        self.evaluate(params.ln(), true, 1)
    }

    fn evaluate(&self, theta: [f64; 4], gradient: bool, threads: usize) -> (f64, [f64; 4]) {
        self.patterns
            .evaluate(Variant::Bg, theta, gradient, threads)
    }

    /// Fits the model by maximum likelihood (see the module docs and [`BgNbdFitOptions`]).
    pub fn fit(&self, options: &BgNbdFitOptions<U>) -> Result<BgNbdFit<U>, ClvError> {
        let settings = FitSettings {
            penalizer_coef: options.penalizer_coef,
            initial: options.initial.map(|p| p.ln()),
            bfgs: options.bfgs,
            threads: options.threads,
            standard_errors: options.standard_errors,
        };
        let out = self.patterns.fit(Variant::Bg, &settings)?;
        let [r, alpha, a, b] = out.params;
        Ok(BgNbdFit {
            params: BgNbdParams::new(r, alpha, a, b)?,
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

/// Options of [`fit_bg_nbd`] / [`BgNbdData::fit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbdFitOptions<U: TimeUnit> {
    /// L2 penalty coefficient, `lifetimes`' `penalizer_coef` (default 0): adds
    /// `penalizer_coef · (r² + (α / max T)² + a² + b²)` to the mean negative log-likelihood.
    pub penalizer_coef: f64,
    /// Starting point; default `lifetimes`' (all log-parameters 0.1 in rescaled time).
    pub initial: Option<BgNbdParams<U>>,
    /// Stopping rules of the optimiser (on the mean objective, in log-parameters).
    pub bfgs: BfgsOptions,
    /// Worker threads for the likelihood sums; 0 = available parallelism.
    pub threads: usize,
    /// Whether to compute standard errors and the covariance (8 extra gradient evaluations).
    pub standard_errors: bool,
}

impl<U: TimeUnit> Default for BgNbdFitOptions<U> {
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

/// The result of a BG/NBD fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbdFit<U: TimeUnit> {
    /// The maximum-likelihood (or penalised) parameters.
    pub params: BgNbdParams<U>,
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
    /// Standard errors of `(r, α, a, b)` (observed information, delta method), if requested
    /// and the Hessian is positive definite.
    pub standard_errors: Option<[f64; 4]>,
    /// Asymptotic covariance of the log-parameters `θ = ln(r, α, a, b)`: the inverse of the
    /// observed information (the Hessian of `-Σ ln L` in `θ`, central differences of the
    /// analytic gradient). Present exactly when `standard_errors` is (`se(pᵢ) = pᵢ √Σᵢᵢ`); a
    /// Wald interval for `pᵢ` is `exp(θᵢ ± z √Σᵢᵢ)`.
    ///
    /// `None` (with `standard_errors`) when the Hessian is not positive definite, as at the
    /// `a, b → ∞` boundary, where the likelihood is flat along `a / (a + b)` fixed.
    pub covariance: Option<[[f64; 4]; 4]>,
}

impl<U: TimeUnit> BgNbdFit<U> {
    /// A prediction model from the fitted parameters.
    pub fn model(&self) -> BgNbdModel<U> {
        BgNbdModel::new(self.params)
    }
}

/// Aggregates `customers` and fits BG/NBD by maximum likelihood.
pub fn fit_bg_nbd<U: TimeUnit>(
    customers: &[CustomerRfm<U>],
    options: &BgNbdFitOptions<U>,
) -> Result<BgNbdFit<U>, ClvError> {
    BgNbdData::from_customers(customers)?.fit(options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clv::{Days, Weeks};

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
    fn aggregation_and_per_customer_likelihood_agree() {
        let cs = customers();
        let data = BgNbdData::from_customers(&cs).expect("non-empty");
        assert_eq!(data.customers(), 9);
        assert_eq!(data.patterns(), 8);
        let params = BgNbdParams::new(0.24, 4.4, 0.79, 2.4).expect("valid");
        let model = BgNbdModel::new(params);
        let sum: f64 = cs.iter().map(|c| model.log_likelihood(c)).sum();
        let total = data.log_likelihood(&params);
        assert!((sum - total).abs() < 1e-9 * total.abs(), "{sum} vs {total}");
        assert!(total.is_finite());
        assert_eq!(
            BgNbdData::<Days>::from_customers(&[]),
            Err(ClvError::EmptyPopulation)
        );
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let data = BgNbdData::from_customers(&customers()).expect("non-empty");
        for (r, alpha, a, b) in [
            (0.24, 4.4, 0.79, 2.4),
            (1.3, 0.5, 2.5, 0.7),
            (0.05, 60.0, 0.2, 9.0),
        ] {
            let params = BgNbdParams::<Weeks>::new(r, alpha, a, b).expect("valid");
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
    fn threads_do_not_change_results() {
        let mut rng = crate::clv::simulate::Rng::seed(3);
        let params = BgNbdParams::<Days>::new(0.5, 20.0, 0.8, 3.0).expect("valid");
        let ages: Vec<f64> = (0..40_000).map(|i| f64::from(i % 365)).collect();
        let cs = crate::clv::simulate::simulate_bg_nbd(&params, &ages, &mut rng).expect("valid");
        let data = BgNbdData::from_customers(&cs).expect("non-empty");
        let one = data.evaluate(params.ln(), true, 1);
        let two = data.evaluate(params.ln(), true, 2);
        assert_eq!(one, two);
    }

    #[test]
    fn predictions_are_finite_for_extreme_customers() {
        let model =
            BgNbdModel::new(BgNbdParams::<Weeks>::new(0.2426, 4.4135, 0.7929, 2.4258).expect("ok"));
        let t = Periods::new(52.0).expect("ok");
        for (x, tx, age) in [
            (0, 0.0, 0.0),
            (500, 38.5, 39.0),
            (500, 0.0, 39.0),
            (100_000, 1.0, 1e6),
        ] {
            let c = CustomerRfm::new(x, tx, age, 0.0).expect("valid");
            let p = model.probability_alive(&c);
            let e = model.conditional_expected_purchases(t, &c).expect("finite");
            assert!((0.0..=1.0).contains(&p), "{p}");
            assert!(e.is_finite() && e >= 0.0, "{x}: {e}");
            assert!(model.log_likelihood(&c).is_finite());
        }
        // Absurd horizons: a value or an error, never a panic or NaN.
        for t in [1e300, f64::MAX] {
            let t = Periods::new(t).expect("finite");
            for x in [0, 3, u32::MAX] {
                let c = CustomerRfm::new(x, if x == 0 { 0.0 } else { 1.0 }, 2.0, 0.0).expect("ok");
                if let Ok(v) = model.conditional_expected_purchases(t, &c) {
                    assert!(v.is_finite(), "{v}");
                }
                assert!(model.probability_alive(&c).is_finite());
                assert!(model.log_likelihood(&c).is_finite());
            }
            if let Ok(v) = model.probability_of_n_purchases(t, 3) {
                assert!(v.is_finite());
            }
        }
        // Removable singularity at a = 1 and a horizon far beyond alpha (z close to 1).
        for a in [1.0, 1.0 + 1e-9, 1.0 - 1e-4, 1.002] {
            let m = BgNbdModel::new(BgNbdParams::<Days>::new(0.5, 0.01, a, 2.0).expect("ok"));
            let c = CustomerRfm::new(0, 0.0, 0.0, 0.0).expect("valid");
            let e = m
                .conditional_expected_purchases(Periods::new(3650.0).expect("ok"), &c)
                .expect("converges");
            assert!(e.is_finite() && e > 0.0, "a = {a}: {e}");
        }
    }

    #[test]
    fn expectation_is_continuous_through_a_equals_one() {
        let c = CustomerRfm::<Weeks>::new(3, 20.0, 30.0, 0.0).expect("valid");
        let t = Periods::new(39.0).expect("ok");
        let at = |a: f64| {
            BgNbdModel::new(BgNbdParams::new(0.3, 5.0, a, 2.0).expect("ok"))
                .conditional_expected_purchases(t, &c)
                .expect("ok")
        };
        let mid = at(1.0);
        let lo = at(1.0 - 1e-7);
        let hi = at(1.0 + 1e-7);
        assert!(
            (0.5 * (lo + hi) - mid).abs() < 1e-12 * mid,
            "{lo} {mid} {hi}"
        );
    }

    #[test]
    fn untyped_round_trip_checks_the_unit() {
        let p = BgNbdParams::<Weeks>::new(0.2, 4.0, 0.8, 2.4).expect("ok");
        let stored = p.to_untyped();
        assert_eq!(stored.into_typed::<Weeks>(), Ok(p));
        assert_eq!(
            stored.into_typed::<Days>(),
            Err(ClvError::UnitMismatch {
                expected: crate::clv::TimeUnitKind::Days,
                found: crate::clv::TimeUnitKind::Weeks
            })
        );
        let days: BgNbdParams<Days> = p.convert();
        assert_eq!(days.alpha(), 28.0);
        assert!(BgNbdParams::<Weeks>::new(f64::NAN, 1.0, 1.0, 1.0).is_err());
        assert!(BgNbdParams::<Weeks>::new(1.0, 0.0, 1.0, 1.0).is_err());
    }
}
