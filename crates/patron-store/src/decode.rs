//! Decoding of stored customer values shared by the backends: a value no write could have
//! stored fails loudly ([`StoreError::Internal`], logged) instead of being read as a default.

use patron_domain::{CustomerId, Date, Day, Gender, Timestamp};

use crate::{StoreError, StoreResult};

fn corrupt(customer: &CustomerId, what: &str, value: impl std::fmt::Debug) -> StoreError {
    StoreError::Internal(format!("stored {what} of {customer} is corrupt: {value:?}"))
}

/// The stored gender text.
pub fn gender(customer: &CustomerId, stored: &str) -> StoreResult<Gender> {
    Gender::parse(stored).ok_or_else(|| corrupt(customer, "gender", stored))
}

/// The stored birth date (days since 1970-01-01): a valid date (years 1900 to 9999) or absent.
pub fn birth_date(customer: &CustomerId, stored: Option<i64>) -> StoreResult<Option<Date>> {
    let Some(days) = stored else {
        return Ok(None);
    };
    i32::try_from(days)
        .ok()
        .map(|d| Day::from_days(d).date())
        .filter(|d| Date::new(d.year(), i32::from(d.month()), i32::from(d.day())).is_ok())
        .map(Some)
        .ok_or_else(|| corrupt(customer, "birth date", days))
}

/// The stored create time, which every customer has.
pub fn create_time(customer: &CustomerId, stored: Option<i64>) -> StoreResult<Timestamp> {
    stored
        .map(Timestamp::from_micros)
        .ok_or_else(|| corrupt(customer, "create time", "NULL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ana() -> CustomerId {
        CustomerId::parse("ana").expect("id")
    }

    #[test]
    fn valid_values_decode() {
        assert_eq!(gender(&ana(), "female").expect("gender"), Gender::Female);
        assert_eq!(gender(&ana(), "").expect("gender"), Gender::Unspecified);
        let d = Date::new(1990, 2, 28).expect("date");
        assert_eq!(
            birth_date(&ana(), Some(i64::from(d.to_day().as_days()))).expect("date"),
            Some(d)
        );
        assert_eq!(birth_date(&ana(), None).expect("none"), None);
        assert_eq!(
            create_time(&ana(), Some(5)).expect("time"),
            Timestamp::from_micros(5)
        );
    }

    #[test]
    fn corrupt_values_are_errors_naming_the_customer() {
        for e in [
            gender(&ana(), "femal").map(|_| ()),
            birth_date(&ana(), Some(i64::from(i32::MAX) + 1)).map(|_| ()),
            birth_date(&ana(), Some(-40_000)).map(|_| ()),
            create_time(&ana(), None).map(|_| ()),
        ] {
            let e = e.expect_err("corrupt");
            assert!(
                matches!(&e, StoreError::Internal(m) if m.contains("of ana is corrupt")),
                "{e}"
            );
        }
    }
}
