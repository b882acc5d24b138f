//! Conversions between protobuf time types and domain time types.

use patron_domain::time::TimestampError;
use patron_domain::{Day, Timestamp};

/// A protobuf timestamp to a domain instant, checked for range.
pub fn from_proto(ts: &prost_types::Timestamp) -> Result<Timestamp, TimestampError> {
    Timestamp::from_parts(ts.seconds, ts.nanos)
}

/// A required protobuf timestamp.
pub fn required(ts: Option<&prost_types::Timestamp>) -> Result<Timestamp, TimestampError> {
    ts.ok_or(TimestampError::Missing).and_then(from_proto)
}

/// A domain instant to a protobuf timestamp.
pub fn to_proto(ts: Timestamp) -> prost_types::Timestamp {
    let (seconds, nanos) = ts.to_parts();
    prost_types::Timestamp { seconds, nanos }
}

/// The start of a UTC day as a protobuf timestamp.
pub fn day_to_proto(day: Day) -> prost_types::Timestamp {
    to_proto(day.start())
}

/// The server clock.
pub fn now() -> Timestamp {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_micros(micros)
}
