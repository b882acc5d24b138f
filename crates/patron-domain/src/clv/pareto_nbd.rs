//! The Pareto/NBD model (Schmittlein, Morrison & Colombo 1987): likelihood, fit and predictions,
//! as `lifetimes` 0.11.3 (`ParetoNBDFitter`) defines them.
//!
//! While active, a customer buys at Poisson rate `λ ~ Gamma(r, α)`; the lifetime is exponential
//! with dropout rate `μ ~ Gamma(s, β)`, in continuous time (dropout can happen at any moment,
//! not only after purchases as in BG/NBD). `α` and `β` are time scales, in the unit `U`.
//!
//! # Likelihood
//!
//! Per customer with summary `(x, t_x, T)` and `k = r + x` (Fader & Hardie's note 009, eq. 18):
//!
//! ```text
//! L = Γ(k) α^r β^s / Γ(r) · [E₁ + E₂]
//! E₁ = (α + T)^-k (β + T)^-s                           alive at T
//! E₂ = s ∫_{t_x}^{T} (α + τ)^-k (β + τ)^-(s+1) dτ      dropped out in (t_x, T]
//!    = s / (r + s + x) · A₀
//! ```
//!
//! `lifetimes` writes `A₀` (eqs. 19, 20) as a difference of two ₂F₁ terms, choosing by `α ≥ β`
//! or `α < β` which of the two rates goes in front. Both cases are the tail integral
//! `G(y) = ∫_y^∞ (α + τ)^-k (β + τ)^-(s+1) dτ`, `E₂ = s (G(t_x) - G(T))`, and with
//! `m = max(α, β)` carrying exponent `p` and `n = min(α, β)` carrying exponent `q`
//! (`p = k, q = s + 1` when `α ≥ β`; `p = s + 1, q = k` otherwise):
//!
//! ```text
//! G(y) = (m + y)^-(p+q-1) ₂F₁(p + q - 1, q; p + q; z) / (p + q - 1)          (lifetimes)
//!      = (m + y)^-p (n + y)^-(q-1) H(p, q, z) / (p + q - 1),   z = (m - n) / (m + y) ∈ [0, 1)
//! H(p, q, z) = ₂F₁(1, p; p + q; z) = Σₙ (p)ₙ / (p + q)ₙ zⁿ = E[1 / (1 - z B)],  B ~ Beta(p, q)
//! ```
//!
//! (Euler's transformation `₂F₁(a, b; c; z) = (1 - z)^(c-a-b) ₂F₁(c - a, c - b; c; z)`). The
//! second form is the one computed here: `1 <= H <= 1 / (1 - z)` whatever the purchase count,
//! where `lifetimes`' ₂F₁ grows like `(1 - z)^-(r+x)` when `α < β` (and overflows for enough
//! purchases). Everything is in log space:
//!
//! ```text
//! ln E₂ = ln s + ln G(t_x) + ln(-expm1(δ)),   δ = ln G(T) - ln G(t_x) < 0
//! δ = -p ln1p((T - t_x) / (m + t_x)) - (q - 1) ln1p((T - t_x) / (n + t_x)) + ln H_T - ln H_{t_x}
//! ln L = ln Γ(k) - ln Γ(r) + r ln α + s ln β + ln E₁ + ln(1 + e^d),   d = ln E₂ - ln E₁
//! ```
//!
//! (`E₂ = 0` when `t_x = T`.) `H` and its derivatives in `p`, `q` and `z` are summed from the
//! series (all terms positive, ratio `(p + n) z / (p + q + n) < z`) for `z <= 0.98`; closer to 1
//! `H` and `∂H/∂z = p / (p + q) ₂F₁(2, p + 1; p + q + 1; z)` come from [`hyp2f1`] (analytic
//! continuation) and `∂H/∂p`, `∂H/∂q` from central differences of it.
//!
//! # Gradient
//!
//! With `π₂ = 1 / (1 + e^-d)` (the posterior probability of having dropped out), `π₁ = 1 - π₂`
//! and `ρ = e^δ`,
//!
//! ```text
//! ∂ ln L = ∂(ln Γ(k) - ln Γ(r) + r ln α + s ln β) + π₁ ∂ ln E₁ + π₂ ∂ ln E₂
//! ∂ ln E₂ = [∂s: 1 / s] + (∂ ln G(t_x) - ρ ∂ ln G(T)) / (1 - ρ)
//! ∂ ln G / ∂p = -ln(m + y) + H_p / H - 1 / (p + q - 1)
//! ∂ ln G / ∂q = -ln(n + y) + H_q / H - 1 / (p + q - 1)
//! ∂ ln G / ∂m = -p / (m + y) + H_z / H · (n + y) / (m + y)²
//! ∂ ln G / ∂n = -(q - 1) / (n + y) - H_z / H / (m + y)
//! ```
//!
//! mapped back to `(r, α, s, β)` by the case `α ≥ β` / `α < β`; the optimiser works on
//! `θ = ln(r, α, s, β)`.
//!
//! # Predictions (note 009)
//!
//! * `P(alive | x, t_x, T) = E₁ / (E₁ + E₂) = 1 / (1 + e^d)` (eqs. 36, 37; `lifetimes`'
//!   `conditional_probability_alive`).
//! * `E[X(t) | x, t_x, T] = P(alive) · (r + x) (β + T) / ((α + T) (s - 1)) · [1 - ((β + T) /
//!   (β + T + t))^(s-1)]` (eq. 41; `conditional_expected_number_of_purchases_up_to_time`).
//! * `E[X(t)] = r β / (α (s - 1)) · [1 - (β / (β + t))^(s-1)]` (eq. 27;
//!   `expected_number_of_purchases_up_to_time`).
//!
//! The bracket over `s - 1` is computed as `-expm1(-(s - 1) u) / (s - 1)` with
//! `u = ln1p(t / (β + T))`, which is accurate near `s = 1` and equal to its limit `u` at `s = 1`
//! (where `lifetimes` returns NaN).
//!
//! # Fitting, as `lifetimes` does it
//!
//! `lifetimes` rescales time so that `max T = 1` and minimises, with Nelder-Mead from a random
//! start near `(1, 1, 1, 1)`, `-Σ ln Lᵢ + penalizer_coef · (r² + α̃² + s² + β̃²)` (`α̃ = α / max T`,
//! `β̃ = β / max T`; the log-likelihood is summed, not averaged as in its BG/NBD fitter). This
//! module minimises the same objective, divided by the number of customers `N` (the same
//! minimiser), with BFGS in `θ = ln(r, α, s, β)` from `(1, max T, 1, max T)`. `lifetimes`'
//! Nelder-Mead stops at `tol = 1e-4`, about `1e-4` (relative) from the optimum and at a
//! seed-dependent place; with `tol = 1e-12` it reaches the optimum found here (CDNOW:
//! `r = 0.5533, α = 10.578, s = 0.6062, β = 11.668`, `ln L = -9594.97`). With `weights`,
//! `lifetimes` divides the log-likelihood by the mean weight of its rows; here a weight is a
//! number of customers, so a fit of aggregated patterns equals `lifetimes`' fit of one row per
//! customer.

use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use super::beta_geometric::{block_sums, check_param};
use super::optim::{BfgsOptions, Termination, invert_spd, log_scale_hessian, minimize_bfgs};
use super::special::{digamma_pos, expit, hyp2f1, lgamma_pos};
use super::value::TransactionModel;
use super::{ClvError, CustomerRfm, Periods, TimeUnit, TimeUnitKind};

/// Pareto/NBD parameters `(r, α, s, β)` for time unit `U` (`α`, `β` are time scales in units `U`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParetoNbdParams<U: TimeUnit> {
    r: f64,
    alpha: f64,
    s: f64,
    beta: f64,
    unit: PhantomData<U>,
}

impl<U: TimeUnit> ParetoNbdParams<U> {
    /// Parameters, each finite and `> 0`.
    pub fn new(r: f64, alpha: f64, s: f64, beta: f64) -> Result<Self, ClvError> {
        Ok(Self {
            r: check_param("r", r)?,
            alpha: check_param("alpha", alpha)?,
            s: check_param("s", s)?,
            beta: check_param("beta", beta)?,
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

    /// Shape of the Gamma distribution of dropout rates.
    pub const fn s(&self) -> f64 {
        self.s
    }

    /// Scale (rate parameter) of the Gamma distribution of dropout rates, in units `U`.
    pub const fn beta(&self) -> f64 {
        self.beta
    }

    /// The same model in another time unit (`α` and `β` are rescaled, e.g. weeks → days
    /// multiplies both by 7).
    pub fn convert<V: TimeUnit>(&self) -> ParetoNbdParams<V> {
        let factor = U::DAYS / V::DAYS;
        ParetoNbdParams {
            r: self.r,
            alpha: self.alpha * factor,
            s: self.s,
            beta: self.beta * factor,
            unit: PhantomData,
        }
    }

    /// The untyped form, for storage.
    pub fn to_untyped(&self) -> UntypedParetoNbdParams {
        UntypedParetoNbdParams {
            unit: U::KIND,
            r: self.r,
            alpha: self.alpha,
            s: self.s,
            beta: self.beta,
        }
    }

    fn ln(&self) -> [f64; 4] {
        [self.r.ln(), self.alpha.ln(), self.s.ln(), self.beta.ln()]
    }
}

/// Pareto/NBD parameters with a runtime time-unit tag, for storage and transport.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UntypedParetoNbdParams {
    /// The unit the parameters were fitted in.
    pub unit: TimeUnitKind,
    /// See [`ParetoNbdParams::r`].
    pub r: f64,
    /// See [`ParetoNbdParams::alpha`].
    pub alpha: f64,
    /// See [`ParetoNbdParams::s`].
    pub s: f64,
    /// See [`ParetoNbdParams::beta`].
    pub beta: f64,
}

impl UntypedParetoNbdParams {
    /// Typed parameters; [`ClvError::UnitMismatch`] when `U` is not the stored unit.
    pub fn into_typed<U: TimeUnit>(self) -> Result<ParetoNbdParams<U>, ClvError> {
        super::units::expect_unit::<U>(self.unit)?;
        ParetoNbdParams::new(self.r, self.alpha, self.s, self.beta)
    }
}

// ---------------------------------------------------------------------------------------------
// H(p, q, z) = ₂F₁(1, p; p + q; z) and its derivatives
// ---------------------------------------------------------------------------------------------

/// `H`, `∂H/∂p`, `∂H/∂q`, `∂H/∂z`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct HValue {
    h: f64,
    hp: f64,
    hq: f64,
    hz: f64,
}

/// Up to this `z` the series is summed directly (about `40 / (1 - z)` terms).
const SERIES_MAX_Z: f64 = 0.98;
const SERIES_BUDGET: usize = 20_000;

/// `H(p, q, z)` (and, if `derivatives`, its partial derivatives) for `p, q > 0`, `0 <= z < 1`.
fn h_function(p: f64, q: f64, z: f64, derivatives: bool) -> Result<HValue, ClvError> {
    if z == 0.0 {
        return Ok(HValue {
            h: 1.0,
            hp: 0.0,
            hq: 0.0,
            hz: p / (p + q),
        });
    }
    if z <= SERIES_MAX_Z
        && let Some(v) = h_series(p, q, z)
    {
        return Ok(v);
    }
    h_hypergeometric(p, q, z, derivatives)
}

/// The series `Σ cₙ zⁿ`, `c₀ = 1`, `cₙ₊₁ = cₙ (p + n) / (p + q + n)`, with
/// `∂ ln cₙ / ∂p = Σ_{j<n} q / ((p + j)(p + q + j))` and `∂ ln cₙ / ∂q = -Σ_{j<n} 1 / (p + q + j)`.
/// `None` when it does not converge within the budget.
fn h_series(p: f64, q: f64, z: f64) -> Option<HValue> {
    let c = p + q;
    let one_minus_z = 1.0 - z;
    let (mut h, mut hp, mut hq, mut hz) = (1.0, 0.0, 0.0, 0.0);
    let mut u = 1.0; // cₙ zⁿ
    let mut dp = 0.0; // ∂ ln cₙ / ∂p
    let mut dq = 0.0; // ∂ ln cₙ / ∂q
    for n in 0..SERIES_BUDGET {
        let nf = n as f64;
        let ratio = (p + nf) / (c + nf);
        dp += q / ((p + nf) * (c + nf));
        dq -= 1.0 / (c + nf);
        let a = ratio * u; // cₙ₊₁ zⁿ
        hz += (nf + 1.0) * a;
        u = a * z;
        h += u;
        hp += u * dp;
        hq += u * dq;
        if !(h.is_finite() && hz.is_finite()) {
            return None;
        }
        // The terms fall at least geometrically (ratio z), so the tails are bounded by the
        // current term over (1 - z) (and (1 - z)² for the n-weighted ∂/∂z series).
        if a * (nf + 2.0) <= 1e-17 * one_minus_z * one_minus_z * hz
            && u * (1.0 + dp - dq) <= 1e-17 * one_minus_z * h
        {
            return Some(HValue { h, hp, hq, hz });
        }
    }
    None
}

/// `H` and `∂H/∂z` through [`hyp2f1`] (analytic continuation close to `z = 1`); `∂H/∂p` and
/// `∂H/∂q` by central differences (relative step `1e-5`).
fn h_hypergeometric(p: f64, q: f64, z: f64, derivatives: bool) -> Result<HValue, ClvError> {
    let value = |p: f64, q: f64| hyp2f1(1.0, p, p + q, z);
    let h = value(p, q)?;
    if !derivatives {
        return Ok(HValue {
            h,
            hp: 0.0,
            hq: 0.0,
            hz: 0.0,
        });
    }
    let hz = p / (p + q) * hyp2f1(2.0, p + 1.0, p + q + 1.0, z)?;
    let step_p = 1e-5 * p;
    let step_q = 1e-5 * q;
    let hp = (value(p + step_p, q)? - value(p - step_p, q)?) / (2.0 * step_p);
    let hq = (value(p, q + step_q)? - value(p, q - step_q)?) / (2.0 * step_q);
    Ok(HValue { h, hp, hq, hz })
}

// ---------------------------------------------------------------------------------------------
// One customer: log-likelihood, its gradient and the log-odds of having dropped out
// ---------------------------------------------------------------------------------------------

/// Parameters plus the constants every evaluation needs.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Core {
    r: f64,
    alpha: f64,
    s: f64,
    beta: f64,
    ln_alpha: f64,
    ln_beta: f64,
    ln_s: f64,
    lgamma_r: f64,
}

/// What one customer contributes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Terms {
    /// ln L.
    log_likelihood: f64,
    /// `d = ln E₂ - ln E₁`, the log-odds of having dropped out (`-∞` when `t_x = T`).
    log_odds_dropout: f64,
    /// ∂ ln L / ∂(r, α, s, β) (zeros unless asked for).
    gradient: [f64; 4],
}

/// ln G(y) and its derivatives in `(p, q, m, n)`.
struct TailLog {
    value: f64,
    ln_h: f64,
    grad: [f64; 4],
}

impl Core {
    fn new(r: f64, alpha: f64, s: f64, beta: f64) -> Self {
        Self {
            r,
            alpha,
            s,
            beta,
            ln_alpha: alpha.ln(),
            ln_beta: beta.ln(),
            ln_s: s.ln(),
            lgamma_r: lgamma_pos(r),
        }
    }

    /// `(m, p, n, q)` for `k = r + x` and whether `α ≥ β` (module docs).
    fn orientation(&self, k: f64) -> (f64, f64, f64, f64, bool) {
        if self.alpha >= self.beta {
            (self.alpha, k, self.beta, self.s + 1.0, true)
        } else {
            (self.beta, self.s + 1.0, self.alpha, k, false)
        }
    }

    /// `H` at `y` and, if `gradient`, `∂ ln G(y) / ∂(p, q, m, n)`; `value` is ln G(y).
    fn tail(m: f64, p: f64, n: f64, q: f64, y: f64, gradient: bool) -> Result<TailLog, ClvError> {
        let my = m + y;
        let ny = n + y;
        let z = (m - n) / my;
        let hv = h_function(p, q, z, gradient)?;
        let ln_h = hv.h.ln();
        let pq1 = p + q - 1.0;
        let ln_my = my.ln();
        let ln_ny = ny.ln();
        let value = -p * ln_my - (q - 1.0) * ln_ny + ln_h - pq1.ln();
        let grad = if gradient {
            let hz = hv.hz / hv.h;
            [
                -ln_my + hv.hp / hv.h - 1.0 / pq1,
                -ln_ny + hv.hq / hv.h - 1.0 / pq1,
                -p / my + hz * ny / (my * my),
                -(q - 1.0) / ny - hz / my,
            ]
        } else {
            [0.0; 4]
        };
        Ok(TailLog { value, ln_h, grad })
    }

    /// ln L, the dropout log-odds and (if `gradient`) ∂ ln L / ∂(r, α, s, β) of one customer.
    /// `lgamma_diff` and `digamma_diff` are `ln Γ(r + x) - ln Γ(r)` and `ψ(r + x) - ψ(r)`.
    fn terms(
        &self,
        x: f64,
        recency: f64,
        age: f64,
        lgamma_diff: f64,
        digamma_diff: f64,
        gradient: bool,
    ) -> Result<Terms, ClvError> {
        let Self {
            r, alpha, s, beta, ..
        } = *self;
        let k = r + x;
        let ln_at = (alpha + age).ln();
        let ln_bt = (beta + age).ln();
        let ln_e1 = -k * ln_at - s * ln_bt;
        let base = lgamma_diff + r * self.ln_alpha + s * self.ln_beta + ln_e1;
        let mut grad = [0.0; 4];
        if gradient {
            grad = [
                digamma_diff + self.ln_alpha - ln_at,
                r / alpha - k / (alpha + age),
                self.ln_beta - ln_bt,
                s / beta - s / (beta + age),
            ];
        }
        if age <= recency {
            return Ok(Terms {
                log_likelihood: base,
                log_odds_dropout: f64::NEG_INFINITY,
                gradient: grad,
            });
        }
        let (m, p, n, q, alpha_is_max) = self.orientation(k);
        let at_recency = Self::tail(m, p, n, q, recency, gradient)?;
        let at_age = Self::tail(m, p, n, q, age, gradient)?;
        let gap = age - recency;
        let delta = -p * (gap / (m + recency)).ln_1p() - (q - 1.0) * (gap / (n + recency)).ln_1p()
            + at_age.ln_h
            - at_recency.ln_h;
        let delta = delta.min(0.0);
        // ln(1 - e^δ); -∞ when δ rounds to 0 (t_x within rounding of T: E₂ negligible).
        let ln_one_minus_rho = (-delta.exp_m1()).ln();
        let ln_e2 = self.ln_s + at_recency.value + ln_one_minus_rho;
        let d = ln_e2 - ln_e1;
        let softplus = if d > 0.0 {
            d + (-d).exp().ln_1p()
        } else {
            d.exp().ln_1p()
        };
        let log_likelihood = base + softplus;
        if gradient && d > f64::NEG_INFINITY {
            let pi2 = expit(d);
            let pi1 = 1.0 - pi2;
            let rho = delta.exp();
            let one_minus_rho = -delta.exp_m1();
            // ∂ ln(G(t_x) - G(T)) / ∂(p, q, m, n)
            let mut dg = [0.0; 4];
            for (i, v) in dg.iter_mut().enumerate() {
                *v = (at_recency.grad[i] - rho * at_age.grad[i]) / one_minus_rho;
            }
            let [dp, dq, dm, dn] = dg;
            let (d_r, d_alpha, d_s, d_beta) = if alpha_is_max {
                (dp, dm, dq, dn)
            } else {
                (dq, dn, dp, dm)
            };
            // ∂ ln E₁
            let e1 = [-ln_at, -k / (alpha + age), -ln_bt, -s / (beta + age)];
            let e2 = [d_r, d_alpha, 1.0 / s + d_s, d_beta];
            // grad currently holds the constant part plus ∂ ln E₁; replace the E₁ part by the
            // posterior mixture π₁ ∂ ln E₁ + π₂ ∂ ln E₂.
            for i in 0..4 {
                grad[i] += -e1[i] + pi1 * e1[i] + pi2 * e2[i];
            }
        }
        if !log_likelihood.is_finite() {
            return Err(ClvError::Overflow {
                what: "Pareto/NBD likelihood",
            });
        }
        Ok(Terms {
            log_likelihood,
            log_odds_dropout: d,
            gradient: grad,
        })
    }

    fn customer_terms<U: TimeUnit>(&self, c: &CustomerRfm<U>) -> Result<Terms, ClvError> {
        let x = f64::from(c.frequency());
        let lgamma_diff = lgamma_pos(self.r + x) - self.lgamma_r;
        self.terms(x, c.recency(), c.age(), lgamma_diff, 0.0, false)
    }
}

/// `(1 - e^(-(s - 1) u)) / (s - 1)`, equal to `u` at `s = 1`.
fn decay(s: f64, u: f64) -> f64 {
    let e = s - 1.0;
    if e == 0.0 { u } else { -(-e * u).exp_m1() / e }
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// A Pareto/NBD model ready for predictions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParetoNbdModel<U: TimeUnit> {
    params: ParetoNbdParams<U>,
    core: Core,
}

impl<U: TimeUnit> ParetoNbdModel<U> {
    /// A model from (validated) parameters.
    pub fn new(params: ParetoNbdParams<U>) -> Self {
        let ParetoNbdParams {
            r, alpha, s, beta, ..
        } = params;
        Self {
            params,
            core: Core::new(r, alpha, s, beta),
        }
    }

    /// The parameters.
    pub const fn params(&self) -> &ParetoNbdParams<U> {
        &self.params
    }

    /// ln L of one customer (module docs; `lifetimes`' `_conditional_log_likelihood`).
    /// Errors only where ₂F₁ fails (parameters far outside any fitted range).
    pub fn log_likelihood(&self, c: &CustomerRfm<U>) -> Result<f64, ClvError> {
        Ok(self.core.customer_terms(c)?.log_likelihood)
    }

    /// P(alive | x, t_x, T): the probability that the customer has not dropped out by `T`
    /// (`lifetimes`' `conditional_probability_alive`). Below 1 also for one-time buyers, and
    /// falling with the time since the last purchase. Errors as [`Self::log_likelihood`].
    pub fn probability_alive(&self, c: &CustomerRfm<U>) -> Result<f64, ClvError> {
        Ok(expit(-self.core.customer_terms(c)?.log_odds_dropout))
    }

    /// E[X(t) | x, t_x, T]: expected number of repeat purchases in the next `t` units
    /// (`lifetimes`' `conditional_expected_number_of_purchases_up_to_time`, `predict`).
    pub fn conditional_expected_purchases(
        &self,
        t: Periods<U>,
        c: &CustomerRfm<U>,
    ) -> Result<f64, ClvError> {
        let t = t.get();
        if t == 0.0 {
            return Ok(0.0);
        }
        let ParetoNbdParams {
            r, alpha, s, beta, ..
        } = self.params;
        let age = c.age();
        let x = f64::from(c.frequency());
        let alive = self.probability_alive(c)?;
        let rate = (r + x) / (alpha + age);
        let value = alive * rate * (beta + age) * decay(s, (t / (beta + age)).ln_1p());
        finite(value)
    }

    /// E[X(t)]: expected number of repeat purchases in `(0, t]` of a new customer
    /// (`lifetimes`' `expected_number_of_purchases_up_to_time`).
    pub fn expected_purchases(&self, t: Periods<U>) -> Result<f64, ClvError> {
        let ParetoNbdParams {
            r, alpha, s, beta, ..
        } = self.params;
        finite(r / alpha * beta * decay(s, (t.get() / beta).ln_1p()))
    }
}

fn finite(value: f64) -> Result<f64, ClvError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ClvError::Overflow {
            what: "expected purchases",
        })
    }
}

impl<U: TimeUnit> TransactionModel<U> for ParetoNbdModel<U> {
    /// P(alive); NaN where [`ParetoNbdModel::probability_alive`] errors.
    fn probability_alive(&self, customer: &CustomerRfm<U>) -> f64 {
        ParetoNbdModel::probability_alive(self, customer).unwrap_or(f64::NAN)
    }

    fn conditional_expected_purchases(
        &self,
        t: Periods<U>,
        customer: &CustomerRfm<U>,
    ) -> Result<f64, ClvError> {
        ParetoNbdModel::conditional_expected_purchases(self, t, customer)
    }

    fn expected_purchases(&self, t: Periods<U>) -> Result<f64, ClvError> {
        ParetoNbdModel::expected_purchases(self, t)
    }
}

// ---------------------------------------------------------------------------------------------
// Aggregated data, likelihood and fit
// ---------------------------------------------------------------------------------------------

/// One aggregated pattern: `weight` customers with the same `(x, t_x, T)`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pattern {
    x: u32,
    recency: f64,
    age: f64,
    weight: f64,
}

/// Customers prepared for Pareto/NBD likelihood evaluations: identical `(x, t_x, T)` triples
/// aggregated with weights.
#[derive(Debug, Clone, PartialEq)]
pub struct ParetoNbdData<U: TimeUnit> {
    patterns: Vec<Pattern>,
    customers: u64,
    max_age: f64,
    unit: PhantomData<U>,
}

/// Sums over patterns: [ln L, ∂r, ∂α, ∂s, ∂β, failures].
type Sums = [f64; 6];

impl<U: TimeUnit> ParetoNbdData<U> {
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
        let mut customers_total = 0u64;
        let mut max_age = 0.0f64;
        let mut last = None;
        for (x, rec, age, w) in keys {
            customers_total = customers_total.saturating_add(w);
            if last == Some((x, rec, age)) {
                if let Some(p) = patterns.last_mut() {
                    p.weight += w as f64;
                }
                continue;
            }
            last = Some((x, rec, age));
            let age = f64::from_bits(age);
            max_age = max_age.max(age);
            patterns.push(Pattern {
                x,
                recency: f64::from_bits(rec),
                age,
                weight: w as f64,
            });
        }
        Ok(Self {
            patterns,
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

    /// Total log-likelihood `Σ wᵢ ln Lᵢ`. Errors where ₂F₁ fails (see
    /// [`ParetoNbdModel::log_likelihood`]).
    pub fn log_likelihood(&self, params: &ParetoNbdParams<U>) -> Result<f64, ClvError> {
        self.evaluate(params.ln(), false, 1).map(|(ll, _)| ll)
    }

    /// Total log-likelihood and its (analytic) gradient with respect to
    /// `(ln r, ln α, ln s, ln β)`.
    pub fn log_likelihood_and_gradient(
        &self,
        params: &ParetoNbdParams<U>,
    ) -> Result<(f64, [f64; 4]), ClvError> {
        self.evaluate(params.ln(), true, 1)
    }

    fn evaluate(
        &self,
        theta: [f64; 4],
        gradient: bool,
        threads: usize,
    ) -> Result<(f64, [f64; 4]), ClvError> {
        let [r, alpha, s, beta] = theta.map(f64::exp);
        if ![r, alpha, s, beta]
            .iter()
            .all(|v| v.is_finite() && *v > 0.0)
        {
            return Err(ClvError::InvalidParameter {
                name: "log-parameters",
                value: f64::NAN,
            });
        }
        let core = Core::new(r, alpha, s, beta);
        let psi_r = if gradient { digamma_pos(r) } else { 0.0 };
        let kernel = |chunk: &[Pattern]| -> Sums {
            let mut sums = [0.0; 6];
            // Patterns are sorted by x: the x-only terms change rarely.
            let mut cached: Option<(u32, f64, f64)> = None;
            for p in chunk {
                let (lg, dg) = match cached {
                    Some((x, lg, dg)) if x == p.x => (lg, dg),
                    _ => {
                        let xf = f64::from(p.x);
                        let lg = lgamma_pos(r + xf) - core.lgamma_r;
                        let dg = if gradient {
                            digamma_pos(r + xf) - psi_r
                        } else {
                            0.0
                        };
                        cached = Some((p.x, lg, dg));
                        (lg, dg)
                    }
                };
                match core.terms(f64::from(p.x), p.recency, p.age, lg, dg, gradient) {
                    Ok(t) => {
                        sums[0] += p.weight * t.log_likelihood;
                        for i in 0..4 {
                            sums[i + 1] += p.weight * t.gradient[i];
                        }
                    }
                    Err(_) => sums[5] += 1.0,
                }
            }
            sums
        };
        let sums = block_sums(&self.patterns, threads, &kernel);
        if sums[5] > 0.0 {
            return Err(ClvError::NoConvergence {
                what: "Pareto/NBD likelihood",
            });
        }
        let params = [r, alpha, s, beta];
        let mut grad = [0.0; 4];
        for i in 0..4 {
            grad[i] = params[i] * sums[i + 1];
        }
        if !sums[0].is_finite() || grad.iter().any(|g| !g.is_finite()) {
            return Err(ClvError::Overflow {
                what: "Pareto/NBD likelihood",
            });
        }
        Ok((sums[0], grad))
    }

    /// Fits the model by maximum likelihood (see the module docs and [`ParetoNbdFitOptions`]).
    ///
    /// Errors on an invalid penalizer, when the likelihood cannot be evaluated at the start, or
    /// when the optimiser runs the parameters out of the `f64` range. Otherwise the fit reports
    /// `converged` (the optimiser's tolerances were met) and `interior_optimum` (`false` on
    /// small or degenerate data sets whose likelihood peaks on the boundary).
    pub fn fit(&self, options: &ParetoNbdFitOptions<U>) -> Result<ParetoNbdFit<U>, ClvError> {
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
        let start = options
            .initial
            .map_or([0.0, ln_scale, 0.0, ln_scale], |p| p.ln());
        let objective = |theta: &[f64; 4]| -> (f64, [f64; 4]) {
            let Ok((ll, g)) = self.evaluate(*theta, true, threads) else {
                return (f64::NAN, [f64::NAN; 4]);
            };
            // penalty on (r, α / max T, s, β / max T), as lifetimes applies it in rescaled
            // time, relative to the summed log-likelihood
            let mut p = theta.map(f64::exp);
            p[1] /= time_scale;
            p[3] /= time_scale;
            let penalty: f64 = p.iter().map(|v| v * v).sum();
            let f = (-ll + penalizer * penalty) / n;
            let mut grad = [0.0; 4];
            for i in 0..4 {
                grad[i] = (-g[i] + penalizer * 2.0 * p[i] * p[i]) / n;
            }
            (f, grad)
        };
        let min = minimize_bfgs(objective, start, &options.bfgs)?;
        let [r, alpha, s, beta] = min.x.map(f64::exp);
        let params = ParetoNbdParams::new(r, alpha, s, beta)?;
        let log_likelihood = self.evaluate(min.x, false, threads)?.0;
        // The observed information, also for the boundary flag.
        let information = log_scale_hessian(min.x, |t| {
            self.evaluate(t, true, threads)
                .map_or([f64::NAN; 4], |(_, g)| g)
        });
        let full_covariance = information.and_then(invert_spd).map(symmetrize);
        let scaled = [r, alpha / time_scale, s, beta / time_scale];
        let interior_optimum = full_covariance.is_some()
            && scaled
                .iter()
                .all(|v| (INTERIOR_MIN..=INTERIOR_MAX).contains(v));
        let covariance = full_covariance.filter(|_| options.standard_errors);
        let natural = [r, alpha, s, beta];
        let standard_errors = covariance.and_then(|cov| {
            let mut se = [0.0; 4];
            for i in 0..4 {
                se[i] = natural[i] * cov[i][i].sqrt();
            }
            se.iter().all(|v| v.is_finite()).then_some(se)
        });
        Ok(ParetoNbdFit {
            params,
            log_likelihood,
            iterations: min.iterations,
            evaluations: min.evaluations,
            converged: min.termination.converged(),
            interior_optimum,
            termination: min.termination,
            gradient_norm: min.gradient_norm(),
            customers: self.customers,
            patterns: self.patterns(),
            standard_errors,
            covariance: standard_errors.and(covariance),
        })
    }
}

/// `(M + Mᵀ) / 2`, so a covariance is exactly symmetric.
fn symmetrize(m: [[f64; 4]; 4]) -> [[f64; 4]; 4] {
    let mut out = m;
    for (i, row) in out.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = 0.5 * (m[i][j] + m[j][i]);
        }
    }
    out
}

/// Range of the rescaled parameters of an interior optimum ([`ParetoNbdFit::interior_optimum`]).
const INTERIOR_MIN: f64 = 1e-8;
const INTERIOR_MAX: f64 = 1e8;

/// Options of [`fit_pareto_nbd`] / [`ParetoNbdData::fit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParetoNbdFitOptions<U: TimeUnit> {
    /// L2 penalty coefficient, `lifetimes`' `penalizer_coef` (default 0): adds
    /// `penalizer_coef · (r² + (α / max T)² + s² + (β / max T)²)` to the summed negative
    /// log-likelihood `-Σ ln Lᵢ` (as `lifetimes`' `ParetoNBDFitter` does, unlike its BG/NBD
    /// fitter, which averages).
    pub penalizer_coef: f64,
    /// Starting point; default `(1, max T, 1, max T)` (`lifetimes` draws each rescaled
    /// parameter from `N(1, 0.05²)`).
    pub initial: Option<ParetoNbdParams<U>>,
    /// Stopping rules of the optimiser (on the objective divided by the number of customers,
    /// in log-parameters).
    pub bfgs: BfgsOptions,
    /// Worker threads for the likelihood sums; 0 = available parallelism.
    pub threads: usize,
    /// Whether to report standard errors and the covariance (the observed information behind
    /// them, 8 extra gradient evaluations, is computed anyway for `interior_optimum`).
    pub standard_errors: bool,
}

impl<U: TimeUnit> Default for ParetoNbdFitOptions<U> {
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

/// The result of a Pareto/NBD fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParetoNbdFit<U: TimeUnit> {
    /// The maximum-likelihood (or penalised) parameters.
    pub params: ParetoNbdParams<U>,
    /// Unpenalised total log-likelihood `Σ wᵢ ln Lᵢ` at `params`, in time unit `U`.
    pub log_likelihood: f64,
    /// BFGS iterations (accepted steps).
    pub iterations: u32,
    /// Objective evaluations, line searches included.
    pub evaluations: u32,
    /// Whether the optimiser met its gradient or relative-change tolerance.
    pub converged: bool,
    /// Whether the fit ended at an interior maximum: the observed information is positive
    /// definite and every rescaled parameter (`r, α / max T, s, β / max T`) lies in
    /// `[1e-8, 1e8]`. `false` flags a supremum on the boundary of the parameter space (tiny or
    /// degenerate data: one customer, no repeat purchases, no time observed, …), where the
    /// optimiser stops on a flat likelihood — often with `converged == true` — and the
    /// parameters are a limit, not an estimate.
    pub interior_optimum: bool,
    /// Why the optimiser stopped.
    pub termination: Termination,
    /// `max |∂f/∂θᵢ|` of the objective (per customer) at the end.
    pub gradient_norm: f64,
    /// Number of customers fitted.
    pub customers: u64,
    /// Number of distinct `(x, t_x, T)` patterns after aggregation.
    pub patterns: usize,
    /// Standard errors of `(r, α, s, β)` (observed information, delta method), if requested
    /// and the Hessian is positive definite. (`lifetimes`' Pareto/NBD fitter reports none.)
    pub standard_errors: Option<[f64; 4]>,
    /// Asymptotic covariance of the log-parameters `θ = ln(r, α, s, β)` (inverse observed
    /// information); present exactly when `standard_errors` is.
    pub covariance: Option<[[f64; 4]; 4]>,
}

impl<U: TimeUnit> ParetoNbdFit<U> {
    /// A prediction model from the fitted parameters.
    pub fn model(&self) -> ParetoNbdModel<U> {
        ParetoNbdModel::new(self.params)
    }
}

/// Aggregates `customers` and fits Pareto/NBD by maximum likelihood.
pub fn fit_pareto_nbd<U: TimeUnit>(
    customers: &[CustomerRfm<U>],
    options: &ParetoNbdFitOptions<U>,
) -> Result<ParetoNbdFit<U>, ClvError> {
    ParetoNbdData::from_customers(customers)?.fit(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_and_hypergeometric_routes_agree() {
        for (p, q) in [
            (0.55, 1.6),
            (1.6, 0.55),
            (500.5, 1.6),
            (1.6, 500.5),
            (0.01, 0.02),
        ] {
            for z in [1e-6, 0.1, 0.5, 0.9, 0.97, SERIES_MAX_Z] {
                let s = h_series(p, q, z).expect("converges");
                let h = h_hypergeometric(p, q, z, true).expect("ok");
                let close = |a: f64, b: f64, tol: f64| (a - b).abs() <= tol * b.abs().max(1e-300);
                assert!(
                    close(s.h, h.h, 1e-13),
                    "H({p}, {q}, {z}): {} vs {}",
                    s.h,
                    h.h
                );
                assert!(
                    close(s.hz, h.hz, 1e-12),
                    "Hz({p}, {q}, {z}): {} vs {}",
                    s.hz,
                    h.hz
                );
                // central differences: ~1e-10 relative, and absolute noise where H_p ≈ 0
                let scale = s.h / p.min(q);
                assert!((s.hp - h.hp).abs() <= 1e-7 * scale, "Hp({p}, {q}, {z})");
                assert!((s.hq - h.hq).abs() <= 1e-7 * scale, "Hq({p}, {q}, {z})");
            }
        }
        // Beyond the series range the continuation still gives H <= 1 / (1 - z).
        let v = h_function(0.5, 1.3, 1.0 - 1e-9, true).expect("ok");
        assert!(v.h > 1.0 && v.h <= 1e9 && v.hz.is_finite());
    }

    #[test]
    fn aggregation_and_per_customer_likelihood_agree() {
        let cs: Vec<CustomerRfm<crate::clv::Weeks>> = [
            (0, 0.0, 38.86),
            (0, 0.0, 38.86),
            (2, 30.43, 38.86),
            (5, 20.0, 30.0),
            (500, 38.5, 39.0),
            (3, 25.0, 25.0),
        ]
        .iter()
        .map(|&(x, tx, t)| CustomerRfm::new(x, tx, t, 0.0).expect("valid"))
        .collect();
        let data = ParetoNbdData::from_customers(&cs).expect("non-empty");
        assert_eq!((data.customers(), data.patterns()), (6, 5));
        for (alpha, beta) in [(10.0, 12.0), (12.0, 10.0), (11.0, 11.0)] {
            let params = ParetoNbdParams::new(0.55, alpha, 0.6, beta).expect("valid");
            let model = ParetoNbdModel::new(params);
            let sum: f64 = cs
                .iter()
                .map(|c| model.log_likelihood(c).expect("ok"))
                .sum();
            let total = data.log_likelihood(&params).expect("ok");
            assert!((sum - total).abs() < 1e-9 * total.abs(), "{sum} vs {total}");
        }
        // Continuity of ln L and its gradient through α = β (the orientation switch).
        let at = |alpha: f64| {
            data.log_likelihood_and_gradient(
                &ParetoNbdParams::new(0.55, alpha, 0.6, 11.0).expect("ok"),
            )
            .expect("ok")
        };
        let h = 1e-9;
        let (lo, mid, hi) = (at(11.0 - h), at(11.0), at(11.0 + h));
        // ∂ ln L / ∂ ln α at α = 11 predicts the change across the switch.
        let predicted = mid.1[1] * (2.0 * h / 11.0);
        assert!(
            ((hi.0 - lo.0) - predicted).abs() < 1e-9,
            "{lo:?} {mid:?} {hi:?}"
        );
        for i in 0..4 {
            assert!(
                (lo.1[i] - hi.1[i]).abs() < 1e-6 * lo.1[i].abs().max(1.0),
                "{i}: {lo:?} {hi:?}"
            );
        }
    }
}
