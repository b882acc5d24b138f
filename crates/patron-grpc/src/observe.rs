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
use std::sync::{Arc, OnceLock};
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
    methods: HashMap<String, Arc<Method>>,
    /// Every path not served.
    unknown: Arc<Method>,
}

/// One path's metric handles, each taken from the recorder at its first use: registering a
/// labelled metric builds its key and looks it up in the recorder's registry, too dear for
/// every call.
#[derive(Debug)]
struct Method {
    /// The path, leaked once so labels are `&'static str`.
    label: &'static str,
    kind: &'static str,
    /// `patron_grpc_calls_open` of the path's kind (shared by the paths of that kind).
    open: Arc<OnceLock<metrics::Gauge>>,
    duration: OnceLock<metrics::Histogram>,
    /// `patron_grpc_requests_total` by status code (`Code as i32`, 0 to 16).
    finished: [OnceLock<metrics::Counter>; 17],
}

impl Method {
    fn new(label: &'static str, stream: bool, open: [&Arc<OnceLock<metrics::Gauge>>; 2]) -> Self {
        Self {
            label,
            kind: if stream { "stream" } else { "unary" },
            open: Arc::clone(open[usize::from(stream)]),
            duration: OnceLock::new(),
            finished: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    fn open(&self) -> &metrics::Gauge {
        self.open
            .get_or_init(|| metrics::gauge!("patron_grpc_calls_open", "kind" => self.kind))
    }
}

impl ObserveLayer {
    /// `methods`: every path served; `streaming`: the streaming ones among them; `enabled`: a
    /// metrics recorder is installed (`--metrics-listen`).
    pub fn new(
        methods: impl IntoIterator<Item = String>,
        streaming: HashSet<String>,
        enabled: bool,
    ) -> Self {
        let open = [Arc::default(), Arc::default()];
        let methods = methods
            .into_iter()
            .map(|m| {
                let label: &'static str = Box::leak(m.clone().into_boxed_str());
                let method = Method::new(label, streaming.contains(&m), [&open[0], &open[1]]);
                (m, Arc::new(method))
            })
            .collect();
        Self {
            shared: Arc::new(Shared {
                enabled,
                methods,
                unknown: Arc::new(Method::new("unknown", false, [&open[0], &open[1]])),
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
    method: Arc<Method>,
    started: Instant,
    code: Option<Code>,
}

impl Watch {
    fn new(method: Arc<Method>) -> Self {
        method.open().increment(1.0);
        Self {
            method,
            started: Instant::now(),
            code: None,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let m = &*self.method;
        m.open().decrement(1.0);
        let code = self.code.unwrap_or(Code::Cancelled);
        if let Some(slot) = m.finished.get(code as i32 as usize) {
            slot.get_or_init(|| {
                metrics::counter!("patron_grpc_requests_total", "method" => m.label, "code" => code_name(code))
            })
            .increment(1);
        }
        m.duration
            .get_or_init(
                || metrics::histogram!("patron_grpc_request_duration_seconds", "method" => m.label),
            )
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
        let method = self.shared.methods.get(req.uri().path());
        let mut watch = Watch::new(Arc::clone(method.unwrap_or(&self.shared.unknown)));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every status code has its own counter slot.
    #[test]
    fn every_code_has_its_own_slot() {
        let method = Method::new("m", false, [&Arc::default(), &Arc::default()]);
        let mut seen = HashSet::new();
        for n in 0..=16 {
            let code = Code::from_i32(n);
            let slot = code as i32 as usize;
            assert!(method.finished.get(slot).is_some(), "{code:?} has no slot");
            assert!(seen.insert(slot), "{code:?} shares slot {slot}");
            assert!(!code_name(code).is_empty());
        }
        assert_eq!(seen.len(), method.finished.len());
    }
}
