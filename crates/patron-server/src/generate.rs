//! `patron generate`: the demo's seeded data set at any size, written straight into the database
//! (through the store, in large batches) or as CSV files for `patron import`.
//!
//! Generation runs on a blocking thread and hands finished batches over a bounded channel, so the
//! database writes and the simulation overlap and memory holds about two batches.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use patron_domain::{Customer, Event, EventData, EventKind, Timestamp};
use patron_store::Store;

use crate::demo::{Generated, Generator};

/// Customers per batch handed from the generator to the writer.
const CUSTOMERS_PER_BATCH: usize = 2_000;
/// Events per `record_events` call.
const EVENTS_PER_CALL: usize = 20_000;

/// Which events to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventSelection {
    /// Every kind: purchases, refunds, engagement, surveys, support contacts, custom events.
    All,
    /// Purchases and refunds only.
    Purchases,
}

impl EventSelection {
    fn keeps(self, e: &Event) -> bool {
        match self {
            EventSelection::All => true,
            EventSelection::Purchases => {
                matches!(e.data, EventData::Purchase(_) | EventData::Refund(_))
            }
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Customers, numbered from 1 (`cust-000001`, …).
    pub customers: usize,
    /// The generator's seed.
    pub seed: u64,
    /// Every event lies at or before this instant.
    pub now: Timestamp,
    /// Which events to keep.
    pub events: EventSelection,
    /// Stop after the customer whose events reach this many in total.
    pub max_events: Option<u64>,
}

/// What was generated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Customers generated.
    pub customers: usize,
    /// Events generated, by kind.
    pub by_kind: BTreeMap<EventKind, u64>,
    /// Rows written to the transactions CSV (purchases), or events new to the database.
    pub written_events: u64,
}

impl Report {
    /// Events generated in all.
    pub fn events(&self) -> u64 {
        self.by_kind.values().sum()
    }
}

/// A batch from the generator: customers and their kept events.
struct Batch {
    customers: Vec<Customer>,
    events: Vec<Event>,
}

/// Runs the generator on a blocking thread and returns the receiving end of its batches.
fn spawn_generator(
    plan: &Plan,
) -> Result<tokio::sync::mpsc::Receiver<Result<Batch, String>>, String> {
    let generator = Generator::new(plan.seed, plan.now)?;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let plan = plan.clone();
    tokio::task::spawn_blocking(move || {
        let mut total = 0u64;
        let mut number = 1usize;
        while number <= plan.customers {
            let end = (number + CUSTOMERS_PER_BATCH - 1).min(plan.customers);
            let mut batch = Batch {
                customers: Vec::with_capacity(end + 1 - number),
                events: Vec::new(),
            };
            let mut stop = false;
            while number <= end {
                let Generated {
                    customer, events, ..
                } = match generator.customer(number) {
                    Ok(g) => g,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                };
                number += 1;
                batch.customers.push(customer);
                let before = batch.events.len();
                batch
                    .events
                    .extend(events.into_iter().filter(|e| plan.events.keeps(e)));
                total += (batch.events.len() - before) as u64;
                if plan.max_events.is_some_and(|max| total >= max) {
                    stop = true;
                    break;
                }
            }
            if tx.blocking_send(Ok(batch)).is_err() || stop {
                return;
            }
        }
    });
    Ok(rx)
}

fn count_kinds(report: &mut Report, events: &[Event]) {
    for e in events {
        *report.by_kind.entry(e.data.kind()).or_default() += 1;
    }
}

/// Generates the plan's data set into `store`: customers with `upsert_customers`, events with
/// `record_events` (20,000 per call), the same path as the gRPC writes. Writing the same plan
/// again changes nothing (events are idempotent by id).
pub async fn into_store(store: &Arc<dyn Store>, plan: &Plan) -> Result<Report, String> {
    let mut rx = spawn_generator(plan)?;
    let mut report = Report::default();
    let mut pending: Vec<Event> = Vec::with_capacity(2 * EVENTS_PER_CALL);
    let mut done = false;
    while !done {
        match rx.recv().await {
            Some(batch) => {
                let batch = batch?;
                count_kinds(&mut report, &batch.events);
                report.customers += batch.customers.len();
                store
                    .upsert_customers(&batch.customers, plan.now)
                    .await
                    .map_err(|e| format!("storing customers: {e}"))?;
                pending.extend(batch.events);
            }
            None => done = true,
        }
        while pending.len() >= EVENTS_PER_CALL || (done && !pending.is_empty()) {
            let take = pending.len().min(EVENTS_PER_CALL);
            let events: Vec<Event> = pending.drain(..take).collect();
            let outcome = store
                .record_events(&events, plan.now)
                .await
                .map_err(|e| format!("storing events: {e}"))?;
            report.written_events += outcome.recorded as u64;
        }
    }
    Ok(report)
}

/// RFC 3339 in UTC with whole seconds (`2025-03-01T12:34:56Z`); sub-second parts are dropped.
pub fn rfc3339(t: Timestamp) -> String {
    let day = t.day();
    let secs = (t.as_micros() - day.start().as_micros()) / 1_000_000;
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        day.date(),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Minor units as a decimal in major units with two places (`1999` → `19.99`).
fn decimal(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
}

/// Writes the plan's data set as CSV files in `dir` for `patron import`: `customers.csv`
/// (customer_id, birth_date, gender, country, signed_up_at) and `transactions.csv` (customer_id,
/// timestamp, amount, order_id: one row per purchase; the import format has no refunds or other
/// kinds), plus `generate.json` with the plan (seed, now, counts) so other tools can use the same
/// observation end.
pub async fn into_csv(dir: &Path, plan: &Plan) -> Result<Report, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let open = |name: &str| {
        let path = dir.join(name);
        std::fs::File::create(&path)
            .map(|f| std::io::BufWriter::with_capacity(1 << 20, f))
            .map_err(|e| format!("creating {}: {e}", path.display()))
    };
    let mut customers = open("customers.csv")?;
    let mut transactions = open("transactions.csv")?;
    let io = |e: std::io::Error| format!("writing CSV: {e}");
    writeln!(
        customers,
        "customer_id,birth_date,gender,country,signed_up_at"
    )
    .map_err(io)?;
    writeln!(transactions, "customer_id,timestamp,amount,order_id").map_err(io)?;
    let mut rx = spawn_generator(plan)?;
    let mut report = Report::default();
    while let Some(batch) = rx.recv().await {
        let batch = batch?;
        count_kinds(&mut report, &batch.events);
        report.customers += batch.customers.len();
        for c in &batch.customers {
            let p = &c.profile;
            writeln!(
                customers,
                "{},{},{},{},{}",
                c.customer_id,
                p.birth_date.map(|d| d.to_string()).unwrap_or_default(),
                p.gender.as_str(),
                p.country.as_deref().unwrap_or(""),
                p.signed_up_at.map(rfc3339).unwrap_or_default(),
            )
            .map_err(io)?;
        }
        for e in &batch.events {
            if let EventData::Purchase(p) = &e.data {
                writeln!(
                    transactions,
                    "{},{},{},{}",
                    e.customer_id,
                    rfc3339(e.occurred_at),
                    decimal(p.amount),
                    p.order_id
                )
                .map_err(io)?;
                report.written_events += 1;
            }
        }
    }
    customers.flush().map_err(io)?;
    transactions.flush().map_err(io)?;
    let kinds: serde_json::Map<String, serde_json::Value> = report
        .by_kind
        .iter()
        .map(|(k, n)| (format!("{k:?}").to_lowercase(), (*n).into()))
        .collect();
    let meta = serde_json::json!({
        "seed": plan.seed,
        "now": rfc3339(plan.now),
        "customers": report.customers,
        "events": report.events(),
        "events_by_kind": kinds,
        "transactions": report.written_events,
    });
    std::fs::write(dir.join("generate.json"), format!("{meta:#}\n"))
        .map_err(|e| format!("writing generate.json: {e}"))?;
    Ok(report)
}

/// `patron generate`: generates and writes, then prints what it did.
#[allow(clippy::print_stdout)] // The command's report is its output.
pub async fn run(settings: &crate::Settings, plan: Plan, csv: Option<&Path>) -> Result<(), String> {
    let started = Instant::now();
    let (report, target) = match csv {
        Some(dir) => (into_csv(dir, &plan).await?, dir.display().to_string()),
        None => {
            let store = crate::app::open_store(settings.database_url.expose())
                .await
                .map_err(|e| e.to_string())?;
            let report = into_store(&store, &plan).await?;
            (report, format!("{:?}", settings.database_url))
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let kinds: Vec<String> = report
        .by_kind
        .iter()
        .map(|(k, n)| format!("{} {k:?}", n))
        .collect();
    println!(
        "generated {} customers and {} events (seed {}, now {}) into {target} in {secs:.1} s: {}",
        report.customers,
        report.events(),
        plan.seed,
        rfc3339(plan.now),
        kinds.join(", ")
    );
    if csv.is_some() {
        println!(
            "{} purchases written to transactions.csv",
            report.written_events
        );
    } else {
        println!("{} events new to the database", report.written_events);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc3339(Timestamp::from_micros(0)), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(Timestamp::from_micros(1_700_000_123_999_999)),
            "2023-11-14T22:15:23Z"
        );
        assert_eq!(decimal(1999), "19.99");
        assert_eq!(decimal(5), "0.05");
        assert_eq!(decimal(-120), "-1.20");
    }
}

#[cfg(test)]
mod round_trip {
    use super::*;
    use crate::import;

    /// CSV written by `generate --csv` imports into the same customers and purchases as the
    /// direct write, and the same plan gives the same files.
    #[tokio::test]
    async fn csv_imports_to_what_the_direct_write_stores() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = Plan {
            customers: 150,
            seed: 7,
            now: import::parse_instant("2026-06-01").expect("now"),
            events: EventSelection::Purchases,
            max_events: None,
        };
        let report = into_csv(dir.path(), &plan).await.expect("csv");
        assert_eq!(report.customers, 150);
        let purchases = report.by_kind[&EventKind::Purchase];
        assert_eq!(report.written_events, purchases);
        let again = tempfile::tempdir().expect("tempdir");
        into_csv(again.path(), &plan).await.expect("csv again");
        for f in ["customers.csv", "transactions.csv", "generate.json"] {
            let a = std::fs::read(dir.path().join(f)).expect("read");
            let b = std::fs::read(again.path().join(f)).expect("read");
            assert!(a == b, "{f} differs between two runs of the same plan");
        }

        let imported = crate::app::open_store("sqlite::memory:")
            .await
            .expect("store");
        let mut summary = import::ImportSummary::default();
        import::import_customers(
            &imported,
            &dir.path().join("customers.csv"),
            None,
            &mut summary,
        )
        .await
        .expect("import customers");
        let currency = patron_domain::Currency::parse("USD").expect("usd");
        import::import_transactions(
            &imported,
            &dir.path().join("transactions.csv"),
            currency,
            1_000,
            None,
            &mut summary,
        )
        .await
        .expect("import transactions");
        assert_eq!(summary.rejected(), 0, "{summary:?}");
        assert_eq!(summary.purchases_loaded(), purchases);

        let direct = crate::app::open_store("sqlite::memory:")
            .await
            .expect("store");
        let written = into_store(&direct, &plan).await.expect("direct");
        assert_eq!(written.by_kind, report.by_kind);
        assert_eq!(written.written_events, report.events());
        let a = imported.scan_summaries(None, 1_000).await.expect("scan");
        let b = direct.scan_summaries(None, 1_000).await.expect("scan");
        assert_eq!(a.len(), 150);
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.customer_id, y.customer_id);
            assert_eq!(x.birth_date, y.birth_date);
            assert_eq!(x.gender, y.gender);
            assert_eq!(x.country, y.country);
            assert_eq!(x.signed_up_at, y.signed_up_at);
            // The first event is a purchase in both (refunds come after their order).
            assert_eq!(
                x.summary.totals.first_event_at, y.summary.totals.first_event_at,
                "{}",
                x.customer_id
            );
        }
    }
}
