//! `patron import`: loads customers and transactions from CSV files straight into the store.
//!
//! Transactions: one purchase per row with columns `customer_id`, `timestamp` (or `date` or
//! `occurred_at`), `amount` (a decimal in major units, e.g. `19.99`) and optionally `order_id`.
//! Customers: `customer_id` and optionally `birth_date`, `gender`, `country`, `signed_up_at`.
//! Each row's event id is derived from its content, so importing the same file twice stores
//! nothing the second time: the rows are counted as duplicates.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use patron_domain::money::{check_event_amount, parse_decimal};
use patron_domain::{
    Currency, Customer, CustomerId, CustomerProfile, Date, Event, EventData, EventId, Gender,
    OrderId, Purchase, Timestamp,
};
use patron_store::Store;

/// Which kind of file a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Customers,
    Transactions,
}

/// What an import did with one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    pub kind: FileKind,
    /// The path as given on the command line.
    pub path: String,
    pub rows: u64,
    /// Customers upserted (a customers file) or purchases recorded (a transactions file).
    pub loaded: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// Rejections by reason, with up to five example line numbers each.
    pub reasons: BTreeMap<String, (u64, Vec<u64>)>,
    /// Customers that did not exist before their first imported purchase.
    pub customers_created: u64,
}

impl FileReport {
    fn new(kind: FileKind, path: &Path) -> Self {
        Self {
            kind,
            path: path.display().to_string(),
            rows: 0,
            loaded: 0,
            duplicates: 0,
            rejected: 0,
            reasons: BTreeMap::new(),
            customers_created: 0,
        }
    }

    fn reject(&mut self, line: u64, reason: String) {
        self.rejected += 1;
        let entry = self.reasons.entry(reason).or_default();
        entry.0 += 1;
        if entry.1.len() < 5 {
            entry.1.push(line);
        }
    }
}

/// What an import did: one report per file, in the order they were read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportSummary {
    pub files: Vec<FileReport>,
}

impl ImportSummary {
    fn total(&self, kind: Option<FileKind>, f: impl Fn(&FileReport) -> u64) -> u64 {
        self.files
            .iter()
            .filter(|r| kind.is_none_or(|k| r.kind == k))
            .map(f)
            .sum()
    }

    /// Customers upserted from customers files.
    pub fn customers_loaded(&self) -> u64 {
        self.total(Some(FileKind::Customers), |r| r.loaded)
    }

    /// Purchases recorded from transactions files.
    pub fn purchases_loaded(&self) -> u64 {
        self.total(Some(FileKind::Transactions), |r| r.loaded)
    }

    /// Rows rejected in every file.
    pub fn rejected(&self) -> u64 {
        self.total(None, |r| r.rejected)
    }

    /// A report for people: each file on its own, then the totals.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for r in &self.files {
            let (kind, what) = match r.kind {
                FileKind::Customers => ("customers", "customers"),
                FileKind::Transactions => ("transactions", "purchases"),
            };
            out.push_str(&format!("{kind} from {}:\n", r.path));
            out.push_str(&format!("  rows read: {}\n", r.rows));
            out.push_str(&format!("  loaded: {} {what}\n", r.loaded));
            if r.kind == FileKind::Transactions {
                out.push_str(&format!("  skipped as duplicate: {}\n", r.duplicates));
            }
            out.push_str(&format!("  rejected: {}\n", r.rejected));
            for (reason, (n, lines)) in &r.reasons {
                let lines: Vec<String> = lines.iter().map(u64::to_string).collect();
                let label = if lines.len() == 1 { "line" } else { "lines" };
                out.push_str(&format!(
                    "    {n} rejected: {reason} ({} {label} {})\n",
                    r.path,
                    lines.join(", ")
                ));
            }
            if r.kind == FileKind::Transactions {
                out.push_str(&format!(
                    "  customers created by purchases: {}\n",
                    r.customers_created
                ));
            }
        }
        out.push_str(&format!(
            "in all: {} customers and {} purchases loaded, {} rows rejected\n",
            self.customers_loaded(),
            self.purchases_loaded(),
            self.rejected()
        ));
        out
    }
}

/// Parses a UTC offset for `--assume-timezone`: `UTC`, `Z`, `+HH:MM` or `-HH:MM`, in seconds
/// east of UTC.
pub fn parse_offset(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not a UTC offset: give UTC, Z, +HH:MM or -HH:MM");
    if s.eq_ignore_ascii_case("utc") || s.eq_ignore_ascii_case("z") {
        return Ok(0);
    }
    let (sign, hm) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = hm.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: i64 = h.parse().map_err(|_| bad())?;
    let m: i64 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

/// Parses an instant: `YYYY-MM-DD`, `YYYYMMDD`, RFC 3339 (`2024-05-01T12:30:00Z`, offsets and
/// fractions allowed, a space instead of `T` too), or Unix seconds. A date is the start of that
/// UTC day (Patron's days are UTC days). A date and time must carry its zone (`Z` or an offset):
/// see [`parse_instant_in`].
pub fn parse_instant(s: &str) -> Result<Timestamp, String> {
    parse_instant_in(s, None)
}

/// [`parse_instant`], with `assume` (seconds east of UTC) as the zone of a date and time that
/// carries none; without it such a value is refused rather than guessed.
pub fn parse_instant_in(s: &str, assume: Option<i64>) -> Result<Timestamp, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a date or timestamp");
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        let date = Date::new(
            s[0..4].parse().map_err(|_| bad())?,
            s[4..6].parse().map_err(|_| bad())?,
            s[6..8].parse().map_err(|_| bad())?,
        )
        .map_err(|e| format!("{s:?}: {e}"))?;
        return Ok(date.to_day().start());
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = s.parse().map_err(|_| bad())?;
        return Timestamp::from_parts(secs, 0).map_err(|e| format!("{s:?}: {e}"));
    }
    if s.len() == 10 {
        return Date::parse_iso(s)
            .map(|d| d.to_day().start())
            .map_err(|e| format!("{s:?} is not a date or timestamp ({e})"));
    }
    // RFC 3339.
    if s.len() < 19 || !s.is_char_boundary(10) || !s.is_char_boundary(19) {
        return Err(bad());
    }
    let date = Date::parse_iso(&s[..10]).map_err(|e| format!("{s:?}: {e}"))?;
    if !matches!(s.as_bytes()[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    let time = &s[11..19];
    let mut hms = time.split(':').map(|p| p.parse::<i64>());
    let (Some(Ok(h)), Some(Ok(m)), Some(Ok(sec)), None) =
        (hms.next(), hms.next(), hms.next(), hms.next())
    else {
        return Err(bad());
    };
    if h > 23 || m > 59 || sec > 60 {
        return Err(bad());
    }
    let mut rest = &s[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let mut scaled = frac[..digits.min(6)].to_owned();
        while scaled.len() < 6 {
            scaled.push('0');
        }
        micros = scaled.parse().map_err(|_| bad())?;
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        "" => assume.ok_or_else(|| {
            format!(
                "{s:?} has no time zone: add Z or an offset such as +02:00, or pass --assume-timezone"
            )
        })?,
        _ => {
            let (sign, hm) = match rest.as_bytes().first() {
                Some(b'+') => (1, &rest[1..]),
                Some(b'-') => (-1, &rest[1..]),
                _ => return Err(bad()),
            };
            let (oh, om) = hm.split_once(':').ok_or_else(bad)?;
            let oh: i64 = oh.parse().map_err(|_| bad())?;
            let om: i64 = om.parse().map_err(|_| bad())?;
            sign * (oh * 3600 + om * 60)
        }
    };
    let day_secs = i64::from(date.to_day().as_days()) * 86_400;
    let secs = day_secs + h * 3600 + m * 60 + sec - offset_secs;
    Timestamp::from_parts(secs, 0)
        .map(|t| Timestamp::from_micros(t.as_micros() + micros))
        .map_err(|e| format!("{s:?}: {e}"))
}

/// FNV-1a, stable across runs and platforms, for content-derived event ids.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(&[0u8]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn header_index(headers: &csv::StringRecord, names: &[&str]) -> Option<usize> {
    headers
        .iter()
        .position(|h| names.iter().any(|n| h.trim().eq_ignore_ascii_case(n)))
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

fn open(path: &Path) -> Result<(csv::Reader<std::fs::File>, u64), String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(file);
    Ok((reader, len))
}

/// Imports customers from a CSV file.
pub async fn import_customers(
    store: &Arc<dyn Store>,
    path: &Path,
    zone: Option<i64>,
    summary: &mut ImportSummary,
) -> Result<(), String> {
    let mut report = FileReport::new(FileKind::Customers, path);
    let (mut reader, len) = open(path)?;
    let headers = reader.headers().map_err(|e| e.to_string())?.clone();
    let id_col = header_index(&headers, &["customer_id", "id"])
        .ok_or_else(|| format!("{}: no customer_id column", path.display()))?;
    let birth_col = header_index(&headers, &["birth_date", "birthdate"]);
    let gender_col = header_index(&headers, &["gender"]);
    let country_col = header_index(&headers, &["country"]);
    let signup_col = header_index(&headers, &["signed_up_at", "signup_date", "signed_up"]);
    let bar = progress(len, "customers");
    let now = patron_grpc::time::now();
    let mut batch: Vec<Customer> = Vec::new();
    let mut in_batch: HashMap<String, usize> = HashMap::new();
    let mut record = csv::StringRecord::new();
    let mut n: u64 = 0;
    loop {
        let line = n + 2;
        n += 1;
        match reader.read_record(&mut record) {
            Ok(true) => report.rows += 1,
            Ok(false) => break,
            Err(e) if e.is_io_error() => return Err(format!("{}: {e}", path.display())),
            Err(e) => {
                report.rows += 1;
                report.reject(line, format!("unreadable row: {e}"));
                continue;
            }
        }
        let field = |c: Option<usize>| c.and_then(|c| record.get(c)).filter(|s| !s.is_empty());
        let parsed = (|| -> Result<Customer, String> {
            let customer_id = CustomerId::parse(field(Some(id_col)).unwrap_or_default())
                .map_err(|e| format!("customer_id {e}"))?;
            let birth_date = field(birth_col)
                .map(|s| Date::parse_iso(s).map_err(|e| format!("birth_date {e}")))
                .transpose()?;
            let gender = match field(gender_col) {
                None => Gender::Unspecified,
                Some(g) => Gender::parse(&g.to_ascii_lowercase()).ok_or_else(|| {
                    format!("gender {g:?} is not female, male, other or undisclosed")
                })?,
            };
            let country =
                patron_domain::customer::parse_country(field(country_col).unwrap_or_default())
                    .map_err(|e| format!("country {e}"))?;
            let signed_up_at = field(signup_col)
                .map(|s| {
                    parse_instant_in(s, zone).and_then(|t| {
                        t.check_not_after(now)
                            .map_err(|e| format!("signed_up_at {e}"))
                    })
                })
                .transpose()?;
            Ok(Customer {
                customer_id,
                profile: CustomerProfile {
                    birth_date,
                    gender,
                    country,
                    signed_up_at,
                    attributes: Default::default(),
                },
            })
        })();
        match parsed {
            Ok(c) => {
                // A later row for the same customer replaces the earlier one.
                match in_batch.get(c.customer_id.as_str()) {
                    Some(&i) => batch[i] = c,
                    None => {
                        in_batch.insert(c.customer_id.as_str().to_owned(), batch.len());
                        batch.push(c);
                    }
                }
            }
            Err(reason) => report.reject(line, reason),
        }
        if batch.len() >= 1_000 {
            report.loaded += batch.len() as u64;
            store
                .upsert_customers(&batch, now)
                .await
                .map_err(|e| e.to_string())?;
            batch.clear();
            in_batch.clear();
        }
        if n.is_multiple_of(1_000) {
            bar.set_position(reader.position().byte());
        }
    }
    if !batch.is_empty() {
        report.loaded += batch.len() as u64;
        store
            .upsert_customers(&batch, now)
            .await
            .map_err(|e| e.to_string())?;
    }
    bar.finish_and_clear();
    summary.files.push(report);
    Ok(())
}

async fn flush(
    store: &Arc<dyn Store>,
    batch: &mut Vec<Event>,
    now: Timestamp,
    report: &mut FileReport,
) -> Result<(), String> {
    let out = store
        .record_events(batch, now)
        .await
        .map_err(|e| e.to_string())?;
    batch.clear();
    report.loaded += out.recorded as u64;
    report.duplicates += out.duplicate_indexes.len() as u64;
    report.customers_created += out.created_customers as u64;
    Ok(())
}

/// Imports transactions (purchases) from a CSV file in batches of `batch_size`.
pub async fn import_transactions(
    store: &Arc<dyn Store>,
    path: &Path,
    currency: Currency,
    batch_size: usize,
    zone: Option<i64>,
    summary: &mut ImportSummary,
) -> Result<(), String> {
    let mut report = FileReport::new(FileKind::Transactions, path);
    let (mut reader, len) = open(path)?;
    let headers = reader.headers().map_err(|e| e.to_string())?.clone();
    let missing = |what: &str| format!("{}: no {what} column", path.display());
    let id_col = header_index(&headers, &["customer_id", "customer"])
        .ok_or_else(|| missing("customer_id"))?;
    let time_col = header_index(&headers, &["timestamp", "date", "occurred_at", "time"])
        .ok_or_else(|| missing("timestamp or date"))?;
    let amount_col =
        header_index(&headers, &["amount", "value", "revenue"]).ok_or_else(|| missing("amount"))?;
    let order_col = header_index(&headers, &["order_id", "order"]);
    let bar = progress(len, "transactions");
    let now = patron_grpc::time::now();
    let mut occurrences: HashMap<u64, u32> = HashMap::new();
    let mut batch: Vec<Event> = Vec::with_capacity(batch_size);
    let mut record = csv::StringRecord::new();
    let mut n: u64 = 0;
    loop {
        let line = n + 2;
        n += 1;
        match reader.read_record(&mut record) {
            Ok(true) => report.rows += 1,
            Ok(false) => break,
            Err(e) if e.is_io_error() => return Err(format!("{}: {e}", path.display())),
            Err(e) => {
                report.rows += 1;
                report.reject(line, format!("unreadable row: {e}"));
                continue;
            }
        }
        let get = |c: usize| record.get(c).unwrap_or_default();
        let parsed = (|| -> Result<Event, String> {
            let customer_id =
                CustomerId::parse(get(id_col)).map_err(|e| format!("customer_id {e}"))?;
            let occurred_at = parse_instant_in(get(time_col), zone)?
                .check_event_time(now)
                .map_err(|e| format!("timestamp {e}"))?;
            let amount =
                parse_decimal(get(amount_col), currency).map_err(|e| format!("amount {e}"))?;
            let amount = check_event_amount(amount).map_err(|e| format!("amount {e}"))?;
            let order = order_col.map(get).filter(|s| !s.is_empty());
            let order_id = order
                .map(OrderId::parse)
                .transpose()
                .map_err(|e| format!("order_id {e}"))?;
            let key = fnv1a(&[
                customer_id.as_str().as_bytes(),
                &occurred_at.as_micros().to_le_bytes(),
                &amount.to_le_bytes(),
                order.unwrap_or_default().as_bytes(),
            ]);
            // Identical rows are distinct purchases: number them.
            let nth = occurrences.entry(key).or_insert(0);
            *nth += 1;
            let event_id =
                EventId::parse(format!("csv-{key:016x}-{nth}")).map_err(|e| e.to_string())?;
            let order_id = match order_id {
                Some(o) => o,
                None => OrderId::parse(event_id.as_str()).map_err(|e| e.to_string())?,
            };
            Ok(Event {
                customer_id,
                event_id,
                occurred_at,
                data: EventData::Purchase(Purchase {
                    order_id,
                    amount,
                    item_count: 0,
                    channel: String::new(),
                }),
            })
        })();
        match parsed {
            Ok(e) => batch.push(e),
            Err(reason) => report.reject(line, reason),
        }
        if batch.len() >= batch_size {
            flush(store, &mut batch, now, &mut report).await?;
            bar.set_position(reader.position().byte());
        }
    }
    if !batch.is_empty() {
        flush(store, &mut batch, now, &mut report).await?;
    }
    bar.finish_and_clear();
    summary.files.push(report);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants() {
        let day = |y, m, d| {
            Date::new(y, m, d)
                .expect("date")
                .to_day()
                .start()
                .as_micros()
        };
        let cases: &[(&str, Option<i64>)] = &[
            ("2024-05-01", Some(day(2024, 5, 1))),
            ("20240501", Some(day(2024, 5, 1))),
            (
                "2024-05-01T01:00:00Z",
                Some(day(2024, 5, 1) + 3_600_000_000),
            ),
            (
                "2024-05-01 01:00:00Z",
                Some(day(2024, 5, 1) + 3_600_000_000),
            ),
            // A date and time without a zone is refused, not taken as UTC.
            ("2024-05-01 01:00:00", None),
            ("2024-05-01T01:00:00.5", None),
            (
                "2024-05-01T01:00:00.5+01:00",
                Some(day(2024, 5, 1) + 500_000),
            ),
            ("1714521600", Some(day(2024, 5, 1))),
            ("2024-13-01", None),
            ("yesterday", None),
            ("2024-05-01T25:00:00Z", None),
            ("", None),
            ("2024-05-01Tééééé", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_instant(input).ok().map(Timestamp::as_micros),
                *want,
                "{input}"
            );
        }
    }

    #[test]
    fn zoneless_times_need_an_assumed_zone() {
        let day = Date::new(2024, 5, 1)
            .expect("date")
            .to_day()
            .start()
            .as_micros();
        let err = parse_instant("2024-05-01 01:00:00").expect_err("no zone");
        assert!(err.contains("has no time zone"), "{err}");
        assert!(err.contains("--assume-timezone"), "{err}");
        let plus2 = parse_offset("+02:00").expect("offset");
        assert_eq!(plus2, 7_200);
        assert_eq!(
            parse_instant_in("2024-05-01 01:00:00", Some(plus2)).map(Timestamp::as_micros),
            Ok(day - 3_600_000_000)
        );
        // An explicit zone wins over the assumed one; dates stay UTC days.
        assert_eq!(
            parse_instant_in("2024-05-01T01:00:00Z", Some(plus2)).map(Timestamp::as_micros),
            Ok(day + 3_600_000_000)
        );
        assert_eq!(
            parse_instant_in("2024-05-01", Some(plus2)).map(Timestamp::as_micros),
            Ok(day)
        );
        assert_eq!(parse_offset("UTC"), Ok(0));
        assert_eq!(parse_offset("-05:30"), Ok(-19_800));
        for bad in ["", "+2", "+24:00", "CET", "+02:60", "0200"] {
            assert!(parse_offset(bad).is_err(), "{bad}");
        }
    }

    /// Each file reports on its own, line numbers name their file, and the totals count
    /// customers and purchases apart.
    #[test]
    fn the_report_keeps_files_apart() {
        let mut customers = FileReport::new(FileKind::Customers, Path::new("c.csv"));
        customers.rows = 3;
        customers.loaded = 2;
        customers.reject(4, "birth_date bad".into());
        let mut transactions = FileReport::new(FileKind::Transactions, Path::new("t.csv"));
        transactions.rows = 5;
        transactions.loaded = 3;
        transactions.duplicates = 1;
        transactions.reject(2, "amount bad".into());
        transactions.reject(6, "amount bad".into());
        let summary = ImportSummary {
            files: vec![customers, transactions],
        };
        assert_eq!(
            summary.render(),
            "customers from c.csv:\n  rows read: 3\n  loaded: 2 customers\n  rejected: 1\n\
             \x20   1 rejected: birth_date bad (c.csv line 4)\n\
             transactions from t.csv:\n  rows read: 5\n  loaded: 3 purchases\n  skipped as duplicate: 1\n\
             \x20 rejected: 2\n    2 rejected: amount bad (t.csv lines 2, 6)\n\
             \x20 customers created by purchases: 0\n\
             in all: 2 customers and 3 purchases loaded, 3 rows rejected\n"
        );
    }
}
