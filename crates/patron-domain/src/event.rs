//! Events: what a customer did. Six kinds, each with its own data.

use serde::{Deserialize, Serialize};

use crate::{Attributes, CustomerId, EventId, OrderId, Timestamp};

/// Most events one RecordEvents call may carry.
pub const MAX_EVENTS_PER_CALL: usize = 10_000;
/// Longest channel name, in characters.
pub const MAX_CHANNEL_CHARS: usize = 64;
/// Largest item count of one order.
pub const MAX_ITEM_COUNT: i32 = 1_000_000;

/// One thing a customer did, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub customer_id: CustomerId,
    pub event_id: EventId,
    pub occurred_at: Timestamp,
    pub data: EventData,
}

/// The kind-specific data of an event. Serialized as JSON for storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventData {
    Purchase(Purchase),
    Refund(Refund),
    Engagement(Engagement),
    SupportInteraction(SupportInteraction),
    Survey(Survey),
    Custom(CustomEvent),
}

/// The kind of an event, as stored and filtered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Purchase = 1,
    Refund = 2,
    Engagement = 3,
    SupportInteraction = 4,
    Survey = 5,
    Custom = 6,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Purchase,
        EventKind::Refund,
        EventKind::Engagement,
        EventKind::SupportInteraction,
        EventKind::Survey,
        EventKind::Custom,
    ];

    /// The stored code.
    pub fn code(self) -> i16 {
        self as i16
    }

    pub fn from_code(code: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|k| i64::from(k.code()) == code)
    }
}

impl EventData {
    pub fn kind(&self) -> EventKind {
        match self {
            EventData::Purchase(_) => EventKind::Purchase,
            EventData::Refund(_) => EventKind::Refund,
            EventData::Engagement(_) => EventKind::Engagement,
            EventData::SupportInteraction(_) => EventKind::SupportInteraction,
            EventData::Survey(_) => EventKind::Survey,
            EventData::Custom(_) => EventKind::Custom,
        }
    }
}

/// An order. Amounts are minor units of the deployment's currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchase {
    pub order_id: OrderId,
    pub amount: i64,
    pub item_count: i32,
    pub channel: String,
}

/// A refund of part or all of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub order_id: OrderId,
    pub amount: i64,
}

/// A use of the product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Engagement {
    pub activity: String,
}

/// A contact with support.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupportInteraction {
    pub channel: String,
    pub resolved_first_contact: bool,
    pub csat: Option<u8>,
}

/// A survey answer; every rating optional. Benefits and costs are 1–5, CSAT 1–5, NPS 0–10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Survey {
    /// Economic, functional, experiential, symbolic.
    pub benefits: [Option<u8>; 4],
    /// Price, time, effort, emotional.
    pub costs: [Option<u8>; 4],
    pub csat: Option<u8>,
    pub nps: Option<u8>,
}

/// Any other named event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomEvent {
    pub name: String,
    pub properties: Attributes,
}

/// Why a rating or label was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("must be between {min} and {max}")]
    OutOfRange { min: i64, max: i64 },
    #[error("must be at most {0} characters")]
    TooLong(usize),
    #[error("must not be empty")]
    Empty,
    #[error("must be 1 to 64 characters of [A-Za-z0-9_.-]")]
    BadName,
}

/// Checks a rating in `min..=max`.
pub fn check_rating(value: i32, min: u8, max: u8) -> Result<u8, FieldError> {
    u8::try_from(value)
        .ok()
        .filter(|v| (min..=max).contains(v))
        .ok_or(FieldError::OutOfRange {
            min: min.into(),
            max: max.into(),
        })
}

/// Checks a free-text label such as a channel: at most `max` characters, no control characters.
pub fn check_label(s: &str, max: usize, required: bool) -> Result<String, FieldError> {
    if required && s.is_empty() {
        return Err(FieldError::Empty);
    }
    if s.chars().count() > max || s.chars().any(char::is_control) {
        return Err(FieldError::TooLong(max));
    }
    Ok(s.to_owned())
}

/// Checks a custom event name.
pub fn check_event_name(s: &str) -> Result<String, FieldError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(FieldError::BadName)
    }
}

/// Checks an item count.
pub fn check_item_count(n: i32) -> Result<i32, FieldError> {
    if (0..=MAX_ITEM_COUNT).contains(&n) {
        Ok(n)
    } else {
        Err(FieldError::OutOfRange {
            min: 0,
            max: MAX_ITEM_COUNT.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratings() {
        assert_eq!(check_rating(1, 1, 5), Ok(1));
        assert_eq!(check_rating(5, 1, 5), Ok(5));
        assert!(check_rating(0, 1, 5).is_err());
        assert!(check_rating(6, 1, 5).is_err());
        assert!(check_rating(-1, 0, 10).is_err());
        assert!(check_rating(i32::MAX, 0, 10).is_err());
        assert_eq!(check_rating(0, 0, 10), Ok(0));
    }

    #[test]
    fn labels_and_names() {
        assert!(check_label("web", 64, false).is_ok());
        assert!(check_label("", 64, false).is_ok());
        assert_eq!(check_label("", 64, true), Err(FieldError::Empty));
        assert!(check_label(&"x".repeat(65), 64, false).is_err());
        assert!(check_event_name("review.written-1").is_ok());
        assert!(check_event_name("bad name").is_err());
        assert!(check_item_count(-1).is_err());
        for k in EventKind::ALL {
            assert_eq!(EventKind::from_code(k.code().into()), Some(k));
        }
    }
}
