//! Read-your-writes across replicas, as a tower layer around every Patron service.
//!
//! - A request that carries a consistency token (metadata `patron-consistency-token`) waits
//!   until this replica has applied the token's position, within the call's deadline (its
//!   `grpc-timeout`, else the server's request timeout); if it does not get there in time the
//!   call fails with UNAVAILABLE, reason `CONSISTENCY_TOKEN_NOT_REACHED` (retry, or call another
//!   replica). A malformed token, or one of another deployment, is INVALID_ARGUMENT. Requests
//!   without a token are served at once.
//! - A write ([`patron_grpc::methods`]) is answered only after this replica has applied
//!   everything committed before its answer ([`Feed::sync`]), so its caller reads it here at
//!   once; every answer carries the token of the position this replica had applied.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::Either;
use patron_grpc::methods::{Access, access};
use patron_grpc::{ApiError, Reason};
use tonic::{Code, Status};
use tonic_types::StatusExt;
use tower::{Layer, Service};

use crate::Feed;
use crate::token::{self, METADATA_KEY};

/// The layer.
#[derive(Debug, Clone)]
pub struct ConsistencyLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    feed: Arc<Feed>,
    default_timeout: Duration,
    tokens: Tokens,
}

/// The token header of the last position answered: most answers in a row carry the same one,
/// so it is formatted once per position, not once per call.
#[derive(Debug, Default)]
struct Tokens(std::sync::Mutex<Option<(i64, http::HeaderValue)>>);

impl Tokens {
    fn header(&self, feed: &Feed, position: i64) -> Option<http::HeaderValue> {
        let mut last = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((p, v)) = &*last
            && *p == position
        {
            return Some(v.clone());
        }
        let v = http::HeaderValue::from_str(&feed.token(position)).ok()?;
        *last = Some((position, v.clone()));
        Some(v)
    }
}

impl ConsistencyLayer {
    /// `default_timeout` bounds a token's wait when the call carries no deadline.
    pub fn new(feed: Arc<Feed>, default_timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                feed,
                default_timeout,
                tokens: Tokens::default(),
            }),
        }
    }
}

impl<S> Layer<S> for ConsistencyLayer {
    type Service = Consistency<S>;
    fn layer(&self, inner: S) -> Consistency<S> {
        Consistency {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`ConsistencyLayer`] produces.
#[derive(Debug, Clone)]
pub struct Consistency<S> {
    inner: S,
    layer: ConsistencyLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Parses a `grpc-timeout` value (e.g. `500m`, `2S`).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn with_token<B>(
    mut response: http::Response<B>,
    token: Option<http::HeaderValue>,
) -> http::Response<B> {
    if let Some(v) = token {
        response.headers_mut().insert(METADATA_KEY, v);
    }
    response
}

impl Shared {
    /// The answer to a read, with the token of the position this replica has applied now.
    fn read_answer<B>(&self, response: http::Response<B>) -> http::Response<B> {
        let position = self.feed.applied();
        with_token(response, self.tokens.header(&self.feed, position))
    }

    /// Answers with the token of the position this replica has applied: after a write that
    /// succeeded, once everything committed before it is applied here.
    async fn finish<B>(&self, response: http::Response<B>, access: Access) -> http::Response<B> {
        // A refused write (a trailers-only error answer) changed nothing: nothing to wait for,
        // and while the database is unreachable waiting would only delay the answer.
        let failed = response
            .headers()
            .get("grpc-status")
            .is_some_and(|v| v.as_bytes() != b"0");
        match access {
            Access::Write if !failed => {
                let position = self.feed.sync().await;
                with_token(response, self.tokens.header(&self.feed, position))
            }
            Access::Write | Access::Read => self.read_answer(response),
        }
    }
}

pin_project_lite::pin_project! {
    /// A read without a token, or a call that is not Patron's (health, reflection: no `shared`):
    /// the inner call, its answer given the applied position's token.
    pub struct ReadAnswer<F> {
        #[pin]
        inner: F,
        shared: Option<Arc<Shared>>,
    }
}

impl<F, RB, E> Future for ReadAnswer<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = Result<http::Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        Poll::Ready(Ok(match this.shared.take() {
            Some(shared) => shared.read_answer(response),
            None => response,
        }))
    }
}

fn not_reached(wanted: i64, applied: i64) -> Status {
    let details = patron_grpc::error_details(
        Reason::ConsistencyTokenNotReached,
        HashMap::from([
            ("wanted_position".to_owned(), wanted.to_string()),
            ("applied_position".to_owned(), applied.to_string()),
        ]),
    );
    Status::with_error_details(
        Code::Unavailable,
        "this replica has not yet applied the write the consistency token names; retry, or call another replica",
        details,
    )
}

impl<S, B, RB> Service<http::Request<B>> for Consistency<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Either<ReadAnswer<S::Future>, BoxFuture<Result<Self::Response, Self::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(access) = access(req.uri().path()) else {
            // Health, reflection: not Patron's data.
            return Either::Left(ReadAnswer {
                inner: self.inner.call(req),
                shared: None,
            });
        };
        let shared = &self.layer.shared;
        let wanted = match req.headers().get(METADATA_KEY) {
            None => None,
            Some(v) => match v
                .to_str()
                .map_err(|_| token::TokenError::Malformed)
                .and_then(|t| token::decode(t, shared.feed.database_id()))
            {
                Ok(p) => Some(p),
                Err(e) => {
                    let status: Status = ApiError::invalid_field(
                        Reason::InvalidConsistencyToken,
                        METADATA_KEY,
                        e.to_string(),
                    )
                    .into();
                    return Either::Right(Box::pin(async move { Ok(status.into_http()) }));
                }
            },
        };
        let shared = Arc::clone(shared);
        let Some(wanted) = wanted else {
            // Nothing to wait for: the service polled ready takes the call now.
            let inner = self.inner.call(req);
            return match access {
                Access::Read => Either::Left(ReadAnswer {
                    inner,
                    shared: Some(shared),
                }),
                Access::Write => Either::Right(Box::pin(async move {
                    let response = inner.await?;
                    Ok(shared.finish(response, access).await)
                })),
            };
        };
        // The inner service was polled ready; keep that one for this call, after the wait.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let budget = grpc_timeout(req.headers()).unwrap_or(shared.default_timeout);
        Either::Right(Box::pin(async move {
            // Answer before the caller's own deadline fires, so it learns why.
            let margin = (budget / 10).min(Duration::from_millis(100));
            if !shared
                .feed
                .wait_applied(wanted, budget.saturating_sub(margin))
                .await
            {
                let applied = shared.feed.applied();
                return Ok(with_token(
                    not_reached(wanted, applied).into_http(),
                    shared.tokens.header(&shared.feed, applied),
                ));
            }
            let response = inner.call(req).await?;
            Ok(shared.finish(response, access).await)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        let mut h = http::HeaderMap::new();
        assert_eq!(grpc_timeout(&h), None);
        h.insert("grpc-timeout", http::HeaderValue::from_static("250m"));
        assert_eq!(grpc_timeout(&h), Some(Duration::from_millis(250)));
        h.insert("grpc-timeout", http::HeaderValue::from_static("3S"));
        assert_eq!(grpc_timeout(&h), Some(Duration::from_secs(3)));
        h.insert("grpc-timeout", http::HeaderValue::from_static("x"));
        assert_eq!(grpc_timeout(&h), None);
        h.insert("grpc-timeout", http::HeaderValue::from_static("12Q"));
        assert_eq!(grpc_timeout(&h), None);
    }
}
