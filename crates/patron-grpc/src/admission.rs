//! Admission control: bounded calls in flight and open streams, server-wide and per connection.
//!
//! A call that finds its limit full is answered at once with `RESOURCE_EXHAUSTED`, an `ErrorInfo`
//! (reason `TOO_MANY_CALLS` or `TOO_MANY_STREAMS`, metadata `scope` = `server` or `connection`
//! and `limit`) and a `RetryInfo` delay; it is never queued. Under overload the server therefore
//! keeps answering the calls it admitted at full speed instead of letting every call wait, and a
//! client learns at once to back off or to try another replica.
//!
//! A call holds its place until its response body has been sent or dropped, so a server stream
//! holds its place for as long as it is open. Health checks and reflection are never refused:
//! probes must see an overloaded server as alive.
//!
//! A connection's own counts live on the connection: its [`ConnectionPeer`] (the transport's
//! `ConnectInfo`, copied into every request) carries [`ConnectionSlots`], so admitting a call
//! touches two atomic counters and no shared map. A request that comes without a
//! `ConnectionPeer` is held to the server-wide limits only.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::Frame;
use tonic::body::Body;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use tower::{Layer, Service};

use crate::auth::ConnectionPeer;
use crate::{Reason, error_details};

/// How many calls may run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Unary calls in flight, server-wide.
    pub max_in_flight: usize,
    /// Unary calls in flight on one connection.
    pub max_in_flight_per_connection: usize,
    /// Open streaming calls (server, client or bidirectional streams), server-wide.
    pub max_streams: usize,
    /// Open streaming calls on one connection.
    pub max_streams_per_connection: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_in_flight_per_connection: DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION,
            max_streams: DEFAULT_MAX_STREAMS,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
        }
    }
}

pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;
pub const DEFAULT_MAX_IN_FLIGHT_PER_CONNECTION: usize = 256;
pub const DEFAULT_MAX_STREAMS: usize = 256;
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: usize = 64;

/// The `RetryInfo` delay on a refused unary call: calls in flight finish in milliseconds.
pub const UNARY_RETRY_DELAY: Duration = Duration::from_millis(100);
/// The `RetryInfo` delay on a refused stream: streams run for seconds.
pub const STREAM_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Counts of admitted calls, for metrics.
#[derive(Debug, Default)]
pub struct Gauges {
    in_flight: AtomicUsize,
    streams: AtomicUsize,
}

impl Gauges {
    /// Unary calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Streams open now.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }
}

/// The places one connection's calls hold now. Made once per connection by the transport and
/// shared by every request on it (cloning is an `Arc` clone); two are equal only when they are
/// the same connection's.
#[derive(Debug, Clone, Default)]
pub struct ConnectionSlots(Arc<Gauges>);

impl ConnectionSlots {
    /// Unary calls in flight on this connection now.
    pub fn in_flight(&self) -> usize {
        self.0.in_flight()
    }

    /// Streams open on this connection now.
    pub fn streams(&self) -> usize {
        self.0.streams()
    }
}

impl PartialEq for ConnectionSlots {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ConnectionSlots {}

impl Gauges {
    fn counter(&self, stream: bool) -> &AtomicUsize {
        if stream {
            &self.streams
        } else {
            &self.in_flight
        }
    }

    /// Takes a place unless `limit` are taken.
    fn take(&self, stream: bool, limit: usize) -> bool {
        let counter = self.counter(stream);
        if counter.fetch_add(1, Ordering::AcqRel) >= limit {
            counter.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn give_back(&self, stream: bool) {
        self.counter(stream).fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
struct Shared {
    limits: Limits,
    streaming: HashSet<String>,
    gauges: Arc<Gauges>,
}

/// Applies [`Limits`] to every call but health checks and reflection.
#[derive(Debug, Clone)]
pub struct AdmissionLayer {
    shared: Arc<Shared>,
}

impl AdmissionLayer {
    /// `streaming` holds the paths (`/package.Service/Method`) of streaming methods.
    pub fn new(limits: Limits, streaming: HashSet<String>) -> Self {
        Self {
            shared: Arc::new(Shared {
                limits,
                streaming,
                gauges: Arc::default(),
            }),
        }
    }

    /// Live counts of admitted calls.
    pub fn gauges(&self) -> Arc<Gauges> {
        Arc::clone(&self.shared.gauges)
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = Admission<S>;
    fn layer(&self, inner: S) -> Admission<S> {
        Admission {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service [`AdmissionLayer`] produces.
#[derive(Debug, Clone)]
pub struct Admission<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Which limit refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Server,
    Connection,
}

/// A place held by an admitted call, given back when dropped.
#[derive(Debug)]
pub struct Permit {
    shared: Arc<Shared>,
    stream: bool,
    connection: Option<ConnectionSlots>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.gauges.give_back(self.stream);
        if let Some(slots) = &self.connection {
            slots.0.give_back(self.stream);
        }
    }
}

impl Shared {
    fn admit(
        self: &Arc<Self>,
        stream: bool,
        connection: Option<&ConnectionSlots>,
    ) -> Result<Permit, (Refusal, usize)> {
        let (limit, per_connection) = if stream {
            (
                self.limits.max_streams,
                self.limits.max_streams_per_connection,
            )
        } else {
            (
                self.limits.max_in_flight,
                self.limits.max_in_flight_per_connection,
            )
        };
        if !self.gauges.take(stream, limit) {
            return Err((Refusal::Server, limit));
        }
        // From here the permit gives the server-wide place back if the connection refuses.
        let mut permit = Permit {
            shared: Arc::clone(self),
            stream,
            connection: None,
        };
        if let Some(slots) = connection {
            if !slots.0.take(stream, per_connection) {
                return Err((Refusal::Connection, per_connection));
            }
            permit.connection = Some(slots.clone());
        }
        Ok(permit)
    }
}

/// The status of a refused call.
fn refusal_status(stream: bool, refusal: Refusal, limit: usize) -> Status {
    let (reason, what, delay) = if stream {
        (Reason::TooManyStreams, "open streams", STREAM_RETRY_DELAY)
    } else {
        (Reason::TooManyCalls, "calls in flight", UNARY_RETRY_DELAY)
    };
    let scope = match refusal {
        Refusal::Server => "server",
        Refusal::Connection => "connection",
    };
    let message = format!(
        "server busy: {limit} {what} on this {scope} already; retry after {} ms, with backoff",
        delay.as_millis()
    );
    let mut details = error_details(
        reason,
        HashMap::from([
            ("scope".to_owned(), scope.to_owned()),
            ("limit".to_owned(), limit.to_string()),
        ]),
    );
    details.set_retry_info(Some(delay));
    Status::with_error_details(Code::ResourceExhausted, message, details)
}

/// Health checks and reflection are never refused.
fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

/// The places held by the connection a request came on, if the transport keeps them.
fn slots_of<B>(req: &http::Request<B>) -> Option<&ConnectionSlots> {
    req.extensions().get::<ConnectionPeer>().map(|p| &p.slots)
}

impl<S, B> Service<http::Request<B>> for Admission<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Admitted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        if exempt(path) {
            return Admitted::Call {
                inner: self.inner.call(req),
                permit: None,
            };
        }
        let stream = self.shared.streaming.contains(path);
        let permit = match self.shared.admit(stream, slots_of(&req)) {
            Ok(p) => p,
            Err((refusal, limit)) => {
                metrics::counter!(
                    "patron_grpc_refused_total",
                    "reason" => if stream { "streams" } else { "in_flight" },
                    "scope" => match refusal { Refusal::Server => "server", Refusal::Connection => "connection" },
                )
                .increment(1);
                let status = refusal_status(stream, refusal, limit);
                return Admitted::Refused {
                    response: Some(status.into_http()),
                };
            }
        };
        Admitted::Call {
            inner: self.inner.call(req),
            permit: Some(permit),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of an [`Admission`] call: the refusal, or the inner call whose answer's body
    /// takes the permit (none for exempt calls).
    #[project = AdmittedProj]
    pub enum Admitted<F> {
        Refused { response: Option<http::Response<Body>> },
        Call {
            #[pin]
            inner: F,
            permit: Option<Permit>,
        },
    }
}

impl<F, E> Future for Admitted<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = Result<http::Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmittedProj::Refused { response } => match response.take() {
                Some(r) => Poll::Ready(Ok(r)),
                None => panic!("Admitted polled after completion"),
            },
            AdmittedProj::Call { inner, permit } => {
                let response = std::task::ready!(inner.poll(cx))?;
                Poll::Ready(Ok(match permit.take() {
                    Some(permit) => response.map(|body| {
                        Body::new(Guarded {
                            inner: body,
                            _permit: permit,
                        })
                    }),
                    None => response,
                }))
            }
        }
    }
}

/// A response body that holds the call's place until it is finished or dropped.
struct Guarded {
    inner: Body,
    _permit: Permit,
}

impl http_body::Body for Guarded {
    type Data = <Body as http_body::Body>::Data;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
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
    use tower::ServiceExt;

    fn request(path: &str, peer: Option<&ConnectionPeer>) -> http::Request<()> {
        let mut req = http::Request::builder()
            .uri(format!("http://x{path}"))
            .body(())
            .expect("request");
        if let Some(peer) = peer {
            // What tonic does with a connection's ConnectInfo: a clone in every request.
            req.extensions_mut().insert(peer.clone());
        }
        req
    }

    fn peer(addr: &str) -> ConnectionPeer {
        ConnectionPeer {
            remote_addr: Some(addr.parse().expect("addr")),
            ..ConnectionPeer::default()
        }
    }

    fn ok_service() -> impl Service<
        http::Request<()>,
        Response = http::Response<Body>,
        Error = std::convert::Infallible,
        Future = impl std::future::Future<
            Output = Result<http::Response<Body>, std::convert::Infallible>,
        > + Send,
    > + Clone {
        tower::service_fn(|_req: http::Request<()>| async {
            // A body that is not finished until read, like a real answer's.
            let body = http_body_util::Full::new(bytes::Bytes::from_static(b"answer"));
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::new(body)))
        })
    }

    fn status_of(response: &http::Response<Body>) -> Option<Status> {
        Status::from_header_map(response.headers())
    }

    fn limits(in_flight: usize, per_conn: usize) -> Limits {
        Limits {
            max_in_flight: in_flight,
            max_in_flight_per_connection: per_conn,
            max_streams: 1,
            max_streams_per_connection: 1,
        }
    }

    #[tokio::test]
    async fn refuses_past_the_server_limit_at_once_and_admits_again_when_a_body_ends() {
        let layer = AdmissionLayer::new(limits(2, 10), HashSet::from(["/p.S/Stream".into()]));
        let gauges = layer.gauges();
        let svc = layer.layer(ok_service());
        let a = svc
            .clone()
            .oneshot(request("/p.S/M", None))
            .await
            .expect("a");
        let b = svc
            .clone()
            .oneshot(request("/p.S/M", None))
            .await
            .expect("b");
        assert!(status_of(&a).is_none() && status_of(&b).is_none());
        assert_eq!(gauges.in_flight(), 2, "both bodies still held");
        let c = svc
            .clone()
            .oneshot(request("/p.S/M", None))
            .await
            .expect("c");
        let status = status_of(&c).expect("refused");
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        assert_eq!(
            details.error_info().map(|i| i.reason.as_str()),
            Some("TOO_MANY_CALLS")
        );
        assert_eq!(
            details.retry_info().and_then(|r| r.retry_delay),
            Some(UNARY_RETRY_DELAY)
        );
        assert_eq!(gauges.in_flight(), 2, "a refusal holds nothing");
        // Health is never refused.
        let h = svc
            .clone()
            .oneshot(request("/grpc.health.v1.Health/Check", None))
            .await
            .expect("health");
        assert!(status_of(&h).is_none());
        drop(a);
        assert_eq!(gauges.in_flight(), 1);
        let d = svc
            .clone()
            .oneshot(request("/p.S/M", None))
            .await
            .expect("d");
        assert!(status_of(&d).is_none(), "a place came free");
        // Streams have their own limit.
        let s = svc
            .clone()
            .oneshot(request("/p.S/Stream", None))
            .await
            .expect("s");
        assert!(status_of(&s).is_none());
        let s2 = svc
            .clone()
            .oneshot(request("/p.S/Stream", None))
            .await
            .expect("s2");
        let status = status_of(&s2).expect("refused");
        assert_eq!(
            status
                .get_error_details()
                .error_info()
                .map(|i| i.reason.as_str()),
            Some("TOO_MANY_STREAMS")
        );
        assert_eq!(gauges.streams(), 1);
        drop((b, d, s));
        assert_eq!((gauges.in_flight(), gauges.streams()), (0, 0));
    }

    #[tokio::test]
    async fn one_connection_cannot_take_every_place() {
        let layer = AdmissionLayer::new(limits(10, 2), HashSet::new());
        let svc = layer.layer(ok_service());
        let greedy = peer("10.0.0.1:1000");
        let other = peer("10.0.0.2:1000");
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(
                svc.clone()
                    .oneshot(request("/p.S/M", Some(&greedy)))
                    .await
                    .expect("held"),
            );
        }
        let refused = svc
            .clone()
            .oneshot(request("/p.S/M", Some(&greedy)))
            .await
            .expect("refused");
        let status = status_of(&refused).expect("refused");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status
                .get_error_details()
                .error_info()
                .and_then(|i| i.metadata.get("scope").cloned()),
            Some("connection".to_owned())
        );
        let fine = svc
            .clone()
            .oneshot(request("/p.S/M", Some(&other)))
            .await
            .expect("other");
        assert!(status_of(&fine).is_none(), "another connection is served");
        assert_eq!((greedy.slots.in_flight(), other.slots.in_flight()), (2, 1));
        assert_eq!(
            layer.gauges().in_flight(),
            3,
            "the refusal gave its place back"
        );
        drop(held);
        assert_eq!(greedy.slots.in_flight(), 0, "no place outlives its call");
        let again = svc
            .clone()
            .oneshot(request("/p.S/M", Some(&greedy)))
            .await
            .expect("again");
        assert!(status_of(&again).is_none(), "places came free");
        drop((again, fine));
        assert_eq!(
            (
                greedy.slots.in_flight(),
                other.slots.in_flight(),
                layer.gauges().in_flight()
            ),
            (0, 0, 0)
        );
    }
}
