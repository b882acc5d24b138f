//! Discounted customer lifetime value, exactly as `lifetimes` 0.11.3 computes it
//! (`lifetimes.utils._customer_lifetime_value`, called by
//! `GammaGammaFitter.customer_lifetime_value`).
//!
//! ```text
//! f     = periods per month: 30 for days, 4.345 for weeks (lifetimes' table
//!         {"W": 4.345, "M": 1.0, "D": 30, "H": 30 * 24}; note 4.345, not 30/7 = 4.2857)
//! m̂     = Gamma-Gamma conditional expected average value E[M | x, m]
//! CLV   = Σ_{k=1..months} m̂ · (E[X(k f) | x, t_x, T] - E[X((k-1) f) | x, t_x, T]) / (1 + d)^k
//! ```
//!
//! with `d` the monthly discount rate and `E[X(t) | …]` the conditional expectation of the
//! transaction model (BG/NBD in `lifetimes`; any [`TransactionModel`] here).
//! The "months" are therefore 30-day (or 4.345-week) steps, not calendar months.

use super::gamma_gamma::GammaGammaModel;
use super::{BgNbdModel, ClvError, CustomerRfm, Periods, TimeUnit};

/// A model of purchase counts (BG/NBD, MBG/NBD, Pareto/NBD): what CLV and the scores need of it.
pub trait TransactionModel<U: TimeUnit> {
    /// P(alive | x, t_x, T): the probability the customer has not dropped out by `T`.
    fn probability_alive(&self, customer: &CustomerRfm<U>) -> f64;
    /// E[X(t) | x, t_x, T]: expected purchases in the next `t` periods.
    fn conditional_expected_purchases(
        &self,
        t: Periods<U>,
        customer: &CustomerRfm<U>,
    ) -> Result<f64, ClvError>;
    /// E[X(t)]: expected repeat purchases in the first `t` periods of a new customer
    /// (`lifetimes`' `expected_number_of_purchases_up_to_time`).
    fn expected_purchases(&self, t: Periods<U>) -> Result<f64, ClvError>;
    /// [`TransactionModel::conditional_expected_purchases`] at each of `ts` (a CLV sum's
    /// steps); models override it to share the work of one customer across horizons.
    fn conditional_expected_purchases_at(
        &self,
        ts: &[Periods<U>],
        customer: &CustomerRfm<U>,
    ) -> Result<Vec<f64>, ClvError> {
        ts.iter()
            .map(|t| self.conditional_expected_purchases(*t, customer))
            .collect()
    }
    /// Where the model's E[X(t) | x, t_x, T] is P(alive | x, t_x, T) times a factor that
    /// depends on the frequency `x` and the age `T` alone (BG/NBD, MBG/NBD): that factor at each
    /// of `ts` (the expected purchases of a customer known to be alive), so that a caller can
    /// share it across customers of the same frequency and age. `None` for models without such
    /// a split.
    fn expected_purchases_if_alive_at(
        &self,
        _ts: &[Periods<U>],
        _frequency: u32,
        _age: f64,
    ) -> Option<Result<Vec<f64>, ClvError>> {
        None
    }
}

impl<U: TimeUnit> TransactionModel<U> for BgNbdModel<U> {
    fn probability_alive(&self, customer: &CustomerRfm<U>) -> f64 {
        BgNbdModel::probability_alive(self, customer)
    }

    fn conditional_expected_purchases(
        &self,
        t: Periods<U>,
        customer: &CustomerRfm<U>,
    ) -> Result<f64, ClvError> {
        BgNbdModel::conditional_expected_purchases(self, t, customer)
    }

    fn expected_purchases(&self, t: Periods<U>) -> Result<f64, ClvError> {
        BgNbdModel::expected_purchases(self, t)
    }

    fn conditional_expected_purchases_at(
        &self,
        ts: &[Periods<U>],
        customer: &CustomerRfm<U>,
    ) -> Result<Vec<f64>, ClvError> {
        BgNbdModel::conditional_expected_purchases_at(self, ts, customer)
    }

    fn expected_purchases_if_alive_at(
        &self,
        ts: &[Periods<U>],
        frequency: u32,
        age: f64,
    ) -> Option<Result<Vec<f64>, ClvError>> {
        Some(BgNbdModel::expected_purchases_if_alive_at(
            self, ts, frequency, age,
        ))
    }
}

/// Longest horizon accepted, in months (100 years).
pub const MAX_MONTHS: u32 = 1_200;

/// The horizon and discounting of a CLV computation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClvHorizon {
    months: u32,
    /// Where a horizon that is not a whole number of months ends, in periods of the unit it was
    /// made for ([`ClvHorizon::of_periods`]): one last, shorter step after `months`.
    end: Option<f64>,
    monthly_discount_rate: f64,
}

impl ClvHorizon {
    /// `months` steps (at most [`MAX_MONTHS`]) discounted at `monthly_discount_rate` per step
    /// (finite, `> -1`; `lifetimes`' default is 0.01).
    pub fn new(months: u32, monthly_discount_rate: f64) -> Result<Self, ClvError> {
        if months > MAX_MONTHS {
            return Err(ClvError::InvalidParameter {
                name: "months",
                value: f64::from(months),
            });
        }
        if !monthly_discount_rate.is_finite() || monthly_discount_rate <= -1.0 {
            return Err(ClvError::InvalidParameter {
                name: "monthly_discount_rate",
                value: monthly_discount_rate,
            });
        }
        Ok(Self {
            months,
            end: None,
            monthly_discount_rate,
        })
    }

    /// A horizon of `periods` of unit `U` (for example 273 days): whole monthly steps of
    /// [`TimeUnit::PERIODS_PER_MONTH`] periods as far as they go, then one shorter step ending
    /// exactly at `periods`, discounted at `(1 + d)^(periods / f)`. A whole number of months is
    /// [`ClvHorizon::new`]'s horizon. Use it with models of unit `U` only.
    pub fn of_periods<U: TimeUnit>(
        periods: f64,
        monthly_discount_rate: f64,
    ) -> Result<Self, ClvError> {
        let months = periods / U::PERIODS_PER_MONTH;
        if !periods.is_finite() || periods < 0.0 || months > f64::from(MAX_MONTHS) {
            return Err(ClvError::InvalidParameter {
                name: "periods",
                value: periods,
            });
        }
        let whole = months.floor() as u32;
        let mut horizon = Self::new(whole, monthly_discount_rate)?;
        if f64::from(whole) * U::PERIODS_PER_MONTH < periods {
            horizon.end = Some(periods);
        }
        Ok(horizon)
    }

    /// Number of whole monthly steps.
    pub const fn months(&self) -> u32 {
        self.months
    }

    /// Whether the horizon has no length.
    pub fn is_empty(&self) -> bool {
        self.months == 0 && self.end.is_none()
    }

    /// Discount rate per step.
    pub const fn monthly_discount_rate(&self) -> f64 {
        self.monthly_discount_rate
    }
}

/// Discounted CLV of one customer (module docs): `lifetimes`'
/// `GammaGammaFitter.customer_lifetime_value(bgf, …, time=months, discount_rate=d, freq=U)`.
pub fn customer_lifetime_value<U: TimeUnit, M: TransactionModel<U> + ?Sized>(
    transactions: &M,
    spend: &GammaGammaModel,
    customer: &CustomerRfm<U>,
    horizon: &ClvHorizon,
) -> Result<f64, ClvError> {
    let value = spend.conditional_expected_value(customer);
    Ok(value * discounted_expected_purchases(transactions, customer, horizon)?)
}

/// The purchase part of [`customer_lifetime_value`]:
/// `Σ_{k=1..months} (E[X(k f) | x, t_x, T] - E[X((k-1) f) | x, t_x, T]) / (1 + d)^k`, so that
/// CLV = m̂ · this. It depends on frequency, recency and age only (not on spend), which lets a
/// caller reuse it across customers with the same purchase history shape.
pub fn discounted_expected_purchases<U: TimeUnit, M: TransactionModel<U> + ?Sized>(
    transactions: &M,
    customer: &CustomerRfm<U>,
    horizon: &ClvHorizon,
) -> Result<f64, ClvError> {
    Ok(discounted_and_final_expected_purchases(transactions, customer, horizon)?.0)
}

/// [`discounted_expected_purchases`] and, computed on the way, the undiscounted
/// `E[X(months · f) | x, t_x, T]` at the end of the horizon (0 for an empty horizon).
pub fn discounted_and_final_expected_purchases<U: TimeUnit, M: TransactionModel<U> + ?Sized>(
    transactions: &M,
    customer: &CustomerRfm<U>,
    horizon: &ClvHorizon,
) -> Result<(f64, f64), ClvError> {
    let steps = step_ends::<U>(horizon)?;
    let expected = transactions.conditional_expected_purchases_at(&steps, customer)?;
    Ok(discount_steps(horizon, &steps, expected))
}

/// The ends of a CLV sum's steps ([`ClvHorizon`] for models of unit `U`): each month, then the
/// shorter last step if any.
pub fn step_ends<U: TimeUnit>(horizon: &ClvHorizon) -> Result<Vec<Periods<U>>, ClvError> {
    let factor = U::PERIODS_PER_MONTH;
    (1..=horizon.months)
        .map(|k| f64::from(k) * factor)
        .chain(horizon.end)
        .map(Periods::new)
        .collect()
}

/// The CLV sum of [`discounted_and_final_expected_purchases`] from `expected`, the
/// E[X(t) | x, t_x, T] at each of `ends` ([`step_ends`]): the discounted sum and the last.
pub fn discount_steps<U: TimeUnit>(
    horizon: &ClvHorizon,
    ends: &[Periods<U>],
    expected: impl IntoIterator<Item = f64>,
) -> (f64, f64) {
    let factor = U::PERIODS_PER_MONTH;
    let base = 1.0 + horizon.monthly_discount_rate;
    let mut sum = 0.0;
    let mut previous = 0.0;
    for (t, expected) in ends.iter().zip(expected) {
        sum += (expected - previous) / base.powf(t.get() / factor);
        previous = expected;
    }
    (sum, previous)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clv::{BgNbdParams, Days, GammaGammaParams, MbgNbdModel, MbgNbdParams, Weeks};

    // Several horizons at once give exactly the numbers of one horizon at a time.
    #[test]
    fn expected_purchases_at_several_horizons_are_those_of_each() {
        let bg = BgNbdModel::new(BgNbdParams::<Days>::new(0.24, 4.4, 0.79, 2.4).expect("ok"));
        let mbg = MbgNbdModel::new(MbgNbdParams::<Days>::new(0.52, 6.2, 0.89, 12.1).expect("ok"));
        let ts: Vec<Periods<Days>> = [0.0, 1.0, 30.0, 365.0, 3_650.0]
            .iter()
            .map(|t| Periods::new(*t).expect("t"))
            .collect();
        for c in [
            CustomerRfm::<Days>::new(0, 0.0, 40.0, 0.0).expect("c"),
            CustomerRfm::<Days>::new(3, 120.0, 300.0, 2_000.0).expect("c"),
            CustomerRfm::<Days>::new(12, 30.0, 700.0, 90.0).expect("c"),
        ] {
            let models: [&dyn TransactionModel<Days>; 2] = [&bg, &mbg];
            for m in models {
                let each: Vec<f64> = ts
                    .iter()
                    .map(|t| m.conditional_expected_purchases(*t, &c).expect("e"))
                    .collect();
                assert_eq!(
                    m.conditional_expected_purchases_at(&ts, &c).expect("at"),
                    each
                );
                assert!(each[4] > each[3] && each[3] > each[1] && each[0] == 0.0);
            }
        }
    }

    #[test]
    fn horizon_validation_and_trivial_cases() {
        assert!(ClvHorizon::new(12, f64::NAN).is_err());
        assert!(ClvHorizon::new(12, -1.0).is_err());
        assert!(ClvHorizon::new(MAX_MONTHS + 1, 0.01).is_err());
        let bg = BgNbdModel::new(BgNbdParams::<Weeks>::new(0.24, 4.4, 0.79, 2.4).expect("ok"));
        let gg =
            GammaGammaModel::new(GammaGammaParams::new(6.2, 3.7, 15.4).expect("ok")).expect("ok");
        let c = CustomerRfm::new(2, 30.43, 38.86, 22.35).expect("valid");
        // A horizon in periods: whole months as `new`, else one shorter last step.
        let days = BgNbdModel::new(BgNbdParams::<Days>::new(0.24, 4.4, 0.79, 2.4).expect("ok"));
        let cd = CustomerRfm::<Days>::new(3, 120.0, 300.0, 2_000.0).expect("ok");
        let whole = ClvHorizon::of_periods::<Days>(360.0, 0.01).expect("ok");
        assert_eq!(whole, ClvHorizon::new(12, 0.01).expect("ok"));
        let part = ClvHorizon::of_periods::<Days>(273.0, 0.01).expect("ok");
        assert_eq!(part.months(), 9);
        let (sum, last) = discounted_and_final_expected_purchases(&days, &cd, &part).expect("ok");
        let e = |t: f64| {
            days.conditional_expected_purchases(Periods::new(t).expect("ok"), &cd)
                .expect("ok")
        };
        assert_eq!(last, e(273.0));
        let (nine, _) = discounted_and_final_expected_purchases(
            &days,
            &cd,
            &ClvHorizon::new(9, 0.01).expect("ok"),
        )
        .expect("ok");
        let want = nine + (e(273.0) - e(270.0)) / 1.01f64.powf(273.0 / 30.0);
        assert!((sum - want).abs() < 1e-12, "{sum} {want}");
        assert!(ClvHorizon::of_periods::<Days>(-1.0, 0.01).is_err());
        assert!(ClvHorizon::of_periods::<Days>(f64::NAN, 0.01).is_err());
        assert!(ClvHorizon::of_periods::<Days>(30.0 * f64::from(MAX_MONTHS) + 1.0, 0.01).is_err());
        let zero = ClvHorizon::new(0, 0.01).expect("ok");
        assert_eq!(customer_lifetime_value(&bg, &gg, &c, &zero), Ok(0.0));
        let year = ClvHorizon::new(12, 0.01).expect("ok");
        let v = customer_lifetime_value(&bg, &gg, &c, &year).expect("ok");
        assert!(v > 0.0);
        // Undiscounted: m̂ · E[X(12 · 4.345 weeks)].
        let flat = ClvHorizon::new(12, 0.0).expect("ok");
        let undiscounted = customer_lifetime_value(&bg, &gg, &c, &flat).expect("ok");
        let e = bg
            .conditional_expected_purchases(Periods::new(12.0 * 4.345).expect("ok"), &c)
            .expect("ok");
        let want = gg.conditional_expected_value(&c) * e;
        assert!((undiscounted - want).abs() < 1e-12 * want);
        assert!(v < undiscounted);
        // Days use 30-day months: the same customer in days gives the same CLV only up to the
        // 4.345 vs 30/7 difference, so just check it is finite and positive.
        let cd: CustomerRfm<Days> = c.convert();
        let bd = BgNbdModel::new(bg.params().convert::<Days>());
        let vd = customer_lifetime_value(&bd, &gg, &cd, &year).expect("ok");
        assert!(vd.is_finite() && vd > 0.0);
    }
}
