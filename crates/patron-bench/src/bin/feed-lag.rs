//! Change-feed propagation benchmark: how long after a write is acknowledged by replica A it is
//! visible on replicas B (and C), under a background write load through A.
//!
//! - Load: `--writers` tasks record batches of engagement events (`--batch` each) for customers
//!   `load-0000` … through A, paced together to `--load-events-per-sec`; the acknowledged rate is
//!   reported.
//! - Probes: every `--probe-every-ms`, one purchase of a new customer `probe-N` is recorded through
//!   A; from the instant A acknowledges it (A has committed), each reader polls GetCustomerValue
//!   for `probe-N` every `--poll-us` until it is found (no consistency token: the propagation
//!   delay itself). Also reported from the instant the write was sent.
//!
//! `feed-lag --write 127.0.0.1:50301 --read 127.0.0.1:50302 --read 127.0.0.1:50303 --duration 30`
//!
//! Prints one JSON line.
#![allow(clippy::print_stdout)] // The report is the tool's output.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use patron_bench::histogram::Histogram;
use patron_proto::customers::v1 as pb;
use patron_proto::customers::v1::customer_service_client::CustomerServiceClient;
use patron_proto::scoring::v1::GetCustomerValueRequest;
use patron_proto::scoring::v1::scoring_service_client::ScoringServiceClient;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Parser)]
struct Args {
    /// Replica A: takes every write.
    #[arg(long)]
    write: String,
    /// Replicas that read (repeat).
    #[arg(long = "read", required = true)]
    read: Vec<String>,
    /// Seconds of measurement.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Background write load through A, events per second (0: none).
    #[arg(long, default_value_t = 10_000)]
    load_events_per_sec: u64,
    /// Events per RecordEvents call of the load.
    #[arg(long, default_value_t = 250)]
    batch: usize,
    /// Concurrent load writers.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Milliseconds between probes.
    #[arg(long, default_value_t = 20)]
    probe_every_ms: u64,
    /// Microseconds between polls of a reader.
    #[arg(long, default_value_t = 500)]
    poll_us: u64,
    /// Run tag (printed in the JSON line).
    #[arg(long, default_value = "")]
    tag: String,
}

async fn connect(addr: &str) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))
}

fn ts(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn engagement(customer: String, id: String, at: i64) -> pb::Event {
    pb::Event {
        event_id: id,
        customer_id: customer,
        occurred_at: Some(ts(at)),
        kind: Some(pb::event::Kind::Engagement(pb::Engagement {
            activity: "page_view".into(),
        })),
        record_time: None,
    }
}

fn probe_purchase(customer: String, at: i64) -> pb::Event {
    pb::Event {
        event_id: format!("{customer}-p"),
        customer_id: customer.clone(),
        occurred_at: Some(ts(at)),
        kind: Some(pb::event::Kind::Purchase(pb::Purchase {
            order_id: format!("{customer}-o"),
            amount: Some(patron_proto::common::v1::Money {
                currency_code: "USD".into(),
                minor_units: 1_000,
            }),
            item_count: 1,
            channel: "web".into(),
        })),
        record_time: None,
    }
}

fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

fn summary(h: &Histogram) -> serde_json::Value {
    serde_json::json!({
        "count": h.len(),
        "p50_ms": ms(h.percentile(50.0)),
        "p90_ms": ms(h.percentile(90.0)),
        "p99_ms": ms(h.percentile(99.0)),
        "max_ms": ms(h.max()),
    })
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let a = connect(&args.write).await?;
    let mut readers = Vec::new();
    for r in &args.read {
        readers.push(ScoringServiceClient::new(connect(r).await?));
    }
    let run = format!("{:x}", rand::random::<u32>());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));

    // Background load: each writer sends its share of batches at a fixed pace.
    let mut load = Vec::new();
    if args.load_events_per_sec > 0 {
        let per_writer = args.load_events_per_sec as f64 / args.writers as f64;
        let interval = Duration::from_secs_f64(args.batch as f64 / per_writer);
        for w in 0..args.writers {
            let client = CustomerServiceClient::new(a.clone());
            let acked = Arc::clone(&acked);
            let failed = Arc::clone(&failed);
            let run = run.clone();
            let batch = args.batch;
            load.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    tick.tick().await;
                    let at = now_secs() - 60;
                    let events: Vec<pb::Event> = (0..batch)
                        .map(|i| {
                            n += 1;
                            engagement(
                                format!("load-{:04}", (n * 7 + i as u64) % 10_000),
                                format!("{run}-w{w}-{n}"),
                                at,
                            )
                        })
                        .collect();
                    match client
                        .clone()
                        .record_events(pb::RecordEventsRequest { events })
                        .await
                    {
                        Ok(_) => {
                            acked.fetch_add(batch as u64, Ordering::Relaxed);
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
    }

    // Probes.
    let mut from_ack: Vec<Histogram> = vec![Histogram::new(); readers.len()];
    let mut from_send: Vec<Histogram> = vec![Histogram::new(); readers.len()];
    let mut lost = 0u64;
    let mut probe = 0u64;
    let writer = CustomerServiceClient::new(a.clone());
    let poll = Duration::from_micros(args.poll_us);
    // The load gets a second to reach its pace before probes count.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let load_started = Instant::now();
    let acked_at_start = acked.load(Ordering::Relaxed);
    while Instant::now() + Duration::from_secs(2) < deadline {
        probe += 1;
        let customer = format!("probe-{run}-{probe}");
        let sent = Instant::now();
        writer
            .clone()
            .record_events(pb::RecordEventsRequest {
                events: vec![probe_purchase(customer.clone(), now_secs() - 60)],
            })
            .await
            .map_err(|e| format!("probe write: {e}"))?;
        let ack = Instant::now();
        let mut waits = Vec::new();
        for r in &readers {
            let mut r = r.clone();
            let customer = customer.clone();
            waits.push(tokio::spawn(async move {
                let give_up = Instant::now() + Duration::from_secs(5);
                loop {
                    let found = r
                        .get_customer_value(GetCustomerValueRequest {
                            customer_id: customer.clone(),
                            ..Default::default()
                        })
                        .await
                        .is_ok();
                    if found {
                        return Some(Instant::now());
                    }
                    if Instant::now() > give_up {
                        return None;
                    }
                    tokio::time::sleep(poll).await;
                }
            }));
        }
        for (i, w) in waits.into_iter().enumerate() {
            match w.await.ok().flatten() {
                Some(seen) => {
                    from_ack[i].record_duration(seen.saturating_duration_since(ack));
                    from_send[i].record_duration(seen.saturating_duration_since(sent));
                }
                None => lost += 1,
            }
        }
        let next = sent + Duration::from_millis(args.probe_every_ms);
        tokio::time::sleep_until(next.into()).await;
    }
    let load_secs = load_started.elapsed().as_secs_f64();
    let load_events = acked.load(Ordering::Relaxed) - acked_at_start;
    for l in load {
        let _ = l.await;
    }
    let readers_json: Vec<serde_json::Value> = args
        .read
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            serde_json::json!({
                "reader": addr,
                "from_ack": summary(&from_ack[i]),
                "from_send": summary(&from_send[i]),
            })
        })
        .collect();
    let mut all = Histogram::new();
    for h in &from_ack {
        all.merge(h);
    }
    println!(
        "{}",
        serde_json::json!({
            "tool": "feed-lag",
            "tag": args.tag,
            "load_target_events_per_sec": args.load_events_per_sec,
            "load_acked_events_per_sec": (load_events as f64 / load_secs).round(),
            "load_failed_calls": failed.load(Ordering::Relaxed),
            "probes": probe,
            "probes_never_seen": lost,
            "all_readers_from_ack": summary(&all),
            "readers": readers_json,
        })
    );
    Ok(())
}
