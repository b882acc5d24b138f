//! Page sizes and opaque page tokens (AIP-158).
//!
//! A token is URL-safe base64 of a version tag, the scope it was issued for (the method and the
//! parameters that must not change between pages) and the position (the sort key of the last
//! item returned). Ids never contain control characters, so a NUL byte separates the parts.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::{ApiError, Reason};

/// Page size when the caller sends 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page; larger requests are served this many.
pub const MAX_PAGE_SIZE: usize = 1_000;

const VERSION: &str = "p1";

/// Resolves a requested page size: 0 means the default, above the maximum means the maximum,
/// negative is INVALID_ARGUMENT.
pub fn page_size(requested: i32) -> Result<usize, ApiError> {
    match requested {
        n if n < 0 => Err(ApiError::invalid_field(
            Reason::InvalidPageSize,
            "page_size",
            "must not be negative",
        )),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok(usize::try_from(n)
            .unwrap_or(MAX_PAGE_SIZE)
            .min(MAX_PAGE_SIZE)),
    }
}

/// A decoded page token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageToken {
    pub position: Vec<String>,
}

impl PageToken {
    /// Encodes `position` for `scope`.
    pub fn encode(scope: &str, position: &[&str]) -> String {
        let mut raw = String::from(VERSION);
        raw.push('\0');
        raw.push_str(scope);
        for p in position {
            raw.push('\0');
            raw.push_str(p);
        }
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Decodes a token issued for `scope` with `parts` position fields. An empty token is `None`
    /// (the first page); anything not issued by [`PageToken::encode`] for this scope is
    /// INVALID_ARGUMENT.
    pub fn decode(token: &str, scope: &str, parts: usize) -> Result<Option<PageToken>, ApiError> {
        if token.is_empty() {
            return Ok(None);
        }
        let bad = || {
            ApiError::invalid_field(
                Reason::InvalidPageToken,
                "page_token",
                "is not a page token issued for this request; start again with an empty token",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        let raw = String::from_utf8(bytes).map_err(|_| bad())?;
        let mut fields = raw.split('\0');
        if fields.next() != Some(VERSION) || fields.next() != Some(scope) {
            return Err(bad());
        }
        let position: Vec<String> = fields.map(str::to_owned).collect();
        if position.len() != parts {
            return Err(bad());
        }
        Ok(Some(PageToken { position }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(page_size(0).ok(), Some(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(7).ok(), Some(7));
        assert_eq!(page_size(i32::MAX).ok(), Some(MAX_PAGE_SIZE));
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn tokens_round_trip_and_refuse_garbage() {
        let t = PageToken::encode("customers", &["c42"]);
        let got = PageToken::decode(&t, "customers", 1).ok().flatten();
        assert_eq!(got.map(|p| p.position), Some(vec!["c42".to_owned()]));
        assert!(matches!(PageToken::decode("", "customers", 1), Ok(None)));
        for garbage in [
            "!!!",
            "abc",
            "cDEAY3VzdG9tZXJz",
            &PageToken::encode("events:c1", &["x"]),
        ] {
            assert!(
                PageToken::decode(garbage, "customers", 1).is_err(),
                "{garbage}"
            );
        }
        assert!(PageToken::decode(&t, "customers", 2).is_err());
    }
}
