//! `overload-load`: goodput under overload (issue 13), loopback only, bounded in time.
//!
//! Closed-loop workers call `ScoringService/GetCustomerValue` for random existing ids (the id
//! options of `patron-load`: `{--id-prefix}{n}`, n uniform in `--id-first..--id-first +
//! --id-count`, zero-padded to `--id-width` digits), spread round-robin over `--connections`
//! HTTP/2 connections. A worker whose call is refused with RESOURCE_EXHAUSTED sleeps the
//! `google.rpc.RetryInfo` delay of the refusal (100 ms if it carries none), as a well-behaved
//! client does, then goes on. Each step runs `--warmup` seconds unrecorded, then `--duration`
//! seconds recorded, and counts OK calls (goodput), refusals and other errors, in total and per
//! second; only calls that end inside the recorded window count.
//!
//! 1. Phase `peak`: one step per `--sweep` concurrency (total workers); the peak goodput is the
//!    best OK/s, the saturating concurrency the smallest whose goodput is within 5 % of it.
//! 2. Phase `overload`: `--overload` workers (default max(2 × saturating, `--overload-min`)), its
//!    goodput, and the ratio overload goodput / peak goodput (issue 13 asks ≥ 90 %).
//!
//! During every step a side probe, on a connection of its own, sends one GetCustomerValue every
//! `--probe-interval-ms` (10) milliseconds, one at a time, and records its latency (every answer,
//! OK or refused) and how many were refused: what a newcomer sees of the server at that load.
//!
//! With `--server-pid`, each step also reports the server's CPU time and memory from /proc.
//! `--json` prints one line of JSON to stdout instead of the human summary.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use patron_bench::histogram::Histogram;
use patron_proto::scoring::v1 as pb;
use patron_proto::scoring::v1::scoring_service_client::ScoringServiceClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

/// Longest step allowed, warm-up included.
const MAX_SECONDS: f64 = 600.0;
/// The delay a worker sleeps after a refusal without RetryInfo (the server's unary delay).
const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(100);
/// A peak-phase concurrency whose goodput is within this fraction of the best is "saturating".
const SATURATING_FRACTION: f64 = 0.95;

#[derive(Debug, Parser)]
#[command(
    name = "overload-load",
    about = "Goodput of GetCustomerValue at the peak and under overload, with a side probe (loopback only)"
)]
struct Args {
    /// Server address (loopback only), e.g. 127.0.0.1:50321.
    #[arg(long, default_value = "127.0.0.1:50051")]
    target: String,
    /// HTTP/2 connections the workers are spread over (the probe has one more of its own).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    connections: u32,
    /// Total workers of each peak-phase step, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,32,128")]
    sweep: Vec<u32>,
    /// Workers of the overload phase (default: max(2 × saturating, --overload-min)).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    overload: Option<u32>,
    /// The least overload concurrency (issue 13's case: 2,000 concurrent calls).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    overload_min: u32,
    /// Seconds recorded per step.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds unrecorded at the start of each step.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Milliseconds between the side probe's calls (one at a time: a slow answer delays the next).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    probe_interval_ms: u64,
    /// Customer id prefix.
    #[arg(long, default_value = "cust-")]
    id_prefix: String,
    /// Ids are drawn uniformly from id-first..id-first + id-count; they must all exist.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    id_count: u64,
    /// The first id number (1 for the generated data sets, with --id-width 6).
    #[arg(long, default_value_t = 0)]
    id_first: u64,
    /// Zero-pad the id number to this many digits; 0 = no padding.
    #[arg(long, default_value_t = 0)]
    id_width: usize,
    /// Seed of the id generators (worker w of a step uses seed + w; the probe seed - 1).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Per-call deadline in seconds (sent as grpc-timeout).
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// The server's pid: its CPU time and memory per step from /proc (same machine only).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    clock_ticks: u32,
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

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))
}

/// Random customer ids.
#[derive(Clone)]
struct Ids {
    prefix: String,
    first: u64,
    count: u64,
    width: usize,
}

impl Ids {
    fn next(&self, rng: &mut StdRng) -> String {
        let n = self.first + rng.gen_range(0..self.count);
        format!("{}{n:0width$}", self.prefix, width = self.width)
    }
}

/// How a call ended.
enum Outcome {
    Ok,
    /// RESOURCE_EXHAUSTED, with the RetryInfo delay if the refusal carried one.
    Refused(Option<Duration>),
    Failed(tonic::Status),
}

async fn call(client: &mut ScoringServiceClient<Channel>, ids: &Ids, rng: &mut StdRng) -> Outcome {
    let request = pb::GetCustomerValueRequest {
        customer_id: ids.next(rng),
        as_of: None,
        intervals: false,
    };
    match client.get_customer_value(request).await {
        Ok(r) if r.get_ref().value.is_some() => Outcome::Ok,
        Ok(_) => Outcome::Failed(tonic::Status::internal("answer without a value")),
        Err(status) if status.code() == Code::ResourceExhausted => Outcome::Refused(
            status
                .get_error_details()
                .retry_info()
                .and_then(|r| r.retry_delay),
        ),
        Err(status) => Outcome::Failed(status),
    }
}

/// One step's window: unrecorded until `measure_start`, stops at `end`.
#[derive(Clone, Copy)]
struct Window {
    measure_start: Instant,
    end: Instant,
}

impl Window {
    fn counts(&self, started: Instant, done: Instant) -> bool {
        started >= self.measure_start && done <= self.end
    }
}

/// Counts of the recorded window, shared by a step's workers (read every second).
#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
}

/// What one worker (or the probe) saw in the recorded window.
#[derive(Default)]
struct Tally {
    /// Latency of OK calls.
    ok: Histogram,
    /// Latency of every answer, OK or refused (the probe).
    answered: Histogram,
    refused: u64,
    refused_without_retry_info: u64,
    retry_delays_ms: BTreeMap<u64, u64>,
    errors: u64,
    codes: BTreeMap<String, u64>,
    first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.ok.merge(&other.ok);
        self.answered.merge(&other.answered);
        self.refused += other.refused;
        self.refused_without_retry_info += other.refused_without_retry_info;
        for (k, v) in other.retry_delays_ms {
            *self.retry_delays_ms.entry(k).or_default() += v;
        }
        self.errors += other.errors;
        for (k, v) in other.codes {
            *self.codes.entry(k).or_default() += v;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn record(&mut self, outcome: &Outcome, latency: Duration) {
        match outcome {
            Outcome::Ok => {
                self.ok.record_duration(latency);
                self.answered.record_duration(latency);
            }
            Outcome::Refused(delay) => {
                self.answered.record_duration(latency);
                self.refused += 1;
                match delay {
                    Some(d) => {
                        *self
                            .retry_delays_ms
                            .entry(d.as_millis() as u64)
                            .or_default() += 1;
                    }
                    None => self.refused_without_retry_info += 1,
                }
            }
            Outcome::Failed(status) => {
                self.errors += 1;
                *self
                    .codes
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(format!("{:?}: {}", status.code(), status.message()));
                }
            }
        }
    }
}

/// A closed-loop worker: call, and after a refusal sleep its RetryInfo delay.
async fn worker(
    mut client: ScoringServiceClient<Channel>,
    ids: Ids,
    mut rng: StdRng,
    window: Window,
    counters: Arc<Counters>,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let started = Instant::now();
        if started >= window.end {
            break;
        }
        let outcome = call(&mut client, &ids, &mut rng).await;
        let done = Instant::now();
        if window.counts(started, done) {
            let counter = match outcome {
                Outcome::Ok => &counters.ok,
                Outcome::Refused(_) => &counters.refused,
                Outcome::Failed(_) => &counters.errors,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            tally.record(&outcome, done - started);
        }
        let pause = match outcome {
            Outcome::Ok => continue,
            Outcome::Refused(delay) => delay.unwrap_or(DEFAULT_RETRY_DELAY),
            // Not a retry policy: only so that a broken connection does not spin.
            Outcome::Failed(_) => Duration::from_millis(10),
        };
        let until = (done + pause).min(window.end);
        tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
    }
    tally
}

/// The side probe: one call every `interval`, one at a time.
async fn probe(
    mut client: ScoringServiceClient<Channel>,
    ids: Ids,
    mut rng: StdRng,
    window: Window,
    interval: Duration,
) -> Tally {
    let mut tally = Tally::default();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let started = Instant::now();
        if started >= window.end {
            break;
        }
        let outcome = call(&mut client, &ids, &mut rng).await;
        let done = Instant::now();
        if window.counts(started, done) {
            tally.record(&outcome, done - started);
        }
    }
    tally
}

/// Server CPU seconds (user + system) and memory from /proc.
struct Proc {
    pid: u32,
    ticks: f64,
}

impl Proc {
    fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        // The command name may hold spaces; the fields after it are fixed.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / self.ticks)
    }

    fn memory(&self) -> Option<Value> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        };
        Some(json!({"rss_kib": kib("VmRSS:")?, "hwm_kib": kib("VmHWM:")?}))
    }
}

fn us(nanos: u64) -> f64 {
    (nanos as f64 / 100.0).round() / 10.0
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        (n as f64 / secs).round()
    } else {
        0.0
    }
}

fn latency(h: &Histogram) -> Value {
    json!({
        "count": h.len(),
        "p50_us": us(h.percentile(50.0)),
        "p90_us": us(h.percentile(90.0)),
        "p99_us": us(h.percentile(99.0)),
        "max_us": us(h.max()),
    })
}

struct Setup {
    addr: SocketAddr,
    channels: Vec<Channel>,
    probe_channel: Channel,
    ids: Ids,
    warmup: Duration,
    duration: Duration,
    probe_interval: Duration,
    seed: u64,
    server: Option<Proc>,
}

/// One step: `concurrency` workers and the probe for warm-up + duration; its figures as JSON.
async fn step(setup: &Setup, phase: &str, concurrency: u32) -> Result<Value, String> {
    let start = Instant::now();
    let window = Window {
        measure_start: start + setup.warmup,
        end: start + setup.warmup + setup.duration,
    };
    let counters = Arc::new(Counters::default());
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let channel = setup.channels[w as usize % setup.channels.len()].clone();
        workers.spawn(worker(
            ScoringServiceClient::new(channel),
            setup.ids.clone(),
            StdRng::seed_from_u64(setup.seed.wrapping_add(u64::from(w))),
            window,
            Arc::clone(&counters),
        ));
    }
    let prober = tokio::spawn(probe(
        ScoringServiceClient::new(setup.probe_channel.clone()),
        setup.ids.clone(),
        StdRng::seed_from_u64(setup.seed.wrapping_sub(1)),
        window,
        setup.probe_interval,
    ));

    // Every second of the window: OK calls, refusals and errors in that second.
    tokio::time::sleep_until(tokio::time::Instant::from_std(window.measure_start)).await;
    let cpu0 = setup.server.as_ref().and_then(Proc::cpu_seconds);
    let mut series = Vec::new();
    let mut last = (0, 0, 0);
    let mut tick = window.measure_start;
    while tick < window.end {
        tick = (tick + Duration::from_secs(1)).min(window.end);
        tokio::time::sleep_until(tokio::time::Instant::from_std(tick)).await;
        let now = (
            counters.ok.load(Ordering::Relaxed),
            counters.refused.load(Ordering::Relaxed),
            counters.errors.load(Ordering::Relaxed),
        );
        series.push(json!([now.0 - last.0, now.1 - last.1, now.2 - last.2]));
        last = now;
    }
    let cpu1 = setup.server.as_ref().and_then(Proc::cpu_seconds);
    let memory = setup.server.as_ref().and_then(Proc::memory);

    let mut tally = Tally::default();
    while let Some(joined) = workers.join_next().await {
        tally.merge(joined.map_err(|e| format!("worker failed: {e}"))?);
    }
    let probed = prober.await.map_err(|e| format!("probe failed: {e}"))?;
    let secs = setup.duration.as_secs_f64();
    let ok = tally.ok.len();
    let server_cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => json!(((b - a) * 1000.0).round() / 1000.0),
        _ => Value::Null,
    };
    Ok(json!({
        "phase": phase,
        "concurrency": concurrency,
        "seconds": secs,
        "ok": ok,
        "refused": tally.refused,
        "errors": tally.errors,
        "ok_per_second": rate(ok, secs),
        "refused_per_second": rate(tally.refused, secs),
        "errors_per_second": rate(tally.errors, secs),
        "per_second_ok_refused_errors": series,
        "ok_latency": latency(&tally.ok),
        "retry_delays_ms": tally.retry_delays_ms,
        "refused_without_retry_info": tally.refused_without_retry_info,
        "error_codes": tally.codes,
        "first_error": tally.first_error,
        "probe": {
            "calls": probed.ok.len() + probed.refused + probed.errors,
            "ok": probed.ok.len(),
            "refused": probed.refused,
            "errors": probed.errors,
            "latency": latency(&probed.answered),
            "ok_latency": latency(&probed.ok),
            "first_error": probed.first_error,
        },
        "server_cpu_seconds": server_cpu,
        "server_cpu_us_per_ok": match (cpu0, cpu1) {
            (Some(a), Some(b)) if ok > 0 => json!(((b - a) * 1e6 / ok as f64).round()),
            _ => Value::Null,
        },
        "server_memory_after": memory,
    }))
}

async fn run(args: &Args) -> Result<Value, String> {
    let addr = patron_bench::loopback_addr(&args.target)?;
    let timeout = seconds("--timeout", args.timeout)?;
    let warmup = seconds("--warmup", args.warmup)?;
    let duration = seconds("--duration", args.duration)?;
    if duration.is_zero() {
        return Err("--duration must be more than 0".into());
    }
    if args.sweep.is_empty() || args.sweep.iter().any(|&c| c == 0 || c > 100_000) {
        return Err("--sweep needs concurrencies between 1 and 100,000".into());
    }
    let mut channels = Vec::new();
    for _ in 0..args.connections {
        channels.push(connect(addr, timeout).await?);
    }
    let setup = Setup {
        addr,
        channels,
        probe_channel: connect(addr, timeout).await?,
        ids: Ids {
            prefix: args.id_prefix.clone(),
            first: args.id_first,
            count: args.id_count,
            width: args.id_width,
        },
        warmup,
        duration,
        probe_interval: Duration::from_millis(args.probe_interval_ms),
        seed: args.seed,
        server: args.server_pid.map(|pid| Proc {
            pid,
            ticks: f64::from(args.clock_ticks),
        }),
    };

    let mut peak_steps = Vec::new();
    for &c in &args.sweep {
        peak_steps.push(step(&setup, "peak", c).await?);
    }
    let goodput = |s: &Value| s["ok_per_second"].as_f64().unwrap_or(0.0);
    let best = peak_steps.iter().map(goodput).fold(0.0, f64::max);
    if best <= 0.0 {
        let first = peak_steps.iter().find_map(|s| s["first_error"].as_str());
        return Err(format!(
            "no call succeeded in the peak phase (first error: {})",
            first.unwrap_or("none")
        ));
    }
    let peak_concurrency = peak_steps
        .iter()
        .find(|s| goodput(s) == best)
        .and_then(|s| s["concurrency"].as_u64());
    let saturating = peak_steps
        .iter()
        .find(|s| goodput(s) >= SATURATING_FRACTION * best)
        .and_then(|s| s["concurrency"].as_u64())
        .unwrap_or(1) as u32;
    let overload_concurrency = args
        .overload
        .unwrap_or_else(|| saturating.saturating_mul(2).max(args.overload_min));
    let overload = step(&setup, "overload", overload_concurrency).await?;
    let ratio = goodput(&overload) / best;
    Ok(json!({
        "scenario": "get-customer-value-overload",
        "target": setup.addr.to_string(),
        "connections": args.connections,
        "probe_interval_ms": args.probe_interval_ms,
        "warmup_seconds": args.warmup,
        "peak_ok_per_second": best,
        "peak_concurrency": peak_concurrency,
        "saturating_concurrency": saturating,
        "overload_concurrency": overload_concurrency,
        "overload_ok_per_second": goodput(&overload),
        "ratio": (ratio * 1000.0).round() / 1000.0,
        "steps": peak_steps,
        "overload": overload,
    }))
}

fn human(r: &Value) -> String {
    let mut out = String::new();
    let line = |s: &Value| {
        format!(
            "{:>8} {:>6} workers: {:>8} OK/s {:>8} refused/s {:>6} errors/s | OK p50 {} µs p99 {} µs | probe p50 {} µs p99 {} µs max {} µs, {} of {} refused\n",
            s["phase"].as_str().unwrap_or(""),
            s["concurrency"],
            s["ok_per_second"],
            s["refused_per_second"],
            s["errors_per_second"],
            s["ok_latency"]["p50_us"],
            s["ok_latency"]["p99_us"],
            s["probe"]["latency"]["p50_us"],
            s["probe"]["latency"]["p99_us"],
            s["probe"]["latency"]["max_us"],
            s["probe"]["refused"],
            s["probe"]["calls"],
        )
    };
    for s in r["steps"].as_array().into_iter().flatten() {
        out.push_str(&line(s));
    }
    out.push_str(&line(&r["overload"]));
    out.push_str(&format!(
        "peak {} OK/s at {} workers (saturating: {}); overload ({} workers) {} OK/s = {:.1} % of the peak",
        r["peak_ok_per_second"],
        r["peak_concurrency"],
        r["saturating_concurrency"],
        r["overload_concurrency"],
        r["overload_ok_per_second"],
        r["ratio"].as_f64().unwrap_or(0.0) * 100.0,
    ));
    out
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = match run(&args).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("overload-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let line = if args.json {
        result.to_string()
    } else {
        human(&result)
    };
    if writeln!(std::io::stdout().lock(), "{line}").is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_generated_naming() {
        let ids = Ids {
            prefix: "cust-".into(),
            first: 1,
            count: 3,
            width: 6,
        };
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let id = ids.next(&mut rng);
            assert!(
                ["cust-000001", "cust-000002", "cust-000003"].contains(&id.as_str()),
                "{id}"
            );
        }
    }

    #[test]
    fn a_refusal_counts_with_its_delay() {
        let mut t = Tally::default();
        t.record(
            &Outcome::Refused(Some(Duration::from_millis(100))),
            Duration::from_micros(50),
        );
        t.record(&Outcome::Refused(None), Duration::from_micros(50));
        t.record(&Outcome::Ok, Duration::from_micros(500));
        assert_eq!(
            (t.refused, t.refused_without_retry_info, t.ok.len()),
            (2, 1, 1)
        );
        assert_eq!(t.answered.len(), 3);
        assert_eq!(t.retry_delays_ms.get(&100), Some(&1));
    }
}
