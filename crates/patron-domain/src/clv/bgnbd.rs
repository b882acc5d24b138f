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
//! * `E[X(t)]` for a new customer is the same with `x = t_x = T = 0` (eq. 9).
//! * `P(X(t) = n)` (eq. 8), with the negative-binomial tail summed in log space from the side
//!   that avoids cancellation.

use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use super::optim::{BfgsOptions, Termination, log_scale_standard_errors, minimize_bfgs};
use super::special::{digamma_pos, expit, hyp2f1, lgamma_pos, log1p_exp};
use super::units::expect_unit;
use super::{ClvError, CustomerRfm, Periods, TimeUnit, TimeUnitKind};

fn check_param(name: &'static str, value: f64) -> Result<f64, ClvError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(ClvError::InvalidParameter { name, value })
    }
}

/// BG/NBD parameters `(r, α, a, b)` for time unit `U` (`α` is a time scale, in units `U`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbdParams<U: TimeUnit> {
    r: f64,
    alpha: f64,
    a: f64,
    b: f64,
    unit: PhantomData<U>,
}

impl<U: TimeUnit> BgNbdParams<U> {
    /// Parameters, each finite and `> 0`.
    pub fn new(r: f64, alpha: f64, a: f64, b: f64) -> Result<Self, ClvError> {
        Ok(Self {
            r: check_param("r", r)?,
            alpha: check_param("alpha", alpha)?,
            a: check_param("a", a)?,
            b: check_param("b", b)?,
            unit: PhantomData,
        })
    }

    /// Shape of the Gamma distribution of purchase rates.
    pub const fn r(&self) -> f64 {
        self.r
    }

    /// Scale (rate parameter) of the Gamma distribution of purchase rates, in units `U`.
    pub const fn alpha(&self) -> f64 {
        self.alpha
    }

    /// First shape of the Beta distribution of dropout probabilities.
    pub const fn a(&self) -> f64 {
        self.a
    }

    /// Second shape of the Beta distribution of dropout probabilities.
    pub const fn b(&self) -> f64 {
        self.b
    }

    /// The same model in another time unit (`α` is rescaled, e.g. weeks → days multiplies by 7).
    pub fn convert<V: TimeUnit>(&self) -> BgNbdParams<V> {
        BgNbdParams {
            r: self.r,
            alpha: self.alpha * (U::DAYS / V::DAYS),
            a: self.a,
            b: self.b,
            unit: PhantomData,
        }
    }

    /// The untyped form, for storage.
    pub fn to_untyped(&self) -> UntypedBgNbdParams {
        UntypedBgNbdParams {
            unit: U::KIND,
            r: self.r,
            alpha: self.alpha,
            a: self.a,
            b: self.b,
        }
    }

    fn ln(&self) -> [f64; 4] {
        [self.r.ln(), self.alpha.ln(), self.a.ln(), self.b.ln()]
    }
}

/// BG/NBD parameters with a runtime time-unit tag, for storage and transport.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UntypedBgNbdParams {
    /// The unit the parameters were fitted in.
    pub unit: TimeUnitKind,
    /// See [`BgNbdParams::r`].
    pub r: f64,
    /// See [`BgNbdParams::alpha`].
    pub alpha: f64,
    /// See [`BgNbdParams::a`].
    pub a: f64,
    /// See [`BgNbdParams::b`].
    pub b: f64,
}

impl UntypedBgNbdParams {
    /// Typed parameters; [`ClvError::UnitMismatch`] when `U` is not the stored unit.
    pub fn into_typed<U: TimeUnit>(self) -> Result<BgNbdParams<U>, ClvError> {
        expect_unit::<U>(self.unit)?;
        BgNbdParams::new(self.r, self.alpha, self.a, self.b)
    }
}

/// A BG/NBD model ready for predictions: parameters plus precomputed constants, so each
/// per-customer prediction costs a few logarithms (and a short series for expectations).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BgNbdModel<U: TimeUnit> {
    params: BgNbdParams<U>,
    ln_a: f64,
    ln_alpha: f64,
    lgamma_r: f64,
    ln_beta_ab: f64,
    /// a - 1
    eps: f64,
    /// a + b - 1 - r, the second parameter of the Euler-transformed ₂F₁.
    euler_b: f64,
}

impl<U: TimeUnit> BgNbdModel<U> {
    /// A model from (validated) parameters.
    pub fn new(params: BgNbdParams<U>) -> Self {
        let BgNbdParams { r, alpha, a, b, .. } = params;
        Self {
            params,
            ln_a: a.ln(),
            ln_alpha: alpha.ln(),
            lgamma_r: lgamma_pos(r),
            ln_beta_ab: lgamma_pos(a) + lgamma_pos(b) - lgamma_pos(a + b),
            eps: a - 1.0,
            euler_b: a + b - 1.0 - r,
        }
    }

    /// The parameters.
    pub const fn params(&self) -> &BgNbdParams<U> {
        &self.params
    }

    /// ln L of one customer (module docs), as `lifetimes` computes it per customer.
    pub fn log_likelihood(&self, c: &CustomerRfm<U>) -> f64 {
        let BgNbdParams { r, alpha, a, b, .. } = self.params;
        let x = f64::from(c.frequency());
        let a1 = lgamma_pos(r + x) - self.lgamma_r + r * self.ln_alpha;
        let a2 = lgamma_pos(a + b) + lgamma_pos(b + x) - lgamma_pos(b) - lgamma_pos(a + b + x);
        let a3 = -(r + x) * (alpha + c.age()).ln();
        if c.frequency() == 0 {
            return a1 + a2 + a3;
        }
        let a4 = self.ln_a - (b + x - 1.0).ln() - (r + x) * (alpha + c.recency()).ln();
        a1 + a2 + a3 + log1p_exp(a4 - a3)
    }

    /// ln of the odds "dropped out" : "alive" for a customer with `x > 0`.
    fn ln_dropout_odds(&self, c: &CustomerRfm<U>) -> f64 {
        let BgNbdParams { r, alpha, b, .. } = self.params;
        let x = f64::from(c.frequency());
        (r + x) * ((c.age() - c.recency()) / (alpha + c.recency())).ln_1p() + self.ln_a
            - (b + x - 1.0).ln()
    }

    /// P(alive | x, t_x, T): the probability that the customer has not dropped out.
    /// 1 for customers without repeat purchases (in BG/NBD they cannot have dropped out).
    pub fn probability_alive(&self, c: &CustomerRfm<U>) -> f64 {
        if c.frequency() == 0 {
            1.0
        } else {
            expit(-self.ln_dropout_odds(c))
        }
    }

    /// E[X(t) | x, t_x, T]: expected number of repeat purchases in the next `t` units
    /// (`lifetimes`' `conditional_expected_number_of_purchases_up_to_time`, `predict`).
    pub fn conditional_expected_purchases(
        &self,
        t: Periods<U>,
        c: &CustomerRfm<U>,
    ) -> Result<f64, ClvError> {
        let core = self.expectation_core(f64::from(c.frequency()), t.get(), c.age())?;
        Ok(self.probability_alive(c) * core)
    }

    /// E[X(t)]: expected number of repeat purchases in `(0, t]` of a new customer
    /// (`lifetimes`' `expected_number_of_purchases_up_to_time`).
    pub fn expected_purchases(&self, t: Periods<U>) -> Result<f64, ClvError> {
        self.expectation_core(0.0, t.get(), 0.0)
    }

    /// `(a + b + x - 1) / (a - 1) · [1 - ((α+T)/(α+T+t))^(r+x) ₂F₁(r+x, b+x; a+b+x-1; z)]`.
    fn expectation_core(&self, x: f64, t: f64, age: f64) -> Result<f64, ClvError> {
        if t == 0.0 {
            return Ok(0.0);
        }
        let BgNbdParams { a, b, alpha, .. } = self.params;
        let c = a + b + x - 1.0;
        let scale = alpha + age;
        let z = t / (scale + t);
        let ln_1mz = -(t / scale).ln_1p();
        let eps = self.eps;
        // The series needs about 40 / (1 - z) terms; beyond the budget go straight to ₂F₁.
        let series = if (1.0 - z) * SERIES_BUDGET as f64 > 40.0 {
            euler_series(eps, self.euler_b, c, z, SERIES_BUDGET)
        } else {
            None
        };
        let value = match series {
            Some(cs) => -c * expm1_over(eps, ln_1mz) - (eps * ln_1mz).exp() * cs,
            None => c * self.expectation_fallback(c, z, ln_1mz)?,
        };
        if value.is_finite() {
            Ok(value)
        } else {
            Err(ClvError::Overflow {
                what: "expected purchases",
            })
        }
    }

    /// `[1 - (1-z)^ε F(ε, B; c; z)] / ε` through the general ₂F₁, for `z` so close to 1 that the
    /// series is too slow. Near `ε = 0` (|ε| < 1e-3) the removable singularity is bridged by
    /// cubic Lagrange interpolation in ε from ±2e-3 and ±4e-3.
    fn expectation_fallback(&self, c: f64, z: f64, ln_1mz: f64) -> Result<f64, ClvError> {
        let direct = |eps: f64| -> Result<f64, ClvError> {
            let f = hyp2f1(eps, self.euler_b, c, z)?;
            Ok((1.0 - (eps * ln_1mz).exp() * f) / eps)
        };
        if self.eps.abs() >= 1e-3 {
            return direct(self.eps);
        }
        let nodes = [-4e-3, -2e-3, 2e-3, 4e-3];
        let mut values = [0.0; 4];
        for (v, &e) in values.iter_mut().zip(&nodes) {
            *v = direct(e)?;
        }
        let mut sum = 0.0;
        for (i, &xi) in nodes.iter().enumerate() {
            let mut basis = 1.0;
            for (j, &xj) in nodes.iter().enumerate() {
                if i != j {
                    basis *= (self.eps - xj) / (xi - xj);
                }
            }
            sum += basis * values[i];
        }
        Ok(sum)
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
            lgamma_pos(r + nf) - self.lgamma_r - lgamma_pos(nf + 1.0) + r * ln_1mq + nf * ln_q;
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

const SERIES_BUDGET: usize = 200_000;

/// `expm1(ε L) / ε`, equal to `L` at `ε = 0`.
fn expm1_over(eps: f64, l: f64) -> f64 {
    if eps == 0.0 {
        l
    } else {
        (eps * l).exp_m1() / eps
    }
}

/// `c · S` with `S = Σ_{n≥1} (ε+1)_{n-1} (B)_n / ((c)_n n!) zⁿ`, i.e.
/// `Σ_{n≥1} (ε+1)_{n-1} (B)_n / ((c+1)_{n-1} n!) zⁿ` (finite even at `c = 0`).
/// `None` when it does not converge within `budget` terms.
fn euler_series(eps: f64, big_b: f64, c: f64, z: f64, budget: usize) -> Option<f64> {
    let mut term = big_b * z;
    let mut sum = term;
    if term == 0.0 {
        return Some(0.0);
    }
    let settle = (-eps - 1.0).max(-big_b).max(-c).max(0.0) + 1.0;
    for n in 1..budget {
        let nf = n as f64;
        let ratio = (eps + nf) * (big_b + nf) / ((c + nf) * (nf + 1.0)) * z;
        term *= ratio;
        sum += term;
        if term == 0.0 {
            return Some(sum);
        }
        if !sum.is_finite() {
            return None;
        }
        if nf > settle && ratio.abs() < 1.0 && term.abs() <= 1e-17 * sum.abs() {
            return Some(sum);
        }
    }
    None
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

/// One aggregated pattern: `weight` customers with the same `(x, t_x, T)`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pattern {
    x: f64,
    recency: f64,
    age: f64,
    weight: f64,
    /// Index into `BgNbdData::groups`.
    group: u32,
}

/// All patterns with the same `x`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Group {
    x: u32,
    weight: f64,
}

/// Customers prepared for BG/NBD likelihood evaluations: identical `(x, t_x, T)` triples
/// aggregated with weights, distinct frequencies indexed.
#[derive(Debug, Clone, PartialEq)]
pub struct BgNbdData<U: TimeUnit> {
    patterns: Vec<Pattern>,
    groups: Vec<Group>,
    customers: u64,
    max_age: f64,
    unit: PhantomData<U>,
}

/// Patterns per block of the parallel sums (fixed, so results do not depend on thread count).
const BLOCK: usize = 8_192;

/// Sums over patterns: [ln L, ∂r, ∂α, ∂a, ∂b] (natural parameters).
type Sums = [f64; 5];

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
        let mut keys: Vec<(u32, u64, u64, u64)> = customers
            .into_iter()
            .filter(|(_, w)| *w > 0)
            .map(|(c, w)| (c.frequency(), c.recency().to_bits(), c.age().to_bits(), w))
            .collect();
        if keys.is_empty() {
            return Err(ClvError::EmptyPopulation);
        }
        // Non-negative finite f64 order like their bit patterns, so this sorts numerically.
        keys.sort_unstable();
        let mut patterns: Vec<Pattern> = Vec::new();
        let mut groups: Vec<Group> = Vec::new();
        let mut customers_total = 0u64;
        let mut max_age = 0.0f64;
        let mut last: Option<(u32, u64, u64)> = None;
        for (x, rec, age, w) in keys {
            customers_total = customers_total.saturating_add(w);
            let wf = w as f64;
            if groups.last().map(|g| g.x) != Some(x) {
                groups.push(Group { x, weight: 0.0 });
            }
            let group_index = groups.len() - 1;
            if let Some(g) = groups.last_mut() {
                g.weight += wf;
            }
            if last == Some((x, rec, age)) {
                if let Some(p) = patterns.last_mut() {
                    p.weight += wf;
                }
                continue;
            }
            last = Some((x, rec, age));
            let age = f64::from_bits(age);
            max_age = max_age.max(age);
            patterns.push(Pattern {
                x: f64::from(x),
                recency: f64::from_bits(rec),
                age,
                weight: wf,
                group: u32::try_from(group_index).unwrap_or(u32::MAX),
            });
        }
        Ok(Self {
            patterns,
            groups,
            customers: customers_total,
            max_age,
            unit: PhantomData,
        })
    }

    /// Number of customers (total weight).
    pub const fn customers(&self) -> u64 {
        self.customers
    }

    /// Number of distinct `(x, t_x, T)` patterns.
    pub fn patterns(&self) -> usize {
        self.patterns.len()
    }

    /// The largest age `T` (the time scale `lifetimes` fits in).
    pub const fn max_age(&self) -> f64 {
        self.max_age
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
        let [r, alpha, a, b] = theta.map(f64::exp);
        if ![r, alpha, a, b].iter().all(|v| v.is_finite() && *v > 0.0) {
            return (f64::NAN, [f64::NAN; 4]);
        }
        let n = self.customers as f64;
        let ln_alpha = alpha.ln();
        let ln_a = a.ln();
        let mut ll = n * r * ln_alpha;
        let (mut dr, mut dalpha, mut da, mut db) = (n * ln_alpha, n * r / alpha, 0.0, 0.0);
        // Per distinct x: the x-only terms, and two constants for the pattern loop.
        let lg_r = lgamma_pos(r);
        let lg_b = lgamma_pos(b);
        let lg_ab = lgamma_pos(a + b);
        let (psi_r, psi_b, psi_ab) = if gradient {
            (digamma_pos(r), digamma_pos(b), digamma_pos(a + b))
        } else {
            (0.0, 0.0, 0.0)
        };
        let mut per_group = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            let x = f64::from(g.x);
            let w = g.weight;
            ll += w
                * (lgamma_pos(r + x) - lg_r + lg_ab + lgamma_pos(b + x)
                    - lg_b
                    - lgamma_pos(a + b + x));
            if gradient {
                let psi_abx = digamma_pos(a + b + x);
                dr += w * (digamma_pos(r + x) - psi_r);
                da += w * (psi_ab - psi_abx);
                db += w * (psi_ab + digamma_pos(b + x) - psi_b - psi_abx);
            }
            let bx1 = b + x - 1.0;
            per_group.push(if g.x == 0 {
                (0.0, 0.0)
            } else {
                (ln_a - bx1.ln(), 1.0 / bx1)
            });
        }
        let kernel = |chunk: &[Pattern]| -> Sums {
            let mut s = [0.0; 5];
            for p in chunk {
                let k = r + p.x;
                let l3 = (alpha + p.age).ln();
                if p.x == 0.0 {
                    s[0] -= p.weight * k * l3;
                    if gradient {
                        s[1] -= p.weight * l3;
                        s[2] -= p.weight * k / (alpha + p.age);
                    }
                    continue;
                }
                let (c_x, inv_bx1) = per_group
                    .get(p.group as usize)
                    .copied()
                    .unwrap_or((f64::NAN, f64::NAN));
                let l4 = (alpha + p.recency).ln();
                let d = c_x - k * (l4 - l3);
                let e = (-d.abs()).exp();
                let softplus = d.max(0.0) + e.ln_1p();
                s[0] += p.weight * (softplus - k * l3);
                if gradient {
                    let inv = 1.0 / (1.0 + e);
                    let (pi4, pi3) = if d >= 0.0 {
                        (inv, e * inv)
                    } else {
                        (e * inv, inv)
                    };
                    s[1] -= p.weight * (pi3 * l3 + pi4 * l4);
                    s[2] -= p.weight * k * (pi3 / (alpha + p.age) + pi4 / (alpha + p.recency));
                    s[3] += p.weight * pi4 / a;
                    s[4] -= p.weight * pi4 * inv_bx1;
                }
            }
            s
        };
        let sums = block_sums(&self.patterns, threads, &kernel);
        ll += sums[0];
        dr += sums[1];
        dalpha += sums[2];
        da += sums[3];
        db += sums[4];
        (ll, [r * dr, alpha * dalpha, a * da, b * db])
    }

    /// Fits the model by maximum likelihood (see the module docs and [`BgNbdFitOptions`]).
    pub fn fit(&self, options: &BgNbdFitOptions<U>) -> Result<BgNbdFit<U>, ClvError> {
        let penalizer = options.penalizer_coef;
        if !penalizer.is_finite() || penalizer < 0.0 {
            return Err(ClvError::InvalidParameter {
                name: "penalizer_coef",
                value: penalizer,
            });
        }
        let threads = match options.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            t => t,
        };
        // lifetimes rescales time so that max T = 1 (1 when every T is 0).
        let time_scale = if self.max_age > 0.0 {
            self.max_age
        } else {
            1.0
        };
        let ln_scale = time_scale.ln();
        let n = self.customers as f64;
        let start = match &options.initial {
            Some(p) => p.ln(),
            None => [0.1, 0.1 + ln_scale, 0.1, 0.1],
        };
        let objective = |theta: &[f64; 4]| -> (f64, [f64; 4]) {
            let (ll, g) = self.evaluate(*theta, true, threads);
            // penalty on (r, α / max T, a, b), as lifetimes applies it in rescaled time
            let mut p = theta.map(f64::exp);
            p[1] /= time_scale;
            let penalty: f64 = p.iter().map(|v| v * v).sum();
            let f = -ll / n + penalizer * penalty;
            let mut grad = [0.0; 4];
            for i in 0..4 {
                grad[i] = -g[i] / n + penalizer * 2.0 * p[i] * p[i];
            }
            (f, grad)
        };
        let min = minimize_bfgs(objective, start, &options.bfgs)?;
        let [r, alpha, a, b] = min.x.map(f64::exp);
        let params = BgNbdParams::new(r, alpha, a, b)?;
        let log_likelihood = self.evaluate(min.x, false, threads).0;
        let standard_errors = if options.standard_errors {
            self.standard_errors(min.x, threads)
        } else {
            None
        };
        Ok(BgNbdFit {
            params,
            log_likelihood,
            iterations: min.iterations,
            evaluations: min.evaluations,
            converged: min.termination.converged(),
            termination: min.termination,
            gradient_norm: min.gradient_norm(),
            customers: self.customers,
            patterns: self.patterns.len(),
            standard_errors,
        })
    }

    /// Standard errors of `(r, α, a, b)` from the observed information: the Hessian of
    /// `-Σ ln L` in log-parameters by central differences of the analytic gradient, inverted,
    /// and the delta method `se(pᵢ) = pᵢ √(H⁻¹)ᵢᵢ` (what `lifetimes` reports as
    /// `standard_errors_`). `None` when the Hessian is not positive definite.
    fn standard_errors(&self, theta: [f64; 4], threads: usize) -> Option<[f64; 4]> {
        log_scale_standard_errors(theta, |t| self.evaluate(t, true, threads).1)
    }
}

/// Sums `kernel` over fixed blocks of `items`, blocks shared among `threads` scoped threads,
/// block results added in block order (deterministic whatever the thread count).
pub(crate) fn block_sums<T: Sync, const K: usize>(
    items: &[T],
    threads: usize,
    kernel: &(dyn Fn(&[T]) -> [f64; K] + Sync),
) -> [f64; K] {
    let blocks: Vec<&[T]> = items.chunks(BLOCK).collect();
    let mut results = vec![[0.0; K]; blocks.len()];
    let threads = threads.clamp(1, blocks.len().max(1));
    if threads == 1 {
        for (out, block) in results.iter_mut().zip(&blocks) {
            *out = kernel(block);
        }
    } else {
        let per_thread = blocks.len().div_ceil(threads);
        let mut refused = false;
        std::thread::scope(|scope| {
            for (outs, ins) in results
                .chunks_mut(per_thread)
                .zip(blocks.chunks(per_thread))
            {
                let spawned = std::thread::Builder::new().spawn_scoped(scope, move || {
                    for (out, block) in outs.iter_mut().zip(ins) {
                        *out = kernel(block);
                    }
                });
                refused |= spawned.is_err();
            }
        });
        if refused {
            // The OS refused a thread: do all the work here rather than panic.
            for (out, block) in results.iter_mut().zip(&blocks) {
                *out = kernel(block);
            }
        }
    }
    let mut total = [0.0; K];
    for r in &results {
        for (t, v) in total.iter_mut().zip(r) {
            *t += v;
        }
    }
    total
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
    /// Whether to compute standard errors (8 extra gradient evaluations).
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
