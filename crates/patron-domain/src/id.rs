//! Caller-supplied identifiers. Each is 1 to 128 characters with no control characters, checked
//! once at the boundary so the rest of Patron can trust it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted identifier, in characters.
pub const MAX_ID_CHARS: usize = 128;

/// Why an identifier was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_ID_CHARS} characters")]
    TooLong,
    #[error("must not contain control characters")]
    ControlCharacter,
}

fn check_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.chars().count() > MAX_ID_CHARS {
        return Err(IdError::TooLong);
    }
    if s.chars().any(char::is_control) {
        return Err(IdError::ControlCharacter);
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        // A boxed `str`, not a `String`: no spare capacity, and 8 bytes less in every row of
        // the in-memory index (which holds every customer).
        pub struct $name(Box<str>);

        impl $name {
            /// Checks `s` and wraps it.
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check_id(&s)?;
                Ok(Self(s.into_boxed_str()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0.into_string()
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.into_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// The caller's id of a customer.
    CustomerId
);
id_type!(
    /// The caller's id of an event; unique per customer.
    EventId
);
id_type!(
    /// The caller's id of an order; unique per customer.
    OrderId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        let cases: &[(&str, Result<(), IdError>)] = &[
            ("c1", Ok(())),
            ("", Err(IdError::Empty)),
            ("a\nb", Err(IdError::ControlCharacter)),
            ("ü", Ok(())),
        ];
        for (input, want) in cases {
            assert_eq!(CustomerId::parse(*input).map(|_| ()), *want, "{input:?}");
        }
        assert_eq!(CustomerId::parse("x".repeat(128)).map(|_| ()), Ok(()));
        assert_eq!(
            CustomerId::parse("x".repeat(129)).map(|_| ()),
            Err(IdError::TooLong)
        );
        // Characters, not bytes: 128 two-byte characters are fine.
        assert!(EventId::parse("é".repeat(128)).is_ok());
    }
}
