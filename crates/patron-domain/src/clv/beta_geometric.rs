//! What BG/NBD ([`bgnbd`](super::bgnbd)) and MBG/NBD ([`mbgnbd`](super::mbgnbd)) share: the two
//! models differ only in when a customer may drop out, so one implementation with a *shift*
//! `δ` serves both (`δ = 0`: BG/NBD, dropout after repeat purchases only; `δ = 1`: MBG/NBD,
//! dropout also right after the first purchase).
//!
//! With `x' = x + δ` (the number of purchases after which the customer could have dropped out),
//! the likelihood, `P(alive)` and `E[X(t) | x, t_x, T]` of both models are
//!
//! ```text
//! ln L = ln Γ(r + x) - ln Γ(r) + r ln α + ln B(a, b + x') - ln B(a, b)
//!        + ln((α + T)^-(r+x) + [x' > 0] a / (b + x' - 1) · (α + t_x)^-(r+x))
//! P(alive) = 1 / (1 + [x' > 0] a / (b + x' - 1) · ((α + T) / (α + t_x))^(r + x))
//! E[X(t) | x, t_x, T] = P(alive) · (a + b + x' - 1) / (a - 1)
//!                       · [1 - ((α + T) / (α + T + t))^(r + x) ₂F₁(r + x, b + x'; a + b + x' - 1; z)]
//! ```
//!
//! with `z = t / (α + T + t)`. This module holds the aggregated likelihood with its analytic
//! gradient, the fit driver (BFGS in log-parameters, `lifetimes`' penalizer and start, standard
//! errors and covariance from the observed information) and the prediction core.
//!
//! # Large `a`, `b`: the constant-dropout limit
//!
//! On small or short data sets the maximum likelihood can lie at the boundary `a, b → ∞` with
//! `p = a / (a + b)` fixed: every customer drops out with the same probability `p` after each
//! purchase. `P(alive)` is unaffected (the ratio `a / (b + x' - 1)` stays accurate), but the
//! Euler-transformed ₂F₁ route of the expectation breaks down in two ways:
//!
//! * it subtracts two terms of order `(a + b) t / (α + T)` to get a result of order
//!   `(r + x) t / (α + T)`, losing about `log₁₀((a + b) / (r + x))` digits (5e-10 relative at
//!   `a = 3·10⁵`, `t / (α + T) = 2.5·10⁻⁵`);
//! * it multiplies `(1 - z)^(a-1)` (underflows) by a sum of order `(1 - z)^-(a-1)` (overflows)
//!   as soon as `(a - 1) |ln(1 - z)| ≳ 700` — for `a = 3·10⁸` at any horizon beyond
//!   `10⁻⁶ (α + T)` — and the general ₂F₁ fails with it (`None` predictions, hence no CLV).
//!
//! The expectation is the posterior mean, over the dropout probability `p ~ Beta(a, b + x')`
//! of a live customer and the rate `λ ~ Gamma(r + x, α + T)`, of `(1 - e^(-λ p t)) / p`, i.e.
//!
//! ```text
//! E[X(t) | alive] = (1 / m) · (1 - E[(1 + β q)^-k]),   q ~ Beta(a - 1, b + x'),
//! k = r + x,  β = t / (α + T),  m = E[q] = (a - 1) / (a + b + x' - 1).
//! ```
//!
//! So from `a - 1 >= 50` on, two evaluations without ₂F₁ are used first (the ₂F₁ route remains
//! the fallback if neither applies):
//!
//! * **Closed-form limit.** `q` concentrates at `m` (variance `σ² ≈ m (1 - m) / (a + b)`), so
//!   `E[h(q)] = h(m) + h''(m) σ² / 2 + h'''(m) μ₃ / 6 + O(σ⁴)` with `h(q) = (1 + βq)^-k`,
//!   `h⁽ⁿ⁾(m) = (-1)ⁿ (k)ₙ uⁿ h(m)`, `u = β / (1 + βm)`. Its leading term is the `a, b → ∞` limit
//!   `E[X(t) | alive] = (1 / p) (1 - (1 + p t / (α + T))^-(r+x))` with `p = a / (a + b)`, the
//!   expectation of a constant-`p` customer. It is used when the first neglected term,
//!   `h(m) (k)₄ u⁴ 3σ⁴ / 24`, is below `1e-15` of the result.
//! * **Exact negative-binomial mixture** otherwise (moderately large `a`): with `N ~ NegBin(k, z)`
//!   (pmf `Γ(k+n) / (Γ(k) n!) (1 - z)^k zⁿ`) and `d_n = 1 - (b + x')ₙ / (a + b + x' - 1)ₙ`,
//!   `1 - E[h(q)] = E[d_N]` (Pfaff's transformation of ₂F₁ and a term-by-term subtraction):
//!   every term is positive, `d_n` follows `d_{n+1} = d_n + ρ_n (a - 1) / (c + n)` without
//!   cancellation, and the pmf is carried with a log offset so nothing overflows. It costs about
//!   `k β` terms, so it is limited to 2·10⁶ terms.
//!
//! The three evaluations agree to `1e-10` wherever two of them apply (unit tests), and the
//! predictions match 50-digit `mpmath` values to `1e-11` from `a + b = 100` to `10¹⁵`
//! (`tests/large_ab.rs`), so the switch is continuous in `a` and `b`.

use super::optim::{BfgsOptions, Termination, invert_spd, log_scale_hessian, minimize_bfgs};
use super::special::{digamma_pos, expit, hyp2f1, lgamma_pos, log1p_exp};
use super::{ClvError, CustomerRfm, TimeUnit};

/// BG/NBD (`δ = 0`) or MBG/NBD (`δ = 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    /// Dropout only after repeat purchases.
    Bg,
    /// Dropout also right after the first purchase.
    Mbg,
}

impl Variant {
    /// `δ`, as `f64`.
    const fn shift(self) -> f64 {
        match self {
            Variant::Bg => 0.0,
            Variant::Mbg => 1.0,
        }
    }

    /// Whether a customer with `x` repeat purchases could have dropped out (`x' > 0`).
    const fn can_drop_out(self, x: u32) -> bool {
        x > 0 || matches!(self, Variant::Mbg)
    }
}

pub(crate) fn check_param(name: &'static str, value: f64) -> Result<f64, ClvError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(ClvError::InvalidParameter { name, value })
    }
}

/// Defines the typed parameter struct `$name<U>` (fields `r, alpha, a, b`) and its untyped,
/// serde-able twin `$untyped`, for one beta-geometric model named `$model` in the docs.
macro_rules! beta_geometric_params {
    ($name:ident, $untyped:ident, $model:literal) => {
        #[doc = concat!($model, " parameters `(r, α, a, b)` for time unit `U` (`α` is a time scale, in units `U`).")]
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub struct $name<U: TimeUnit> {
            r: f64,
            alpha: f64,
            a: f64,
            b: f64,
            unit: PhantomData<U>,
        }

        impl<U: TimeUnit> $name<U> {
            /// Parameters, each finite and `> 0`.
            pub fn new(r: f64, alpha: f64, a: f64, b: f64) -> Result<Self, ClvError> {
                use $crate::clv::beta_geometric::check_param;
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

            /// Mean dropout probability `a / (a + b)` (the constant dropout probability `p` of
            /// the `a, b → ∞` limit).
            pub fn mean_dropout_probability(&self) -> f64 {
                self.a / (self.a + self.b)
            }

            /// The same model in another time unit (`α` is rescaled, e.g. weeks → days
            /// multiplies by 7).
            pub fn convert<V: TimeUnit>(&self) -> $name<V> {
                $name {
                    r: self.r,
                    alpha: self.alpha * (U::DAYS / V::DAYS),
                    a: self.a,
                    b: self.b,
                    unit: PhantomData,
                }
            }

            /// The untyped form, for storage.
            pub fn to_untyped(&self) -> $untyped {
                $untyped {
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

        #[doc = concat!($model, " parameters with a runtime time-unit tag, for storage and transport.")]
        #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
        pub struct $untyped {
            /// The unit the parameters were fitted in.
            pub unit: TimeUnitKind,
            #[doc = concat!("See [`", stringify!($name), "::r`].")]
            pub r: f64,
            #[doc = concat!("See [`", stringify!($name), "::alpha`].")]
            pub alpha: f64,
            #[doc = concat!("See [`", stringify!($name), "::a`].")]
            pub a: f64,
            #[doc = concat!("See [`", stringify!($name), "::b`].")]
            pub b: f64,
        }

        impl $untyped {
            /// Typed parameters; [`ClvError::UnitMismatch`] when `U` is not the stored unit.
            pub fn into_typed<U: TimeUnit>(self) -> Result<$name<U>, ClvError> {
                $crate::clv::units::expect_unit::<U>(self.unit)?;
                $name::new(self.r, self.alpha, self.a, self.b)
            }
        }
    };
}
pub(crate) use beta_geometric_params;

// ---------------------------------------------------------------------------------------------
// Predictions
// ---------------------------------------------------------------------------------------------

/// Parameters plus the constants every prediction needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Core {
    variant: Variant,
    r: f64,
    alpha: f64,
    a: f64,
    b: f64,
    /// b + δ
    bs: f64,
    ln_a: f64,
    ln_alpha: f64,
    pub(crate) lgamma_r: f64,
    /// a - 1
    eps: f64,
    /// a + b + δ - 1 - r, the second parameter of the Euler-transformed ₂F₁.
    euler_b: f64,
}

const SERIES_BUDGET: usize = 200_000;
/// `a - 1` from which the ₂F₁-free evaluations may take over when the ₂F₁ route fails.
const LARGE_SHAPE: f64 = 50.0;
/// Term budget of the negative-binomial mixture.
const MIXTURE_BUDGET: usize = 2_000_000;

/// `ln B(a, b + n) - ln B(a, b) = ln Γ(a+b) + ln Γ(b+n) - ln Γ(b) - ln Γ(a+b+n)` and (if
/// `gradient`) its derivatives in `a` and `b`.
///
/// For integer `n` this is `-Σ_{k<n} ln(1 + a / (b + k))`, with derivatives `-Σ 1 / (a+b+k)` and
/// `Σ a / ((b+k)(a+b+k))`: exact at any size. The `ln Γ` / `ψ` differences lose everything once
/// `a + b` is large (at `a, b ~ 1e63`, `ln Γ ~ 1e65` and the difference is noise of `1e49`, which
/// once sent a fit to a "maximum" with a positive log-likelihood of `4e52`), so the sums are used
/// there and for small `n`; the `ln Γ` form only for long histories at moderate `a + b`.
fn ln_beta_ratio(a: f64, b: f64, n: u32, gradient: bool) -> (f64, f64, f64) {
    if n <= 64 || a + b > 1e6 {
        let (mut v, mut da, mut db) = (0.0, 0.0, 0.0);
        for k in 0..n {
            let bk = b + f64::from(k);
            v -= (a / bk).ln_1p();
            if gradient {
                let abk = a + bk;
                da -= 1.0 / abk;
                db += a / (bk * abk);
            }
        }
        return (v, da, db);
    }
    let nf = f64::from(n);
    let v = lgamma_pos(a + b) + lgamma_pos(b + nf) - lgamma_pos(b) - lgamma_pos(a + b + nf);
    if !gradient {
        return (v, 0.0, 0.0);
    }
    let (psi_ab, psi_abn) = (digamma_pos(a + b), digamma_pos(a + b + nf));
    (
        v,
        psi_ab - psi_abn,
        psi_ab + digamma_pos(b + nf) - digamma_pos(b) - psi_abn,
    )
}

impl Core {
    pub(crate) fn new(variant: Variant, r: f64, alpha: f64, a: f64, b: f64) -> Self {
        let bs = b + variant.shift();
        Self {
            variant,
            r,
            alpha,
            a,
            b,
            bs,
            ln_a: a.ln(),
            ln_alpha: alpha.ln(),
            lgamma_r: lgamma_pos(r),
            eps: a - 1.0,
            euler_b: a + bs - 1.0 - r,
        }
    }

    /// ln L of one customer.
    pub(crate) fn log_likelihood<U: TimeUnit>(&self, c: &CustomerRfm<U>) -> f64 {
        let Self { r, alpha, a, b, .. } = *self;
        let bs = self.bs;
        let x = f64::from(c.frequency());
        let a1 = lgamma_pos(r + x) - self.lgamma_r + r * self.ln_alpha;
        let shift = u32::from(self.variant.shift() != 0.0);
        let (a2, _, _) = ln_beta_ratio(a, b, c.frequency() + shift, false);
        let a3 = -(r + x) * (alpha + c.age()).ln();
        if !self.variant.can_drop_out(c.frequency()) {
            return a1 + a2 + a3;
        }
        let a4 = self.ln_a - (bs + x - 1.0).ln() - (r + x) * (alpha + c.recency()).ln();
        a1 + a2 + a3 + log1p_exp(a4 - a3)
    }

    /// P(alive | x, t_x, T).
    pub(crate) fn probability_alive<U: TimeUnit>(&self, c: &CustomerRfm<U>) -> f64 {
        if !self.variant.can_drop_out(c.frequency()) {
            return 1.0;
        }
        let x = f64::from(c.frequency());
        let ln_odds = (self.r + x) * ((c.age() - c.recency()) / (self.alpha + c.recency())).ln_1p()
            + self.ln_a
            - (self.bs + x - 1.0).ln();
        expit(-ln_odds)
    }

    /// P(alive) × [`Core::expectation_core`] at each of `ts`: the conditional expected purchases
    /// of BG/NBD and MBG/NBD over several horizons, P(alive) computed once.
    pub(crate) fn conditional_expected_purchases_at<U: TimeUnit>(
        &self,
        ts: &[super::Periods<U>],
        c: &CustomerRfm<U>,
    ) -> Result<Vec<f64>, ClvError> {
        let alive = self.probability_alive(c);
        let x = f64::from(c.frequency());
        ts.iter()
            .map(|t| Ok(alive * self.expectation_core(x, t.get(), c.age())?))
            .collect()
    }

    /// The factor of [`Self::conditional_expected_purchases_at`] after P(alive), at each of
    /// `ts`: a function of the frequency and the age alone.
    pub(crate) fn expected_purchases_if_alive_at<U: TimeUnit>(
        &self,
        ts: &[super::Periods<U>],
        frequency: u32,
        age: f64,
    ) -> Result<Vec<f64>, ClvError> {
        let x = f64::from(frequency);
        ts.iter()
            .map(|t| self.expectation_core(x, t.get(), age))
            .collect()
    }

    /// P(alive) of a customer whose first purchase is now (`x = t_x = T = 0`).
    pub(crate) fn probability_alive_at_start(&self) -> f64 {
        match self.variant {
            Variant::Bg => 1.0,
            Variant::Mbg => 1.0 / (1.0 + self.a / self.b),
        }
    }

    /// `(a + b + x' - 1) / (a - 1) · [1 - ((α+T)/(α+T+t))^(r+x) ₂F₁(r+x, b+x'; a+b+x'-1; z)]`,
    /// the expected purchases in the next `t` of a customer known to be alive.
    pub(crate) fn expectation_core(&self, x: f64, t: f64, age: f64) -> Result<f64, ClvError> {
        if t == 0.0 {
            return Ok(0.0);
        }
        let a = self.a;
        let c = a + self.bs + x - 1.0;
        let scale = self.alpha + age;
        let z = t / (scale + t);
        let ln_1mz = -(t / scale).ln_1p();
        let eps = self.eps;
        if let Some(v) = self.large_shape_expectation(x, t / scale, c, z, ln_1mz) {
            return Ok(v);
        }
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

    /// The expectation for large `a` without ₂F₁ (module docs): the closed-form limit with its
    /// corrections when they are accurate to `1e-15`, else the exact negative-binomial mixture.
    /// `None` when `a - 1 < 50` or neither applies (the mixture would exceed its budget).
    fn large_shape_expectation(
        &self,
        x: f64,
        beta: f64,
        c: f64,
        z: f64,
        ln_1mz: f64,
    ) -> Option<f64> {
        if self.eps < LARGE_SHAPE || beta.is_nan() || beta <= 0.0 {
            return None;
        }
        let k = self.r + x;
        // q ~ Beta(A, B) with A = a - 1, B = b + x', A + B = c.
        let big_a = self.eps;
        let big_b = self.bs + x;
        let m = big_a / c;
        if let Some(v) = constant_dropout_limit(k, beta, big_a, big_b, m) {
            return Some(v);
        }
        negative_binomial_mixture(k, z, ln_1mz, big_a, big_b, c).map(|s| s / m)
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
}

/// `(1 / m) (1 - E[(1 + βq)^-k])` for `q ~ Beta(A, B)` with mean `m`, from the moment expansion
/// around `m` through the third central moment (module docs). `None` when the first neglected
/// (fourth-moment) term exceeds `1e-15` of the result.
pub(crate) fn constant_dropout_limit(
    k: f64,
    beta: f64,
    big_a: f64,
    big_b: f64,
    m: f64,
) -> Option<f64> {
    let s = big_a + big_b;
    let var = big_a * big_b / (s * s * (s + 1.0));
    // third central moment of Beta(A, B)
    let mu3 = 2.0 * big_a * big_b * (big_b - big_a) / (s * s * s * (s + 1.0) * (s + 2.0));
    let ln_h = -k * (beta * m).ln_1p();
    let h = ln_h.exp();
    let u = beta / (1.0 + beta * m);
    let k2 = k * (k + 1.0);
    let k3 = k2 * (k + 2.0);
    let k4 = k3 * (k + 3.0);
    let correction = h * (k2 * u * u * var / 2.0 - k3 * u * u * u * mu3 / 6.0);
    let one_minus = -ln_h.exp_m1() - correction;
    let neglected = h * k4 * (u * u * var).powi(2) / 8.0;
    (one_minus > 0.0 && neglected <= 1e-15 * one_minus && one_minus.is_finite())
        .then_some(one_minus / m)
}

/// `1 - E[(1 + βq)^-k] = E[d_N]`, `N ~ NegBin(k, z)`, `d_n = 1 - (B)_n / (c)_n` (module docs),
/// for `q ~ Beta(A, B)`, `c = A + B`. `None` beyond [`MIXTURE_BUDGET`] terms.
fn negative_binomial_mixture(
    k: f64,
    z: f64,
    ln_1mz: f64,
    big_a: f64,
    big_b: f64,
    c: f64,
) -> Option<f64> {
    const RESCALE: f64 = 1e250;
    let ln_rescale = RESCALE.ln();
    // pmf(n) = w · e^offset
    let mut offset = k * ln_1mz;
    let mut w = 1.0f64;
    let mut rho = 1.0f64;
    let mut d = 0.0f64;
    let mut sum = 0.0f64;
    for n in 0..MIXTURE_BUDGET {
        let nf = n as f64;
        let ratio = (k + nf) / (nf + 1.0) * z;
        w *= ratio;
        d += rho * big_a / (c + nf);
        rho *= (big_b + nf) / (c + nf);
        sum += w * d;
        if w > RESCALE {
            w /= RESCALE;
            sum /= RESCALE;
            offset += ln_rescale;
        }
        // Past the mode the pmf decreases geometrically (ratio < 1 and falling); d <= 1.
        let next_ratio = (k + nf + 1.0) / (nf + 2.0) * z;
        if next_ratio < 1.0 && w * next_ratio / (1.0 - next_ratio) <= 1e-17 * sum {
            let value = (offset + sum.ln()).exp();
            return value.is_finite().then_some(value);
        }
        if !sum.is_finite() {
            return None;
        }
    }
    None
}

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

// ---------------------------------------------------------------------------------------------
// Aggregated data, likelihood and fit
// ---------------------------------------------------------------------------------------------

/// One aggregated pattern: `weight` customers with the same `(x, t_x, T)`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pattern {
    x: f64,
    recency: f64,
    age: f64,
    weight: f64,
    /// Index into `Patterns::groups`.
    group: u32,
}

/// All patterns with the same `x`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Group {
    x: u32,
    weight: f64,
}

/// Customers prepared for likelihood evaluations: identical `(x, t_x, T)` triples aggregated
/// with weights, distinct frequencies indexed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Patterns {
    patterns: Vec<Pattern>,
    groups: Vec<Group>,
    customers: u64,
    max_age: f64,
}

/// Patterns per block of the parallel sums (fixed, so results do not depend on thread count).
const BLOCK: usize = 8_192;

/// Sums over patterns: [ln L, ∂r, ∂α, ∂a, ∂b] (natural parameters).
type Sums = [f64; 5];

/// What the fit driver needs of the caller's options.
pub(crate) struct FitSettings {
    pub(crate) penalizer_coef: f64,
    pub(crate) initial: Option<[f64; 4]>,
    pub(crate) bfgs: BfgsOptions,
    pub(crate) threads: usize,
    pub(crate) standard_errors: bool,
}

/// What the fit driver found.
pub(crate) struct FitOutcome {
    pub(crate) params: [f64; 4],
    pub(crate) log_likelihood: f64,
    pub(crate) iterations: u32,
    pub(crate) evaluations: u32,
    pub(crate) termination: Termination,
    pub(crate) gradient_norm: f64,
    pub(crate) standard_errors: Option<[f64; 4]>,
    pub(crate) covariance: Option<[[f64; 4]; 4]>,
}

impl Patterns {
    /// Aggregates `(summary, number of customers with it)` pairs; zero weights are ignored.
    /// Errors when the total weight is 0.
    pub(crate) fn from_weighted<U: TimeUnit>(
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
        })
    }

    pub(crate) const fn customers(&self) -> u64 {
        self.customers
    }

    pub(crate) fn patterns(&self) -> usize {
        self.patterns.len()
    }

    pub(crate) const fn max_age(&self) -> f64 {
        self.max_age
    }

    /// `Σ wᵢ ln Lᵢ` and (if `gradient`) its gradient in `θ = ln(r, α, a, b)`.
    pub(crate) fn evaluate(
        &self,
        variant: Variant,
        theta: [f64; 4],
        gradient: bool,
        threads: usize,
    ) -> (f64, [f64; 4]) {
        let [r, alpha, a, b] = theta.map(f64::exp);
        if ![r, alpha, a, b].iter().all(|v| v.is_finite() && *v > 0.0) {
            return (f64::NAN, [f64::NAN; 4]);
        }
        let bs = b + variant.shift();
        let n = self.customers as f64;
        let ln_alpha = alpha.ln();
        let ln_a = a.ln();
        let mut ll = n * r * ln_alpha;
        let (mut dr, mut dalpha, mut da, mut db) = (n * ln_alpha, n * r / alpha, 0.0, 0.0);
        // Per distinct x: the x-only terms, and two constants for the pattern loop.
        let lg_r = lgamma_pos(r);
        let psi_r = if gradient { digamma_pos(r) } else { 0.0 };
        let shift = u32::from(variant.shift() != 0.0);
        // (ln a - ln(b + x' - 1), 1 / (b + x' - 1)), or None when the customer cannot have
        // dropped out.
        let mut per_group: Vec<Option<(f64, f64)>> = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            let x = f64::from(g.x);
            let w = g.weight;
            let (beta, beta_a, beta_b) = ln_beta_ratio(a, b, g.x.saturating_add(shift), gradient);
            ll += w * (lgamma_pos(r + x) - lg_r + beta);
            if gradient {
                dr += w * (digamma_pos(r + x) - psi_r);
                da += w * beta_a;
                db += w * beta_b;
            }
            let bx1 = bs + x - 1.0;
            per_group.push(
                variant
                    .can_drop_out(g.x)
                    .then(|| (ln_a - bx1.ln(), 1.0 / bx1)),
            );
        }
        let kernel = |chunk: &[Pattern]| -> Sums {
            let mut s = [0.0; 5];
            for p in chunk {
                let k = r + p.x;
                let l3 = (alpha + p.age).ln();
                let Some((c_x, inv_bx1)) = per_group
                    .get(p.group as usize)
                    .copied()
                    .unwrap_or(Some((f64::NAN, f64::NAN)))
                else {
                    s[0] -= p.weight * k * l3;
                    if gradient {
                        s[1] -= p.weight * l3;
                        s[2] -= p.weight * k / (alpha + p.age);
                    }
                    continue;
                };
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

    /// Maximum (penalised) likelihood as `lifetimes` fits it (see [`bgnbd`](super::bgnbd)).
    pub(crate) fn fit(
        &self,
        variant: Variant,
        settings: &FitSettings,
    ) -> Result<FitOutcome, ClvError> {
        let penalizer = settings.penalizer_coef;
        if !penalizer.is_finite() || penalizer < 0.0 {
            return Err(ClvError::InvalidParameter {
                name: "penalizer_coef",
                value: penalizer,
            });
        }
        let threads = match settings.threads {
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
        let start = settings.initial.unwrap_or([0.1, 0.1 + ln_scale, 0.1, 0.1]);
        let objective = |theta: &[f64; 4]| -> (f64, [f64; 4]) {
            let (ll, g) = self.evaluate(variant, *theta, true, threads);
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
        let min = minimize_bfgs(objective, start, &settings.bfgs)?;
        let params = min.x.map(f64::exp);
        let log_likelihood = self.evaluate(variant, min.x, false, threads).0;
        let covariance = if settings.standard_errors {
            log_scale_hessian(min.x, |t| self.evaluate(variant, t, true, threads).1)
                .and_then(invert_spd)
                .map(symmetrize)
        } else {
            None
        };
        let standard_errors = covariance.and_then(|cov| {
            let mut se = [0.0; 4];
            for i in 0..4 {
                se[i] = params[i] * cov[i][i].sqrt();
            }
            se.iter().all(|v| v.is_finite()).then_some(se)
        });
        Ok(FitOutcome {
            params,
            log_likelihood,
            iterations: min.iterations,
            evaluations: min.evaluations,
            termination: min.termination,
            gradient_norm: min.gradient_norm(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The three evaluations of `E[X(t) | alive]` (Euler-transformed series, negative-binomial
    /// mixture, corrected closed-form limit), each where it applies.
    fn paths(core: &Core, x: f64, t: f64, age: f64) -> [Option<f64>; 3] {
        let c = core.a + core.bs + x - 1.0;
        let scale = core.alpha + age;
        let z = t / (scale + t);
        let ln_1mz = -(t / scale).ln_1p();
        let euler = euler_series(core.eps, core.euler_b, c, z, SERIES_BUDGET)
            .map(|cs| -c * expm1_over(core.eps, ln_1mz) - (core.eps * ln_1mz).exp() * cs)
            .filter(|v| v.is_finite());
        let k = core.r + x;
        let big_b = core.bs + x;
        let m = core.eps / c;
        let mixture = negative_binomial_mixture(k, z, ln_1mz, core.eps, big_b, c).map(|s| s / m);
        let limit = constant_dropout_limit(k, t / scale, core.eps, big_b, m);
        [euler, mixture, limit]
    }

    #[test]
    fn evaluations_agree_where_they_overlap() {
        let mut overlaps = [0usize; 3];
        let mut worst = [0.0f64; 3];
        for variant in [Variant::Bg, Variant::Mbg] {
            for a in [60.0, 300.0, 3e3, 3e4, 3e5, 3e6, 3e8, 3e10, 3e12] {
                let core = Core::new(variant, 0.25, 4.0, a, 4.0 * a);
                for (x, age) in [
                    (0.0, 0.0),
                    (0.0, 38.86),
                    (2.0, 38.86),
                    (7.0, 20.0),
                    (100.0, 39.0),
                ] {
                    for t in [1e-4, 1e-2, 0.3, 1.0, 10.0, 39.0, 520.0] {
                        let v = paths(&core, x, t, age);
                        // The Euler series loses ~log10((a + b) / (r + x)) digits (module docs).
                        let euler_tol = (1e-15 * 5.0 * a / (0.25 + x)).max(1e-10);
                        for (i, (p, q)) in [(0, 1), (0, 2), (1, 2)].into_iter().enumerate() {
                            if let (Some(u), Some(w)) = (v[p], v[q]) {
                                let d = (u - w).abs() / w.abs();
                                overlaps[i] += 1;
                                worst[i] = worst[i].max(d);
                                let tol = if p == 0 { euler_tol } else { 1e-12 };
                                assert!(d < tol, "{variant:?} a {a} x {x} T {age} t {t}: {v:?}");
                            }
                        }
                        // Whatever path serves it, the public expectation is finite.
                        let e = core.expectation_core(x, t, age).expect("finite");
                        assert!(e.is_finite() && e > 0.0, "a {a} x {x} t {t}: {e}");
                    }
                }
            }
        }
        eprintln!(
            "pairs (euler-mixture, euler-limit, mixture-limit): {overlaps:?}, worst {worst:?}"
        );
        // Every pair is compared somewhere.
        assert!(overlaps.iter().all(|&n| n > 10), "{overlaps:?} {worst:?}");
    }

    #[test]
    fn the_euler_series_fails_where_the_limit_takes_over() {
        // The fit of the issue: a = 3.3e8, b = 2.6e9.
        let core = Core::new(Variant::Bg, 0.25, 4.0, 3.3e8, 2.6e9);
        let [euler, _, limit] = paths(&core, 2.0, 39.0, 38.86);
        assert!(euler.is_none());
        let p: f64 = 3.3e8 / (3.3e8 + 2.6e9);
        let want = -(-(2.25f64) * (p * 39.0 / 42.86).ln_1p()).exp_m1() / p;
        let got = limit.expect("accurate at a = 3.3e8");
        assert!((got - want).abs() < 1e-7 * want, "{got} vs {want}");
        // Absurd shapes: finite, and equal to the limit.
        for a in [1e20, 1e100, 1e300] {
            let core = Core::new(Variant::Mbg, 0.25, 4.0, a, a);
            let e = core.expectation_core(2.0, 39.0, 38.86).expect("finite");
            let want = -(-(2.25f64) * (0.5f64 * 39.0 / 42.86).ln_1p()).exp_m1() / 0.5;
            assert!((e - want).abs() < 1e-14 * want, "a {a}: {e} vs {want}");
        }
    }
}
