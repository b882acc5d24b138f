//! Instants, UTC days and calendar dates, as plain integers.
//!
//! Patron stores instants as microseconds since the Unix epoch (UTC) and days as days since the
//! epoch; sub-microsecond precision of incoming timestamps is dropped.

use std::fmt;

use serde::{Deserialize, Serialize};

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// An instant: microseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp(i64);

/// Why an instant was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("is required")]
    Missing,
    #[error("nanos must be between 0 and 999,999,999")]
    BadNanos,
    #[error("must not be before 1900-01-01T00:00:00Z")]
    TooEarly,
    #[error("must not be more than 24 hours in the future")]
    InFuture,
    #[error("must not be in the future")]
    AfterNow,
}

impl Timestamp {
    /// 1900-01-01T00:00:00Z, the earliest instant Patron accepts.
    pub const MIN: Timestamp = Timestamp(-2_208_988_800 * MICROS_PER_SECOND);
    /// How far ahead of the server clock an event may be (clock skew of the caller).
    pub const MAX_FUTURE_SKEW_MICROS: i64 = MICROS_PER_DAY;

    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// From protobuf-style seconds and nanos, checked for range (1900 to 9999).
    pub fn from_parts(seconds: i64, nanos: i32) -> Result<Self, TimestampError> {
        if !(0..1_000_000_000).contains(&nanos) {
            return Err(TimestampError::BadNanos);
        }
        // 9999-12-31T23:59:59Z; beyond that protobuf Timestamps are invalid anyway.
        if seconds > 253_402_300_799 {
            return Err(TimestampError::InFuture);
        }
        let micros = seconds
            .checked_mul(MICROS_PER_SECOND)
            .and_then(|m| m.checked_add(i64::from(nanos / 1_000)))
            .ok_or(TimestampError::TooEarly)?;
        let ts = Self(micros);
        if ts < Self::MIN {
            return Err(TimestampError::TooEarly);
        }
        Ok(ts)
    }

    /// Seconds and nanos for protobuf.
    pub fn to_parts(self) -> (i64, i32) {
        let secs = self.0.div_euclid(MICROS_PER_SECOND);
        let micros = self.0.rem_euclid(MICROS_PER_SECOND);
        // micros < 1e6, so nanos < 1e9 and fits in i32.
        (secs, (micros * 1_000) as i32)
    }

    /// Checks an event time against the server clock.
    pub fn check_event_time(self, now: Timestamp) -> Result<Self, TimestampError> {
        if self < Self::MIN {
            return Err(TimestampError::TooEarly);
        }
        if self.0 > now.0.saturating_add(Self::MAX_FUTURE_SKEW_MICROS) {
            return Err(TimestampError::InFuture);
        }
        Ok(self)
    }

    /// Checks an instant that must not be after `now` (e.g. a sign-up time).
    pub fn check_not_after(self, now: Timestamp) -> Result<Self, TimestampError> {
        if self < Self::MIN {
            return Err(TimestampError::TooEarly);
        }
        if self > now {
            return Err(TimestampError::AfterNow);
        }
        Ok(self)
    }

    /// The UTC day this instant falls on.
    pub fn day(self) -> Day {
        // |micros| / MICROS_PER_DAY always fits in i32 for i64 micros.
        Day(self.0.div_euclid(MICROS_PER_DAY) as i32)
    }
}

/// A UTC calendar day: days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Day(i32);

impl Day {
    pub const fn from_days(days: i32) -> Self {
        Self(days)
    }

    pub const fn as_days(self) -> i32 {
        self.0
    }

    /// The instant this day starts.
    pub fn start(self) -> Timestamp {
        Timestamp(i64::from(self.0) * MICROS_PER_DAY)
    }

    pub fn date(self) -> Date {
        let (y, m, d) = civil_from_days(i64::from(self.0));
        Date {
            year: y,
            month: m,
            day: d,
        }
    }
}

/// A calendar date with no time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Date {
    year: i32,
    month: u8,
    day: u8,
}

/// Why a date was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    #[error("year must be between 1900 and 9999")]
    Year,
    #[error("month must be between 1 and 12")]
    Month,
    #[error("day must be between 1 and the number of days in the month")]
    Day,
    #[error("must not be in the future")]
    InFuture,
}

impl Date {
    pub fn new(year: i32, month: i32, day: i32) -> Result<Self, DateError> {
        if !(1900..=9999).contains(&year) {
            return Err(DateError::Year);
        }
        let month = u8::try_from(month)
            .ok()
            .filter(|m| (1..=12).contains(m))
            .ok_or(DateError::Month)?;
        let day = u8::try_from(day)
            .ok()
            .filter(|d| *d >= 1 && *d <= days_in_month(year, month))
            .ok_or(DateError::Day)?;
        Ok(Self { year, month, day })
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u8 {
        self.month
    }

    pub fn day(self) -> u8 {
        self.day
    }

    /// Days since 1970-01-01.
    pub fn to_day(self) -> Day {
        // Years 1900..=9999 keep the day count well inside i32.
        Day(days_from_civil(self.year, self.month, self.day) as i32)
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse_iso(s: &str) -> Result<Self, DateError> {
        let mut parts = s.splitn(3, '-');
        let mut next = |e| parts.next().and_then(|p| p.parse::<i32>().ok()).ok_or(e);
        let y = next(DateError::Year)?;
        let m = next(DateError::Month)?;
        let d = next(DateError::Day)?;
        Self::new(y, m, d)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i32, m: u8) -> u8 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days.
fn days_from_civil(y: i32, m: u8, d: u8) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    ((y + i64::from(m <= 2)) as i32, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_through_days() {
        for (y, m, d, days) in [
            (1970, 1, 1, 0),
            (2000, 2, 29, 11_016),
            (1900, 1, 1, -25_567),
            (2026, 11, 23, 20_780),
            (2026, 1, 1, 20_454),
        ] {
            let date = Date::new(y, m, d).expect("valid date");
            assert_eq!(date.to_day().as_days(), days, "{date}");
            assert_eq!(date.to_day().date(), date);
        }
    }

    #[test]
    fn bad_dates_are_refused() {
        assert_eq!(Date::new(2023, 2, 29), Err(DateError::Day));
        assert_eq!(Date::new(2023, 13, 1), Err(DateError::Month));
        assert_eq!(Date::new(1899, 12, 31), Err(DateError::Year));
        assert_eq!(Date::new(2024, 4, 31), Err(DateError::Day));
        assert!(Date::new(2024, 2, 29).is_ok());
        assert_eq!(
            Date::parse_iso("2024-02-29")
                .map(|d| d.to_string())
                .as_deref(),
            Ok("2024-02-29")
        );
        assert!(Date::parse_iso("2024-02").is_err());
    }

    #[test]
    fn timestamps_are_checked() {
        let now = Timestamp::from_parts(1_700_000_000, 0).expect("valid");
        assert!(Timestamp::from_parts(0, -1).is_err());
        assert!(Timestamp::from_parts(0, 1_000_000_000).is_err());
        assert_eq!(
            Timestamp::from_parts(-2_208_988_801, 0),
            Err(TimestampError::TooEarly)
        );
        assert_eq!(
            Timestamp::from_parts(i64::MAX, 0),
            Err(TimestampError::InFuture)
        );
        assert_eq!(
            Timestamp::from_parts(i64::MIN, 0),
            Err(TimestampError::TooEarly)
        );
        let later = Timestamp::from_micros(now.as_micros() + Timestamp::MAX_FUTURE_SKEW_MICROS + 1);
        assert_eq!(later.check_event_time(now), Err(TimestampError::InFuture));
        assert!(now.check_event_time(now).is_ok());
        let ts = Timestamp::from_parts(-1, 500_000_000).expect("valid");
        assert_eq!(ts.to_parts(), (-1, 500_000_000));
        assert_eq!(ts.day().as_days(), -1);
    }
}
