//! `spawn_app` and helpers shared by the end-to-end tests.

use std::time::Duration;

use patron_proto::customers::v1 as pb;
use patron_proto::customers::v1::customer_service_client::CustomerServiceClient;
use patron_server::{Application, Settings};
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// Which backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Keeps the test database alive.
#[allow(dead_code)]
pub enum DbGuard {
    Sqlite(tempfile::TempDir),
    Postgres(patron_store_postgres::testing::TestDatabase),
    /// The test keeps the database itself (several servers over one database).
    Borrowed,
}

/// A running server and clients to it.
pub struct TestApp {
    /// Where the server listens.
    pub addr: std::net::SocketAddr,
    pub channel: Channel,
    pub customers: CustomerServiceClient<Channel>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _db: DbGuard,
}

/// A fresh database for `backend`: its URL and the guard that keeps it.
pub async fn fresh_database(backend: Backend) -> (String, DbGuard) {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("patron.db").display());
            (url, DbGuard::Sqlite(dir))
        }
        Backend::Postgres => {
            let db = patron_store_postgres::testing::TestDatabase::create().await;
            (db.url.clone(), DbGuard::Postgres(db))
        }
    }
}

fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = patron_server::telemetry::init(
            patron_server::config::LogFormat::Human,
            "info,sqlx=warn",
        );
    }
}

/// Starts the server on port 0 with a fresh database.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Starts the server with settings adjusted by `adjust`.
pub async fn spawn_app_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let (url, guard) = fresh_database(backend).await;
    spawn_app_on(&url, guard, adjust).await
}

/// Starts the server on the database at `url`, which `guard` keeps.
pub async fn spawn_app_on(
    url: &str,
    guard: DbGuard,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    init_logs();
    let mut settings = Settings::for_database(url);
    adjust(&mut settings);
    let app = Application::build(settings).await.expect("server builds");
    let addr = app.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run_until_stopped(async move {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    let channel = connect(addr).await;
    TestApp {
        addr,
        customers: CustomerServiceClient::new(channel.clone())
            .max_decoding_message_size(64 * 1024 * 1024),
        channel,
        shutdown: Some(tx),
        server: Some(server),
        _db: guard,
    }
}

/// Connects to `addr`, retrying while the server starts.
pub async fn connect(addr: std::net::SocketAddr) -> Channel {
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("endpoint");
    for _ in 0..100 {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot connect to {addr}");
}

impl TestApp {
    /// Signals shutdown without waiting.
    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for the server task after [`TestApp::signal_shutdown`].
    pub async fn join(&mut self) {
        if let Some(server) = self.server.take() {
            server.await.expect("server task");
        }
    }

    pub async fn customer(&self, id: &str) -> Result<pb::Customer, tonic::Status> {
        self.customers
            .clone()
            .get_customer(pb::GetCustomerRequest {
                customer_id: id.into(),
            })
            .await
            .map(|r| r.into_inner().customer.expect("customer set"))
    }

    /// Every customer id, through paging.
    pub async fn all_customer_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .customers
                .clone()
                .list_customers(pb::ListCustomersRequest {
                    page_size: 1000,
                    page_token: token,
                })
                .await
                .expect("list")
                .into_inner();
            ids.extend(page.customers.into_iter().map(|c| c.customer_id));
            if page.next_page_token.is_empty() {
                return ids;
            }
            token = page.next_page_token;
        }
    }

    pub async fn record(
        &self,
        events: Vec<pb::Event>,
    ) -> Result<pb::RecordEventsResponse, tonic::Status> {
        self.customers
            .clone()
            .record_events(pb::RecordEventsRequest { events })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Every event of a customer, newest first, through paging.
    pub async fn all_events(&self, customer: &str) -> Vec<pb::Event> {
        let mut events = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .customers
                .clone()
                .list_customer_events(pb::ListCustomerEventsRequest {
                    customer_id: customer.into(),
                    page_size: 1000,
                    page_token: token,
                    kinds: vec![],
                })
                .await
                .expect("list events")
                .into_inner();
            events.extend(page.events);
            if page.next_page_token.is_empty() {
                return events;
            }
            token = page.next_page_token;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// 2026-01-01T00:00:00Z plus `days` and `seconds`.
pub fn ts(days: i64, seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: 1_767_225_600 + days * 86_400 + seconds,
        nanos: 0,
    }
}

pub fn usd(minor_units: i64) -> patron_proto::common::v1::Money {
    patron_proto::common::v1::Money {
        currency_code: "USD".into(),
        minor_units,
    }
}

pub fn purchase(
    customer: &str,
    id: &str,
    at: prost_types::Timestamp,
    order: &str,
    amount: i64,
) -> pb::Event {
    pb::Event {
        event_id: id.into(),
        customer_id: customer.into(),
        occurred_at: Some(at),
        kind: Some(pb::event::Kind::Purchase(pb::Purchase {
            order_id: order.into(),
            amount: Some(usd(amount)),
            item_count: 1,
            channel: "web".into(),
        })),
        record_time: None,
    }
}

pub fn refund(
    customer: &str,
    id: &str,
    at: prost_types::Timestamp,
    order: &str,
    amount: i64,
) -> pb::Event {
    pb::Event {
        event_id: id.into(),
        customer_id: customer.into(),
        occurred_at: Some(at),
        kind: Some(pb::event::Kind::Refund(pb::Refund {
            order_id: order.into(),
            amount: Some(usd(amount)),
        })),
        record_time: None,
    }
}

pub fn survey(customer: &str, id: &str, at: prost_types::Timestamp, s: pb::Survey) -> pb::Event {
    pb::Event {
        event_id: id.into(),
        customer_id: customer.into(),
        occurred_at: Some(at),
        kind: Some(pb::event::Kind::Survey(s)),
        record_time: None,
    }
}

/// Asserts a status's code, its ErrorInfo reason, and (if given) that BadRequest names `field`.
pub fn assert_status(status: &tonic::Status, code: tonic::Code, reason: &str, field: Option<&str>) {
    assert_eq!(status.code(), code, "{status:?}");
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo on {status:?}"));
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(info.domain, "patron.dev");
    if let Some(field) = field {
        let bad = details
            .bad_request()
            .unwrap_or_else(|| panic!("no BadRequest on {status:?}"));
        let fields: Vec<&str> = bad
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert!(
            fields.contains(&field),
            "expected a violation of {field}, got {fields:?}"
        );
    }
}

/// Generates a SQLite test and an (ignored) Postgres test from one async fn taking a `Backend`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::support::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                #[ignore = "Postgres suite: set PATRON_TEST_POSTGRES_URL and run with -- --include-ignored"]
                async fn $name() {
                    super::$name($crate::support::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// A codec that sends and receives message bytes as they are: for calls built from descriptors
/// and for bytes that are not a valid message at all.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<bytes::Bytes>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n)))
    }
}

/// How a method streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Unary,
    ClientStreaming,
    /// Only the first response message (or the status) is read; a stream that sends nothing
    /// within half a second counts as a success.
    ServerStreaming,
}

/// Calls `path` (`/package.Service/Method`) with `body` as the one request message, as is.
pub async fn call_raw(
    channel: &Channel,
    path: &str,
    shape: Shape,
    body: bytes::Bytes,
) -> Result<bytes::Bytes, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone())
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(format!("channel not ready: {e}")))?;
    let path = http::uri::PathAndQuery::try_from(path).expect("a method path");
    match shape {
        Shape::Unary => grpc
            .unary(tonic::Request::new(body), path, RawCodec)
            .await
            .map(tonic::Response::into_inner),
        Shape::ClientStreaming => grpc
            .client_streaming(
                tonic::Request::new(tokio_stream::once(body)),
                path,
                RawCodec,
            )
            .await
            .map(tonic::Response::into_inner),
        Shape::ServerStreaming => {
            let mut stream = grpc
                .server_streaming(tonic::Request::new(body), path, RawCodec)
                .await?
                .into_inner();
            match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                Ok(first) => first.map(Option::unwrap_or_default),
                Err(_) => Ok(bytes::Bytes::new()),
            }
        }
    }
}

/// Waits until the server at `addr` says SERVING, for up to `tries` × 50 ms; whether it did.
pub async fn serving_within(addr: std::net::SocketAddr, tries: u32) -> bool {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let mut health = HealthClient::new(connect(addr).await);
    for _ in 0..tries {
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status);
        if status.ok() == Some(ServingStatus::Serving as i32) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Sends SIGTERM to `child` and waits up to `within` for it to exit; its exit status.
pub async fn terminate(
    child: &mut tokio::process::Child,
    within: Duration,
) -> std::process::ExitStatus {
    let pid = child.id().expect("running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    tokio::time::timeout(within, child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("exit status")
}
