//! Money: integer minor units of an ISO 4217 currency. Never floating point.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::iso;
use crate::validation::quote;

/// Largest amount one purchase or refund may carry, in minor units (10^12: ten billion dollars).
/// It keeps sums of millions of events far from `i64` overflow.
pub const MAX_EVENT_AMOUNT: i64 = 1_000_000_000_000;

/// An active ISO 4217 currency code, with its minor digits (looked up once, at parsing: every
/// amount formatted or converted asks for them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency {
    code: [u8; 3],
    digits: u8,
}

/// Why a currency or amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("is required")]
    MissingCurrency,
    #[error("{} is not an active ISO 4217 currency code", crate::validation::quote(.0))]
    UnknownCurrency(String),
    #[error("must be {expected}, the currency this Patron deployment keeps its books in")]
    WrongCurrency { expected: Currency },
    #[error("must not be negative")]
    Negative,
    #[error("must be at most {MAX_EVENT_AMOUNT} minor units")]
    TooLarge,
}

impl Currency {
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        if code.is_empty() {
            return Err(MoneyError::MissingCurrency);
        }
        match (iso::currency_minor_digits(code), code.as_bytes()) {
            (Some(digits), &[a, b, c]) => Ok(Self {
                code: [a, b, c],
                digits,
            }),
            _ => Err(MoneyError::UnknownCurrency(code.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII letters get in through `parse`.
        std::str::from_utf8(&self.code).unwrap_or("XXX")
    }

    /// Digits after the decimal point (2 for USD, 0 for JPY).
    pub fn minor_digits(&self) -> u8 {
        self.digits
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(s: String) -> Result<Self, MoneyError> {
        Self::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount of money: minor units of a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub currency: Currency,
    pub minor_units: i64,
}

impl Money {
    /// Checks an event amount: the deployment's currency, 0 to [`MAX_EVENT_AMOUNT`].
    pub fn event_amount(
        currency: Currency,
        minor_units: i64,
        books: Currency,
    ) -> Result<Self, MoneyError> {
        if currency != books {
            return Err(MoneyError::WrongCurrency { expected: books });
        }
        check_event_amount(minor_units)?;
        Ok(Self {
            currency,
            minor_units,
        })
    }
}

/// Checks an event amount's range: 0 to [`MAX_EVENT_AMOUNT`].
pub fn check_event_amount(minor_units: i64) -> Result<i64, MoneyError> {
    if minor_units < 0 {
        Err(MoneyError::Negative)
    } else if minor_units > MAX_EVENT_AMOUNT {
        Err(MoneyError::TooLarge)
    } else {
        Ok(minor_units)
    }
}

/// Formats minor units as a decimal string: `1999` USD is `"19.99"`.
pub fn format_minor(minor_units: i64, currency: Currency) -> String {
    let digits = u32::from(currency.minor_digits());
    if digits == 0 {
        return minor_units.to_string();
    }
    let scale = 10i64.pow(digits);
    let sign = if minor_units < 0 { "-" } else { "" };
    let abs = minor_units.unsigned_abs();
    let scale = scale.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = digits as usize
    )
}

/// Parses a decimal string such as `"19.99"` into minor units of `currency`, exactly (no
/// floating point). More fraction digits than the currency has is an error.
pub fn parse_decimal(s: &str, currency: Currency) -> Result<i64, String> {
    let s = s.trim();
    let digits = usize::from(currency.minor_digits());
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty() || !all_digits(int_part) || !all_digits(frac_part) {
        return Err(format!("{} is not a decimal amount", quote(s)));
    }
    if frac_part.len() > digits {
        return Err(format!(
            "{} has more than {digits} decimal places for {currency}",
            quote(s)
        ));
    }
    let mut text = String::with_capacity(int_part.len() + digits);
    text.push_str(int_part);
    text.push_str(frac_part);
    text.extend(std::iter::repeat_n('0', digits - frac_part.len()));
    let value: i64 = text
        .parse()
        .map_err(|_| format!("{} is too large", quote(s)))?;
    Ok(if neg { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::parse("USD").expect("USD")
    }

    #[test]
    fn currencies_are_checked() {
        assert!(Currency::parse("EUR").is_ok());
        assert_eq!(
            Currency::parse("usd"),
            Err(MoneyError::UnknownCurrency("usd".into()))
        );
        assert_eq!(
            Currency::parse("ABC"),
            Err(MoneyError::UnknownCurrency("ABC".into()))
        );
        assert_eq!(Currency::parse(""), Err(MoneyError::MissingCurrency));
        let eur = Currency::parse("EUR").expect("EUR");
        assert!(matches!(
            Money::event_amount(eur, 1, usd()),
            Err(MoneyError::WrongCurrency { .. })
        ));
    }

    #[test]
    fn amounts_are_checked() {
        assert_eq!(check_event_amount(-1), Err(MoneyError::Negative));
        assert_eq!(
            check_event_amount(MAX_EVENT_AMOUNT + 1),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(check_event_amount(0), Ok(0));
        assert_eq!(check_event_amount(MAX_EVENT_AMOUNT), Ok(MAX_EVENT_AMOUNT));
    }

    #[test]
    fn decimals_round_trip() {
        let jpy = Currency::parse("JPY").expect("JPY");
        let cases: &[(&str, Currency, Result<i64, ()>)] = &[
            ("19.99", usd(), Ok(1999)),
            ("19.9", usd(), Ok(1990)),
            ("19", usd(), Ok(1900)),
            ("0.01", usd(), Ok(1)),
            ("-5.00", usd(), Ok(-500)),
            ("1.999", usd(), Err(())),
            ("abc", usd(), Err(())),
            ("", usd(), Err(())),
            (".5", usd(), Err(())),
            ("1e3", usd(), Err(())),
            ("99999999999999999999", usd(), Err(())),
            ("500", jpy, Ok(500)),
            ("500.5", jpy, Err(())),
        ];
        for (input, cur, want) in cases {
            assert_eq!(parse_decimal(input, *cur).map_err(|_| ()), *want, "{input}");
        }
        assert_eq!(format_minor(1999, usd()), "19.99");
        assert_eq!(format_minor(-5, usd()), "-0.05");
        assert_eq!(format_minor(500, jpy), "500");
    }
}
