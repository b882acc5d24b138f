//! The RFM summary of one customer, the input of every model.

use std::marker::PhantomData;

use super::units::check_time;
use super::{ClvError, Periods, TimeUnit};

/// One customer's purchase summary in time unit `U`, as `lifetimes` builds it with
/// `summary_data_from_transaction_data` (see the [module docs](super)).
///
/// Invariants, checked by [`CustomerRfm::new`]: all values finite; `0 <= recency <= T`;
/// `recency == 0` when `frequency == 0`; `monetary >= 0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CustomerRfm<U: TimeUnit> {
    frequency: u32,
    recency: f64,
    age: f64,
    monetary: f64,
    unit: PhantomData<U>,
}

impl<U: TimeUnit> CustomerRfm<U> {
    /// A validated summary: `frequency` repeat purchase periods, `recency` (`t_x`) and `age`
    /// (`T`) in units `U`, `monetary` the mean value of the repeat purchases.
    pub fn new(frequency: u32, recency: f64, age: f64, monetary: f64) -> Result<Self, ClvError> {
        check_time("recency", recency)?;
        check_time("T", age)?;
        if !monetary.is_finite() {
            return Err(ClvError::NotFinite { field: "monetary" });
        }
        if monetary < 0.0 {
            return Err(ClvError::Negative { field: "monetary" });
        }
        if recency > age {
            return Err(ClvError::RecencyAfterAge);
        }
        if frequency == 0 && recency != 0.0 {
            return Err(ClvError::RecencyWithoutRepeat);
        }
        Ok(Self {
            frequency,
            // `+ 0.0` turns -0.0 into +0.0, so equal values have equal bits (aggregation).
            recency: recency + 0.0,
            age: age + 0.0,
            monetary: monetary + 0.0,
            unit: PhantomData,
        })
    }

    /// A summary with typed times.
    pub fn from_periods(
        frequency: u32,
        recency: Periods<U>,
        age: Periods<U>,
        monetary: f64,
    ) -> Result<Self, ClvError> {
        Self::new(frequency, recency.get(), age.get(), monetary)
    }

    /// Number of repeat purchase periods `x`.
    pub const fn frequency(&self) -> u32 {
        self.frequency
    }

    /// Time from the first to the last purchase, `t_x`, in units `U`.
    pub const fn recency(&self) -> f64 {
        self.recency
    }

    /// Time from the first purchase to the end of observation, `T`, in units `U`.
    pub const fn age(&self) -> f64 {
        self.age
    }

    /// Time since the last purchase, `T - t_x` (the "R" of RFM), in units `U`.
    pub fn time_since_last_purchase(&self) -> f64 {
        self.age - self.recency
    }

    /// Mean value of the repeat purchases (0 when there are none).
    pub const fn monetary(&self) -> f64 {
        self.monetary
    }

    /// The same summary in another unit: recency and `T` are rescaled (days → weeks divides
    /// by 7, the `lifetimes` `freq_multiplier` convention); frequency and monetary value are
    /// unchanged.
    pub fn convert<V: TimeUnit>(&self) -> CustomerRfm<V> {
        let k = U::DAYS / V::DAYS;
        let recency = self.recency * k;
        // Rounding cannot break recency <= T (both scaled by the same factor, monotone).
        CustomerRfm {
            frequency: self.frequency,
            recency,
            age: (self.age * k).max(recency),
            monetary: self.monetary,
            unit: PhantomData,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clv::{Days, Weeks};

    #[test]
    fn validation() {
        assert!(CustomerRfm::<Days>::new(0, 0.0, 0.0, 0.0).is_ok());
        assert_eq!(
            CustomerRfm::<Days>::new(0, 1.0, 3.0, 0.0),
            Err(ClvError::RecencyWithoutRepeat)
        );
        assert_eq!(
            CustomerRfm::<Days>::new(2, 4.0, 3.0, 1.0),
            Err(ClvError::RecencyAfterAge)
        );
        assert!(CustomerRfm::<Days>::new(2, f64::NAN, 3.0, 1.0).is_err());
        assert!(CustomerRfm::<Days>::new(2, 1.0, f64::INFINITY, 1.0).is_err());
        assert!(CustomerRfm::<Days>::new(2, 1.0, 3.0, f64::NAN).is_err());
        assert!(CustomerRfm::<Days>::new(2, 1.0, 3.0, -1.0).is_err());
        assert!(CustomerRfm::<Days>::new(2, -1.0, 3.0, 1.0).is_err());
    }

    #[test]
    fn days_to_weeks() {
        let d = CustomerRfm::<Days>::new(3, 21.0, 70.0, 12.5).expect("valid");
        let w: CustomerRfm<Weeks> = d.convert();
        assert_eq!(w.frequency(), 3);
        assert_eq!(w.recency(), 3.0);
        assert_eq!(w.age(), 10.0);
        assert_eq!(w.monetary(), 12.5);
        assert_eq!(w.time_since_last_purchase(), 7.0);
    }
}
