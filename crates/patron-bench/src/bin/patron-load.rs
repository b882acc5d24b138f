//! `patron-load`: a closed-loop gRPC load generator for Patron (and the `bare-server` baseline).
//!
//! It opens `--connections` HTTP/2 connections and keeps `--concurrency` calls in flight on each:
//! every worker sends a call, waits for the answer, records its latency and sends the next. It runs
//! `--warmup` seconds unrecorded, then records for `--duration` seconds or `--requests` calls
//! (whichever is given; a count is still capped in time), and stops by itself. Latencies go into a
//! log-linear histogram (within 0.8 %). Loopback targets only.
//!
//! Scenarios:
//! - `health-check`: `grpc.health.v1.Health/Check` for the whole server.
//! - `get-customer-value`: `ScoringService/GetCustomerValue` for random ids
//!   `{--id-prefix}{n}` with n uniform in `--id-first..--id-first + --id-count`, zero-padded to
//!   `--id-width` digits (0: no padding, as the `ingest` example names its customers
//!   `cust-0`, `cust-1`, …; `patron demo` names them `cust-000001`, … : `--id-first 1
//!   --id-width 6`), from a seeded RNG (worker w uses `--seed` + w).
//! - `stream-customer-values`: one `StreamCustomerValues` call read to the end (customers/s).
//! - `fit`: one `FitValueModel` call (activating the model); prints the model's fit time.
//! - `segments`: creates a fixed set of segments (`everyone` = `true`, the evaluation floor, and
//!   rules over purchase totals, windows, model scores, `in_segment`, plus the built-in
//!   `rfm-champions`), then `--repetitions` rounds of `CountSegmentMembers` and listing every
//!   member through `ListSegmentMembers` (`--page-size`), and one `PreviewSegment` per rule
//!   (`--only` measures a subset); with `--server-pid`, the server's CPU time per call from /proc
//!   (see `patron_bench::segments`).
//!
//! `--json` prints one line of JSON to stdout instead of the human summary (`segments`: one line
//! per segment).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use patron_bench::histogram::Histogram;
use patron_proto::scoring::v1 as pb;
use patron_proto::scoring::v1::scoring_service_client::ScoringServiceClient;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Largest message the client accepts (stream chunks of up to 10,000 profiles).
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// Longest run allowed, warm-up included.
const MAX_SECONDS: f64 = 3_600.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// grpc.health.v1.Health/Check (the whole server).
    HealthCheck,
    /// patron.scoring.v1.ScoringService/GetCustomerValue for random existing ids.
    GetCustomerValue,
    /// patron.scoring.v1.ScoringService/StreamCustomerValues over everyone, read to the end.
    StreamCustomerValues,
    /// patron.scoring.v1.ScoringService/FitValueModel once, activating the model.
    Fit,
    /// patron.segmentation.v1.SegmentationService: count, list-all and preview of fixed segments.
    Segments,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::HealthCheck => "health-check",
            Scenario::GetCustomerValue => "get-customer-value",
            Scenario::StreamCustomerValues => "stream-customer-values",
            Scenario::Fit => "fit",
            Scenario::Segments => "segments",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "patron-load",
    about = "Closed-loop gRPC load generator for Patron benchmarks (loopback only)"
)]
struct Args {
    /// Server address (loopback only), e.g. 127.0.0.1:50197.
    #[arg(long, default_value = "127.0.0.1:50051")]
    target: String,
    /// What to call.
    #[arg(long, value_enum, default_value = "health-check")]
    scenario: Scenario,
    /// HTTP/2 connections to open.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    connections: u32,
    /// Calls in flight on each connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    concurrency: u32,
    /// Seconds to record (after the warm-up). With --requests: the time cap (default 600).
    /// Default 10 when neither is given. For stream-customer-values: the time cap (default 600).
    #[arg(long)]
    duration: Option<f64>,
    /// Calls to record (after the warm-up), instead of a duration.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    requests: Option<u64>,
    /// Seconds of unrecorded calls before recording starts.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Customer id prefix (get-customer-value).
    #[arg(long, default_value = "cust-")]
    id_prefix: String,
    /// Ids are drawn uniformly from id-first..id-first + id-count (get-customer-value); they
    /// must all exist.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    id_count: u64,
    /// The first id number: 0 for the ingest example, 1 for `patron demo` (which also needs
    /// --id-width 6).
    #[arg(long, default_value_t = 0)]
    id_first: u64,
    /// Zero-pad the id number to this many digits; 0 = no padding (the ingest example's naming).
    #[arg(long, default_value_t = 0)]
    id_width: usize,
    /// Seed of the id generator (worker w uses seed + w).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Profiles per stream message (stream-customer-values); 0 = the server's default (100).
    #[arg(long, default_value_t = 0)]
    chunk_size: i32,
    /// StreamCustomerValues' BASIC view: profiles without the driver sentences.
    #[arg(long)]
    basic_view: bool,
    /// Ask for 90 % intervals of P(alive), expected purchases and CLV (`intervals: true`;
    /// get-customer-value and stream-customer-values).
    #[arg(long)]
    intervals: bool,
    /// The instant to describe (stream-customer-values; a date or RFC 3339): unset means the
    /// call's start. Fixed, two runs' answers can be compared with --digest.
    #[arg(long, value_parser = patron_server::import::parse_instant)]
    as_of: Option<patron_domain::Timestamp>,
    /// Print a digest of every message as received, in order (stream-customer-values; FNV-1a
    /// over each message's encoding): two builds that give the same digest for one --as-of sent
    /// the same answers.
    #[arg(long)]
    digest: bool,
    /// Rounds of count and list-all per segment (segments).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    repetitions: u32,
    /// ListSegmentMembers page size (segments).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    page_size: i32,
    /// The server's pid: read its CPU time from /proc around each call (segments; the server
    /// must run on this machine).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    clock_ticks: u32,
    /// Measure only these segments, comma-separated (segments; all are still created).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Per-call deadline in seconds (sent as grpc-timeout).
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// `authorization` metadata sent on every call (e.g. `Bearer KEY`); never printed.
    #[arg(long, env = "PATRON_LOAD_AUTHORIZATION", hide_env_values = true)]
    authorization: Option<String>,
    /// Connect with TLS, trusting the CA certificates (PEM) in this file; the server name is
    /// `localhost`.
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// Print one line of JSON instead of the human summary.
    #[arg(long)]
    json: bool,
}

fn seconds(what: &str, s: f64) -> Result<Duration, String> {
    if !(s.is_finite() && (0.0..=MAX_SECONDS).contains(&s)) {
        return Err(format!(
            "{what} must be between 0 and {MAX_SECONDS} seconds"
        ));
    }
    Ok(Duration::from_secs_f64(s))
}

/// `authorization` metadata for every call, set once from the arguments.
static AUTHORIZATION: std::sync::OnceLock<
    Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
> = std::sync::OnceLock::new();
/// The TLS client configuration, set once from the arguments.
static TLS: std::sync::OnceLock<Option<Arc<rustls::ClientConfig>>> = std::sync::OnceLock::new();

fn request<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(Some(v)) = AUTHORIZATION.get() {
        r.metadata_mut().insert("authorization", v.clone());
    }
    r
}

fn tls_config(ca: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(patron_server::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout);
    let Some(Some(config)) = TLS.get() else {
        return endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"));
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
    endpoint
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let name = rustls::pki_types::ServerName::try_from("localhost")
                    .map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| format!("cannot connect to {addr} with TLS: {e}"))
}

/// Random customer ids, as the ingest example names them.
struct IdGen {
    rng: StdRng,
    prefix: String,
    first: u64,
    count: u64,
    width: usize,
}

impl IdGen {
    fn next(&mut self) -> String {
        let n = self.first + self.rng.gen_range(0..self.count);
        format!("{}{n:0width$}", self.prefix, width = self.width)
    }
}

/// One worker's way of making a call.
enum Caller {
    Health(HealthClient<Channel>),
    /// GetCustomerValue; the flag asks for intervals.
    Value(ScoringServiceClient<Channel>, Box<IdGen>, bool),
}

impl Caller {
    async fn call(&mut self) -> Result<(), tonic::Status> {
        match self {
            Caller::Health(client) => {
                let status = client
                    .check(request(HealthCheckRequest {
                        service: String::new(),
                    }))
                    .await?
                    .into_inner()
                    .status;
                if status == ServingStatus::Serving as i32 {
                    Ok(())
                } else {
                    Err(tonic::Status::unavailable(format!(
                        "health status {status}, not SERVING"
                    )))
                }
            }
            Caller::Value(client, ids, intervals) => {
                let response = client
                    .get_customer_value(request(pb::GetCustomerValueRequest {
                        customer_id: ids.next(),
                        as_of: None,
                        intervals: *intervals,
                    }))
                    .await?;
                if response.get_ref().value.is_none() {
                    return Err(tonic::Status::internal("answer without a value"));
                }
                Ok(())
            }
        }
    }
}

/// When workers record and stop.
struct Plan {
    measure_start: Instant,
    hard_end: Instant,
    /// Calls left to start while recording (requests mode).
    budget: Option<(AtomicU64, u64)>,
}

#[derive(Default)]
struct Tally {
    latencies: Histogram,
    errors: u64,
    codes: BTreeMap<String, u64>,
    first_error: Option<String>,
    warmup_calls: u64,
    last_done: Option<Instant>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.merge(&other.latencies);
        self.errors += other.errors;
        for (k, v) in other.codes {
            *self.codes.entry(k).or_default() += v;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.warmup_calls += other.warmup_calls;
        self.last_done = match (self.last_done, other.last_done) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

async fn worker(mut caller: Caller, plan: Arc<Plan>) -> Tally {
    let mut tally = Tally::default();
    loop {
        let started = Instant::now();
        if started >= plan.hard_end {
            break;
        }
        let recording = started >= plan.measure_start;
        if recording
            && let Some((issued, limit)) = &plan.budget
            && issued.fetch_add(1, Ordering::Relaxed) >= *limit
        {
            break;
        }
        let result = caller.call().await;
        let done = Instant::now();
        if !recording {
            tally.warmup_calls += 1;
            continue;
        }
        tally.last_done = Some(done);
        match result {
            Ok(()) => tally.latencies.record_duration(done - started),
            Err(status) => {
                tally.errors += 1;
                *tally
                    .codes
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
                if tally.first_error.is_none() {
                    tally.first_error = Some(format!("{:?}: {}", status.code(), status.message()));
                }
            }
        }
    }
    tally
}

fn us(nanos: u64) -> f64 {
    (nanos as f64 / 100.0).round() / 10.0
}

async fn closed_loop(args: &Args, addr: SocketAddr) -> Result<Value, String> {
    let timeout = seconds("--timeout", args.timeout)?;
    let warmup = seconds("--warmup", args.warmup)?;
    let (duration, budget) = match (args.duration, args.requests) {
        (d, Some(n)) => (seconds("--duration", d.unwrap_or(600.0))?, Some(n)),
        (Some(d), None) => (seconds("--duration", d)?, None),
        (None, None) => (Duration::from_secs(10), None),
    };
    let mut channels = Vec::new();
    for _ in 0..args.connections {
        channels.push(connect(addr, timeout).await?);
    }
    let start = Instant::now();
    let plan = Arc::new(Plan {
        measure_start: start + warmup,
        hard_end: start + warmup + duration,
        budget: budget.map(|n| (AtomicU64::new(0), n)),
    });
    let mut workers = tokio::task::JoinSet::new();
    let mut w = 0u64;
    for channel in &channels {
        for _ in 0..args.concurrency {
            let caller = match args.scenario {
                Scenario::HealthCheck => Caller::Health(HealthClient::new(channel.clone())),
                _ => Caller::Value(
                    ScoringServiceClient::new(channel.clone())
                        .max_decoding_message_size(MAX_MESSAGE_BYTES),
                    Box::new(IdGen {
                        rng: StdRng::seed_from_u64(args.seed.wrapping_add(w)),
                        prefix: args.id_prefix.clone(),
                        first: args.id_first,
                        count: args.id_count,
                        width: args.id_width,
                    }),
                    args.intervals,
                ),
            };
            workers.spawn(worker(caller, Arc::clone(&plan)));
            w += 1;
        }
    }
    let mut tally = Tally::default();
    while let Some(joined) = workers.join_next().await {
        tally.merge(joined.map_err(|e| format!("worker failed: {e}"))?);
    }
    let secs = tally.last_done.map_or(0.0, |t| {
        t.saturating_duration_since(plan.measure_start)
            .as_secs_f64()
    });
    let ok = tally.latencies.len();
    let requests = ok + tally.errors;
    let rate = if secs > 0.0 {
        requests as f64 / secs
    } else {
        0.0
    };
    let h = &tally.latencies;
    Ok(json!({
        "scenario": args.scenario.name(),
        "target": addr.to_string(),
        "connections": args.connections,
        "concurrency": args.concurrency,
        "requests": requests,
        "errors": tally.errors,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "requests_per_second": rate.round(),
        "p50_us": us(h.percentile(50.0)),
        "p90_us": us(h.percentile(90.0)),
        "p99_us": us(h.percentile(99.0)),
        "p999_us": us(h.percentile(99.9)),
        "max_us": us(h.max()),
        "mean_us": us(h.mean().round() as u64),
        "warmup_seconds": args.warmup,
        "warmup_requests": tally.warmup_calls,
        "error_codes": tally.codes,
        "first_error": tally.first_error,
    }))
}

async fn stream_all(args: &Args, addr: SocketAddr) -> Result<Value, String> {
    let cap = seconds("--duration", args.duration.unwrap_or(600.0))?;
    let channel = connect(addr, cap).await?;
    let mut client =
        ScoringServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut request = tonic::Request::new(pb::StreamCustomerValuesRequest {
        filter: None,
        chunk_size: args.chunk_size,
        view: if args.basic_view {
            pb::CustomerValueView::Basic
        } else {
            pb::CustomerValueView::Full
        }
        .into(),
        as_of: args.as_of.map(|t| {
            let (seconds, nanos) = t.to_parts();
            prost_types::Timestamp { seconds, nanos }
        }),
        intervals: args.intervals,
    });
    request.set_timeout(cap);
    let own_cpu =
        || patron_bench::segments::process_cpu_seconds(std::process::id(), args.clock_ticks);
    let client_cpu_before = own_cpu();
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + cap);
    let mut customers = 0u64;
    let mut with_intervals = 0u64;
    let mut messages = 0u64;
    let mut bytes = 0u64;
    let mut first_message = None;
    let mut digest = args.digest.then_some(Fnv1a::default());
    let mut gaps = Histogram::new();
    let mut error = None;
    match client.stream_customer_values(request).await {
        Err(status) => error = Some(format!("{:?}: {}", status.code(), status.message())),
        Ok(response) => {
            let mut stream = response.into_inner();
            let mut last = Instant::now();
            loop {
                match tokio::time::timeout_at(deadline, stream.message()).await {
                    Err(_) => {
                        error = Some(format!("time cap of {cap:?} reached"));
                        break;
                    }
                    Ok(Err(status)) => {
                        error = Some(format!("{:?}: {}", status.code(), status.message()));
                        break;
                    }
                    Ok(Ok(None)) => break,
                    Ok(Ok(Some(chunk))) => {
                        let now = Instant::now();
                        gaps.record_duration(now - last);
                        last = now;
                        first_message.get_or_insert(now - started);
                        messages += 1;
                        customers += chunk.values.len() as u64;
                        with_intervals += chunk
                            .values
                            .iter()
                            .filter(|v| v.clv.as_ref().is_some_and(|c| c.intervals.is_some()))
                            .count() as u64;
                        bytes += chunk.encoded_len() as u64;
                        if let Some(d) = digest.as_mut() {
                            d.write(&chunk.encode_to_vec());
                        }
                    }
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    // This client's own CPU time over the call: decoding is a large share of a machine that
    // runs the client beside the server.
    let client_cpu = client_cpu_before
        .zip(own_cpu())
        .map(|(a, b)| ((b - a) * 1000.0).round() / 1000.0);
    Ok(json!({
        "scenario": args.scenario.name(),
        "target": addr.to_string(),
        "connections": 1,
        "concurrency": 1,
        "requests": 1,
        "errors": u64::from(error.is_some()),
        "seconds": (secs * 1000.0).round() / 1000.0,
        "customers": customers,
        "customers_per_second": (customers as f64 / secs).round(),
        "customers_with_intervals": with_intervals,
        "messages": messages,
        "megabytes": (bytes as f64 / 1e5).round() / 10.0,
        "megabytes_per_second": (bytes as f64 / secs / 1e5).round() / 10.0,
        "first_message_ms": first_message.map(|d| (d.as_secs_f64() * 1e4).round() / 10.0),
        "message_gap_p50_us": us(gaps.percentile(50.0)),
        "message_gap_p99_us": us(gaps.percentile(99.0)),
        "message_gap_max_us": us(gaps.max()),
        "first_error": error,
        "digest": digest.map(|d| format!("{:016x}", d.0)),
        "client_cpu_seconds": client_cpu,
    }))
}

/// 64-bit FNV-1a, for comparing two streams' bytes.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

async fn fit(args: &Args, addr: SocketAddr) -> Result<Value, String> {
    let timeout = seconds("--timeout", args.timeout)?;
    let channel = connect(addr, timeout).await?;
    let mut client = ScoringServiceClient::new(channel);
    let mut request = tonic::Request::new(pb::FitValueModelRequest {
        activate: true,
        ..Default::default()
    });
    request.set_timeout(timeout);
    let started = Instant::now();
    let model = client
        .fit_value_model(request)
        .await
        .map_err(|s| format!("FitValueModel failed: {:?}: {}", s.code(), s.message()))?
        .into_inner()
        .model
        .ok_or("FitValueModel answered without a model")?;
    let secs = started.elapsed().as_secs_f64();
    let bg = model.bg_nbd.unwrap_or_default();
    let gg = model.gamma_gamma.unwrap_or_default();
    Ok(json!({
        "scenario": args.scenario.name(),
        "target": addr.to_string(),
        "requests": 1,
        "errors": 0,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "version": model.version,
        "active": model.active,
        "fit_millis": model.fit_millis,
        "customers": model.customers,
        "bg_nbd": {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b,
                   "iterations": bg.iterations, "converged": bg.converged},
        "gamma_gamma": {"p": gg.p, "q": gg.q, "v": gg.v, "customers": gg.customers,
                        "iterations": gg.iterations, "converged": gg.converged},
    }))
}

async fn segments(args: &Args, addr: SocketAddr) -> Result<Vec<Value>, String> {
    let timeout = seconds("--timeout", args.timeout)?;
    let channel = connect(addr, timeout).await?;
    let opts = patron_bench::segments::Options {
        repetitions: args.repetitions,
        page_size: args.page_size,
        timeout,
        server_pid: args.server_pid,
        clock_ticks: args.clock_ticks,
        only: args.only.clone(),
    };
    patron_bench::segments::run(channel, &addr.to_string(), &opts).await
}

fn human(result: &Value) -> String {
    let get = |k: &str| result.get(k).cloned().unwrap_or(Value::Null);
    let median = |k: &str| result.get(k).map_or(Value::Null, |v| v["median"].clone());
    match result.get("scenario").and_then(Value::as_str) {
        Some("segments") => format!(
            "segments {}: {} of {} customers; count {} ms, list-all {} ms ({} pages, {} members, \
             match {}), preview {} ms (medians of {}); rule {}",
            get("segment").as_str().unwrap_or_default(),
            get("count"),
            get("population"),
            median("count_ms"),
            median("list_ms"),
            get("list_pages"),
            get("list_members"),
            get("list_members_match_count"),
            get("preview_ms"),
            get("repetitions"),
            get("rule").as_str().unwrap_or_default(),
        ),
        Some("fit") => format!(
            "fit: model v{} on {} customers, fit_millis {} (wall {} s); BG/NBD {}, Gamma-Gamma {}",
            get("version"),
            get("customers"),
            get("fit_millis"),
            get("seconds"),
            get("bg_nbd"),
            get("gamma_gamma"),
        ),
        Some("stream-customer-values") => format!(
            "stream-customer-values: {} customers in {} messages ({} MB) in {} s = {} customers/s; \
             first message after {} ms; errors {} {}",
            get("customers"),
            get("messages"),
            get("megabytes"),
            get("seconds"),
            get("customers_per_second"),
            get("first_message_ms"),
            get("errors"),
            get("first_error"),
        ),
        _ => format!(
            "{} {}x{}: {} calls ({} errors) in {} s = {} req/s; latency µs p50 {} p90 {} p99 {} \
             p99.9 {} max {}{}",
            get("scenario").as_str().unwrap_or_default(),
            get("connections"),
            get("concurrency"),
            get("requests"),
            get("errors"),
            get("seconds"),
            get("requests_per_second"),
            get("p50_us"),
            get("p90_us"),
            get("p99_us"),
            get("p999_us"),
            get("max_us"),
            match get("first_error") {
                Value::String(e) => format!("; first error: {e}"),
                _ => String::new(),
            },
        ),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let auth = match args.authorization.as_deref().map(str::parse) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            eprintln!("patron-load: --authorization is not valid metadata");
            return ExitCode::FAILURE;
        }
    };
    let _ = AUTHORIZATION.set(auth);
    let tls = match args.tls_ca.as_deref().map(tls_config) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            eprintln!("patron-load: --tls-ca: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = TLS.set(tls);
    let addr = match patron_bench::loopback_addr(&args.target) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("patron-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let results = match args.scenario {
        Scenario::HealthCheck | Scenario::GetCustomerValue => {
            closed_loop(&args, addr).await.map(|r| vec![r])
        }
        Scenario::StreamCustomerValues => stream_all(&args, addr).await.map(|r| vec![r]),
        Scenario::Fit => fit(&args, addr).await.map(|r| vec![r]),
        Scenario::Segments => segments(&args, addr).await,
    };
    let results = match results {
        Ok(r) => r,
        Err(e) => {
            eprintln!("patron-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    for result in &results {
        let line = if args.json {
            result.to_string()
        } else {
            human(result)
        };
        if writeln!(out, "{line}").is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(first: u64, count: u64, width: usize) -> Vec<String> {
        let mut g = IdGen {
            rng: StdRng::seed_from_u64(7),
            prefix: "cust-".into(),
            first,
            count,
            width,
        };
        (0..200).map(|_| g.next()).collect()
    }

    #[test]
    fn ids_match_the_ingest_example_and_the_demo() {
        // ingest: cust-{n}, n in 0..count, no padding.
        let all = ids(0, 3, 0);
        for id in ["cust-0", "cust-1", "cust-2"] {
            assert!(all.iter().any(|i| i == id), "{id} never drawn");
        }
        assert!(
            all.iter()
                .all(|i| ["cust-0", "cust-1", "cust-2"].contains(&i.as_str()))
        );
        // demo: cust-000001 … cust-{count}, six digits.
        let all = ids(1, 2, 6);
        assert!(all.iter().all(|i| i == "cust-000001" || i == "cust-000002"));
        // The same seed gives the same ids.
        assert_eq!(ids(0, 1_000_000, 0), ids(0, 1_000_000, 0));
    }
}
