//! Customer-lifetime-value mathematics: BG/NBD, MBG/NBD, Gamma-Gamma, discounted CLV and RFM
//! scores.
//!
//! Everything here follows the conventions of the Python `lifetimes` library, version 0.11.3,
//! so results can be compared one to one (the crate's tests do, on the CDNOW sample).
//!
//! # Inputs
//!
//! A customer is summarised by [`CustomerRfm`]`<U>`, in time unit `U` ([`Days`] or [`Weeks`]):
//!
//! * `x` — *frequency*: the number of repeat purchase periods (distinct purchase days, not
//!   counting the first purchase), an integer `>= 0`;
//! * `t_x` — *recency*: the time from the first to the last purchase (`0` when `x = 0`);
//! * `T` — *age*: the time from the first purchase to the end of the observation, `T >= t_x`;
//! * `m` — *monetary value*: the mean value of the repeat purchases (`0` when `x = 0`), in minor
//!   currency units as `f64`.
//!
//! # BG/NBD (Fader, Hardie & Lee 2005a)
//!
//! While active, a customer buys at Poisson rate `λ ~ Gamma(r, α)`; after each repeat purchase
//! the customer drops out with probability `p ~ Beta(a, b)`. The likelihood of one customer is
//!
//! ```text
//! L(r, α, a, b | x, t_x, T) = B(a, b + x) / B(a, b) · Γ(r + x) α^r / (Γ(r) (α + T)^(r + x))
//!                          + [x > 0] · B(a + 1, b + x - 1) / B(a, b) · Γ(r + x) α^r / (Γ(r) (α + t_x)^(r + x))
//! ```
//!
//! computed in log space ("A₁ … A₄" of Hardie's note 004) — see [`bgnbd`]. The predictions are
//! `P(alive)` (Hardie's note 021), the conditional expectation `E[X(t) | x, t_x, T]` (eq. 10 of
//! the paper), the unconditional `E[X(t)]` (eq. 9) and `P(X(t) = n)` (eq. 8).
//!
//! # MBG/NBD (Batislam, Denizel & Filiztekin 2007)
//!
//! BG/NBD in which the customer may also drop out right after the *first* purchase (`lifetimes`'
//! `ModifiedBetaGeoFitter`). The likelihood is
//!
//! ```text
//! L(r, α, a, b | x, t_x, T) = B(a, b + x + 1) / B(a, b) · Γ(r + x) α^r / (Γ(r) (α + T)^(r + x))
//!                          + B(a + 1, b + x) / B(a, b) · Γ(r + x) α^r / (Γ(r) (α + t_x)^(r + x))
//! ```
//!
//! (the second term for every customer, one-time buyers included), and
//! `P(alive) = 1 / (1 + a / (b + x) · ((α + T) / (α + t_x))^(r + x))`: for a one-time buyer it
//! falls as the time `T` since the purchase grows, where BG/NBD keeps it at 1. The conditional
//! expectation is `P(alive) · (a + b + x) / (a - 1) · [1 - ((α + T) / (α + T + t))^(r + x)
//! ₂F₁(r + x, b + x + 1; a + b + x; z)]`. BG/NBD and MBG/NBD share one implementation (likelihood,
//! gradient, fit driver, predictions) that differs only by this shift of `x` by one — see
//! [`mbgnbd`].
//!
//! # The `a, b → ∞` boundary of BG/NBD and MBG/NBD
//!
//! On small or short data sets the fit may run to `a, b → ∞` with `p = a / (a + b)` fixed: a
//! constant dropout probability `p` after each purchase. The ₂F₁ route of the expectations
//! overflows there; the expectations then switch to the closed-form limit
//! `E[X(t) | x, t_x, T] = P(alive) · (1 - (1 + p t / (α + T))^-(r+x)) / p` (with its
//! `O(1 / a)` corrections) or, for moderately large `a`, to an exact ₂F₁-free series, so `P(alive)`,
//! expectations and CLV stay defined (and continuous in `a`, `b`). Fits report the gradient
//! norm, standard errors and the covariance of the log-parameters.
//!
//! # Pareto/NBD (Schmittlein, Morrison & Colombo 1987; Fader & Hardie's note 009)
//!
//! While active, a customer buys at Poisson rate `λ ~ Gamma(r, α)` and drops out at an
//! exponentially distributed time with rate `μ ~ Gamma(s, β)` (continuous time). With
//! `k = r + x`, the likelihood of one customer is
//!
//! ```text
//! L = Γ(k) α^r β^s / Γ(r) · [(α + T)^-k (β + T)^-s + s ∫_{t_x}^{T} (α + τ)^-k (β + τ)^-(s+1) dτ]
//! ```
//!
//! (`lifetimes`' `A₀` with ₂F₁, for `α ≥ β` and `α < β`); `P(alive)` is the share of the first
//! term, `E[X(t) | x, t_x, T] = P(alive) (r + x)(β + T) / ((α + T)(s - 1)) [1 - ((β + T) /
//! (β + T + t))^(s-1)]` and `E[X(t)] = r β / (α (s - 1)) [1 - (β / (β + t))^(s-1)]`. The
//! integral is computed as an Euler-transformed ₂F₁ that stays bounded for any purchase count;
//! fits use its analytic gradient — see [`pareto_nbd`] (`lifetimes`' `ParetoNBDFitter`).
//!
//! # Gamma-Gamma (Fader, Hardie & Lee 2005b; Hardie's note 025)
//!
//! The spend per transaction is Gamma(`p`, `ν`) with `ν ~ Gamma(q, v)`; the conditional expected
//! average order value of a customer with `x` repeat purchases averaging `m` is
//! `p (v + x m) / (p x + q - 1)` — see [`gamma_gamma`].
//!
//! # Discounted CLV
//!
//! As `lifetimes.utils._customer_lifetime_value`, see [`value`].
//!
//! # Numerical notes
//!
//! * Special functions (log-gamma, digamma, the Gauss hypergeometric function ₂F₁) are written
//!   here, in [`special`]; ₂F₁ is accurate over the whole real range `z < 1` used by the models.
//! * Fitting maximises the likelihood over the logarithms of the parameters with BFGS and a
//!   strong-Wolfe line search ([`optim`]), with analytic gradients.
//!
//! # References
//!
//! * P. S. Fader, B. G. S. Hardie, K. L. Lee (2005a), "Counting Your Customers the Easy Way: An
//!   Alternative to the Pareto/NBD Model", *Marketing Science* 24(2), 275–284.
//! * P. S. Fader, B. G. S. Hardie, K. L. Lee (2005b), "RFM and CLV: Using Iso-Value Curves for
//!   Customer Base Analysis", *Journal of Marketing Research* 42(4), 415–430.
//! * E. P. Batislam, M. Denizel, A. Filiztekin (2007), "Empirical validation and comparison of
//!   models for customer base analysis", *International Journal of Research in Marketing* 24(3),
//!   201–209; U. Wagner, D. Hoppe (2008), "Erratum on the MBG/NBD model", *IJRM* 25(3), 225–226.
//! * B. G. S. Hardie, notes 004 (BG/NBD implementation), 021 (P(alive)), 025 (Gamma-Gamma).
//! * M. Abramowitz, I. Stegun, *Handbook of Mathematical Functions*, ch. 6 and 15.
//! * J. Nocedal, S. Wright, *Numerical Optimization* (2nd ed.), algorithms 3.5, 3.6 and 6.1.

#![warn(missing_docs)]

mod beta_geometric;
pub mod bgnbd;
mod customer;
pub mod gamma_gamma;
pub mod mbgnbd;
pub mod optim;
pub mod pareto_nbd;
pub mod rfm;
pub mod simulate;
pub mod special;
pub mod units;
pub mod value;

pub use bgnbd::{
    BgNbdData, BgNbdFit, BgNbdFitOptions, BgNbdModel, BgNbdParams, UntypedBgNbdParams, fit_bg_nbd,
};
pub use customer::CustomerRfm;
pub use gamma_gamma::{
    GammaGammaData, GammaGammaFit, GammaGammaFitOptions, GammaGammaModel, GammaGammaParams,
    fit_gamma_gamma,
};
pub use mbgnbd::{
    MbgNbdData, MbgNbdFit, MbgNbdFitOptions, MbgNbdModel, MbgNbdParams, UntypedMbgNbdParams,
    fit_mbg_nbd,
};
pub use optim::Termination;
pub use pareto_nbd::{
    ParetoNbdData, ParetoNbdFit, ParetoNbdFitOptions, ParetoNbdModel, ParetoNbdParams,
    UntypedParetoNbdParams, fit_pareto_nbd,
};
pub use rfm::{RfmObservation, RfmScore, RfmSegment, rfm_scores};
pub use units::{Days, Periods, TimeUnit, TimeUnitKind, Weeks};
pub use value::{
    ClvHorizon, TransactionModel, customer_lifetime_value, discount_steps,
    discounted_and_final_expected_purchases, discounted_expected_purchases, step_ends,
};

/// Why a CLV computation was refused or failed.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum ClvError {
    /// An input was NaN or infinite.
    #[error("{field} must be finite")]
    NotFinite {
        /// Which input.
        field: &'static str,
    },
    /// An input that must be `>= 0` was negative.
    #[error("{field} must not be negative")]
    Negative {
        /// Which input.
        field: &'static str,
    },
    /// Recency (time of the last purchase) exceeds the customer's age `T`.
    #[error("recency must not exceed T")]
    RecencyAfterAge,
    /// A customer without repeat purchases has a non-zero recency.
    #[error("recency must be 0 when frequency is 0")]
    RecencyWithoutRepeat,
    /// A model parameter is not finite and strictly positive (or violates its documented bound).
    #[error("parameter {name} = {value} is out of range")]
    InvalidParameter {
        /// Parameter name.
        name: &'static str,
        /// The refused value.
        value: f64,
    },
    /// A fit or a population statistic was asked of no customers.
    #[error("no customers to fit")]
    EmptyPopulation,
    /// A model in one time unit was applied to data in another.
    #[error("time unit mismatch: expected {expected}, found {found}")]
    UnitMismatch {
        /// The unit the typed code expects.
        expected: TimeUnitKind,
        /// The unit found in the data.
        found: TimeUnitKind,
    },
    /// The arguments of a special function are outside its domain.
    #[error("{function} is undefined for these arguments")]
    Domain {
        /// The function.
        function: &'static str,
    },
    /// A series or iteration did not converge within its budget.
    #[error("{what} did not converge")]
    NoConvergence {
        /// What failed to converge.
        what: &'static str,
    },
    /// The result overflowed the range of `f64`.
    #[error("{what} overflowed")]
    Overflow {
        /// What overflowed.
        what: &'static str,
    },
}
