//! Statuses for requests that fail before a handler sees them.
//!
//! tonic answers request bytes that are not a valid protobuf message with INTERNAL (the prost
//! decode error), and a message over the size limit with OUT_OF_RANGE, both without ErrorInfo.
//! Both are the client's fault and say nothing about the server's health: this layer rewrites
//! them to INVALID_ARGUMENT (reason `UNDECODABLE_REQUEST`) and RESOURCE_EXHAUSTED (reason
//! `MESSAGE_TOO_LARGE`, gRPC's code for a message over the limit), with ErrorInfo like every
//! other Patron status. They arrive as trailers-only responses: the status is in the headers.

use std::collections::HashMap;
use std::task::{Context, Poll};

use tonic::{Code, Status};
use tonic_types::StatusExt;
use tower::{Layer, Service};

use crate::{Reason, error_details};

/// Rewrites tonic's decode and size-limit statuses; see the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct WireErrorLayer;

impl<S> Layer<S> for WireErrorLayer {
    type Service = WireErrors<S>;
    fn layer(&self, inner: S) -> WireErrors<S> {
        WireErrors { inner }
    }
}

/// The service [`WireErrorLayer`] produces.
#[derive(Debug, Clone)]
pub struct WireErrors<S> {
    inner: S,
}

/// The inner call's answer with its headers rewritten: no allocation per call.
type Rewritten<F, R, E> = futures::future::Map<F, fn(Result<R, E>) -> Result<R, E>>;

fn rewritten<RB, E>(result: Result<http::Response<RB>, E>) -> Result<http::Response<RB>, E> {
    result.map(|mut response| {
        rewrite(response.headers_mut());
        response
    })
}

impl<S, B, RB> Service<http::Request<B>> for WireErrors<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Rewritten<S::Future, Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        futures::FutureExt::map(self.inner.call(req), rewritten as fn(_) -> _)
    }
}

/// What tonic and prost say, and what Patron answers instead.
fn replacement(status: &Status) -> Option<Status> {
    let message = status.message();
    let (code, reason, text) = match status.code() {
        Code::Internal
            if message.starts_with("failed to decode Protobuf message")
                || message.starts_with("Unexpected EOF decoding stream")
                || message.starts_with(
                    "protocol error: received message with invalid compression flag",
                ) =>
        {
            (
                Code::InvalidArgument,
                Reason::UndecodableRequest,
                format!(
                    "the request is not a valid protobuf message of the method's request type: {message}"
                ),
            )
        }
        Code::OutOfRange if message.starts_with("Error, decoded message length too large") => (
            Code::ResourceExhausted,
            Reason::MessageTooLarge,
            format!("the request message is over the server's max_message_bytes: {message}"),
        ),
        Code::ResourceExhausted if message.starts_with("Error decompressing: size limit") => (
            Code::ResourceExhausted,
            Reason::MessageTooLarge,
            format!("the request message is over the server's max_message_bytes: {message}"),
        ),
        _ => return None,
    };
    let text = patron_domain::validation::truncate(&text, crate::error::MAX_STATUS_MESSAGE_BYTES);
    Some(Status::with_error_details(
        code,
        text,
        error_details(reason, HashMap::new()),
    ))
}

fn rewrite(headers: &mut http::HeaderMap) {
    if !headers.contains_key("grpc-status") {
        return;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let Some(replaced) = replacement(&status) else {
        return;
    };
    tracing::debug!(was = ?status.code(), now = ?replaced.code(), "bad request bytes");
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    if replaced.add_header(headers).is_err() {
        // Cannot happen with the ASCII text above; keep the original status rather than none.
        let _ = status.add_header(headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(status: Status) -> Status {
        let mut headers = http::HeaderMap::new();
        status.add_header(&mut headers).expect("headers");
        rewrite(&mut headers);
        Status::from_header_map(&headers).expect("a status")
    }

    #[test]
    fn decode_errors_become_invalid_argument_and_size_limits_resource_exhausted() {
        let cases = [
            (
                Status::internal("failed to decode Protobuf message: invalid wire type value: 7"),
                Code::InvalidArgument,
                Some("UNDECODABLE_REQUEST"),
            ),
            (
                Status::out_of_range(
                    "Error, decoded message length too large: found 70000 bytes, the limit is: 65536 bytes",
                ),
                Code::ResourceExhausted,
                Some("MESSAGE_TOO_LARGE"),
            ),
            (
                Status::internal("internal error; nothing was changed"),
                Code::Internal,
                None,
            ),
            (
                Status::out_of_range("a stored total would overflow"),
                Code::OutOfRange,
                None,
            ),
        ];
        for (status, code, reason) in cases {
            let out = rewritten(status);
            assert_eq!(out.code(), code, "{out:?}");
            if let Some(reason) = reason {
                let details = out.get_error_details();
                let info = details.error_info().expect("ErrorInfo");
                assert_eq!(info.reason, reason);
                assert_eq!(info.domain, crate::ERROR_DOMAIN);
            }
        }
    }
}
