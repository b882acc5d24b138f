//! Field-level validation errors, collected rather than returned at the first failure so a caller
//! learns about every bad field at once.

use std::fmt;

/// How many characters of a value the client sent an error message quotes at most.
pub const QUOTE_CHARS: usize = 64;

/// Quotes a value the client sent for an error message: in full when short (`"de"`), otherwise
/// its first [`QUOTE_CHARS`] characters and its length (`"xxxx…" (12000 bytes)`), so an error
/// about a huge value stays small enough to reach the client. Every message that repeats a
/// client's value goes through here.
pub fn quote(value: &str) -> String {
    match value.char_indices().nth(QUOTE_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => {
            let head = format!("{:?}", &value[..cut]);
            let head = head.strip_suffix('"').unwrap_or(&head);
            format!("{head}…\" ({} bytes)", value.len())
        }
    }
}

/// `text` cut to at most `max` bytes (at a character boundary) with `…` and the original length
/// appended when cut: the backstop for messages built from client input.
pub fn truncate(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… ({} bytes)", &text[..cut], text.len()))
}

/// One bad field: its path in the request (`events[3].purchase.amount.minor_units`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// An accumulator of field violations.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Records the error of `result` under `field` and returns the value, if any.
    pub fn check<T, E: fmt::Display>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(field, e.to_string());
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn as_slice(&self) -> &[FieldViolation] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<FieldViolation> {
        self.0
    }

    /// Moves the violations of `other` into `self`, prefixing each field with `prefix.`.
    pub fn extend_prefixed(&mut self, prefix: &str, other: Violations) {
        for v in other.0 {
            self.0.push(FieldViolation {
                field: format!("{prefix}.{}", v.field),
                description: v.description,
            });
        }
    }

    /// `Ok(value)` when nothing was recorded, the violations otherwise.
    pub fn finish<T>(self, value: T) -> Result<T, Violations> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_cuts_long_values_and_says_how_long_they_were() {
        assert_eq!(quote("de"), "\"de\"");
        assert_eq!(quote(&"x".repeat(64)), format!("{:?}", "x".repeat(64)));
        let long = "é".repeat(6_000);
        let quoted = quote(&long);
        assert_eq!(quoted, format!("\"{}…\" (12000 bytes)", "é".repeat(64)));
        assert_eq!(quote("tab\there"), "\"tab\\there\"");
    }

    #[test]
    fn truncate_keeps_short_text_and_cuts_at_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("aéb", 2), "a… (4 bytes)");
        assert_eq!(truncate(&"z".repeat(1000), 8), "zzzzzzzz… (1000 bytes)");
    }
}
