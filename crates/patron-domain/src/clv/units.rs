//! Typed time units for the CLV models.
//!
//! Every RFM summary ([`CustomerRfm`](super::CustomerRfm)), every parameter set and every fitted
//! model carries its time unit as a type parameter `U: TimeUnit` ([`Days`] or [`Weeks`]). A
//! BG/NBD model fitted on weekly summaries is a `BgNbdModel<Weeks>` and its prediction methods
//! only accept `CustomerRfm<Weeks>` and `Periods<Weeks>`: applying it to day-based data is a
//! **compile error**. Where the unit is only known at run time (a model read back from storage),
//! the untyped forms ([`TimeUnitKind`], [`UntypedBgNbdParams`](super::UntypedBgNbdParams)) are
//! turned into typed ones with a checked conversion that returns
//! [`ClvError::UnitMismatch`].
//!
//! ```
//! use patron_domain::clv::{BgNbdModel, BgNbdParams, CustomerRfm, Days, Weeks};
//! # fn main() -> Result<(), patron_domain::clv::ClvError> {
//! let model = BgNbdModel::new(BgNbdParams::<Weeks>::new(0.24, 4.41, 0.79, 2.43)?);
//! let in_days = CustomerRfm::<Days>::new(2, 213.0, 272.0, 22.35)?;
//! let p = model.probability_alive(&in_days.convert::<Weeks>()); // explicit conversion: fine
//! # assert!(p > 0.0 && p < 1.0);
//! # Ok(()) }
//! ```
//!
//! ```compile_fail,E0308
//! use patron_domain::clv::{BgNbdModel, BgNbdParams, CustomerRfm, Days, Weeks};
//! # fn main() -> Result<(), patron_domain::clv::ClvError> {
//! let model = BgNbdModel::new(BgNbdParams::<Weeks>::new(0.24, 4.41, 0.79, 2.43)?);
//! let in_days = CustomerRfm::<Days>::new(2, 213.0, 272.0, 22.35)?;
//! model.probability_alive(&in_days); // error: expected `CustomerRfm<Weeks>`
//! # Ok(()) }
//! ```
//!
//! Conversion between units follows the `lifetimes` convention for `freq_multiplier`: a
//! day-based summary becomes a week-based one by dividing recency and age `T` by 7; the
//! frequency (number of distinct repeat purchase days) and the monetary value are unchanged.

use std::fmt;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use super::ClvError;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Days {}
    impl Sealed for super::Weeks {}
}

/// A unit of time in which recency, age and horizons are measured.
///
/// Sealed: the CLV conventions (days per unit, periods per month for discounting) are only
/// defined for the units listed here.
pub trait TimeUnit:
    sealed::Sealed + Copy + Clone + fmt::Debug + PartialEq + Eq + Default + Send + Sync + 'static
{
    /// The runtime tag of this unit.
    const KIND: TimeUnitKind;
    /// Length of one unit in days (1 for days, 7 for weeks).
    const DAYS: f64;
    /// How many units `lifetimes` 0.11.3 counts in one month when it discounts a customer
    /// lifetime value (`factor = {"W": 4.345, "M": 1.0, "D": 30, "H": 30 * 24}` in
    /// `lifetimes.utils._customer_lifetime_value`): 30 for days, 4.345 for weeks.
    const PERIODS_PER_MONTH: f64;
}

/// Time measured in days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Days;

/// Time measured in weeks of 7 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Weeks;

impl TimeUnit for Days {
    const KIND: TimeUnitKind = TimeUnitKind::Days;
    const DAYS: f64 = 1.0;
    const PERIODS_PER_MONTH: f64 = 30.0;
}

impl TimeUnit for Weeks {
    const KIND: TimeUnitKind = TimeUnitKind::Weeks;
    const DAYS: f64 = 7.0;
    const PERIODS_PER_MONTH: f64 = 4.345;
}

/// The runtime tag of a [`TimeUnit`], for storage and for checked conversions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnitKind {
    /// [`Days`].
    Days,
    /// [`Weeks`].
    Weeks,
}

impl TimeUnitKind {
    /// Length of one unit in days.
    pub const fn days(self) -> f64 {
        match self {
            TimeUnitKind::Days => Days::DAYS,
            TimeUnitKind::Weeks => Weeks::DAYS,
        }
    }
}

impl fmt::Display for TimeUnitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeUnitKind::Days => "days",
            TimeUnitKind::Weeks => "weeks",
        })
    }
}

/// Checks that a runtime unit tag is the unit `U` expected at compile time.
pub fn expect_unit<U: TimeUnit>(found: TimeUnitKind) -> Result<(), ClvError> {
    if found == U::KIND {
        Ok(())
    } else {
        Err(ClvError::UnitMismatch {
            expected: U::KIND,
            found,
        })
    }
}

/// A non-negative, finite length of time in unit `U`.
///
/// The invariant (finite, `>= 0`, never `-0.0`) is checked by [`Periods::new`], so functions
/// that take a `Periods` need not check it again.
#[derive(Clone, Copy, PartialEq, PartialOrd)]
pub struct Periods<U: TimeUnit> {
    value: f64,
    unit: PhantomData<U>,
}

impl<U: TimeUnit> fmt::Debug for Periods<U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.value, U::KIND)
    }
}

impl<U: TimeUnit> Periods<U> {
    /// Zero length.
    pub const ZERO: Self = Self {
        value: 0.0,
        unit: PhantomData,
    };

    /// A length of `value` units; refuses NaN, infinities and negative values.
    pub fn new(value: f64) -> Result<Self, ClvError> {
        check_time("periods", value)?;
        Ok(Self {
            value: value + 0.0,
            unit: PhantomData,
        })
    }

    /// The number of units.
    pub const fn get(self) -> f64 {
        self.value
    }

    /// The same length in another unit (e.g. days → weeks divides by 7).
    pub fn convert<V: TimeUnit>(self) -> Periods<V> {
        Periods {
            value: self.value * (U::DAYS / V::DAYS),
            unit: PhantomData,
        }
    }
}

/// Checks that a time value is finite and non-negative.
pub(crate) fn check_time(field: &'static str, value: f64) -> Result<(), ClvError> {
    if !value.is_finite() {
        return Err(ClvError::NotFinite { field });
    }
    if value < 0.0 {
        return Err(ClvError::Negative { field });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_and_validation() {
        let d = Periods::<Days>::new(14.0).expect("valid");
        assert_eq!(d.convert::<Weeks>().get(), 2.0);
        assert_eq!(d.convert::<Weeks>().convert::<Days>().get(), 14.0);
        assert!(Periods::<Days>::new(f64::NAN).is_err());
        assert!(Periods::<Days>::new(f64::INFINITY).is_err());
        assert!(Periods::<Days>::new(-1.0).is_err());
        assert!(
            Periods::<Days>::new(-0.0)
                .expect("zero")
                .get()
                .is_sign_positive()
        );
        assert!(expect_unit::<Weeks>(TimeUnitKind::Weeks).is_ok());
        assert_eq!(
            expect_unit::<Weeks>(TimeUnitKind::Days),
            Err(ClvError::UnitMismatch {
                expected: TimeUnitKind::Weeks,
                found: TimeUnitKind::Days
            })
        );
    }
}
