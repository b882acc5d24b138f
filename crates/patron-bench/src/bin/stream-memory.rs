//! `stream-memory`: what many concurrent `StreamCustomerValues` calls cost the server in memory.
//!
//! Opens `--streams` streams over everyone at once, spread over `--connections` connections.
//! A fraction (`--unread-fraction`) reads only the first message and then holds its stream open,
//! unread, for `--hold` seconds (a stalled client); the rest read as fast as they can, to the end
//! or for `--hold` seconds. Stalled and reading streams use separate connections (HTTP/2
//! connection flow control would otherwise stall the readers behind the unread data of the
//! stalled streams on the same connection, a client-side effect). Meanwhile it samples
//! the server's resident memory (`/proc/PID/status` VmRSS) every 20 ms. Prints the RSS before,
//! the peak during, the memory added, and per-stream outcomes. Loopback only, bounded in time.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use patron_proto::scoring::v1 as pb;
use patron_proto::scoring::v1::scoring_service_client::ScoringServiceClient;
use serde_json::json;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Parser)]
#[command(
    name = "stream-memory",
    about = "Server memory under many concurrent StreamCustomerValues calls (loopback only)"
)]
struct Args {
    /// Server address (loopback only).
    #[arg(long, default_value = "127.0.0.1:50051")]
    target: String,
    /// The server's pid (its memory is read from /proc).
    #[arg(long)]
    server_pid: u32,
    /// Streams opened at once.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    streams: u32,
    /// Connections the streams are spread over.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    connections: u32,
    /// Fraction of streams read once, then held open unread.
    #[arg(long, default_value_t = 0.5)]
    unread_fraction: f64,
    /// Seconds the unread streams stay open; readers stop after this long too.
    #[arg(long, default_value_t = 20.0)]
    hold: f64,
    /// Profiles per message; 0 = the server's default.
    #[arg(long, default_value_t = 0)]
    chunk_size: i32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600.0)]
    time_cap: f64,
    /// One line of JSON instead of the summary.
    #[arg(long)]
    json: bool,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn connect(addr: SocketAddr) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))
}

#[derive(Debug, Default)]
struct Outcomes {
    completed: AtomicU64,
    held: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    profiles: AtomicU64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stream-memory: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let addr: SocketAddr = args
        .target
        .parse()
        .map_err(|e| format!("--target {:?}: {e}", args.target))?;
    if !addr.ip().is_loopback() {
        return Err("loopback targets only".into());
    }
    if !(0.0..=1.0).contains(&args.unread_fraction) || !(0.0..=3600.0).contains(&args.hold) {
        return Err("--unread-fraction is 0..1 and --hold 0..3600".into());
    }
    let before = rss_kib(args.server_pid).ok_or("cannot read the server's /proc status")?;
    let mut channels = Vec::new();
    // Half the connections for stalled streams, half for readers (at least one each).
    let stalled_connections = (args.connections / 2).max(1);
    let reader_connections = (args.connections - stalled_connections).max(1);
    for _ in 0..stalled_connections + reader_connections {
        channels.push(connect(addr).await?);
    }
    let outcomes = Arc::new(Outcomes::default());
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let (done, peak, pid) = (Arc::clone(&done), Arc::clone(&peak), args.server_pid);
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let unread = (f64::from(args.streams) * args.unread_fraction).round() as u32;
    let hold = Duration::from_secs_f64(args.hold);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.streams {
        let stall = i < unread;
        let channel = if stall {
            &channels[(i % stalled_connections) as usize]
        } else {
            &channels[(stalled_connections + i % reader_connections) as usize]
        };
        let mut client =
            ScoringServiceClient::new(channel.clone()).max_decoding_message_size(256 * 1024 * 1024);
        let outcomes = Arc::clone(&outcomes);
        let chunk_size = args.chunk_size;
        tasks.push(tokio::spawn(async move {
            let request = pb::StreamCustomerValuesRequest {
                chunk_size,
                ..Default::default()
            };
            let mut stream = match client.stream_customer_values(request).await {
                Ok(r) => r.into_inner(),
                Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                    outcomes.refused.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(_) => {
                    outcomes.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(m)) => {
                        outcomes
                            .profiles
                            .fetch_add(m.values.len() as u64, Ordering::Relaxed);
                        if stall {
                            tokio::time::sleep(hold).await;
                            outcomes.held.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        if started.elapsed() >= hold {
                            // Read long enough: stop, as a reader that got what it needed.
                            outcomes.completed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                    Ok(None) => {
                        outcomes.completed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                        outcomes.refused.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Err(_) => {
                        outcomes.failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }
    let all = futures_join(tasks);
    if tokio::time::timeout(Duration::from_secs_f64(args.time_cap), all)
        .await
        .is_err()
    {
        return Err(format!("not done within {} s", args.time_cap));
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let peak = peak.load(Ordering::Relaxed);
    let added_mib = peak.saturating_sub(before) as f64 / 1024.0;
    let o = &outcomes;
    let (completed, held, refused, failed, profiles) = (
        o.completed.load(Ordering::Relaxed),
        o.held.load(Ordering::Relaxed),
        o.refused.load(Ordering::Relaxed),
        o.failed.load(Ordering::Relaxed),
        o.profiles.load(Ordering::Relaxed),
    );
    let mut stdout = std::io::stdout().lock();
    let printed = if args.json {
        writeln!(
            stdout,
            "{}",
            json!({
                "streams": args.streams, "unread": unread, "chunk_size": args.chunk_size,
                "rss_before_mib": before as f64 / 1024.0, "rss_peak_mib": peak as f64 / 1024.0,
                "added_mib": added_mib, "completed": completed, "held": held,
                "refused": refused, "failed": failed, "profiles": profiles,
                "seconds": elapsed.as_secs_f64(),
            })
        )
    } else {
        writeln!(
            stdout,
            "{} streams ({unread} held unread {:.0} s): server RSS {:.0} MiB before, {:.0} MiB peak, +{added_mib:.0} MiB; completed {completed}, held {held}, refused {refused}, failed {failed}; {profiles} profiles in {:.1} s",
            args.streams,
            args.hold,
            before as f64 / 1024.0,
            peak as f64 / 1024.0,
            elapsed.as_secs_f64()
        )
    };
    printed.map_err(|e| e.to_string())?;
    if failed > 0 {
        return Err(format!("{failed} streams failed"));
    }
    Ok(())
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}
