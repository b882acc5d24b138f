//! Customers: the caller's profile of a person, with typed custom attributes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{CustomerId, Date, Timestamp};

/// Most custom attributes (or custom event properties) one record may carry.
pub const MAX_ATTRIBUTES: usize = 64;
/// Longest string attribute value, in bytes.
pub const MAX_STRING_VALUE_BYTES: usize = 1024;

/// The gender a customer reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Gender {
    #[default]
    Unspecified,
    Female,
    Male,
    Other,
    Undisclosed,
}

impl Gender {
    pub fn as_str(self) -> &'static str {
        match self {
            Gender::Unspecified => "unspecified",
            Gender::Female => "female",
            Gender::Male => "male",
            Gender::Other => "other",
            Gender::Undisclosed => "undisclosed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "unspecified" | "" => Gender::Unspecified,
            "female" => Gender::Female,
            "male" => Gender::Male,
            "other" => Gender::Other,
            "undisclosed" => Gender::Undisclosed,
            _ => return None,
        })
    }
}

/// A key of a custom attribute: 1 to 64 characters of `[A-Za-z0-9_]`, starting with a letter, so
/// that it can be named in a segment rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AttributeKey(String);

/// Why an attribute was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    #[error("key must be 1 to 64 characters of [A-Za-z0-9_] starting with a letter")]
    BadKey,
    #[error("value is required")]
    MissingValue,
    #[error("string value must be at most {MAX_STRING_VALUE_BYTES} bytes")]
    StringTooLong,
    #[error("double value must be finite")]
    NotFinite,
    #[error("at most {MAX_ATTRIBUTES} entries are allowed")]
    TooMany,
}

impl AttributeKey {
    pub fn parse(s: impl Into<String>) -> Result<Self, AttributeError> {
        let s = s.into();
        let mut chars = s.chars();
        let ok = s.len() <= 64
            && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            Ok(Self(s))
        } else {
            Err(AttributeError::BadKey)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AttributeKey {
    type Error = AttributeError;
    fn try_from(s: String) -> Result<Self, AttributeError> {
        Self::parse(s)
    }
}

impl From<AttributeKey> for String {
    fn from(k: AttributeKey) -> String {
        k.0
    }
}

/// A typed attribute value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributeValue {
    String(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Date(Date),
}

impl AttributeValue {
    /// Checks the value's own constraints.
    pub fn check(self) -> Result<Self, AttributeError> {
        match &self {
            AttributeValue::String(s) if s.len() > MAX_STRING_VALUE_BYTES => {
                Err(AttributeError::StringTooLong)
            }
            AttributeValue::Double(d) if !d.is_finite() => Err(AttributeError::NotFinite),
            _ => Ok(self),
        }
    }
}

/// Custom attributes, ordered by key.
pub type Attributes = BTreeMap<AttributeKey, AttributeValue>;

/// A customer's profile as the caller supplies it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CustomerProfile {
    pub birth_date: Option<Date>,
    pub gender: Gender,
    /// ISO 3166-1 alpha-2, checked.
    pub country: Option<String>,
    pub signed_up_at: Option<Timestamp>,
    pub attributes: Attributes,
}

/// A customer: id and profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    pub customer_id: CustomerId,
    pub profile: CustomerProfile,
}

/// Checks a country code: empty means unknown, otherwise ISO 3166-1 alpha-2.
pub fn parse_country(s: &str) -> Result<Option<String>, String> {
    if s.is_empty() {
        Ok(None)
    } else if crate::iso::is_country_code(s) {
        Ok(Some(s.to_owned()))
    } else {
        Err(format!(
            "{} is not an ISO 3166-1 alpha-2 country code (upper case)",
            crate::validation::quote(s)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_keys() {
        for (k, ok) in [
            ("plan", true),
            ("plan_2", true),
            ("", false),
            ("2plan", false),
            ("_x", false),
            ("a-b", false),
            (&"a".repeat(64), true),
            (&"a".repeat(65), false),
        ] {
            assert_eq!(AttributeKey::parse(k).is_ok(), ok, "{k}");
        }
    }

    #[test]
    fn attribute_values() {
        assert_eq!(
            AttributeValue::Double(f64::NAN).check(),
            Err(AttributeError::NotFinite)
        );
        assert_eq!(
            AttributeValue::String("x".repeat(1025)).check(),
            Err(AttributeError::StringTooLong)
        );
        assert!(AttributeValue::Int(i64::MIN).check().is_ok());
        assert_eq!(parse_country("DE"), Ok(Some("DE".into())));
        assert_eq!(parse_country(""), Ok(None));
        assert!(parse_country("de").is_err());
    }
}
