//! Per-call trace spans. Each call runs under a `grpc` span (OpenTelemetry name
//! `package.Service/Method`, kind server, attributes `rpc.system`, `rpc.service`, `rpc.method`,
//! and `rpc.grpc.status_code` once the status is known) whose parent is the caller's span when
//! the call carries W3C `traceparent` (and `tracestate`) metadata.
//!
//! The span's `trace_id` field is what log lines show: the OpenTelemetry trace id when an
//! exporter is installed (the caller's, or a new one), else the caller's `traceparent` trace id,
//! else nothing.
//!
//! Without an exporter ([`TraceLayer::new`]`(false)`) nothing reads the OpenTelemetry attributes,
//! yet the log layer would format every one of them into text for every call (about a sixth of
//! GetCustomerValue's throughput at 1,000,000 customers, docs/benchmarks.md). The span is then `grpc{method=…}` with
//! the caller's `trace_id` when the call carries `traceparent`, a DEBUG span without one, and the
//! status is not recorded (no log line follows it).
//!
//! The span stays open until the response body ends (the trailers, for a stream its last
//! message), and is entered while the body is polled, so work done by a stream belongs to it.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::Either;
use http_body::Frame;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TraceId};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::Code;
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Opens a server span per call, child of the caller's `traceparent`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer {
    exporting: bool,
}

impl TraceLayer {
    /// `exporting`: an OpenTelemetry exporter is installed, so spans carry the OpenTelemetry
    /// attributes and status; without one they carry only the method and the caller's trace id.
    pub fn new(exporting: bool) -> Self {
        Self { exporting }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;
    fn layer(&self, inner: S) -> Trace<S> {
        Trace {
            inner,
            exporting: self.exporting,
        }
    }
}

/// The service [`TraceLayer`] produces.
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
    exporting: bool,
}

/// Reads propagation fields from request headers (gRPC metadata).
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// `/pkg.Service/Method` → (`pkg.Service`, `Method`).
fn split_path(path: &str) -> (&str, &str) {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.rsplit_once('/').unwrap_or((path, ""))
}

/// The span of one call without an exporter: the method, and the caller's trace id when the
/// call carries `traceparent`. A call without one gets a DEBUG span (`--log-level
/// info,patron_grpc::trace=debug` shows it in log lines): at INFO it would cost every call a
/// span the log layer formats, to be read only if the call logs something.
fn log_span(req: &http::Request<impl Sized>) -> Span {
    let path = req.uri().path();
    let method = path.strip_prefix('/').unwrap_or(path);
    if !req.headers().contains_key("traceparent") {
        return tracing::debug_span!("grpc", method);
    }
    let span = tracing::info_span!("grpc", method, trace_id = Empty);
    if span.is_disabled() {
        return span;
    }
    let caller = TraceContextPropagator::new()
        .extract(&Headers(req.headers()))
        .span()
        .span_context()
        .trace_id();
    if caller != TraceId::INVALID {
        span.record("trace_id", tracing::field::display(caller));
    }
    span
}

/// The span of one call for an exporter, its parent taken from the request's metadata.
fn call_span(req: &http::Request<impl Sized>) -> Span {
    let path = req.uri().path();
    let (service, method) = split_path(path);
    let span = tracing::info_span!(
        "grpc",
        otel.name = path.strip_prefix('/').unwrap_or(path),
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        trace_id = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
    let caller = parent.span().span_context().trace_id();
    if caller != TraceId::INVALID {
        // Fails only when no OpenTelemetry layer is installed: the span has no OTel side then.
        let _ = span.set_parent(parent);
    }
    let own = span.context().span().span_context().trace_id();
    let trace_id = if own != TraceId::INVALID { own } else { caller };
    if trace_id != TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
    span
}

fn status_code(headers: &http::HeaderMap) -> Option<Code> {
    let n: i32 = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    Some(Code::from_i32(n))
}

/// Records the status on the span; server errors (by the semantic conventions) mark it failed.
fn record_status(span: &Span, code: Code) {
    span.record("rpc.grpc.status_code", code as i64);
    if matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    ) {
        span.record("otel.status_code", "ERROR");
    }
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

impl<S, B> Service<http::Request<B>> for Trace<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    /// The inner call's own future when the span is off (a call without `traceparent` at the
    /// default INFO level): no allocation, no wrapped body.
    type Future = Either<S::Future, BoxFuture<Result<Self::Response, Self::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let exporting = self.exporting;
        let span = if exporting {
            call_span(&req)
        } else {
            log_span(&req)
        };
        if span.is_disabled() {
            return Either::Left(self.inner.call(req));
        }
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Either::Right(Box::pin(async move {
            let response = tracing::Instrument::instrument(fut, span.clone()).await?;
            if let Some(code) = status_code(response.headers()) {
                // Trailers-only: the answer is complete.
                if exporting {
                    record_status(&span, code);
                }
                return Ok(response);
            }
            Ok(response.map(|inner| {
                Body::new(Traced {
                    inner,
                    span,
                    exporting,
                })
            }))
        }))
    }
}

/// A response body that runs under the call's span and records the status from the trailers.
struct Traced {
    inner: Body,
    span: Span,
    exporting: bool,
}

impl http_body::Body for Traced {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = {
            let _entered = this.span.enter();
            Pin::new(&mut this.inner).poll_frame(cx)
        };
        if this.exporting
            && let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(trailers) = frame.trailers_ref()
            && let Some(code) = status_code(trailers)
        {
            record_status(&this.span, code);
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

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/patron.customers.v1.CustomerService/GetCustomer"),
            ("patron.customers.v1.CustomerService", "GetCustomer")
        );
        assert_eq!(split_path("/nomethod"), ("nomethod", ""));
    }

    #[test]
    fn the_callers_trace_id_is_read_from_traceparent() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        let cx = TraceContextPropagator::new().extract(&Headers(&headers));
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let none = TraceContextPropagator::new().extract(&Headers(&http::HeaderMap::new()));
        assert_eq!(none.span().span_context().trace_id(), TraceId::INVALID);
    }

    /// At INFO without an exporter, a call without `traceparent` gets no span (nothing to format
    /// per call); one with it gets a span carrying the caller's trace id.
    #[test]
    fn only_traced_calls_get_an_info_span_without_an_exporter() {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let plain = http::Request::builder()
                .uri("/patron.scoring.v1.ScoringService/GetCustomerValue")
                .body(())
                .expect("request");
            assert!(log_span(&plain).is_disabled());
            let traced = http::Request::builder()
                .uri("/patron.scoring.v1.ScoringService/GetCustomerValue")
                .header(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )
                .body(())
                .expect("request");
            let span = log_span(&traced);
            assert!(!span.is_disabled());
            assert_eq!(
                span.metadata().map(|m| *m.level()),
                Some(tracing::Level::INFO)
            );
            // With an exporter every call is spanned, traced or not.
            assert!(!call_span(&plain).is_disabled());
        });
    }
}
