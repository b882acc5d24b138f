//! The Gamma-Gamma model of spend per transaction (Fader, Hardie & Lee 2005b; Hardie's note
//! 025), as `lifetimes` 0.11.3 implements it.
//!
//! A customer's transaction values are i.i.d. Gamma(`p`, `ν`) (shape `p`, rate `ν`), and `ν`
//! varies across customers as Gamma(`q`, `v`). For a customer with `x` repeat transactions of mean
//! value `m`, the log-likelihood (eq. 1a of the note, `lifetimes`' `_negative_log_likelihood`) is
//!
//! ```text
//! ln L = ln Γ(p x + q) - ln Γ(p x) - ln Γ(q) + q ln v + (p x - 1) ln m + p x ln x - (p x + q) ln(x m + v)
//! ```
//!
//! and the conditional expected average transaction value (eq. 5) is the credibility-weighted
//! mean of the population mean `p v / (q - 1)` and the customer's own mean `m`:
//!
//! ```text
//! E[M | x, m] = (q - 1) / (p x + q - 1) · p v / (q - 1) + p x / (p x + q - 1) · m = p (v + x m) / (p x + q - 1)
//! ```
//!
//! which requires `q > 1` (the population mean is infinite otherwise).
//!
//! Fitting uses only repeat buyers (`x > 0`) with a positive mean value: `lifetimes` refuses
//! non-positive values; here customers with `m = 0` (only zero-value repeat orders) are left out
//! of the fit and counted in [`GammaGammaFit::excluded_zero_monetary`]. The objective is
//! `-Σ wᵢ ln Lᵢ / Σ wᵢ + penalizer_coef · (p² + q² + v²)` from `ln(p, q, v) = 0.1`, exactly as in
//! `lifetimes`.
//!
//! Gradient with respect to `(p, q, v)`:
//!
//! ```text
//! ∂/∂p = x [ψ(p x + q) - ψ(p x) + ln m + ln x - ln(x m + v)]
//! ∂/∂q = ψ(p x + q) - ψ(q) + ln v - ln(x m + v)
//! ∂/∂v = q / v - (p x + q) / (x m + v)
//! ```

use super::bgnbd::block_sums;
use super::optim::{BfgsOptions, Termination, minimize_bfgs};
use super::optim::{invert_spd, log_scale_hessian};
use super::special::{digamma_diff, digamma_pos, lgamma_diff, lgamma_pos};
use super::{ClvError, CustomerRfm, TimeUnit};

fn check_param(name: &'static str, value: f64) -> Result<f64, ClvError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(ClvError::InvalidParameter { name, value })
    }
}

/// Gamma-Gamma parameters `(p, q, v)`; `v` is in the money unit of the monetary values.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GammaGammaParams {
    p: f64,
    q: f64,
    v: f64,
}

impl GammaGammaParams {
    /// Parameters, each finite and `> 0`.
    pub fn new(p: f64, q: f64, v: f64) -> Result<Self, ClvError> {
        Ok(Self {
            p: check_param("p", p)?,
            q: check_param("q", q)?,
            v: check_param("v", v)?,
        })
    }

    /// Shape of the per-transaction value distribution.
    pub const fn p(&self) -> f64 {
        self.p
    }

    /// Shape of the distribution of the per-customer rate `ν`.
    pub const fn q(&self) -> f64 {
        self.q
    }

    /// Rate (scale, in money units) of the distribution of `ν`.
    pub const fn v(&self) -> f64 {
        self.v
    }

    /// ln L of one customer with `x > 0` repeat purchases of mean `m > 0`.
    pub fn log_likelihood(&self, x: u32, m: f64) -> Result<f64, ClvError> {
        if x == 0 {
            return Err(ClvError::InvalidParameter {
                name: "frequency",
                value: 0.0,
            });
        }
        if !(m.is_finite() && m > 0.0) {
            return Err(ClvError::InvalidParameter {
                name: "monetary",
                value: m,
            });
        }
        let GammaGammaParams { p, q, v } = *self;
        let x = f64::from(x);
        let px = p * x;
        // `ln Γ(px+q) - ln Γ(q) + q ln v - (px+q) ln(xm+v)`, grouped so that nothing of size
        // `q ln q` or `q ln v` cancels (q, v → ∞ with v / q fixed is a common optimum).
        Ok(
            lgamma_diff(q, px) - lgamma_pos(px) - px * v.ln() + (px - 1.0) * m.ln() + px * x.ln()
                - (px + q) * (x * m / v).ln_1p(),
        )
    }
}

/// A Gamma-Gamma model for predictions; requires `q > 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGammaModel {
    params: GammaGammaParams,
}

impl GammaGammaModel {
    /// A model; [`ClvError::InvalidParameter`] when `q <= 1` (infinite population mean).
    pub fn new(params: GammaGammaParams) -> Result<Self, ClvError> {
        if params.q <= 1.0 {
            return Err(ClvError::InvalidParameter {
                name: "q (must exceed 1)",
                value: params.q,
            });
        }
        Ok(Self { params })
    }

    /// The parameters.
    pub const fn params(&self) -> &GammaGammaParams {
        &self.params
    }

    /// Population mean transaction value `p v / (q - 1)`.
    pub fn population_mean(&self) -> f64 {
        let GammaGammaParams { p, q, v } = self.params;
        p * v / (q - 1.0)
    }

    /// E[M | x, m] = p (v + x m) / (p x + q - 1) for raw `(frequency, monetary)`; `lifetimes`'
    /// `conditional_expected_average_profit`. Inputs must be finite with `m >= 0`.
    pub fn conditional_expected_value_raw(&self, frequency: u32, monetary: f64) -> f64 {
        let GammaGammaParams { p, q, v } = self.params;
        let x = f64::from(frequency);
        p * (v + x * monetary) / (p * x + q - 1.0)
    }

    /// E[M | x, m] for a customer summary (the population mean when `x = 0`).
    pub fn conditional_expected_value<U: TimeUnit>(&self, c: &CustomerRfm<U>) -> f64 {
        self.conditional_expected_value_raw(c.frequency(), c.monetary())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Buyer {
    x: f64,
    m: f64,
    weight: f64,
}

/// Repeat buyers prepared for Gamma-Gamma likelihood evaluations.
#[derive(Debug, Clone, PartialEq)]
pub struct GammaGammaData {
    buyers: Vec<Buyer>,
    /// Σ w x (ln m + ln x) and Σ w ln m, constant over the fit.
    sum_wx_lnm_lnx: f64,
    sum_w_lnm: f64,
    /// (x, Σ w) per distinct x.
    groups: Vec<(f64, f64)>,
    customers: u64,
    excluded_one_time: u64,
    excluded_zero_monetary: u64,
}

impl GammaGammaData {
    /// Selects the repeat buyers with positive monetary value. Errors when there are none.
    pub fn from_customers<U: TimeUnit>(customers: &[CustomerRfm<U>]) -> Result<Self, ClvError> {
        let mut excluded_one_time = 0u64;
        let mut excluded_zero_monetary = 0u64;
        let mut buyers = Vec::new();
        for c in customers {
            if c.frequency() == 0 {
                excluded_one_time += 1;
            } else if c.monetary() <= 0.0 {
                excluded_zero_monetary += 1;
            } else {
                buyers.push(Buyer {
                    x: f64::from(c.frequency()),
                    m: c.monetary(),
                    weight: 1.0,
                });
            }
        }
        if buyers.is_empty() {
            return Err(ClvError::EmptyPopulation);
        }
        buyers.sort_unstable_by(|a, b| a.x.total_cmp(&b.x).then(a.m.total_cmp(&b.m)));
        let mut groups: Vec<(f64, f64)> = Vec::new();
        let (mut s1, mut s0) = (0.0, 0.0);
        for b in &buyers {
            let lnm = b.m.ln();
            s1 += b.weight * b.x * (lnm + b.x.ln());
            s0 += b.weight * lnm;
            match groups.last_mut() {
                Some(g) if g.0 == b.x => g.1 += b.weight,
                _ => groups.push((b.x, b.weight)),
            }
        }
        Ok(Self {
            customers: buyers.len() as u64,
            buyers,
            sum_wx_lnm_lnx: s1,
            sum_w_lnm: s0,
            groups,
            excluded_one_time,
            excluded_zero_monetary,
        })
    }

    /// Number of repeat buyers used.
    pub const fn customers(&self) -> u64 {
        self.customers
    }

    /// Total log-likelihood `Σ ln Lᵢ`.
    pub fn log_likelihood(&self, params: &GammaGammaParams) -> f64 {
        self.evaluate([params.p.ln(), params.q.ln(), params.v.ln()], false, 1)
            .0
    }

    /// Total log-likelihood and its gradient with respect to `(ln p, ln q, ln v)`.
    pub fn log_likelihood_and_gradient(&self, params: &GammaGammaParams) -> (f64, [f64; 3]) {
        self.evaluate([params.p.ln(), params.q.ln(), params.v.ln()], true, 1)
    }

    fn evaluate(&self, theta: [f64; 3], gradient: bool, threads: usize) -> (f64, [f64; 3]) {
        let [p, q, v] = theta.map(f64::exp);
        if ![p, q, v].iter().all(|x| x.is_finite() && *x > 0.0) {
            return (f64::NAN, [f64::NAN; 3]);
        }
        // Grouped as in `GammaGammaParams::log_likelihood`: per x, `ln Γ(px+q) - ln Γ(q) -
        // ln Γ(px) - px ln v`; per buyer, `-(px+q) ln(1 + xm/v)`. `v_dv` is `v ∂/∂v` directly.
        let ln_v = v.ln();
        let mut ll = p * self.sum_wx_lnm_lnx - self.sum_w_lnm;
        let (mut dp, mut dq, mut v_dv) = (self.sum_wx_lnm_lnx, 0.0, 0.0);
        for &(x, w) in &self.groups {
            let px = p * x;
            ll += w * (lgamma_diff(q, px) - lgamma_pos(px) - px * ln_v);
            if gradient {
                let psi_pxq = digamma_pos(px + q);
                dp += w * x * (psi_pxq - digamma_pos(px) - ln_v);
                dq += w * digamma_diff(q, px);
            }
        }
        let kernel = |chunk: &[Buyer]| -> [f64; 4] {
            let mut s = [0.0; 4];
            for b in chunk {
                let xm = b.x * b.m;
                let l = (xm / v).ln_1p();
                let k = p * b.x + q;
                s[0] -= b.weight * k * l;
                if gradient {
                    s[1] -= b.weight * b.x * l;
                    s[2] -= b.weight * l;
                    // v ∂/∂v of -px ln v - (px+q) ln(1 + xm/v).
                    s[3] += b.weight * (q * xm - p * b.x * v) / (xm + v);
                }
            }
            s
        };
        let s = block_sums(&self.buyers, threads, &kernel);
        ll += s[0];
        dp += s[1];
        dq += s[2];
        v_dv += s[3];
        (ll, [p * dp, q * dq, v_dv])
    }

    /// Fits `(p, q, v)` by maximum likelihood.
    pub fn fit(&self, options: &GammaGammaFitOptions) -> Result<GammaGammaFit, ClvError> {
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
        let n = self.customers as f64;
        let start = options
            .initial
            .map_or([0.1; 3], |p| [p.p.ln(), p.q.ln(), p.v.ln()]);
        let objective = |theta: &[f64; 3]| -> (f64, [f64; 3]) {
            let (ll, g) = self.evaluate(*theta, true, threads);
            let pv = theta.map(f64::exp);
            let penalty: f64 = pv.iter().map(|x| x * x).sum();
            let mut grad = [0.0; 3];
            for i in 0..3 {
                grad[i] = -g[i] / n + penalizer * 2.0 * pv[i] * pv[i];
            }
            (-ll / n + penalizer * penalty, grad)
        };
        let min = minimize_bfgs(objective, start, &options.bfgs)?;
        let [p, q, v] = min.x.map(f64::exp);
        let params = GammaGammaParams::new(p, q, v)?;
        let covariance = if options.standard_errors {
            log_scale_hessian(min.x, |t| self.evaluate(t, true, threads).1)
                .and_then(invert_spd)
                .map(|c| {
                    let mut s = c;
                    for i in 0..3 {
                        for j in 0..3 {
                            s[i][j] = 0.5 * (c[i][j] + c[j][i]);
                        }
                    }
                    s
                })
        } else {
            None
        };
        let standard_errors = covariance.and_then(|cov| {
            let mut se = [0.0; 3];
            for i in 0..3 {
                se[i] = min.x[i].exp() * cov[i][i].sqrt();
            }
            se.iter().all(|v| v.is_finite()).then_some(se)
        });
        Ok(GammaGammaFit {
            params,
            log_likelihood: self.evaluate(min.x, false, threads).0,
            iterations: min.iterations,
            evaluations: min.evaluations,
            converged: min.termination.converged(),
            termination: min.termination,
            gradient_norm: min.gradient_norm(),
            customers: self.customers,
            excluded_one_time: self.excluded_one_time,
            excluded_zero_monetary: self.excluded_zero_monetary,
            standard_errors,
            covariance: standard_errors.and(covariance),
        })
    }
}

/// Options of [`fit_gamma_gamma`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGammaFitOptions {
    /// L2 penalty coefficient on `(p, q, v)`, `lifetimes`' `penalizer_coef` (default 0).
    pub penalizer_coef: f64,
    /// Starting point; default `lifetimes`' (all log-parameters 0.1).
    pub initial: Option<GammaGammaParams>,
    /// Stopping rules of the optimiser.
    pub bfgs: BfgsOptions,
    /// Worker threads; 0 = available parallelism.
    pub threads: usize,
    /// Whether to compute standard errors.
    pub standard_errors: bool,
}

impl Default for GammaGammaFitOptions {
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

/// The result of a Gamma-Gamma fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GammaGammaFit {
    /// The fitted parameters.
    pub params: GammaGammaParams,
    /// Unpenalised total log-likelihood at `params`.
    pub log_likelihood: f64,
    /// BFGS iterations.
    pub iterations: u32,
    /// Objective evaluations.
    pub evaluations: u32,
    /// Whether the optimiser met its tolerances.
    pub converged: bool,
    /// Why the optimiser stopped.
    pub termination: Termination,
    /// `max |∂f/∂θᵢ|` of the mean penalised objective at the end.
    pub gradient_norm: f64,
    /// Repeat buyers used.
    pub customers: u64,
    /// Customers left out because `x = 0`.
    pub excluded_one_time: u64,
    /// Repeat buyers left out because their mean value is 0.
    pub excluded_zero_monetary: u64,
    /// Standard errors of `(p, q, v)`, if requested and available.
    pub standard_errors: Option<[f64; 3]>,
    /// Asymptotic covariance of the log-parameters `θ = ln(p, q, v)` (inverse observed
    /// information); present exactly when `standard_errors` is (`se(pᵢ) = pᵢ √Σᵢᵢ`).
    pub covariance: Option<[[f64; 3]; 3]>,
}

impl GammaGammaFit {
    /// A prediction model; fails when the fitted `q <= 1`.
    pub fn model(&self) -> Result<GammaGammaModel, ClvError> {
        GammaGammaModel::new(self.params)
    }
}

/// Fits the Gamma-Gamma model on the repeat buyers among `customers`.
pub fn fit_gamma_gamma<U: TimeUnit>(
    customers: &[CustomerRfm<U>],
    options: &GammaGammaFitOptions,
) -> Result<GammaGammaFit, ClvError> {
    GammaGammaData::from_customers(customers)?.fit(options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clv::Weeks;

    fn customers() -> Vec<CustomerRfm<Weeks>> {
        [
            (0, 0.0, 0.0),
            (1, 11.77, 5.0),
            (2, 22.35, 30.0),
            (2, 0.0, 30.0), // zero-value repeat orders
            (7, 40.0, 39.0),
            (30, 17.5, 39.0),
        ]
        .iter()
        .map(|&(x, m, t)| {
            let rec = if x == 0 { 0.0 } else { t / 2.0 };
            CustomerRfm::new(x, rec, t, m).expect("valid")
        })
        .collect()
    }

    /// At `q, v → ∞` with `v / q = θ` fixed, the spend of a customer is Gamma(p, 1/θ) for
    /// everyone and the mean of x purchases is Gamma(px, x/θ): the log-likelihood tends to
    /// `px ln(x/θ) + (px-1) ln m - x m/θ - ln Γ(px)`. The gradient stays finite and, in log
    /// parameters, flat along q and v together; large-q differences match finite differences.
    #[test]
    fn the_limit_of_q_and_v_is_evaluated_exactly() {
        let (p, theta) = (3.1, 700.0);
        let data = GammaGammaData::from_customers(&customers()).expect("buyers");
        for q in [1e5, 1e8, 1e12, 1e30, 1e100] {
            let params = GammaGammaParams::new(p, q, theta * q).expect("valid");
            for (x, m) in [(1_u32, 500.0_f64), (3, 2_000.0), (40, 650.0)] {
                let xf = f64::from(x);
                let px = p * xf;
                let limit =
                    px * (xf / theta).ln() + (px - 1.0) * m.ln() - xf * m / theta - lgamma_pos(px);
                let got = params.log_likelihood(x, m).expect("ok");
                // The approach to the limit is O(px² / q).
                let tol = 1e-11 * limit.abs() + 10.0 * px * px / q;
                assert!(
                    (got - limit).abs() <= tol,
                    "q {q:e}, x {x}: {got} vs {limit}"
                );
            }
            let (ll, g) = data.log_likelihood_and_gradient(&params);
            assert!(
                ll.is_finite() && g.iter().all(|v| v.is_finite()),
                "{ll} {g:?}"
            );
            assert!(
                (g[1] + g[2]).abs() <= 1e-9 * (g[1].abs() + 1.0) + 1e4 / q,
                "q {q:e}: {g:?}"
            );
            if q <= 1e12 {
                let theta_ln = [p.ln(), q.ln(), (theta * q).ln()];
                for i in 0..3 {
                    let h = 1e-5;
                    let (mut up, mut down) = (theta_ln, theta_ln);
                    up[i] += h;
                    down[i] -= h;
                    let fd = (data.evaluate(up, false, 1).0 - data.evaluate(down, false, 1).0)
                        / (2.0 * h);
                    assert!(
                        (fd - g[i]).abs() < 1e-5 * g[i].abs().max(1.0),
                        "q {q:e}, {i}: {fd} vs {}",
                        g[i]
                    );
                }
            }
        }
    }

    #[test]
    fn selection_and_gradient() {
        let data = GammaGammaData::from_customers(&customers()).expect("buyers");
        assert_eq!(data.customers(), 4);
        assert_eq!(data.excluded_one_time, 1);
        assert_eq!(data.excluded_zero_monetary, 1);
        let params = GammaGammaParams::new(6.2, 3.7, 15.4).expect("valid");
        let per: f64 = customers()
            .iter()
            .filter(|c| c.frequency() > 0 && c.monetary() > 0.0)
            .map(|c| {
                params
                    .log_likelihood(c.frequency(), c.monetary())
                    .expect("ok")
            })
            .sum();
        let (ll, g) = data.log_likelihood_and_gradient(&params);
        assert!((per - ll).abs() < 1e-10 * ll.abs(), "{per} vs {ll}");
        let theta = [params.p.ln(), params.q.ln(), params.v.ln()];
        for i in 0..3 {
            let h = 1e-6;
            let mut up = theta;
            let mut down = theta;
            up[i] += h;
            down[i] -= h;
            let fd = (data.evaluate(up, false, 1).0 - data.evaluate(down, false, 1).0) / (2.0 * h);
            assert!(
                (fd - g[i]).abs() < 1e-6 * g[i].abs().max(1.0),
                "{i}: {} vs {fd}",
                g[i]
            );
        }
    }

    #[test]
    fn refusals_and_zero_values() {
        let none: Vec<CustomerRfm<Weeks>> =
            vec![CustomerRfm::new(0, 0.0, 3.0, 0.0).expect("valid")];
        assert_eq!(
            GammaGammaData::from_customers(&none),
            Err(ClvError::EmptyPopulation)
        );
        let params = GammaGammaParams::new(6.0, 0.9, 15.0).expect("valid");
        assert!(GammaGammaModel::new(params).is_err(), "q <= 1 has no mean");
        assert!(GammaGammaParams::new(f64::INFINITY, 2.0, 1.0).is_err());
        let model =
            GammaGammaModel::new(GammaGammaParams::new(6.0, 4.0, 15.0).expect("ok")).expect("ok");
        // x = 0: the population mean; m = 0: shrunk towards 0 but positive.
        let c0 = CustomerRfm::<Weeks>::new(0, 0.0, 0.0, 0.0).expect("valid");
        assert_eq!(
            model.conditional_expected_value(&c0),
            model.population_mean()
        );
        let z = CustomerRfm::<Weeks>::new(3, 2.0, 5.0, 0.0).expect("valid");
        let v = model.conditional_expected_value(&z);
        assert!(v > 0.0 && v < model.population_mean());
        assert!(params.log_likelihood(0, 1.0).is_err());
        assert!(params.log_likelihood(1, 0.0).is_err());
    }
}
