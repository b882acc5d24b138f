//! Traces: the real `patron serve` exports spans over OTLP/gRPC to a receiver inside the test;
//! a call carrying a W3C `traceparent` gets a server span that is the child of the caller's
//! span, and the store calls it makes are children of that server span.

use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use patron_proto::customers::v1 as pb;
use patron_proto::customers::v1::customer_service_client::CustomerServiceClient;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::support::{connect, serving_within, terminate};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A span as received, with the `service.name` of its resource.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    fn parent(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    fn attr(&self, key: &str) -> Option<Value> {
        attr(&self.span.attributes, key)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone())
        .and_then(|AnyValue { value }| value)
}

/// The collector's TraceService: every span it receives goes to the test.
#[derive(Debug)]
struct Receiver(mpsc::UnboundedSender<Received>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| attr(&r.attributes, "service.name"))
                .map(|v| match v {
                    Value::StringValue(s) => s,
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    let _ = self.0.send(Received {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts an OTLP/gRPC receiver on 127.0.0.1:0.
async fn receiver() -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver(tx)))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (addr, rx)
}

/// Starts `patron serve` exporting to `collector`, with the batch processor's delay, and waits
/// until it is SERVING.
async fn start(
    dir: &tempfile::TempDir,
    collector: SocketAddr,
    delay_millis: u64,
) -> (Child, SocketAddr) {
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let child = Command::new(env!("CARGO_BIN_EXE_patron"))
        .args(["serve", "--listen", &addr.to_string(), "--database", &url])
        .args(["--otlp-endpoint", &format!("http://{collector}")])
        .args(["--otlp-service-name", "patron-under-test"])
        .env("PATRON_LOG", "warn")
        .env("OTEL_BSP_SCHEDULE_DELAY", delay_millis.to_string())
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .kill_on_drop(true)
        .spawn()
        .expect("start patron");
    assert!(
        serving_within(addr, 200).await,
        "patron did not become SERVING"
    );
    (child, addr)
}

fn traced<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN}-01")
            .parse()
            .expect("metadata"),
    );
    request
        .metadata_mut()
        .insert("tracestate", "vendor=abc".parse().expect("metadata"));
    request
}

/// UpsertCustomers (OK, status in the trailers) and GetCustomer of a missing id (NOT_FOUND,
/// trailers-only), both under the caller's trace; then one call without a `traceparent`.
async fn calls(addr: SocketAddr) {
    let mut client = CustomerServiceClient::new(connect(addr).await);
    client
        .upsert_customers(traced(pb::UpsertCustomersRequest {
            customers: vec![pb::Customer {
                customer_id: "ann".into(),
                ..Default::default()
            }],
        }))
        .await
        .expect("upsert");
    let missing = client
        .get_customer(traced(pb::GetCustomerRequest {
            customer_id: "nobody".into(),
        }))
        .await
        .expect_err("no such customer");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    client
        .get_customer(pb::GetCustomerRequest {
            customer_id: "ann".into(),
        })
        .await
        .expect("get");
}

/// Collects spans until `done` holds over them, for at most `within`.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Received>,
    within: Duration,
    done: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    let mut spans = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while !done(&spans) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(span)) => spans.push(span),
            Ok(None) | Err(_) => break,
        }
    }
    spans
}

const UPSERT: &str = "patron.customers.v1.CustomerService/UpsertCustomers";
const GET: &str = "patron.customers.v1.CustomerService/GetCustomer";

fn complete(spans: &[Received]) -> bool {
    let ours: Vec<&Received> = spans.iter().filter(|s| s.trace_id() == TRACE_ID).collect();
    let upsert = ours.iter().find(|s| s.span.name == UPSERT);
    let get = ours.iter().find(|s| s.span.name == GET);
    let store = upsert.is_some_and(|u| {
        ours.iter().any(|s| {
            s.span.name == "store.upsert_customers" && s.span.parent_span_id == u.span.span_id
        })
    });
    let untraced = spans
        .iter()
        .any(|s| s.span.name == GET && s.trace_id() != TRACE_ID);
    upsert.is_some() && get.is_some() && store && untraced
}

fn check(spans: &[Received]) {
    let ours: Vec<&Received> = spans.iter().filter(|s| s.trace_id() == TRACE_ID).collect();
    let upsert = ours
        .iter()
        .find(|s| s.span.name == UPSERT)
        .unwrap_or_else(|| panic!("no {UPSERT} span under the caller's trace in {spans:#?}"));
    assert_eq!(
        upsert.parent(),
        CALLER_SPAN,
        "the caller's span is the parent"
    );
    assert_eq!(upsert.span.kind, SpanKind::Server as i32);
    assert_eq!(upsert.span.trace_state, "vendor=abc");
    assert_eq!(upsert.service, "patron-under-test");
    assert_eq!(
        upsert.attr("rpc.system"),
        Some(Value::StringValue("grpc".into()))
    );
    assert_eq!(
        upsert.attr("rpc.service"),
        Some(Value::StringValue(
            "patron.customers.v1.CustomerService".into()
        ))
    );
    assert_eq!(
        upsert.attr("rpc.method"),
        Some(Value::StringValue("UpsertCustomers".into()))
    );
    assert_eq!(
        upsert.attr("rpc.grpc.status_code"),
        Some(Value::IntValue(0))
    );

    let store = ours
        .iter()
        .find(|s| s.span.name == "store.upsert_customers")
        .unwrap_or_else(|| panic!("no store span under the caller's trace in {spans:#?}"));
    assert_eq!(store.span.parent_span_id, upsert.span.span_id);
    assert_eq!(
        store.attr("db.system"),
        Some(Value::StringValue("sqlite".into()))
    );
    assert!(store.span.start_time_unix_nano >= upsert.span.start_time_unix_nano);
    assert!(store.span.end_time_unix_nano <= upsert.span.end_time_unix_nano);

    let get = ours
        .iter()
        .find(|s| s.span.name == GET)
        .expect("the GetCustomer span");
    assert_eq!(get.parent(), CALLER_SPAN);
    assert_eq!(
        get.attr("rpc.grpc.status_code"),
        Some(Value::IntValue(tonic::Code::NotFound as i64))
    );
    assert!(
        ours.iter()
            .any(|s| s.span.name == "store.get_customer"
                && s.span.parent_span_id == get.span.span_id),
        "GetCustomer's store call is its child"
    );

    // The call without a traceparent has a trace of its own, with no parent.
    let untraced = spans
        .iter()
        .find(|s| s.span.name == GET && s.trace_id() != TRACE_ID)
        .expect("the untraced GetCustomer span");
    assert!(untraced.span.parent_span_id.is_empty());
    assert_eq!(untraced.trace_id().len(), 32);

    // Store calls outside any call (the change feed, the database check) are not exported.
    for s in spans.iter().filter(|s| s.span.name.starts_with("store.")) {
        assert!(
            !s.span.parent_span_id.is_empty(),
            "a store span without a parent was exported: {s:#?}"
        );
    }
}

#[tokio::test]
async fn spans_arrive_under_the_callers_trace() {
    let (collector, mut rx) = receiver().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (_child, addr) = start(&dir, collector, 100).await;
    calls(addr).await;
    let spans = collect(&mut rx, Duration::from_secs(15), complete).await;
    check(&spans);
}

#[tokio::test]
async fn buffered_spans_are_sent_on_shutdown() {
    let (collector, mut rx) = receiver().await;
    let dir = tempfile::tempdir().expect("temp dir");
    // A delay far past the test's: the spans can only come from the flush at shutdown.
    let (mut child, addr) = start(&dir, collector, 600_000).await;
    calls(addr).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        rx.try_recv().is_err(),
        "nothing is exported before the delay or shutdown"
    );
    let status = terminate(&mut child, Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
    let spans = collect(&mut rx, Duration::from_secs(2), complete).await;
    check(&spans);
}

/// Without an exporter, a log line written during a call carries the caller's trace id (JSON
/// format: in the `spans` list).
#[tokio::test]
async fn log_lines_carry_the_callers_trace_id_without_an_exporter() {
    use tokio::io::AsyncBufReadExt;

    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let key = format!(
        "ops:{}:customers:read",
        patron_grpc::auth::key_hash_hex("secret")
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_patron"))
        .args(["serve", "--listen", &addr.to_string(), "--database", &url])
        .args(["--auth", "--api-key", &key])
        .env("PATRON_LOG", "info,sqlx=warn")
        .env("PATRON_LOG_FORMAT", "json")
        .env_remove("PATRON_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start patron");
    let stderr = child.stderr.take().expect("stderr");
    let mut client = CustomerServiceClient::new(connect(addr).await);
    // No credential: refused, and the refusal is logged inside the call's span.
    let refused = loop {
        match client
            .get_customer(traced(pb::GetCustomerRequest {
                customer_id: "ann".into(),
            }))
            .await
        {
            Err(s) if s.code() == tonic::Code::Unauthenticated => break s,
            Err(s) if s.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("expected UNAUTHENTICATED, got {other:?}"),
        }
    };
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            if line.contains("call refused") {
                return line;
            }
        }
        panic!("patron's stderr ended without the refusal");
    })
    .await
    .expect("the refusal is logged");
    assert!(
        line.contains(&format!("\"trace_id\":\"{TRACE_ID}\"")),
        "no trace id in {line:?}"
    );
}
