//! RedeemReward under contention against a running Patron: N concurrent clients redeem a
//! one-point reward for a fixed time, either all on one hot balance or spread over many balances,
//! then every balance and ledger is checked: the points left must equal the points funded minus
//! the redemptions acknowledged (an overdraft or a lost entry would break it).
//!
//!   redeem-load --addr 127.0.0.1:50051 --clients 64 --members 1 --seconds 10
//!
//! Prints one JSON line: redemptions/s, latency percentiles, overdrafts (must be 0), mismatches
//! (must be 0). Loopback only; creates program `bench-<unix time>` and its members.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use patron_bench::histogram::Histogram;
use patron_proto::customers::v1 as cpb;
use patron_proto::customers::v1::customer_service_client::CustomerServiceClient;
use patron_proto::loyalty::v1 as pb;
use patron_proto::loyalty::v1::loyalty_service_client::LoyaltyServiceClient;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Parser)]
#[command(about = "RedeemReward under contention, with a ledger check afterwards")]
struct Args {
    /// Patron's address (loopback only).
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    /// Concurrent clients (one connection each).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Balances redeemed against: 1 = one hot balance.
    #[arg(long, default_value_t = 1)]
    members: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Points funded per member (also the most redemptions one member can take).
    #[arg(long, default_value_t = 1_000_000)]
    points: i64,
    /// A label for the output (e.g. the backend).
    #[arg(long, default_value = "")]
    label: String,
}

async fn channel(addr: std::net::SocketAddr) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connect {addr}: {e}"))
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let addr = patron_bench::loopback_addr(&args.addr)?;
    let base = channel(addr).await?;
    let mut loyalty = LoyaltyServiceClient::new(base.clone());
    let mut customers = CustomerServiceClient::new(base.clone());
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let program = format!("bench-{stamp}");
    loyalty
        .create_program(pb::CreateProgramRequest {
            program: Some(pb::Program {
                program_id: program.clone(),
                display_name: "Redemption benchmark".into(),
                currency_code: "USD".into(),
                earning: Some(pb::EarningRules {
                    points_per_unit: 1,
                    first_purchase_bonus: 0,
                    event_bonuses: vec![],
                }),
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| format!("create program: {e}"))?;
    loyalty
        .create_reward(pb::CreateRewardRequest {
            reward: Some(pb::Reward {
                reward_id: format!("{program}-r"),
                program_id: program.clone(),
                display_name: "One point".into(),
                cost: 1,
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| format!("create reward: {e}"))?;
    let members: Vec<String> = (0..args.members)
        .map(|i| format!("{program}-m{i}"))
        .collect();
    for chunk in members.chunks(1000) {
        customers
            .upsert_customers(cpb::UpsertCustomersRequest {
                customers: chunk
                    .iter()
                    .map(|id| cpb::Customer {
                        customer_id: id.clone(),
                        ..Default::default()
                    })
                    .collect(),
            })
            .await
            .map_err(|e| format!("upsert: {e}"))?;
    }
    for m in &members {
        loyalty
            .enroll(pb::EnrollRequest {
                program_id: program.clone(),
                customer_id: m.clone(),
            })
            .await
            .map_err(|e| format!("enroll: {e}"))?;
        loyalty
            .adjust_points(pb::AdjustPointsRequest {
                program_id: program.clone(),
                customer_id: m.clone(),
                points: args.points,
                reason: "benchmark funding".into(),
                issuer: "redeem-load".into(),
                request_id: "fund".into(),
            })
            .await
            .map_err(|e| format!("fund: {e}"))?;
    }
    let members = Arc::new(members);
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let per_member: Arc<Vec<AtomicU64>> =
        Arc::new((0..members.len()).map(|_| AtomicU64::new(0)).collect());
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let ch = channel(addr).await?;
        let (members, ok, refused, failed, per_member, program) = (
            Arc::clone(&members),
            Arc::clone(&ok),
            Arc::clone(&refused),
            Arc::clone(&failed),
            Arc::clone(&per_member),
            program.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut client = LoyaltyServiceClient::new(ch);
            let mut hist = Histogram::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let m = (c + n as usize * args_stride(members.len())) % members.len();
                n += 1;
                let started = Instant::now();
                let r = client
                    .redeem_reward(pb::RedeemRewardRequest {
                        program_id: program.clone(),
                        customer_id: members[m].clone(),
                        reward_id: format!("{program}-r"),
                        request_id: format!("c{c}-{n}"),
                    })
                    .await;
                hist.record_duration(started.elapsed());
                match r {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        per_member[m].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            hist
        }));
    }
    let started = Instant::now();
    let mut hist = Histogram::new();
    for t in tasks {
        hist.merge(&t.await.map_err(|e| e.to_string())?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Check every balance and ledger.
    let mut overdrafts = 0u64;
    let mut mismatches = 0u64;
    for (i, m) in members.iter().enumerate() {
        let b = loyalty
            .get_membership(pb::GetMembershipRequest {
                program_id: program.clone(),
                customer_id: m.clone(),
            })
            .await
            .map_err(|e| format!("membership: {e}"))?
            .into_inner()
            .membership
            .and_then(|m| m.balances)
            .ok_or("no balances")?;
        let taken = per_member[i].load(Ordering::Relaxed) as i64;
        if b.available < 0 || b.debt != 0 {
            overdrafts += 1;
        }
        if b.available != args.points - taken {
            mismatches += 1;
        }
        let mut sum = 0i64;
        let mut token = String::new();
        loop {
            let page = loyalty
                .list_ledger_entries(pb::ListLedgerEntriesRequest {
                    program_id: program.clone(),
                    customer_id: m.clone(),
                    page_size: 1000,
                    page_token: token,
                })
                .await
                .map_err(|e| format!("ledger: {e}"))?
                .into_inner();
            sum += page.entries.iter().map(|e| e.amount).sum::<i64>();
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        if sum != b.available + b.pending - b.debt {
            mismatches += 1;
        }
    }
    let ms = |n: u64| n as f64 / 1e6;
    let out = serde_json::json!({
        "scenario": "redeem-reward",
        "label": args.label,
        "clients": args.clients,
        "members": args.members,
        "seconds": elapsed,
        "redemptions": ok.load(Ordering::Relaxed),
        "refused": refused.load(Ordering::Relaxed),
        "failed": failed.load(Ordering::Relaxed),
        "redemptions_per_sec": ok.load(Ordering::Relaxed) as f64 / elapsed,
        "p50_ms": ms(hist.percentile(50.0)),
        "p90_ms": ms(hist.percentile(90.0)),
        "p99_ms": ms(hist.percentile(99.0)),
        "max_ms": ms(hist.max()),
        "overdrafts": overdrafts,
        "ledger_mismatches": mismatches,
    });
    #[allow(clippy::print_stdout)]
    {
        println!("{out}");
    }
    if overdrafts > 0 || mismatches > 0 {
        return Err(format!("{overdrafts} overdrafts, {mismatches} mismatches"));
    }
    Ok(())
}

/// Spreads consecutive calls of one client over the members.
fn args_stride(members: usize) -> usize {
    if members <= 1 { 0 } else { 7919 % members + 1 }
}
