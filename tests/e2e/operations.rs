//! Operations: the metrics endpoint of a real `patron serve`, load shedding with RetryInfo, and a
//! database outage through a TCP proxy that the test cuts and restores.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use patron_proto::customers::v1 as pb;
use patron_proto::customers::v1::customer_service_client::CustomerServiceClient;
use patron_proto::scoring::v1 as spb;
use patron_proto::scoring::v1::scoring_service_client::ScoringServiceClient;
use patron_proto::segmentation::v1 as gpb;
use patron_proto::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

use crate::durability::{start_configured, start_with};
use crate::support::{Backend, connect, purchase, spawn_app_with, ts};

fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// `GET /metrics` over plain HTTP/1.0: the body.
async fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: patron\r\n\r\n")
        .await
        .expect("send");
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut text))
        .await
        .expect("metrics answer in time")
        .expect("read");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_owned()
}

/// The value of the first sample whose line starts with `series` (name and labels as printed).
fn sample(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name)
                && l[name.len()..].starts_with(['{', ' '])
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn customer(id: &str) -> pb::Customer {
    pb::Customer {
        customer_id: id.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn metrics_endpoint_counts_calls_by_method_and_code_and_samples_gauges() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    let metrics = free_addr();
    let (_child, addr) = start_with(&url, &["--metrics-listen", &metrics.to_string()]).await;
    let mut customers = CustomerServiceClient::new(connect(addr).await);
    customers
        .upsert_customers(pb::UpsertCustomersRequest {
            customers: vec![customer("m-1"), customer("m-2")],
        })
        .await
        .expect("upsert");
    customers
        .record_events(pb::RecordEventsRequest {
            events: vec![
                purchase("m-1", "e1", ts(-10, 0), "o1", 1000),
                purchase("m-1", "e2", ts(-5, 0), "o2", 2000),
            ],
        })
        .await
        .expect("record");
    // The same events again: duplicates.
    customers
        .record_events(pb::RecordEventsRequest {
            events: vec![purchase("m-1", "e1", ts(-10, 0), "o1", 1000)],
        })
        .await
        .expect("record again");
    let bad = customers
        .get_customer(pb::GetCustomerRequest {
            customer_id: String::new(),
        })
        .await
        .expect_err("empty id");
    assert_eq!(bad.code(), Code::InvalidArgument);

    let body = scrape(metrics).await;
    let requests = "patron_grpc_requests_total";
    let record = "/patron.customers.v1.CustomerService/RecordEvents";
    let get = "/patron.customers.v1.CustomerService/GetCustomer";
    assert_eq!(
        sample(&body, requests, &[("method", record), ("code", "OK")]),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            requests,
            &[("method", get), ("code", "INVALID_ARGUMENT")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "patron_grpc_request_duration_seconds_count",
            &[("method", record)]
        ),
        Some(2.0)
    );
    assert!(
        body.contains("patron_grpc_request_duration_seconds_bucket{method=\"/patron.customers.v1.CustomerService/RecordEvents\",le=\"0.005\"}"),
        "latency is a histogram with buckets"
    );
    assert_eq!(
        sample(
            &body,
            "patron_events_ingested_total",
            &[("outcome", "recorded")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &body,
            "patron_events_ingested_total",
            &[("outcome", "duplicate")]
        ),
        Some(1.0)
    );
    assert_eq!(sample(&body, "patron_index_customers", &[]), Some(2.0));
    assert_eq!(sample(&body, "patron_db_up", &[]), Some(1.0));
    assert!(sample(&body, "patron_db_pool_max_connections", &[]).is_some_and(|v| v >= 1.0));
    assert!(sample(&body, "patron_db_pool_connections", &[("state", "idle")]).is_some());
    assert!(sample(&body, "patron_feed_lag_positions", &[]).is_some_and(|v| v >= 0.0));
    assert!(sample(&body, "patron_feed_head_position", &[]).is_some_and(|v| v >= 3.0));
    // The scrape runs while no call is open.
    assert_eq!(sample(&body, "patron_grpc_in_flight", &[]), Some(0.0));
    assert_eq!(sample(&body, "patron_grpc_streams_open", &[]), Some(0.0));

    // Anything but /metrics is 404.
    let mut stream = TcpStream::connect(metrics).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .await
        .expect("send");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    assert!(
        text.starts_with("HTTP/1.0 404") || text.starts_with("HTTP/1.1 404"),
        "{text}"
    );
}

/// A token for a position the feed will not reach: a read carrying it waits (holding its place)
/// until its deadline.
fn far_token(app_token: &str) -> String {
    let (prefix, _) = app_token.rsplit_once('.').expect("v1.<db>.<pos>");
    format!("{prefix}.999999999")
}

type Waiting =
    tokio::task::JoinHandle<Result<tonic::Response<pb::GetCustomerResponse>, tonic::Status>>;

/// Writes customer `c-1`, then starts `n` reads of it on `app`'s connection that wait for a
/// position never reached (each holds its place until its 3 s deadline), and lets them arrive.
async fn hold_places(app: &crate::support::TestApp, n: usize) -> Vec<Waiting> {
    let written = app
        .customers
        .clone()
        .upsert_customers(pb::UpsertCustomersRequest {
            customers: vec![customer("c-1")],
        })
        .await
        .expect("upsert");
    let token = written
        .metadata()
        .get("patron-consistency-token")
        .expect("a write carries a token")
        .to_str()
        .expect("ascii")
        .to_owned();
    let waiting_token = far_token(&token);
    let mut waiting = Vec::new();
    for _ in 0..n {
        let mut client = app.customers.clone();
        let mut req = tonic::Request::new(pb::GetCustomerRequest {
            customer_id: "c-1".into(),
        });
        req.metadata_mut().insert(
            "patron-consistency-token",
            waiting_token.parse().expect("ascii"),
        );
        req.set_timeout(Duration::from_secs(3));
        waiting.push(tokio::spawn(async move { client.get_customer(req).await }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    waiting
}

#[tokio::test]
async fn one_connection_is_refused_past_its_own_limit_while_another_is_served() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.limits.max_in_flight = 10;
        s.limits.max_in_flight_per_connection = 2;
    })
    .await;
    // Two calls wait on this connection: its places are taken, the server's are not.
    let waiting = hold_places(&app, 2).await;
    let read = || pb::GetCustomerRequest {
        customer_id: "c-1".into(),
    };
    let refused = app
        .customers
        .clone()
        .get_customer(read())
        .await
        .expect_err("this connection has no place left");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let info = refused
        .get_error_details()
        .error_info()
        .cloned()
        .expect("ErrorInfo");
    assert_eq!(info.reason, "TOO_MANY_CALLS");
    assert_eq!(
        (info.metadata.get("scope"), info.metadata.get("limit")),
        (Some(&"connection".to_owned()), Some(&"2".to_owned()))
    );
    // A second TCP connection to the same server has places of its own.
    let mut other = CustomerServiceClient::new(connect(app.addr).await);
    other
        .get_customer(read())
        .await
        .expect("another connection is served");
    for w in waiting {
        let status = w.await.expect("task").expect_err("token never reached");
        assert_eq!(status.code(), Code::Unavailable);
    }
    app.customer("c-1")
        .await
        .expect("the connection's places came back");
}

#[tokio::test]
async fn calls_past_the_limits_are_refused_at_once_with_retry_info() {
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.limits.max_in_flight = 2;
        s.limits.max_in_flight_per_connection = 2;
        s.limits.max_streams = 1;
        s.limits.max_streams_per_connection = 1;
    })
    .await;
    let waiting = hold_places(&app, 2).await;

    let started = Instant::now();
    let refused = app
        .customers
        .clone()
        .get_customer(pb::GetCustomerRequest {
            customer_id: "c-1".into(),
        })
        .await
        .expect_err("no place left");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused at once, not queued: {:?}",
        started.elapsed()
    );
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let details = refused.get_error_details();
    assert_eq!(
        details.error_info().map(|i| i.reason.as_str()),
        Some("TOO_MANY_CALLS")
    );
    assert!(
        details
            .retry_info()
            .and_then(|r| r.retry_delay)
            .is_some_and(|d| d > Duration::ZERO),
        "RetryInfo says when to come back"
    );
    // Health is still answered.
    let health = HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health is never refused");
    assert_eq!(health.into_inner().status, ServingStatus::Serving as i32);

    for w in waiting {
        let status = w.await.expect("task").expect_err("token never reached");
        assert_eq!(status.code(), Code::Unavailable);
    }
    // Places came back.
    app.customer("c-1").await.expect("served again");

    // One stream at a time: a second is refused while the first is open.
    let mut segments = SegmentationServiceClient::new(app.channel.clone());
    let watch = || gpb::WatchSegmentRequest {
        segment_id: "rfm-champions".into(),
        include_initial_members: false,
    };
    let open = segments.watch_segment(watch()).await.expect("first stream");
    let status = match segments.watch_segment(watch()).await {
        Ok(r) => r.into_inner().message().await.expect_err("refused"),
        Err(s) => s,
    };
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status
            .get_error_details()
            .error_info()
            .map(|i| i.reason.as_str()),
        Some("TOO_MANY_STREAMS")
    );
    // Unary calls have their own limit.
    app.customer("c-1").await.expect("unary calls still served");
    drop(open);
    let mut again = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(s) = segments.watch_segment(watch()).await {
            again = Some(s);
            break;
        }
    }
    assert!(again.is_some(), "the closed stream's place came free");
}

/// A TCP proxy the test can cut (every connection dropped, new ones refused) and restore.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(tokio::sync::watch::channel(0u64).0);
        let (up2, generation2) = (Arc::clone(&up), Arc::clone(&generation));
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client); // Refused: closed at once.
                    continue;
                }
                let mut cut = generation2.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut cr, &mut sw) => {},
                        _ = tokio::io::copy(&mut sr, &mut cw) => {},
                        _ = cut.changed() => {},
                    }
                });
            }
        });
        Proxy {
            addr,
            up,
            generation,
            task,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `postgres://user@host:port/db` with `host:port` replaced.
fn through(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("scheme");
    let (userinfo, hostpath) = match rest.split_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), rest),
    };
    let path = hostpath.find('/').map_or("", |i| &hostpath[i..]);
    format!("{scheme}://{userinfo}{addr}{path}")
}

fn target_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").expect("scheme").1;
    let hostpath = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let authority = hostpath.split('/').next().expect("authority");
    let authority = authority.replace("localhost", "127.0.0.1");
    authority.parse().unwrap_or_else(|_| {
        format!("{authority}:5432")
            .parse()
            .expect("host:port in the Postgres URL")
    })
}

async fn status_of(health: &mut HealthClient<tonic::transport::Channel>, service: &str) -> i32 {
    health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(-1)
}

async fn wait_for_status(
    health: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
    want: ServingStatus,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    while started.elapsed() < within {
        if status_of(health, service).await == want as i32 {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{service:?} did not become {want:?} within {within:?}");
}

#[tokio::test]
#[ignore = "Postgres suite: set PATRON_TEST_POSTGRES_URL and run with -- --include-ignored"]
async fn a_database_outage_fails_fast_reports_not_serving_and_recovers() {
    let db = patron_store_postgres::testing::TestDatabase::create().await;
    let proxy = Proxy::start(target_of(&db.url)).await;
    let url = through(&db.url, proxy.addr);
    let (_child, addr) = start_with(&url, &["--db-acquire-timeout-millis", "1000"]).await;
    let channel = connect(addr).await;
    let mut customers = CustomerServiceClient::new(channel.clone());
    let mut scoring = ScoringServiceClient::new(channel.clone());
    let mut health = HealthClient::new(channel.clone());
    customers
        .record_events(pb::RecordEventsRequest {
            events: vec![purchase("o-1", "e1", ts(-3, 0), "o1", 1500)],
        })
        .await
        .expect("record before the outage");

    proxy.cut();
    let noticed = wait_for_status(
        &mut health,
        "",
        ServingStatus::NotServing,
        Duration::from_secs(5),
    )
    .await;
    eprintln!("outage noticed after {noticed:?}");
    assert_eq!(
        status_of(&mut health, "patron.customers.v1.CustomerService").await,
        ServingStatus::NotServing as i32
    );
    assert_eq!(
        status_of(&mut health, "patron.scoring.v1.ScoringService").await,
        ServingStatus::Serving as i32,
        "scoring answers reads from memory"
    );
    // A write fails at once with UNAVAILABLE and RetryInfo.
    let started = Instant::now();
    let mut req = tonic::Request::new(pb::RecordEventsRequest {
        events: vec![purchase("o-1", "e2", ts(-2, 0), "o2", 1500)],
    });
    req.set_timeout(Duration::from_secs(20));
    let failed = customers.record_events(req).await.expect_err("no database");
    let took = started.elapsed();
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
    assert!(
        took < Duration::from_millis(500),
        "failed at once: {took:?}"
    );
    assert!(
        failed
            .get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay)
            .is_some(),
        "RetryInfo on UNAVAILABLE"
    );
    // A read that needs the database fails at once too.
    let started = Instant::now();
    let failed = customers
        .get_customer(pb::GetCustomerRequest {
            customer_id: "o-1".into(),
        })
        .await
        .expect_err("no database");
    assert_eq!(failed.code(), Code::Unavailable);
    assert!(started.elapsed() < Duration::from_millis(500));
    // A read served from memory still works.
    let value = scoring
        .get_customer_value(spb::GetCustomerValueRequest {
            customer_id: "o-1".into(),
            as_of: None,
            intervals: false,
        })
        .await
        .expect("value from memory");
    assert!(value.into_inner().value.is_some());

    proxy.restore();
    let back = wait_for_status(
        &mut health,
        "",
        ServingStatus::Serving,
        Duration::from_secs(5),
    )
    .await;
    eprintln!("SERVING again {back:?} after the database came back");
    assert_eq!(
        status_of(&mut health, "patron.customers.v1.CustomerService").await,
        ServingStatus::Serving as i32
    );
    customers
        .record_events(pb::RecordEventsRequest {
            events: vec![purchase("o-1", "e2", ts(-2, 0), "o2", 1500)],
        })
        .await
        .expect("writes work again");
}

#[tokio::test]
async fn serve_with_the_database_unreachable_logs_each_attempt_and_gives_up_at_its_limit() {
    // Nothing listens on this port.
    let nowhere = free_addr();
    let url = format!("postgres://postgres@{nowhere}/patron");
    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_patron"))
        .args([
            "serve",
            "--listen",
            &free_addr().to_string(),
            "--database",
            &url,
        ])
        .args(["--db-startup-timeout-secs", "3"])
        .env("PATRON_LOG", "info")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("gives up in time")
        .expect("runs");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    let attempts = stderr
        .lines()
        .filter(|l| l.contains("database unreachable, retrying"))
        .count();
    assert!(attempts >= 2, "each failed attempt is logged:\n{stderr}");
    assert!(stderr.contains("gave up after"), "{stderr}");
}

/// The `THP_enabled` line of a process's /proc status: 0 when huge pages are off for it.
fn thp_enabled(pid: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_owned())
        .expect("the kernel reports THP_enabled")
}

/// Starts `patron serve` on a fresh SQLite file, with `MIMALLOC_ALLOW_THP` as given, and
/// returns its `THP_enabled` once it serves.
async fn served_thp(allow: Option<&str>) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    let (mut child, _) = start_configured(&url, &[], |command| {
        command.env_remove("MIMALLOC_ALLOW_THP");
        if let Some(allow) = allow {
            command.env("MIMALLOC_ALLOW_THP", allow);
        }
    })
    .await;
    let pid = child.id().expect("running").to_string();
    let thp = thp_enabled(&pid);
    child.kill().await.expect("stop patron");
    thp
}

#[tokio::test]
async fn the_server_runs_without_transparent_huge_pages_unless_mimalloc_is_told_otherwise() {
    assert_eq!(served_thp(None).await, "0", "huge pages are off by default");
    // Asked for, the process keeps what the machine gives any other process (this test's own).
    assert_eq!(served_thp(Some("1")).await, thp_enabled("self"));
}
