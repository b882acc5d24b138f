//! A default deadline for unary calls.
//!
//! tonic already honours a client's `grpc-timeout`. This layer adds a server-side limit for unary
//! calls that carry none, so a stuck call cannot hold resources forever. Streaming calls (bulk
//! loads, full syncs) legitimately run for minutes; they are bounded only by the client's deadline.

use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::Status;
use tower::{Layer, Service};

use crate::ApiError;

/// Applies `limit` to every request whose path is not in `streaming`.
#[derive(Debug, Clone)]
pub struct DeadlineLayer {
    limit: Duration,
    streaming: Arc<HashSet<String>>,
}

impl DeadlineLayer {
    /// `streaming` holds the paths (`/package.Service/Method`) exempt from the limit.
    pub fn new(limit: Duration, streaming: HashSet<String>) -> Self {
        Self {
            limit,
            streaming: Arc::new(streaming),
        }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`DeadlineLayer`] produces.
#[derive(Debug, Clone)]
pub struct Deadline<S> {
    inner: S,
    layer: DeadlineLayer,
}

/// A unary call under the limit, its timeout turned into DEADLINE_EXCEEDED: no allocation per
/// call.
type Limited<F, R, E> = futures::future::Map<
    tokio::time::Timeout<F>,
    fn(Result<Result<R, E>, tokio::time::error::Elapsed>) -> Result<R, E>,
>;

fn exceeded<RB: Default, E>(
    result: Result<Result<http::Response<RB>, E>, tokio::time::error::Elapsed>,
) -> Result<http::Response<RB>, E> {
    match result {
        Ok(result) => result,
        Err(_) => Ok(Status::from(ApiError::DeadlineExceeded).into_http()),
    }
}

impl<S, B, RB> Service<http::Request<B>> for Deadline<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future =
        futures::future::Either<S::Future, Limited<S::Future, Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let limited = !self.layer.streaming.contains(req.uri().path());
        let limit = self.layer.limit;
        let fut = self.inner.call(req);
        if !limited {
            return futures::future::Either::Left(fut);
        }
        futures::future::Either::Right(futures::FutureExt::map(
            tokio::time::timeout(limit, fut),
            exceeded as fn(_) -> _,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn slow_service() -> impl Service<
        http::Request<()>,
        Response = http::Response<String>,
        Error = std::convert::Infallible,
        Future = impl Future<Output = Result<http::Response<String>, std::convert::Infallible>> + Send,
    > + Clone {
        tower::service_fn(|_req: http::Request<()>| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new("done".to_owned()))
        })
    }

    fn request(path: &str) -> http::Request<()> {
        http::Request::builder()
            .uri(path)
            .body(())
            .expect("request")
    }

    #[tokio::test]
    async fn unary_calls_get_deadline_exceeded_and_streams_do_not() {
        let streaming = HashSet::from(["/p.S/Stream".to_owned()]);
        let layer = DeadlineLayer::new(Duration::from_millis(50), streaming);
        let svc = layer.layer(slow_service());
        let response = svc
            .clone()
            .oneshot(request("/p.S/Unary"))
            .await
            .expect("response");
        let status = Status::from_header_map(response.headers()).expect("a grpc status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        let response = svc.oneshot(request("/p.S/Stream")).await.expect("response");
        assert_eq!(response.body(), "done");
    }
}
