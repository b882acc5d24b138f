//! Per-call metrics: a count by method and status code, a latency histogram by method, and the
//! calls open now. Recorded through the `metrics` facade: without an installed recorder (no
//! `--metrics-listen`) every record is a no-op.
//!
//! - `patron_grpc_requests_total{method, code}`: calls finished, by gRPC status code name;
//! - `patron_grpc_request_duration_seconds{method}`: from the call's arrival to its last byte
//!   (for a stream, its whole life);
//! - `patron_grpc_calls_open{kind="unary"|"stream"}`: calls open now.
//!
//! The status is read where the server puts it: the response headers of a trailers-only answer
//! (refusals, most errors), else the trailers at the end of the body. A body dropped before its
//! trailers (the client went away) counts as `CANCELLED`. Unknown paths are labelled `unknown`,
//! so a scanner cannot grow the label set.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::Either;
use http_body::Frame;
use tonic::Code;
use tonic::body::Body;
use tower::{Layer, Service};

/// Records call metrics for the methods it is told about.
#[derive(Debug, Clone)]
pub struct ObserveLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// A recorder is installed: without one every record is a no-op, and the calls are passed
    /// through untouched (no clock reads, no wrapped body).
    enabled: bool,
    /// Known paths, leaked once so labels are `&'static str`.
    methods: HashMap<String, &'static str>,
    streaming: HashSet<String>,
}

impl ObserveLayer {
    /// `methods`: every path served; `streaming`: the streaming ones among them; `enabled`: a
    /// metrics recorder is installed (`--metrics-listen`).
    pub fn new(
        methods: impl IntoIterator<Item = String>,
        streaming: HashSet<String>,
        enabled: bool,
    ) -> Self {
        let methods = methods
            .into_iter()
            .map(|m| {
                let label: &'static str = Box::leak(m.clone().into_boxed_str());
                (m, label)
            })
            .collect();
        Self {
            shared: Arc::new(Shared {
                enabled,
                methods,
                streaming,
            }),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service [`ObserveLayer`] produces.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// The name Prometheus users know a code by (`OK`, `INVALID_ARGUMENT`, …).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn status_code(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?;
    let n: i32 = value.to_str().ok()?.parse().ok()?;
    Some(Code::from_i32(n))
}

/// One call being watched; records when dropped.
#[derive(Debug)]
struct Watch {
    method: &'static str,
    kind: &'static str,
    started: Instant,
    code: Option<Code>,
}

impl Watch {
    fn new(method: &'static str, stream: bool) -> Self {
        let kind = if stream { "stream" } else { "unary" };
        metrics::gauge!("patron_grpc_calls_open", "kind" => kind).increment(1.0);
        Self {
            method,
            kind,
            started: Instant::now(),
            code: None,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        metrics::gauge!("patron_grpc_calls_open", "kind" => self.kind).decrement(1.0);
        let code = code_name(self.code.unwrap_or(Code::Cancelled));
        metrics::counter!("patron_grpc_requests_total", "method" => self.method, "code" => code)
            .increment(1);
        metrics::histogram!("patron_grpc_request_duration_seconds", "method" => self.method)
            .record(self.started.elapsed().as_secs_f64());
    }
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

impl<S, B> Service<http::Request<B>> for Observe<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    /// The inner call's own future when metrics are off.
    type Future = Either<S::Future, BoxFuture<Result<Self::Response, Self::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if !self.shared.enabled {
            return Either::Left(self.inner.call(req));
        }
        let path = req.uri().path();
        let method = self.shared.methods.get(path).copied().unwrap_or("unknown");
        let mut watch = Watch::new(method, self.shared.streaming.contains(path));
        let fut = self.inner.call(req);
        Either::Right(Box::pin(async move {
            let response = fut.await?;
            if let Some(code) = status_code(response.headers()) {
                // Trailers-only: the answer is complete.
                watch.code = Some(code);
                drop(watch);
                return Ok(response);
            }
            Ok(response.map(|inner| Body::new(Watched { inner, watch })))
        }))
    }
}

/// A response body that reads the status from the trailers and records the call when done.
struct Watched {
    inner: Body,
    watch: Watch,
}

impl http_body::Body for Watched {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
            && let Some(code) = status_code(trailers)
        {
            self.watch.code = Some(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
