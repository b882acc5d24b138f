//! The storage baseline of the RedeemReward benchmark: the same contention shape (N concurrent
//! clients, one hot balance or many balances, a fixed time) as `redeem-load`, but as the smallest
//! durable transaction a redemption needs, in raw SQL on the same database: a conditional
//! decrement of the balance and one ledger row, committed. No gRPC, no lots, no idempotency, no
//! stock, no eligibility: the database's own limit for this write pattern, measured in the same
//! run as Patron.
//!
//! SQLite: one writer connection (as Patron's store has), WAL, synchronous=FULL. Postgres: a pool
//! of as many connections as Patron's store opens (16). Afterwards it checks that no balance went
//! negative and that balance + ledger entries = funded points for every member.
//!
//!   redeem-raw --database sqlite://bench.db --clients 64 --members 1 --seconds 10
//!
//! Prints one JSON line.
#![allow(clippy::print_stdout)] // The report is the tool's output.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use patron_bench::histogram::Histogram;
use sqlx::{Any, AnyPool, Row};

#[derive(Debug, Parser)]
#[command(about = "Raw-SQL redemption baseline under contention")]
struct Args {
    /// sqlite://FILE or postgres://…
    #[arg(long)]
    database: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Balances redeemed against: 1 = one hot balance.
    #[arg(long, default_value_t = 1)]
    members: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Points funded per member.
    #[arg(long, default_value_t = 1_000_000)]
    points: i64,
    /// A label for the output.
    #[arg(long, default_value = "")]
    label: String,
}

/// Connections Patron's Postgres store opens.
const POSTGRES_CONNECTIONS: u32 = 16;

async fn pool(url: &str) -> Result<(AnyPool, bool), String> {
    sqlx::any::install_default_drivers();
    let sqlite = url.starts_with("sqlite:");
    let pool = if sqlite {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
        // Check the URL and create the file with Patron's settings first.
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| e.to_string())?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        drop(
            sqlx::SqlitePool::connect_with(options)
                .await
                .map_err(|e| e.to_string())?,
        );
        sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA synchronous = FULL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout = 30000")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
            .connect(url)
            .await
    } else {
        sqlx::any::AnyPoolOptions::new()
            .max_connections(POSTGRES_CONNECTIONS)
            .connect(url)
            .await
    }
    .map_err(|e| format!("connect: {e}"))?;
    Ok((pool, sqlite))
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let (pool, sqlite) = pool(&args.database).await?;
    let e = |e: sqlx::Error| e.to_string();
    for stmt in [
        "DROP TABLE IF EXISTS bench_raw_ledger",
        "DROP TABLE IF EXISTS bench_raw_balances",
        "CREATE TABLE bench_raw_balances (member_id TEXT PRIMARY KEY, points BIGINT NOT NULL)",
        "CREATE TABLE bench_raw_ledger (member_id TEXT NOT NULL, request_id TEXT NOT NULL, \
         amount BIGINT NOT NULL, PRIMARY KEY (member_id, request_id))",
    ] {
        sqlx::query::<Any>(stmt).execute(&pool).await.map_err(e)?;
    }
    let members: Arc<Vec<String>> = Arc::new((0..args.members).map(|i| format!("m{i}")).collect());
    for m in members.iter() {
        sqlx::query::<Any>("INSERT INTO bench_raw_balances (member_id, points) VALUES ($1, $2)")
            .bind(m.as_str())
            .bind(args.points)
            .execute(&pool)
            .await
            .map_err(e)?;
    }
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (pool, members, ok, refused, failed) = (
            pool.clone(),
            Arc::clone(&members),
            Arc::clone(&ok),
            Arc::clone(&refused),
            Arc::clone(&failed),
        );
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::new();
            let mut n = 0usize;
            while Instant::now() < deadline {
                let member = &members[(c + n * 7919) % members.len()];
                let request = format!("c{c}-{n}");
                n += 1;
                let t = Instant::now();
                let outcome: Result<bool, sqlx::Error> = async {
                    let mut tx = pool.begin().await?;
                    let changed = sqlx::query::<Any>(
                        "UPDATE bench_raw_balances SET points = points - 1 \
                         WHERE member_id = $1 AND points >= 1",
                    )
                    .bind(member.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if changed == 1 {
                        sqlx::query::<Any>(
                            "INSERT INTO bench_raw_ledger (member_id, request_id, amount) \
                             VALUES ($1, $2, -1)",
                        )
                        .bind(member.as_str())
                        .bind(request.as_str())
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(changed == 1)
                }
                .await;
                match outcome {
                    Ok(true) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        hist.record_duration(t.elapsed());
                    }
                    Ok(false) => {
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
    let mut hist = Histogram::new();
    for t in tasks {
        hist.merge(&t.await.map_err(|e| e.to_string())?);
    }
    let secs = started.elapsed().as_secs_f64();
    // The check: no negative balance; balance + redemptions = funded points, per member.
    let rows = sqlx::query::<Any>(
        "SELECT b.member_id, b.points, \
         (SELECT COUNT(*) FROM bench_raw_ledger l WHERE l.member_id = b.member_id) \
         FROM bench_raw_balances b",
    )
    .fetch_all(&pool)
    .await
    .map_err(e)?;
    let (mut overdrafts, mut mismatches) = (0u64, 0u64);
    for r in &rows {
        let points: i64 = r.try_get(1).map_err(e)?;
        let entries: i64 = r.try_get(2).map_err(e)?;
        overdrafts += u64::from(points < 0);
        mismatches += u64::from(points + entries != args.points);
    }
    let ok = ok.load(Ordering::Relaxed);
    let entries: i64 = sqlx::query::<Any>("SELECT COUNT(*) FROM bench_raw_ledger")
        .fetch_one(&pool)
        .await
        .map_err(e)?
        .try_get(0)
        .map_err(e)?;
    let lost = ok.abs_diff(u64::try_from(entries).unwrap_or(0));
    let out = serde_json::json!({
        "label": args.label,
        "baseline": "raw-sql",
        "backend": if sqlite { "sqlite" } else { "postgres" },
        "clients": args.clients,
        "members": args.members,
        "seconds": secs,
        "redemptions": ok,
        "redemptions_per_second": ok as f64 / secs,
        "refused": refused.load(Ordering::Relaxed),
        "failed": failed.load(Ordering::Relaxed),
        "p50_ms": hist.percentile(50.0) as f64 / 1e6,
        "p90_ms": hist.percentile(90.0) as f64 / 1e6,
        "p99_ms": hist.percentile(99.0) as f64 / 1e6,
        "max_ms": hist.max() as f64 / 1e6,
        "overdrafts": overdrafts,
        "mismatches": mismatches,
        "lost_entries": lost,
    });
    println!("{out}");
    if overdrafts > 0 || mismatches > 0 || lost > 0 {
        return Err("the raw baseline broke its own invariant".into());
    }
    Ok(())
}
