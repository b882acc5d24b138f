//! Ingest benchmark client: loads the events of a `patron generate` data set (same seed, same
//! `--now`, so the same rows) either into a running Patron through `StreamEvents`, or — the
//! baseline, "the storage limit" — straight into a table of the same shape as Patron's `events`
//! table in the same database, with no validation, no summaries and no Patron in between.
//!
//! Every event is generated and encoded before the clock starts (for gRPC: the request messages;
//! for the raw insert: the rows with their JSON payload, encoded by Patron's own encoder), so the
//! figure is transport + Patron + storage, not the generator.
//!
//! `ingest-load --customers 100000 grpc --addr 127.0.0.1:50199`
//! `ingest-load --customers 100000 raw --database sqlite://bench.db`
//!
//! Prints one JSON line.
#![allow(clippy::print_stdout)] // The report is the tool's output.

use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use patron_domain::{Currency, Event, Timestamp};
use patron_proto::customers::v1 as pb;
use patron_proto::customers::v1::customer_service_client::CustomerServiceClient;
use patron_server::demo::Generator;
use patron_store::StoredEvent;
use sqlx::Connection;

/// Loads a generated data set's events through Patron or straight into the database.
#[derive(Debug, Parser)]
struct Args {
    /// Customers of the data set (as `patron generate --customers`).
    #[arg(long)]
    customers: usize,
    /// Seed of the data set.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Observation end of the data set (RFC 3339 or YYYY-MM-DD).
    #[arg(long, default_value = "2026-11-01")]
    now: String,
    /// Keep only purchases and refunds.
    #[arg(long)]
    purchases_only: bool,
    #[command(subcommand)]
    target: Target,
}

#[derive(Debug, Subcommand)]
enum Target {
    /// Stream the events to Patron with StreamEvents.
    Grpc {
        /// Patron's address.
        #[arg(long, default_value = "127.0.0.1:50051")]
        addr: String,
        /// Events per stream message.
        #[arg(long, default_value_t = 5_000)]
        chunk: usize,
    },
    /// Insert the same rows into `bench_raw_events` (dropped and created with the columns,
    /// primary key and index of Patron's `events` table): SQLite with multi-row INSERTs,
    /// Postgres with COPY, one transaction per batch.
    Raw {
        /// sqlite://FILE or postgres://…
        #[arg(long)]
        database: String,
        /// Rows per transaction (Patron's default StreamEvents batch is 20,000).
        #[arg(long, default_value_t = 20_000)]
        batch: usize,
    },
}

fn generate(args: &Args, now: Timestamp) -> Result<Vec<Event>, String> {
    let generator = Generator::new(args.seed, now)?;
    let mut events = Vec::new();
    for number in 1..=args.customers {
        let g = generator.customer(number)?;
        events.extend(g.events.into_iter().filter(|e| {
            !args.purchases_only
                || matches!(
                    e.data,
                    patron_domain::EventData::Purchase(_) | patron_domain::EventData::Refund(_)
                )
        }));
    }
    Ok(events)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let now = patron_server::import::parse_instant(&args.now)?;
    let started = Instant::now();
    let events = generate(&args, now)?;
    let count = events.len();
    let (target, elapsed) = match &args.target {
        Target::Grpc { addr, chunk } => {
            let currency = Currency::parse("USD").map_err(|e| format!("{e:?}"))?;
            let messages: Vec<pb::StreamEventsRequest> = events
                .chunks((*chunk).max(1))
                .map(|c| pb::StreamEventsRequest {
                    events: c
                        .iter()
                        .map(|e| {
                            let mut p = patron_customers::convert::event_to_proto(
                                &StoredEvent {
                                    event: e.clone(),
                                    recorded_at: now,
                                },
                                currency,
                            );
                            p.record_time = None;
                            p
                        })
                        .collect(),
                })
                .collect();
            drop(events);
            let prepare = started.elapsed();
            let mut client = CustomerServiceClient::connect(format!("http://{addr}"))
                .await?
                .max_encoding_message_size(256 * 1024 * 1024);
            let t = Instant::now();
            let out = client
                .stream_events(tokio_stream::iter(messages))
                .await?
                .into_inner();
            let elapsed = t.elapsed();
            if out.received_count as usize != count {
                return Err(format!(
                    "sent {count} events, Patron received {}",
                    out.received_count
                )
                .into());
            }
            eprintln!("prepared in {:.1} s", prepare.as_secs_f64());
            (
                serde_json::json!({
                    "target": "grpc", "recorded": out.recorded_count, "duplicates": out.duplicate_count,
                }),
                elapsed,
            )
        }
        Target::Raw { database, batch } => {
            let rows = events
                .iter()
                .map(|e| {
                    Ok((
                        e.customer_id.as_str().to_owned(),
                        e.event_id.as_str().to_owned(),
                        e.data.kind().code(),
                        e.occurred_at.as_micros(),
                        patron_store::encode_event_data(&e.data)?,
                    ))
                })
                .collect::<Result<Vec<Row>, patron_store::StoreError>>()
                .map_err(|e| e.to_string())?;
            drop(events);
            let elapsed = if database.starts_with("sqlite:") {
                raw_sqlite(database, &rows, (*batch).max(1), now).await?
            } else {
                raw_postgres(database, &rows, (*batch).max(1), now).await?
            };
            (
                serde_json::json!({"target": "raw", "database": database.split(':').next()}),
                elapsed,
            )
        }
    };
    let secs = elapsed.as_secs_f64();
    let mut out = serde_json::json!({
        "customers": args.customers,
        "events": count,
        "seconds": secs,
        "events_per_sec": count as f64 / secs,
    });
    if let (Some(o), Some(t)) = (out.as_object_mut(), target.as_object()) {
        o.extend(t.clone());
    }
    println!("{out}");
    Ok(())
}

/// customer_id, event_id, kind, occurred_at, data.
type Row = (String, String, i16, i64, String);

/// Multi-row INSERTs (the statement shape Patron's SQLite store uses) in one transaction per
/// batch, with Patron's connection settings (WAL, synchronous=FULL, 256 MiB cache).
async fn raw_sqlite(
    url: &str,
    rows: &[Row],
    batch: usize,
    now: Timestamp,
) -> Result<Duration, Box<dyn std::error::Error>> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .pragma("temp_store", "memory")
        .pragma("cache_size", "-262144")
        .pragma("wal_autocheckpoint", "16384");
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    sqlx::query("DROP TABLE IF EXISTS bench_raw_events")
        .execute(&mut conn)
        .await?;
    sqlx::query(
        "CREATE TABLE bench_raw_events (customer_id TEXT NOT NULL, event_id TEXT NOT NULL, \
         kind SMALLINT NOT NULL, occurred_at INTEGER NOT NULL, recorded_at INTEGER NOT NULL, \
         data TEXT NOT NULL, PRIMARY KEY (customer_id, event_id)) WITHOUT ROWID",
    )
    .execute(&mut conn)
    .await?;
    sqlx::query(
        "CREATE INDEX bench_raw_events_newest_first ON bench_raw_events \
         (customer_id, occurred_at DESC, event_id DESC)",
    )
    .execute(&mut conn)
    .await?;
    let t = Instant::now();
    for chunk in rows.chunks(batch) {
        let mut tx = conn.begin().await?;
        for part in chunk.chunks(30_000 / 6) {
            let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO bench_raw_events (customer_id, event_id, kind, occurred_at, \
                 recorded_at, data) ",
            );
            qb.push_values(part, |mut b, r| {
                b.push_bind(r.0.as_str())
                    .push_bind(r.1.as_str())
                    .push_bind(r.2)
                    .push_bind(r.3)
                    .push_bind(now.as_micros())
                    .push_bind(r.4.as_str());
            });
            qb.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    Ok(t.elapsed())
}

/// COPY … FROM STDIN (text format), one transaction per batch.
async fn raw_postgres(
    url: &str,
    rows: &[Row],
    batch: usize,
    now: Timestamp,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query("DROP TABLE IF EXISTS bench_raw_events")
        .execute(&mut conn)
        .await?;
    sqlx::query(
        "CREATE TABLE bench_raw_events (customer_id TEXT COLLATE \"C\" NOT NULL, \
         event_id TEXT COLLATE \"C\" NOT NULL, kind SMALLINT NOT NULL, occurred_at BIGINT NOT NULL, \
         recorded_at BIGINT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (customer_id, event_id))",
    )
    .execute(&mut conn)
    .await?;
    sqlx::query(
        "CREATE INDEX bench_raw_events_newest_first ON bench_raw_events \
         (customer_id, occurred_at DESC, event_id DESC)",
    )
    .execute(&mut conn)
    .await?;
    let t = Instant::now();
    for chunk in rows.chunks(batch) {
        let mut text = String::with_capacity(chunk.len() * 160);
        for r in chunk {
            use std::fmt::Write;
            let _ = writeln!(
                text,
                "{}\t{}\t{}\t{}\t{}\t{}",
                r.0,
                r.1,
                r.2,
                r.3,
                now.as_micros(),
                copy_escape(&r.4)
            );
        }
        let mut tx = conn.begin().await?;
        let mut copy = tx
            .copy_in_raw(
                "COPY bench_raw_events (customer_id, event_id, kind, occurred_at, recorded_at, \
                 data) FROM STDIN",
            )
            .await?;
        copy.send(text.into_bytes()).await?;
        copy.finish().await?;
        tx.commit().await?;
    }
    Ok(t.elapsed())
}

/// Escapes a value for COPY's text format.
fn copy_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}
