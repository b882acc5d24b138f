//! Consistency tokens: `v1.<database id>.<position>`, opaque to clients.
//!
//! A write's response carries the token of the feed position its commit reached; a read that
//! passes it (metadata key [`METADATA_KEY`]) is answered once the replica has applied that
//! position. The database id makes a token from another deployment an error rather than a
//! silent no-op or an endless wait.

/// The request and response metadata key that carries a token.
pub const METADATA_KEY: &str = "patron-consistency-token";

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token Patron made.
    Malformed,
    /// A token of another database (deployment).
    Foreign,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Malformed => f.write_str(
                "is not a consistency token; pass the patron-consistency-token of a response unchanged",
            ),
            TokenError::Foreign => f.write_str(
                "was issued by another Patron deployment (another database); it means nothing here",
            ),
        }
    }
}

/// The token of `position` in the database `database_id`.
pub fn encode(database_id: &str, position: i64) -> String {
    format!("v1.{database_id}.{position}")
}

/// The position a token names, if it is well formed and of the database `database_id`.
pub fn decode(token: &str, database_id: &str) -> Result<i64, TokenError> {
    let mut parts = token.split('.');
    let (Some("v1"), Some(db), Some(pos), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    if db.is_empty() || db.len() > 64 || !db.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(TokenError::Malformed);
    }
    if pos.is_empty() || pos.len() > 19 || !pos.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed);
    }
    let position: i64 = pos.parse().map_err(|_| TokenError::Malformed)?;
    if db != database_id {
        return Err(TokenError::Foreign);
    }
    Ok(position)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = encode("abc123", 42);
        assert_eq!(decode(&t, "abc123"), Ok(42));
        assert_eq!(decode(&encode("abc123", 0), "abc123"), Ok(0));
    }

    #[test]
    fn malformed_and_foreign_tokens_are_refused() {
        for bad in [
            "",
            "42",
            "v1.abc123",
            "v1.abc123.",
            "v1..42",
            "v2.abc123.42",
            "v1.abc123.42.1",
            "v1.abc123.-1",
            "v1.abc123.99999999999999999999",
            "v1.abc 123.4",
            "v1.abc123.4x",
        ] {
            assert_eq!(decode(bad, "abc123"), Err(TokenError::Malformed), "{bad:?}");
        }
        assert_eq!(decode("v1.other.42", "abc123"), Err(TokenError::Foreign));
    }
}
