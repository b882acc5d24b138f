//! Operations: the Prometheus endpoint, the database watch that drives health and fail-fast, and
//! the start-up wait for the database.
//!
//! Metrics (all names start with `patron_`; README, "Operations", lists them):
//! - per call, recorded by `patron_grpc::observe`: `grpc_requests_total{method,code}`,
//!   `grpc_request_duration_seconds{method}`, `grpc_calls_open{kind}`;
//! - refusals, by `patron_grpc::admission`: `grpc_refused_total{reason,scope}`;
//! - domain counters where they happen: `events_ingested_total{outcome}`,
//!   `loyalty_entries_total{kind}`, `loyalty_points_total{kind}`;
//! - sampled at each scrape here: `index_customers`, `feed_applied_position`,
//!   `feed_head_position`, `feed_lag_positions`, `db_pool_connections{state}`,
//!   `db_pool_max_connections`, `db_up`, `grpc_in_flight`, `grpc_streams_open`;
//! - by the database watch: `db_check_seconds` (`SELECT 1` on a connection of its own, once a
//!   second), `db_unreachable_total`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use patron_feed::Feed;
use patron_grpc::admission::Gauges;
use patron_store::{Store, StoreError};
use patron_views::engine::Engine;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Latency buckets, in seconds: 100 µs to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls get the same handle).
pub fn recorder() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::error!(error = %e, "cannot install the metrics recorder");
                    None
                }
            }
        })
        .clone()
}

/// What a scrape samples besides the recorded metrics.
#[derive(Clone)]
pub struct Sampled {
    pub store: Arc<dyn Store>,
    pub engine: Arc<Engine>,
    pub feed: Arc<Feed>,
    pub admission: Arc<Gauges>,
}

impl std::fmt::Debug for Sampled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampled").finish_non_exhaustive()
    }
}

impl Sampled {
    async fn sample(&self) {
        metrics::gauge!("patron_index_customers").set(self.engine.len() as f64);
        let applied = self.feed.applied();
        metrics::gauge!("patron_feed_applied_position").set(applied as f64);
        // The head needs the database; a scrape must not hang on it.
        if self.store.reachable()
            && let Ok(Ok(head)) =
                tokio::time::timeout(Duration::from_millis(500), self.store.feed_head()).await
        {
            metrics::gauge!("patron_feed_head_position").set(head.position as f64);
            metrics::gauge!("patron_feed_lag_positions")
                .set(head.position.saturating_sub(applied).max(0) as f64);
        }
        let pool = self.store.pool_state();
        metrics::gauge!("patron_db_pool_connections", "state" => "idle").set(f64::from(pool.idle));
        metrics::gauge!("patron_db_pool_connections", "state" => "in_use")
            .set(f64::from(pool.open.saturating_sub(pool.idle)));
        metrics::gauge!("patron_db_pool_max_connections").set(f64::from(pool.max));
        metrics::gauge!("patron_db_up").set(if self.store.reachable() { 1.0 } else { 0.0 });
        metrics::gauge!("patron_grpc_in_flight").set(self.admission.in_flight() as f64);
        metrics::gauge!("patron_grpc_streams_open").set(self.admission.streams() as f64);
    }
}

/// Serves `GET /metrics` (Prometheus text format) on `listener` until the task is aborted.
pub async fn serve_metrics(listener: TcpListener, handle: PrometheusHandle, sampled: Sampled) {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handle = handle.clone();
        let sampled = sampled.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let handle = handle.clone();
                let sampled = sampled.clone();
                async move {
                    let response =
                        if req.uri().path() == "/metrics" {
                            sampled.sample().await;
                            hyper::Response::builder()
                                .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                                .body(Full::new(Bytes::from(handle.render())))
                        } else {
                            hyper::Response::builder().status(404).body(Full::new(
                                Bytes::from_static(b"not found: metrics are at /metrics\n"),
                            ))
                        };
                    response.map_err(|e| e.to_string())
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = tokio::time::timeout(Duration::from_secs(60), conn).await {
                tracing::debug!(error = %e, "metrics connection closed");
            }
        });
    }
}

/// Binds the metrics address.
pub async fn bind_metrics(addr: SocketAddr) -> Result<TcpListener, std::io::Error> {
    TcpListener::bind(addr).await
}

/// Services whose every call needs the database: NOT_SERVING while it is unreachable. Scoring
/// and segmentation answer their reads from memory and stay SERVING; their writes fail at once.
pub const DATABASE_SERVICES: [&str; 2] = [
    patron_proto::customers::v1::customer_service_server::SERVICE_NAME,
    patron_proto::loyalty::v1::loyalty_service_server::SERVICE_NAME,
];

/// Checks the database every `interval` (each check bounded by `timeout`): while it does not
/// answer, the store fails calls at once and health reports NOT_SERVING for the overall server
/// and [`DATABASE_SERVICES`]; the first good check turns them SERVING again.
pub async fn watch_database(
    store: Arc<dyn Store>,
    health: HealthReporter,
    interval: Duration,
    timeout: Duration,
) {
    let mut up = true;
    let mut down_since = std::time::Instant::now();
    loop {
        tokio::time::sleep(interval).await;
        let result = store.check_connection(timeout).await;
        if let Ok(took) = &result {
            metrics::histogram!("patron_db_check_seconds").record(took.as_secs_f64());
        }
        match (&result, up) {
            (Err(e), true) => {
                up = false;
                down_since = std::time::Instant::now();
                metrics::counter!("patron_db_unreachable_total").increment(1);
                tracing::error!(error = %e, "database unreachable: calls that need it fail at once with UNAVAILABLE; health NOT_SERVING");
                health
                    .set_service_status("", ServingStatus::NotServing)
                    .await;
                for s in DATABASE_SERVICES {
                    health
                        .set_service_status(s, ServingStatus::NotServing)
                        .await;
                }
            }
            (Ok(_), false) => {
                up = true;
                tracing::info!(
                    down_for = ?down_since.elapsed(),
                    "database reachable again: SERVING"
                );
                health.set_service_status("", ServingStatus::Serving).await;
                for s in DATABASE_SERVICES {
                    health.set_service_status(s, ServingStatus::Serving).await;
                }
            }
            _ => {}
        }
    }
}

/// Runs `connect` until it succeeds, logging each failed attempt and retrying with backoff (0.5 s
/// doubling to 5 s) while the database is unreachable, for at most `limit`. Other errors (a bad
/// URL, a refused password, a failed migration) stop at once.
pub async fn retry_connect<T, F, Fut>(
    what: &str,
    limit: Duration,
    mut connect: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(500);
    let mut attempt = 1u32;
    loop {
        match connect().await {
            Ok(v) => {
                if attempt > 1 {
                    tracing::info!(attempt, waited = ?started.elapsed(), "{what}: connected");
                }
                return Ok(v);
            }
            Err(StoreError::Unavailable(e)) => {
                let waited = started.elapsed();
                if waited + delay > limit {
                    tracing::error!(attempt, ?waited, error = %e, "{what}: giving up");
                    return Err(StoreError::Unavailable(format!(
                        "{e} (gave up after {attempt} attempts in {:.1} s; --db-startup-timeout-secs sets how long to try)",
                        waited.as_secs_f64()
                    )));
                }
                tracing::warn!(attempt, error = %e, retry_in = ?delay, "{what}: database unreachable, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
