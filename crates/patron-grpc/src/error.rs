//! One error type for handlers and one function from it to [`tonic::Status`].
//!
//! Every status carries `google.rpc.ErrorInfo` (domain [`ERROR_DOMAIN`], a stable reason such as
//! `INVALID_FIELD`). Validation errors also carry `google.rpc.BadRequest` with one violation per
//! bad field. Internal causes are logged with their detail; the client gets a clean message.
//!
//! A status travels in HTTP/2 headers (`grpc-message`, and `grpc-status-details-bin`, which
//! repeats the message), and standard clients drop a reply whose metadata passes 8 KB
//! (grpc-core's default). Values the client sent are quoted short where the message is written
//! ([`patron_domain::quote`]); as a backstop, the conversion to [`Status`] caps the message, each
//! violation and the sum of the violations, so any error reaches the client whole.

use std::collections::HashMap;

use patron_domain::validation::truncate;
use patron_domain::{FieldViolation, Violations, quote};
use patron_store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every Patron error.
pub const ERROR_DOMAIN: &str = "patron.dev";

/// The `ErrorInfo.reason` of every Patron error, whether a handler's or one a layer builds before
/// a handler runs (authentication, admission, undecodable requests, consistency). The strings
/// are part of the API: clients match on them, so a variant's string never changes. Every
/// `ErrorInfo` is built by [`error_details`], which takes a `Reason`: no reason is written as a
/// string anywhere else (`tests/tidy.rs` checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A request field is invalid (the default of validation errors).
    InvalidField,
    /// A batch request names nothing.
    EmptyBatch,
    /// A batch request names more than its limit.
    BatchTooLarge,
    /// `page_size` is negative.
    InvalidPageSize,
    /// A page token is not one this server issued for this request.
    InvalidPageToken,
    /// A segment rule does not parse or type-check.
    InvalidRule,
    /// A segment rule is over its size limit.
    RuleTooLarge,
    /// Segments would depend on each other in a circle.
    SegmentCycle,
    /// The consistency-token metadata does not parse.
    InvalidConsistencyToken,
    CustomerNotFound,
    ProgramNotFound,
    RewardNotFound,
    MemberNotFound,
    RedemptionNotFound,
    ModelNotFound,
    SegmentNotFound,
    NotEnrolled,
    NotEligible,
    NotInTargetSegment,
    RequestIdReused,
    InsufficientPoints,
    AsOfBeforeFirstEvent,
    NotEnoughData,
    FitFailed,
    SegmentInUse,
    BuiltInSegment,
    /// The call ran out of time.
    DeadlineExceeded,
    /// A failure that is not the caller's; the detail is in the server log.
    Internal,
    /// A named record the caller creates exists already.
    AlreadyExists,
    /// The database is unreachable (with RetryInfo).
    StorageUnavailable,
    /// A concurrent transaction conflicted.
    StorageConflict,
    /// The stored revision is not the one the caller expected.
    RevisionMismatch,
    /// A stored total would overflow.
    TotalOverflow,
    /// No valid credentials (`auth.rs`).
    Unauthenticated,
    /// The principal lacks the method's scope (`auth.rs`).
    MissingScope,
    /// The request bytes do not decode (`wire.rs`).
    UndecodableRequest,
    /// The request message is over the size limit (`wire.rs`).
    MessageTooLarge,
    /// Too many streams open (`admission.rs`).
    TooManyStreams,
    /// Too many calls in flight (`admission.rs`).
    TooManyCalls,
    /// This replica has not yet applied the position a consistency token names (`patron-feed`).
    ConsistencyTokenNotReached,
    /// Used by tests of the error mapping.
    #[cfg(test)]
    Test,
}

impl Reason {
    /// The wire string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidField => "INVALID_FIELD",
            Reason::EmptyBatch => "EMPTY_BATCH",
            Reason::BatchTooLarge => "BATCH_TOO_LARGE",
            Reason::InvalidPageSize => "INVALID_PAGE_SIZE",
            Reason::InvalidPageToken => "INVALID_PAGE_TOKEN",
            Reason::InvalidRule => "INVALID_RULE",
            Reason::RuleTooLarge => "RULE_TOO_LARGE",
            Reason::SegmentCycle => "SEGMENT_CYCLE",
            Reason::InvalidConsistencyToken => "INVALID_CONSISTENCY_TOKEN",
            Reason::CustomerNotFound => "CUSTOMER_NOT_FOUND",
            Reason::ProgramNotFound => "PROGRAM_NOT_FOUND",
            Reason::RewardNotFound => "REWARD_NOT_FOUND",
            Reason::MemberNotFound => "MEMBER_NOT_FOUND",
            Reason::RedemptionNotFound => "REDEMPTION_NOT_FOUND",
            Reason::ModelNotFound => "MODEL_NOT_FOUND",
            Reason::SegmentNotFound => "SEGMENT_NOT_FOUND",
            Reason::NotEnrolled => "NOT_ENROLLED",
            Reason::NotEligible => "NOT_ELIGIBLE",
            Reason::NotInTargetSegment => "NOT_IN_TARGET_SEGMENT",
            Reason::RequestIdReused => "REQUEST_ID_REUSED",
            Reason::InsufficientPoints => "INSUFFICIENT_POINTS",
            Reason::AsOfBeforeFirstEvent => "AS_OF_BEFORE_FIRST_EVENT",
            Reason::NotEnoughData => "NOT_ENOUGH_DATA",
            Reason::FitFailed => "FIT_FAILED",
            Reason::SegmentInUse => "SEGMENT_IN_USE",
            Reason::BuiltInSegment => "BUILT_IN_SEGMENT",
            Reason::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Reason::Internal => "INTERNAL",
            Reason::AlreadyExists => "ALREADY_EXISTS",
            Reason::StorageUnavailable => "STORAGE_UNAVAILABLE",
            Reason::StorageConflict => "STORAGE_CONFLICT",
            Reason::RevisionMismatch => "REVISION_MISMATCH",
            Reason::TotalOverflow => "TOTAL_OVERFLOW",
            Reason::Unauthenticated => "UNAUTHENTICATED",
            Reason::MissingScope => "MISSING_SCOPE",
            Reason::UndecodableRequest => "UNDECODABLE_REQUEST",
            Reason::MessageTooLarge => "MESSAGE_TOO_LARGE",
            Reason::TooManyStreams => "TOO_MANY_STREAMS",
            Reason::TooManyCalls => "TOO_MANY_CALLS",
            Reason::ConsistencyTokenNotReached => "CONSISTENCY_TOKEN_NOT_REACHED",
            #[cfg(test)]
            Reason::Test => "X",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a handler can fail with.
#[derive(Debug)]
pub enum ApiError {
    /// Bad request fields. Reason `INVALID_FIELD` unless more specific (e.g. `BATCH_TOO_LARGE`).
    InvalidArgument {
        reason: Reason,
        message: String,
        violations: Vec<FieldViolation>,
    },
    /// A named resource does not exist. Reason e.g. `CUSTOMER_NOT_FOUND`.
    NotFound {
        reason: Reason,
        resource: &'static str,
        id: String,
    },
    /// The request is valid but the system is not in a state to run it.
    FailedPrecondition { reason: Reason, message: String },
    /// Like `FailedPrecondition`, with ErrorInfo metadata (e.g. the unmet conditions of a
    /// redemption).
    Refused {
        reason: Reason,
        message: String,
        metadata: Vec<(String, String)>,
    },
    /// The call ran out of time.
    DeadlineExceeded,
    /// A storage failure.
    Store(StoreError),
    /// A failure that is neither the caller's nor storage's: stored data that does not parse, an
    /// encoder that failed, a task that panicked, a broken invariant. The detail is logged; the
    /// client gets INTERNAL with a clean message.
    Internal(String),
    /// The caller's request stream broke (a client-streaming call): its status is passed on as
    /// tonic reported it.
    RequestStream(Status),
}

/// Handlers return this.
pub type ApiResult<T> = Result<T, ApiError>;

/// The edge between a handler and tonic: every service trait method is one line,
/// `self.method(request).await.respond()`, so a handler's error becomes a [`Status`] in exactly
/// one place (`From<ApiError> for Status`, below).
pub trait Respond<T> {
    fn respond(self) -> Result<tonic::Response<T>, Status>;
}

impl<T> Respond<T> for ApiResult<T> {
    fn respond(self) -> Result<tonic::Response<T>, Status> {
        self.map(tonic::Response::new).map_err(Status::from)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::InvalidArgument { message, .. } => f.write_str(message),
            ApiError::NotFound { resource, id, .. } => {
                write!(f, "{resource} {} not found", quote(id))
            }
            ApiError::FailedPrecondition { message, .. } => f.write_str(message),
            ApiError::Refused { message, .. } => f.write_str(message),
            ApiError::DeadlineExceeded => f.write_str("deadline exceeded"),
            ApiError::Store(e) => write!(f, "{e}"),
            ApiError::Internal(detail) => write!(f, "internal error: {detail}"),
            ApiError::RequestStream(status) => f.write_str(status.message()),
        }
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// A validation failure naming every bad field.
    pub fn invalid(violations: Violations) -> Self {
        Self::invalid_with_reason(Reason::InvalidField, violations)
    }

    /// A validation failure with a specific reason.
    pub fn invalid_with_reason(reason: Reason, violations: Violations) -> Self {
        let violations = violations.into_vec();
        let message = match violations.as_slice() {
            [] => "invalid request".to_owned(),
            [one] => format!("invalid request: {one}"),
            [first, rest] => format!("invalid request: {first} (and {rest})"),
            [first, rest @ ..] => {
                format!(
                    "invalid request: {first} (and {} more field violations)",
                    rest.len()
                )
            }
        };
        Self::InvalidArgument {
            reason,
            message,
            violations,
        }
    }

    /// One bad field.
    pub fn invalid_field(
        reason: Reason,
        field: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        let mut v = Violations::new();
        v.add(field, description);
        Self::invalid_with_reason(reason, v)
    }

    /// A required request field is missing.
    pub fn required(field: &str) -> Self {
        Self::invalid_field(Reason::InvalidField, field, "is required")
    }

    /// An internal failure; `detail` goes to the log only.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::Internal(detail.into())
    }

    pub fn not_found(reason: Reason, resource: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            reason,
            resource,
            id: id.into(),
        }
    }
}

/// Checks the id of a resource named by the caller (segments, programs, rewards): 1–63
/// characters, lower-case letters, digits and '-', starting with a letter.
pub fn check_resource_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 63 {
        return Err("must be 1 to 63 characters".into());
    }
    if !id.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("must start with a lower-case letter".into());
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("may hold only lower-case letters, digits and '-'".into());
    }
    Ok(())
}

/// Parses a customer id from the request field `field`; INVALID_ARGUMENT naming it otherwise.
pub fn parse_customer_id(s: &str, field: &str) -> ApiResult<patron_domain::CustomerId> {
    patron_domain::CustomerId::parse(s)
        .map_err(|e| ApiError::invalid_field(Reason::InvalidField, field, e.to_string()))
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Store(e)
    }
}

impl From<Violations> for ApiError {
    fn from(v: Violations) -> Self {
        ApiError::invalid(v)
    }
}

/// Error details holding the `ErrorInfo` of `reason` (domain [`ERROR_DOMAIN`]): the one place an
/// `ErrorInfo` is made.
pub fn error_details(reason: Reason, metadata: HashMap<String, String>) -> ErrorDetails {
    ErrorDetails::with_error_info(reason.as_str(), ERROR_DOMAIN, metadata)
}

fn info(reason: Reason, metadata: HashMap<String, String>) -> ErrorDetails {
    error_details(reason, metadata)
}

/// At most this many bytes of a status message (it is sent twice: `grpc-message` and inside
/// `grpc-status-details-bin`).
pub const MAX_STATUS_MESSAGE_BYTES: usize = 512;
/// At most this many bytes of one violation's field path, and of its description.
const MAX_VIOLATION_PART_BYTES: usize = 256;
/// At most this many bytes of field paths and descriptions in one BadRequest; the violations
/// past it are counted in ErrorInfo metadata `omitted_violations` instead of listed.
pub const MAX_BAD_REQUEST_BYTES: usize = 3 * 1024;

fn capped(text: String, max: usize) -> String {
    match truncate(&text, max) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(cut) => cut,
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let message = capped(e.to_string(), MAX_STATUS_MESSAGE_BYTES);
        match e {
            ApiError::InvalidArgument {
                reason, violations, ..
            } => {
                let mut listed = Vec::with_capacity(violations.len().min(64));
                let mut bytes = 0;
                let mut omitted = 0usize;
                for v in violations {
                    let field = capped(v.field, MAX_VIOLATION_PART_BYTES);
                    let description = capped(v.description, MAX_VIOLATION_PART_BYTES);
                    let size = field.len() + description.len();
                    if omitted > 0 || bytes + size > MAX_BAD_REQUEST_BYTES {
                        omitted += 1;
                    } else {
                        bytes += size;
                        listed.push((field, description));
                    }
                }
                let mut meta = HashMap::new();
                if omitted > 0 {
                    meta.insert("omitted_violations".to_owned(), omitted.to_string());
                }
                let mut details = info(reason, meta);
                for (field, description) in listed {
                    details.add_bad_request_violation(field, description);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::NotFound {
                reason,
                resource,
                id,
            } => {
                let meta = HashMap::from([
                    ("resource".to_owned(), resource.to_owned()),
                    ("id".to_owned(), capped(id, MAX_VIOLATION_PART_BYTES)),
                ]);
                Status::with_error_details(Code::NotFound, message, info(reason, meta))
            }
            ApiError::FailedPrecondition { reason, .. } => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                info(reason, HashMap::new()),
            ),
            ApiError::Refused {
                reason, metadata, ..
            } => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                info(
                    reason,
                    metadata
                        .into_iter()
                        .map(|(k, v)| (k, capped(v, MAX_VIOLATION_PART_BYTES)))
                        .collect(),
                ),
            ),
            ApiError::DeadlineExceeded => Status::with_error_details(
                Code::DeadlineExceeded,
                message,
                info(Reason::DeadlineExceeded, HashMap::new()),
            ),
            ApiError::Store(err) => store_status(&err),
            ApiError::RequestStream(status) => status,
            ApiError::Internal(detail) => {
                // The detail may name stored values or code paths: the log has it, not the client.
                tracing::error!(error = %detail, "internal error");
                Status::with_error_details(
                    Code::Internal,
                    INTERNAL_MESSAGE,
                    info(Reason::Internal, HashMap::new()),
                )
            }
        }
    }
}

/// The message of every INTERNAL status.
const INTERNAL_MESSAGE: &str = "internal error; see the server log";

fn store_status(err: &StoreError) -> Status {
    // Errors about the caller's own named records say which ones.
    let named = match err {
        StoreError::AlreadyExists(_) => Some((Code::AlreadyExists, Reason::AlreadyExists)),
        StoreError::SegmentCycle(_) => Some((Code::InvalidArgument, Reason::SegmentCycle)),
        StoreError::MissingDependency(_) => {
            Some((Code::FailedPrecondition, Reason::SegmentNotFound))
        }
        StoreError::InUse(_) => Some((Code::FailedPrecondition, Reason::SegmentInUse)),
        _ => None,
    };
    if let Some((code, reason)) = named {
        tracing::info!(error = %err, "refused write");
        let message = capped(err.to_string(), MAX_STATUS_MESSAGE_BYTES);
        return Status::with_error_details(code, message, info(reason, HashMap::new()));
    }
    let (code, reason, client_message) = match err {
        StoreError::Unavailable(_) => (
            Code::Unavailable,
            Reason::StorageUnavailable,
            "storage is unavailable; retry later",
        ),
        StoreError::Conflict(_) => (
            Code::Aborted,
            Reason::StorageConflict,
            "a concurrent change conflicted; retry the call",
        ),
        StoreError::PreconditionFailed(_) => (
            Code::FailedPrecondition,
            Reason::RevisionMismatch,
            "the stored revision is not the expected one; read it again and retry",
        ),
        StoreError::Overflow(_) => (
            Code::OutOfRange,
            Reason::TotalOverflow,
            "a stored total would overflow 64-bit integers; nothing was changed",
        ),
        StoreError::Internal(_)
        | StoreError::AlreadyExists(_)
        | StoreError::SegmentCycle(_)
        | StoreError::MissingDependency(_)
        | StoreError::InUse(_) => (
            Code::Internal,
            Reason::Internal,
            "internal error; nothing was changed",
        ),
    };
    // The cause may name tables or values: it goes to the log, not to the client.
    if code == Code::Internal {
        tracing::error!(error = %err, "storage failure");
    } else {
        tracing::warn!(error = %err, "storage error");
    }
    let mut details = info(reason, HashMap::new());
    if code == Code::Unavailable {
        // The health check turns SERVING again within a second or two of the database coming
        // back; a client retrying after this delay, with backoff, finds it.
        details.set_retry_info(Some(STORAGE_RETRY_DELAY));
    }
    Status::with_error_details(code, client_message, details)
}

/// The `RetryInfo` delay on UNAVAILABLE because the database is unreachable.
pub const STORAGE_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_carries_error_info() {
        let mut v = Violations::new();
        v.add(
            "events[3].purchase.amount.minor_units",
            "must not be negative",
        );
        v.add("events[4].customer_id", "must not be empty");
        let cases: Vec<(ApiError, Code, &str)> = vec![
            (ApiError::invalid(v), Code::InvalidArgument, "INVALID_FIELD"),
            (
                ApiError::not_found(Reason::CustomerNotFound, "customer", "c1"),
                Code::NotFound,
                "CUSTOMER_NOT_FOUND",
            ),
            (
                StoreError::Unavailable("x".into()).into(),
                Code::Unavailable,
                "STORAGE_UNAVAILABLE",
            ),
            (
                StoreError::Conflict("x".into()).into(),
                Code::Aborted,
                "STORAGE_CONFLICT",
            ),
            (
                StoreError::PreconditionFailed("x".into()).into(),
                Code::FailedPrecondition,
                "REVISION_MISMATCH",
            ),
            (
                StoreError::Overflow("x".into()).into(),
                Code::OutOfRange,
                "TOTAL_OVERFLOW",
            ),
            (
                StoreError::Internal("secret table".into()).into(),
                Code::Internal,
                "INTERNAL",
            ),
            (
                ApiError::DeadlineExceeded,
                Code::DeadlineExceeded,
                "DEADLINE_EXCEEDED",
            ),
        ];
        for (err, code, reason) in cases {
            let status = Status::from(err);
            assert_eq!(status.code(), code);
            let details = status.get_error_details();
            let info = details.error_info().expect("ErrorInfo on every status");
            assert_eq!(info.reason, reason);
            assert_eq!(info.domain, ERROR_DOMAIN);
            assert!(!status.message().contains("secret"));
            if code == Code::InvalidArgument {
                let bad = details
                    .bad_request()
                    .expect("BadRequest on validation errors");
                assert_eq!(bad.field_violations.len(), 2);
                assert_eq!(
                    bad.field_violations[0].field,
                    "events[3].purchase.amount.minor_units"
                );
                assert!(
                    status
                        .message()
                        .contains("(and events[4].customer_id: must not be empty)")
                );
            }
        }
    }

    /// A `MakeWriter` that keeps what the log wrote.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }

    #[test]
    fn internal_details_reach_the_log_and_never_the_client() {
        let secret =
            "stored program p1: expected value at line 1 column 7 (table loyalty_programs)";
        for err in [
            ApiError::internal(secret),
            ApiError::Store(StoreError::Internal(secret.into())),
        ] {
            let log = Captured::default();
            let writer = log.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish();
            let status = tracing::subscriber::with_default(subscriber, || Status::from(err));
            assert_eq!(status.code(), Code::Internal);
            assert!(status.message().starts_with("internal error"));
            for part in ["p1", "loyalty_programs", "column"] {
                assert!(!status.message().contains(part), "{status:?}");
                assert!(
                    !String::from_utf8_lossy(status.details()).contains(part),
                    "{status:?}"
                );
            }
            let details = status.get_error_details();
            let info = details.error_info().expect("ErrorInfo");
            assert_eq!(info.reason, "INTERNAL");
            assert!(info.metadata.is_empty());
            assert!(log.text().contains(secret), "logged: {}", log.text());
        }
    }

    /// The bytes a status puts in HTTP/2 headers: `grpc-message` and `grpc-status-details-bin`.
    fn header_bytes(status: &Status) -> usize {
        let mut headers = http::HeaderMap::new();
        status.add_header(&mut headers).expect("valid headers");
        headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum()
    }

    #[test]
    fn huge_values_and_many_violations_still_fit_in_a_reply() {
        let huge = "x".repeat(100_000);
        let mut v = Violations::new();
        v.add(format!("attributes[{huge:?}]"), huge.clone());
        for i in 0..10_000 {
            v.add(format!("events[{i}].customer_id"), "must not be empty");
        }
        let status = Status::from(ApiError::invalid(v));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().len() <= MAX_STATUS_MESSAGE_BYTES + 32);
        assert!(
            header_bytes(&status) < 6 * 1024,
            "{}",
            header_bytes(&status)
        );
        let details = status.get_error_details();
        let bad = details.bad_request().expect("BadRequest");
        assert!(bad.field_violations[0].field.ends_with("(100014 bytes)"));
        assert_eq!(bad.field_violations[1].field, "events[0].customer_id");
        let info = details.error_info().expect("ErrorInfo");
        let omitted: usize = info.metadata["omitted_violations"]
            .parse()
            .expect("a count");
        assert_eq!(omitted + bad.field_violations.len(), 10_001);

        for err in [
            ApiError::not_found(Reason::CustomerNotFound, "customer", huge.clone()),
            ApiError::FailedPrecondition {
                reason: Reason::Test,
                message: huge.clone(),
            },
            ApiError::Refused {
                reason: Reason::Test,
                message: huge.clone(),
                metadata: vec![("why".into(), huge.clone())],
            },
            StoreError::AlreadyExists(huge.clone()).into(),
        ] {
            let status = Status::from(err);
            assert!(header_bytes(&status) < 4 * 1024, "{status:?}");
        }
    }
}
