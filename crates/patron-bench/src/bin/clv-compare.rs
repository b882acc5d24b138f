//! `clv-compare`: Patron's side of the value-model comparison with the Python `lifetimes` library
//! (`scripts/bench-fit.sh` runs both on the same data and compares them).
//!
//!   clv-compare DIR [--out predictions.csv] [--threads N] [--horizon-months 12]
//!
//! `DIR/transactions.csv` is a `patron generate --csv DIR` file: header
//! `customer_id,timestamp,amount,order_id`, RFC 3339 timestamps, amounts in major units (`19.99`);
//! `DIR/generate.json` holds `{"now": "<RFC 3339>"}`, the observation end. Three stages are timed,
//! separately and in total:
//!
//! 1. **summary**: read and parse the CSV (the timestamp and amount parsers of `patron import`,
//!    `parse_instant` and `parse_decimal`, behind non-allocating fast paths for the usual
//!    `2025-03-01T12:34:56Z` and `19.99` shapes that give the same results), group rows into
//!    orders per customer, derive the purchase statistics with the stores' reference rules
//!    (`derive_purchase_stats`) and turn each summary into the model inputs with
//!    `DayRfm::from_summary`, exactly as `FitValueModel` does (frequency = purchase days − 1,
//!    recency = last − first purchase day, T = observation-end day − first purchase day,
//!    monetary = mean net revenue of the repeat purchase days: the `lifetimes`
//!    `summary_data_from_transaction_data(freq="D")` convention). Rows dated after the
//!    observation end's day are dropped, as `lifetimes` drops them. The file is split between
//!    `threads` workers at line ends between customers; when each customer's rows are together
//!    (as `patron generate` writes them) every customer is summarised as its rows end and no row
//!    is kept, otherwise (found out afterwards) the file is read again keeping every row.
//! 2. **fit**: BG/NBD and Gamma-Gamma with the functions and options of
//!    `patron_views::model::fit` (`fit_bg_nbd`, `fit_gamma_gamma`, default options, no
//!    penalizer, no standard errors, `threads` workers), in days.
//! 3. **predict**: for every customer, `ActiveModel::predict` of the fitted model — P(alive),
//!    E[X(30 · horizon-months days)], the Gamma-Gamma conditional expected order value and the
//!    discounted CLV over `horizon-months` 30-day months (`lifetimes`'
//!    `customer_lifetime_value(..., time=horizon_months, discount_rate=d, freq="D")`), on
//!    `threads` workers.
//!
//! Monetary values are in minor units inside Patron (as in the service); the CSV and the JSON
//! report them in major units (÷ 100) to line up with `lifetimes`. With `--money major` the
//! Gamma-Gamma model is fitted on major units instead (the optimiser then starts from the same
//! point as `lifetimes` in the same units).
//!
//! Unless `--skip-service-fit`, it also times `patron_views::model::fit` on the same
//! population: the computation behind `FitValueModel` (both fits, the population distributions
//! and a CLV for every customer), without the store.
//!
//! Prints one JSON line to stdout: wall time and process CPU time per stage (seconds), the fitted
//! parameters and the optimiser's diagnostics.

#![allow(clippy::print_stdout)] // The JSON report on stdout is this tool's output.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, ValueEnum};
use patron_domain::clv::{
    BgNbdFit, BgNbdFitOptions, CustomerRfm, Days, GammaGammaFit, GammaGammaFitOptions,
    TimeUnitKind, fit_bg_nbd, fit_gamma_gamma,
};
use patron_domain::money::{check_event_amount, parse_decimal};
use patron_domain::summary::{OrderRow, derive_purchase_stats};
use patron_domain::{Currency, CustomerSummary, Date, Day, Timestamp};
use patron_server::import::parse_instant;
use patron_views::cdf::Cdf;
use patron_views::model::{
    ActiveModel, BgNbdDoc, DayRfm, FitRequest, GammaGammaDoc, ModelDoc, Prediction, PurchaseModel,
};
use serde_json::json;

// The system allocator, not the server's mimalloc: a fresh process under mimalloc's default
// (eager arena commit, huge pages) spent 0.3-0.4 s more zeroing memory in the summary stage at
// 1,000,000 customers; a running server reuses its memory and does not pay that per fit.

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Money {
    /// Minor units (cents), as the service stores and fits them.
    Minor,
    /// Major units (dollars), as `lifetimes` is given them.
    Major,
}

#[derive(Debug, Parser)]
#[command(
    about = "Patron's summary + BG/NBD/Gamma-Gamma fit + predictions on a transactions CSV, timed"
)]
struct Args {
    /// Directory with transactions.csv and generate.json (`patron generate --csv DIR`).
    dir: PathBuf,
    /// Write per-customer summaries and predictions here (CSV).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Observation end (RFC 3339); default: "now" of DIR/generate.json.
    #[arg(long)]
    now: Option<String>,
    /// CLV horizon in 30-day months; expected purchases are over 30 × this many days.
    #[arg(long, default_value_t = 12)]
    horizon_months: u32,
    /// Monthly discount rate of the CLV.
    #[arg(long, default_value_t = 0.01)]
    monthly_discount_rate: f64,
    /// Worker threads for the fits and the predictions; 0 = available parallelism (as the
    /// service).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Money unit the Gamma-Gamma model is fitted in.
    #[arg(long, value_enum, default_value_t = Money::Minor)]
    money: Money,
    /// Override the BFGS gradient tolerance (default 1e-9, on the mean objective).
    #[arg(long)]
    gradient_tolerance: Option<f64>,
    /// Override the BFGS relative-change tolerance (default 1e-15).
    #[arg(long)]
    relative_tolerance: Option<f64>,
    /// Override the BFGS iteration limit (default 500).
    #[arg(long)]
    max_iterations: Option<u32>,
    /// Do not time `patron_views::model::fit` (the FitValueModel computation) as well.
    #[arg(long)]
    skip_service_fit: bool,
    /// Stop after the summary stage (to profile it).
    #[arg(long)]
    summary_only: bool,
}

/// A small non-cryptographic hasher for customer ids and their hashes: each 8-byte word goes
/// through MurmurHash3's 64-bit finaliser (a bijection), so distinct short ids collide with a
/// chance of about 2^-64 (SipHash, the default, is slower than needed here).
#[derive(Debug, Default, Clone, Copy)]
struct Mix(u64);

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0 ^ 0x9e37_79b9_7f4a_7c15 ^ bytes.len() as u64;
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            h = fmix64(h ^ u64::from_le_bytes(w));
        }
        self.0 = h;
    }
}

/// One purchase row.
#[derive(Debug, Clone, Copy)]
struct Row {
    customer: u32,
    day: Day,
    amount: i64,
    /// Order id bytes in the arena; `len == 0`: no order id (the row is its own order).
    order_start: u32,
    order_len: u32,
}

/// One customer's summary, as the models see it.
#[derive(Debug, Clone, Copy)]
struct Customer {
    rfm: DayRfm,
    net_revenue: i64,
}

struct Summaries {
    ids: Ids,
    /// Same order as `ids`; `None` for customers without a purchase by the observation end.
    customers: Vec<Option<Customer>>,
    rows: u64,
    rows_after_end: u64,
}

fn fail(message: impl std::fmt::Display) -> String {
    message.to_string()
}

fn read_now(dir: &Path, given: Option<&str>) -> Result<Timestamp, String> {
    if let Some(s) = given {
        return parse_instant(s);
    }
    let path = dir.join("generate.json");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let now = v
        .get("now")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| format!("{}: no \"now\" string", path.display()))?;
    parse_instant(now)
}

/// CPU time of this process so far (user + system, all threads), from /proc/self/stat; NaN
/// where that is unavailable.
fn cpu_seconds() -> f64 {
    let read = || -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after "(comm) ": state is the 3rd field, utime the 14th, stime the 15th.
        let rest = stat.get(stat.rfind(')')? + 2..)?;
        let mut fields = rest.split_ascii_whitespace().skip(11);
        let user: f64 = fields.next()?.parse().ok()?;
        let system: f64 = fields.next()?.parse().ok()?;
        // USER_HZ is 100 on Linux.
        Some((user + system) / 100.0)
    };
    read().unwrap_or(f64::NAN)
}

/// Column positions of the transactions file.
#[derive(Debug, Clone, Copy)]
struct Columns {
    id: usize,
    time: usize,
    amount: usize,
    order: Option<usize>,
}

/// How a part of the file is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Each customer's rows are together (as `patron generate` writes them): summarise a
    /// customer when its rows end and keep no rows. Gives up (`scattered`) at the first customer
    /// seen again after others.
    Runs,
    /// Keep every row, to group them by customer afterwards.
    Rows,
}

/// What one thread parsed of its part of the file.
#[derive(Default)]
struct Parsed {
    ids: Ids,
    /// `Mode::Runs`: the model inputs of each id.
    customers: Vec<Option<Customer>>,
    /// `Mode::Rows`: every row; `Mode::Runs`: the current customer's rows.
    rows: Vec<Row>,
    /// Order ids of `rows`, back to back.
    arena: Vec<u8>,
    total: u64,
    after_end: u64,
    /// A double quote was read (a quoted field might hold a line break a split cut through).
    quoted: bool,
}

fn id_hash(bytes: &[u8]) -> u64 {
    let mut h = Mix::default();
    h.write(bytes);
    h.finish()
}

/// Customer ids numbered 0, 1, … in order of first appearance, all in one string (no allocation
/// per customer). [`Ids::intern`] finds known ids by a 64-bit hash (ids whose hash is taken by
/// another id go to `clashes`); [`Ids::push`] only appends, and [`Ids::any_repeated`] tells
/// afterwards whether an id came twice (sorting the hashes beats a hash table's cache misses).
#[derive(Default)]
struct Ids {
    text: String,
    /// Where id `n` ends in `text` (it starts where `n - 1` ends).
    ends: Vec<usize>,
    hashes: Vec<u64>,
    by_hash: HashMap<u64, u32, BuildHasherDefault<Mix>>,
    clashes: HashMap<Box<[u8]>, u32>,
}

impl Ids {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, n: usize) -> &str {
        let start = if n == 0 { 0 } else { self.ends[n - 1] };
        &self.text[start..self.ends[n]]
    }

    /// Numbers `id` as a new id, whether or not it is one.
    fn push(&mut self, id: &[u8]) -> Result<u32, String> {
        let text = std::str::from_utf8(id).map_err(|e| format!("customer_id: {e}"))?;
        let n = u32::try_from(self.len()).map_err(fail)?;
        self.text.push_str(text);
        self.ends.push(self.text.len());
        self.hashes.push(id_hash(id));
        Ok(n)
    }

    /// Appends `other`'s ids (numbered after these), as [`Ids::push`] would.
    fn append(&mut self, other: &Ids) {
        let shift = self.text.len();
        self.text.push_str(&other.text);
        self.ends.extend(other.ends.iter().map(|e| e + shift));
        self.hashes.extend_from_slice(&other.hashes);
    }

    /// Whether an id was pushed twice.
    fn any_repeated(&self) -> bool {
        let mut order: Vec<(u64, u32)> = self.hashes.iter().copied().zip(0..).collect();
        order.sort_unstable();
        order
            .windows(2)
            .any(|w| w[0].0 == w[1].0 && self.get(w[0].1 as usize) == self.get(w[1].1 as usize))
    }

    /// The number of `id`, numbering it if new.
    fn intern(&mut self, id: &[u8]) -> Result<u32, String> {
        let hash = id_hash(id);
        if let Some(&n) = self.by_hash.get(&hash) {
            if self.get(n as usize).as_bytes() == id {
                return Ok(n);
            }
            if let Some(&n) = self.clashes.get(id) {
                return Ok(n);
            }
        }
        let n = self.push(id)?;
        match self.by_hash.entry(hash) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(n);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.clashes.insert(id.into(), n);
            }
        }
        Ok(n)
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (what `patron generate` writes), parsed without allocating; `None` for
/// anything else, which then goes to `patron import`'s `parse_instant`. Same result as
/// `parse_instant` where both apply (see the tests).
fn fast_instant(s: &[u8]) -> Option<Timestamp> {
    let shape = s.len() == 20
        && s[4] == b'-'
        && s[7] == b'-'
        && s[10] == b'T'
        && s[13] == b':'
        && s[16] == b':'
        && s[19] == b'Z';
    if !shape {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i32> {
        s[from..to].iter().try_fold(0i32, |v, &c| {
            c.is_ascii_digit().then(|| v * 10 + i32::from(c - b'0'))
        })
    };
    let (h, m, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let date = Date::new(num(0, 4)?, num(5, 7)?, num(8, 10)?).ok()?;
    let secs = i64::from(date.to_day().as_days()) * 86_400
        + i64::from(h) * 3600
        + i64::from(m) * 60
        + i64::from(sec);
    Timestamp::from_parts(secs, 0).ok()
}

/// A plain decimal with at most two places (`19.99`, `20`, `5.5`) in cents, without allocating;
/// `None` for anything else (signs, spaces, more places, very long numbers), which then goes to
/// `parse_decimal`. Same result as `parse_decimal` for USD where both apply (see the tests).
fn fast_cents(s: &[u8]) -> Option<i64> {
    let (int, frac) = match s.iter().position(|&b| b == b'.') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &s[..0]),
    };
    if int.is_empty() || int.len() > 15 || frac.len() > 2 {
        return None;
    }
    let v = int.iter().chain(frac).try_fold(0i64, |v, &c| {
        c.is_ascii_digit().then(|| v * 10 + i64::from(c - b'0'))
    })?;
    Some(if frac.len() == 2 {
        v
    } else if frac.len() == 1 {
        v * 10
    } else {
        v * 100
    })
}

/// A reader that notes whether a double quote went through it.
struct QuoteWatch<R> {
    inner: R,
    quoted: bool,
}

impl<R: Read> Read for QuoteWatch<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.quoted |= buf[..n].contains(&b'"');
        Ok(n)
    }
}

/// Parses the CSV records (no header) in bytes `range` of the file, with the parsers of
/// `patron import` (behind non-allocating fast paths for the usual shapes).
fn parse_part(
    path: &Path,
    range: (u64, u64),
    cols: Columns,
    now: Timestamp,
    mode: Mode,
) -> Result<Parsed, String> {
    let usd = Currency::parse("USD").map_err(fail)?;
    let end_day = now.day();
    let mut file = std::fs::File::open(path).map_err(fail)?;
    file.seek(SeekFrom::Start(range.0)).map_err(fail)?;
    let len = range.1 - range.0;
    let watch = QuoteWatch {
        inner: file.take(len),
        quoted: false,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .buffer_capacity(1 << 20)
        .from_reader(watch);
    // ~50 bytes a row in `patron generate` files, about two rows a customer.
    let rows_estimate = usize::try_from(len / 48).unwrap_or(0) + 16;
    let mut p = Parsed::default();
    p.ids.ends.reserve(rows_estimate / 2);
    p.ids.hashes.reserve(rows_estimate / 2);
    p.ids.text.reserve(rows_estimate * 6);
    if mode == Mode::Rows {
        p.ids.by_hash.reserve(rows_estimate / 2);
    }
    match mode {
        Mode::Runs => p.customers.reserve(rows_estimate / 2),
        Mode::Rows => {
            p.rows.reserve(rows_estimate);
            p.arena.reserve(rows_estimate * 16);
        }
    }
    let mut orders = Vec::new();
    let mut record = csv::ByteRecord::new();
    let mut last_id: Vec<u8> = Vec::new();
    let mut last: Option<u32> = None;
    loop {
        let at_byte = range.0 + reader.position().byte();
        let here = |e: &dyn std::fmt::Display| format!("record at byte {at_byte}: {e}");
        if !reader.read_byte_record(&mut record).map_err(|e| here(&e))? {
            break;
        }
        p.total += 1;
        let text = |c: usize| -> Result<&str, String> {
            std::str::from_utf8(record.get(c).unwrap_or_default()).map_err(|e| here(&e))
        };
        let field = |c: usize| record.get(c).unwrap_or_default();
        let id = field(cols.id);
        let customer = match last {
            Some(n) if last_id.as_slice() == id => n,
            _ => {
                if mode == Mode::Runs && last.is_some() {
                    p.customers
                        .push(customer_inputs(&mut p.rows, &p.arena, &mut orders, now));
                    p.rows.clear();
                    p.arena.clear();
                }
                // Runs: a customer seen again shows in `any_repeated` afterwards.
                let n = match mode {
                    Mode::Runs => p.ids.push(id),
                    Mode::Rows => p.ids.intern(id),
                }
                .map_err(|e| here(&e))?;
                last_id.clear();
                last_id.extend_from_slice(id);
                last = Some(n);
                n
            }
        };
        let at = match fast_instant(field(cols.time)) {
            Some(t) => t,
            None => parse_instant(text(cols.time)?).map_err(|e| here(&e))?,
        };
        let day = at.day();
        // lifetimes drops the rows after the observation end's day (customers with no row left
        // are then not in its summary; here they get no model input).
        if day > end_day {
            p.after_end += 1;
            continue;
        }
        let amount = match fast_cents(field(cols.amount)) {
            Some(a) => Ok(a),
            None => parse_decimal(text(cols.amount)?, usd),
        }
        .and_then(|a| check_event_amount(a).map_err(fail))
        .map_err(|e| here(&format!("amount {e}")))?;
        let order = cols.order.and_then(|c| record.get(c)).unwrap_or_default();
        let too_big = |_| here(&"the order ids take over 4 GiB");
        let order_start = u32::try_from(p.arena.len()).map_err(too_big)?;
        let order_len = u32::try_from(order.len()).map_err(too_big)?;
        p.arena.extend_from_slice(order);
        p.rows.push(Row {
            customer,
            day,
            amount,
            order_start,
            order_len,
        });
    }
    if mode == Mode::Runs && last.is_some() {
        p.customers
            .push(customer_inputs(&mut p.rows, &p.arena, &mut orders, now));
        p.rows = Vec::new();
        p.arena = Vec::new();
    }
    p.quoted = reader.get_ref().quoted;
    Ok(p)
}

/// The customer id of a CSV line without quotes.
fn line_id(line: &[u8], id_col: usize) -> &[u8] {
    let field = line.split(|&b| b == b',').nth(id_col).unwrap_or_default();
    field
        .strip_suffix(b"\n")
        .map_or(field, |f| f.strip_suffix(b"\r").unwrap_or(f))
}

/// Splits bytes `from..to` of the file into at most `parts` ranges that end at line ends and,
/// where the lines allow, between two customers (so that `Mode::Runs` sees every customer's
/// rows in one part).
fn split_lines(
    path: &Path,
    from: u64,
    to: u64,
    parts: usize,
    id_col: usize,
) -> Result<Vec<(u64, u64)>, String> {
    let mut out = Vec::new();
    let mut start = from;
    let mut line = Vec::new();
    for k in 1..parts as u64 {
        let mut pos = (from + (to - from) * k / parts as u64).max(start);
        let mut file = std::fs::File::open(path).map_err(fail)?;
        file.seek(SeekFrom::Start(pos)).map_err(fail)?;
        let mut r = std::io::BufReader::with_capacity(1 << 16, file);
        // The rest of the line `pos` falls in, then the lines of that line's successor's customer.
        line.clear();
        pos += r.read_until(b'\n', &mut line).map_err(fail)? as u64;
        let mut first: Option<Vec<u8>> = None;
        while pos < to {
            line.clear();
            let n = r.read_until(b'\n', &mut line).map_err(fail)? as u64;
            if n == 0 || line.contains(&b'"') {
                break;
            }
            let id = line_id(&line, id_col);
            match &first {
                None => first = Some(id.to_vec()),
                Some(f) if f.as_slice() == id => {}
                Some(_) => break,
            }
            pos += n;
        }
        let end = pos.min(to);
        if end > start {
            out.push((start, end));
            start = end;
        }
    }
    if start < to {
        out.push((start, to));
    }
    Ok(out)
}

/// One customer's rows (any order) into model inputs: rows of the same order make one order row
/// (amounts add up, the earliest day counts: what the stores do with an order's purchase events),
/// then the stores' purchase statistics and `FitValueModel`'s `DayRfm::from_summary`.
fn customer_inputs(
    mine: &mut [Row],
    arena: &[u8],
    orders: &mut Vec<OrderRow>,
    now: Timestamp,
) -> Option<Customer> {
    if mine.is_empty() {
        return None;
    }
    let order_of = |r: &Row| {
        let start = r.order_start as usize;
        &arena[start..start + r.order_len as usize]
    };
    if mine.len() > 1 {
        mine.sort_unstable_by(|a, b| order_of(a).cmp(order_of(b)).then(a.day.cmp(&b.day)));
    }
    orders.clear();
    let mut prev: Option<&[u8]> = None;
    for r in mine.iter() {
        let id = order_of(r);
        match orders.last_mut() {
            Some(o) if !id.is_empty() && prev == Some(id) => o.amount += r.amount,
            _ => orders.push(OrderRow {
                day: Some(r.day),
                amount: r.amount,
                refunded: 0,
            }),
        }
        prev = Some(id);
    }
    let summary = CustomerSummary {
        purchases: derive_purchase_stats(orders),
        ..CustomerSummary::default()
    };
    DayRfm::from_summary(&summary, now).map(|rfm| Customer {
        rfm,
        net_revenue: summary.purchases.net_revenue,
    })
}

/// Stage 1: the CSV into per-customer model inputs, on `threads` workers (the file is split at
/// line ends, between customers, unless it has quoted fields).
fn summarise(path: &Path, now: Timestamp, threads: usize) -> Result<Summaries, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file_len = file.metadata().map_err(fail)?.len();
    let mut header_reader = csv::ReaderBuilder::new().from_reader(std::io::BufReader::new(file));
    let headers = header_reader.byte_headers().map_err(fail)?.clone();
    let header_len = header_reader.position().byte();
    drop(header_reader);
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name.as_bytes())
            .ok_or_else(|| format!("{}: no {name} column", path.display()))
    };
    let cols = Columns {
        id: col("customer_id")?,
        time: col("timestamp")?,
        amount: col("amount")?,
        order: col("order_id").ok(),
    };
    let parse = |parts: usize, mode: Mode| -> Result<Vec<Parsed>, String> {
        let ranges = split_lines(path, header_len, file_len, parts, cols.id)?;
        let results: Vec<Result<Parsed, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = ranges
                .iter()
                .map(|&range| scope.spawn(move || parse_part(path, range, cols, now, mode)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("parser thread panicked".into()))
                })
                .collect()
        });
        let parsed: Vec<Parsed> = results
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if parsed.len() > 1 && parsed.iter().any(|p| p.quoted) {
            // A quoted field may hold a line break that a split cut through: one piece.
            return Ok(vec![parse_part(
                path,
                (header_len, file_len),
                cols,
                now,
                mode,
            )?]);
        }
        Ok(parsed)
    };

    // Customers' rows together (the usual case): each part summarised its customers already;
    // unless a customer's rows turn out to be in two places.
    let mut merged = Summaries {
        ids: Ids::default(),
        customers: Vec::new(),
        rows: 0,
        rows_after_end: 0,
    };
    for (k, part) in parse(threads.max(1), Mode::Runs)?.into_iter().enumerate() {
        merged.rows += part.total;
        merged.rows_after_end += part.after_end;
        if k == 0 {
            merged.ids = part.ids;
            merged.customers = part.customers;
        } else {
            merged.ids.append(&part.ids);
            merged.customers.extend(part.customers);
        }
    }
    if !merged.ids.any_repeated() {
        merged.ids.hashes = Vec::new();
        return Ok(merged);
    }
    drop(merged);

    // Otherwise keep all rows and group them.
    let results = parse(threads.max(1), Mode::Rows)?;
    // Merge: the first part's customers keep their numbers, the others are looked up.
    let mut merged = Parsed::default();
    for (k, part) in results.into_iter().enumerate() {
        merged.total += part.total;
        merged.after_end += part.after_end;
        if k == 0 {
            merged = Parsed {
                total: merged.total,
                after_end: merged.after_end,
                ..part
            };
            continue;
        }
        let mut map = Vec::with_capacity(part.ids.len());
        for n in 0..part.ids.len() {
            map.push(merged.ids.intern(part.ids.get(n).as_bytes())?);
        }
        let shift = u32::try_from(merged.arena.len())
            .ok()
            .filter(|s| {
                s.checked_add(u32::try_from(part.arena.len()).unwrap_or(u32::MAX))
                    .is_some()
            })
            .ok_or_else(|| format!("{}: the order ids take over 4 GiB", path.display()))?;
        merged.arena.extend_from_slice(&part.arena);
        merged.rows.extend(part.rows.into_iter().map(|r| Row {
            customer: map[r.customer as usize],
            order_start: r.order_start + shift,
            ..r
        }));
    }
    let Parsed {
        mut ids,
        mut rows,
        arena,
        total,
        after_end,
        ..
    } = merged;
    ids.by_hash = HashMap::default();
    ids.clashes = HashMap::default();

    // Group rows by customer: a counting sort (customers are dense numbers).
    let n = ids.len();
    let mut starts = vec![0usize; n + 1];
    for r in &rows {
        starts[r.customer as usize + 1] += 1;
    }
    for i in 0..n {
        starts[i + 1] += starts[i];
    }
    let mut next = starts.clone();
    let mut grouped = rows.clone();
    for r in &rows {
        let slot = &mut next[r.customer as usize];
        grouped[*slot] = *r;
        *slot += 1;
    }
    rows = grouped;

    // Per customer, in `threads` contiguous ranges of customers.
    let per = n.div_ceil(threads.max(1)).max(1);
    let mut customers: Vec<Option<Customer>> = vec![None; n];
    std::thread::scope(|scope| {
        let mut rest_rows: &mut [Row] = &mut rows;
        let mut taken = 0usize;
        for (k, outs) in customers.chunks_mut(per).enumerate() {
            let first = k * per;
            let bounds = &starts[first..=first + outs.len()];
            let (mine, rest) = rest_rows.split_at_mut(bounds[outs.len()] - taken);
            rest_rows = rest;
            let base = taken;
            taken = bounds[outs.len()];
            let arena = &arena;
            scope.spawn(move || {
                let mut orders = Vec::new();
                for (c, out) in outs.iter_mut().enumerate() {
                    let lo = bounds[c] - base;
                    let hi = bounds[c + 1] - base;
                    *out = customer_inputs(&mut mine[lo..hi], arena, &mut orders, now);
                }
            });
        }
    });
    Ok(Summaries {
        ids,
        customers,
        rows: total,
        rows_after_end: after_end,
    })
}

fn bfgs(args: &Args) -> patron_domain::clv::optim::BfgsOptions {
    let mut o = patron_domain::clv::optim::BfgsOptions::default();
    if let Some(v) = args.gradient_tolerance {
        o.gradient_tolerance = v;
    }
    if let Some(v) = args.relative_tolerance {
        o.relative_tolerance = v;
    }
    if let Some(v) = args.max_iterations {
        o.max_iterations = v;
    }
    o
}

/// `ActiveModel::predict` over all customers on `threads` workers.
fn predict_all(model: &ActiveModel, rfms: &[DayRfm], threads: usize) -> Vec<Option<Prediction>> {
    let mut out = vec![None; rfms.len()];
    let per = rfms.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        for (outs, ins) in out.chunks_mut(per).zip(rfms.chunks(per)) {
            scope.spawn(move || {
                for (o, c) in outs.iter_mut().zip(ins) {
                    *o = model.predict(c);
                }
            });
        }
    });
    out
}

/// `ActiveModel::intervals` over all customers on `threads` workers; how many got intervals.
fn intervals_all(model: &ActiveModel, rfms: &[DayRfm], threads: usize) -> usize {
    let per = rfms.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = rfms
            .chunks(per)
            .map(|ins| scope.spawn(move || ins.iter().filter_map(|c| model.intervals(c)).count()))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    })
}

fn write_predictions(
    path: &Path,
    sums: &Summaries,
    predictions: &[Option<Prediction>],
    money_scale: f64,
) -> Result<(), String> {
    // Summaries are in minor units; predictions in the unit the model was fitted in.
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    let file = std::fs::File::create(path).map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    writeln!(
        w,
        "customer_id,frequency,recency,T,monetary_value,p_alive,expected_purchases,expected_spend,clv"
    )
    .map_err(io)?;
    let mut p = predictions.iter();
    for (n, c) in sums.customers.iter().enumerate() {
        let Some(c) = c else { continue };
        let id = sums.ids.get(n);
        let pred = p.next().copied().flatten();
        let r = &c.rfm;
        // `{:e}`: shortest round-trip digits in exponent form (plain `{}` writes 1e-17 as 0.0000…,
        // which some CSV readers round).
        let sci = |v: Option<f64>| v.map(|v| format!("{v:e}")).unwrap_or_default();
        let money = |v: Option<f64>| sci(v.map(|v| v / money_scale));
        writeln!(
            w,
            "{id},{},{},{},{},{},{},{},{}",
            r.frequency,
            r.recency,
            r.age,
            sci(Some(r.monetary / 100.0)),
            sci(pred.map(|p| p.probability_alive)),
            sci(pred.map(|p| p.expected_purchases)),
            money(pred.and_then(|p| p.expected_order_value)),
            money(pred.and_then(|p| p.predicted_clv)),
        )
        .map_err(io)?;
    }
    w.flush().map_err(io)
}

fn bg_json(fit: &BgNbdFit<Days>) -> serde_json::Value {
    let p = fit.params;
    json!({
        "r": p.r(), "alpha": p.alpha(), "a": p.a(), "b": p.b(),
        "log_likelihood": fit.log_likelihood,
        "iterations": fit.iterations,
        "evaluations": fit.evaluations,
        "converged": fit.converged,
        "termination": format!("{:?}", fit.termination),
        "gradient_norm": fit.gradient_norm,
        "customers": fit.customers,
        "patterns": fit.patterns,
    })
}

fn gg_json(fit: &GammaGammaFit, money_scale: f64) -> serde_json::Value {
    let p = fit.params;
    json!({
        "p": p.p(), "q": p.q(), "v": p.v() / money_scale, "v_fitted_units": p.v(),
        "log_likelihood_fitted_units": fit.log_likelihood,
        "iterations": fit.iterations,
        "evaluations": fit.evaluations,
        "converged": fit.converged,
        "termination": format!("{:?}", fit.termination),
        "gradient_norm": fit.gradient_norm,
        "customers": fit.customers,
        "excluded_zero_monetary": fit.excluded_zero_monetary,
    })
}

fn run(args: &Args) -> Result<serde_json::Value, String> {
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        t => t,
    };
    let now = read_now(&args.dir, args.now.as_deref())?;
    let started = Instant::now();
    let c_start = cpu_seconds();

    // 1. summary
    let sums = summarise(&args.dir.join("transactions.csv"), now, threads)?;
    let money_scale = match args.money {
        Money::Minor => 100.0,
        Money::Major => 1.0,
    };
    let mut population: Vec<DayRfm> = Vec::with_capacity(sums.customers.len());
    let mut revenues: Vec<f64> = Vec::with_capacity(sums.customers.len());
    for c in sums.customers.iter().flatten() {
        let mut rfm = c.rfm;
        if args.money == Money::Major {
            rfm.monetary /= 100.0;
        }
        population.push(rfm);
        revenues.push(c.net_revenue as f64);
    }
    let t_summary = started.elapsed().as_secs_f64();
    let c_summary = cpu_seconds();
    if args.summary_only {
        return Ok(json!({
            "tool": "patron",
            "rows": sums.rows,
            "customers": population.len(),
            "threads": threads,
            "times": {"summary": t_summary},
            "cpu": {"summary": c_summary - c_start},
        }));
    }

    // 2. fit, as patron_views::model::fit_in does it (days)
    let t0 = Instant::now();
    let customers: Vec<CustomerRfm<Days>> = population
        .iter()
        .filter_map(|c| CustomerRfm::<Days>::new(c.frequency, c.recency, c.age, c.monetary).ok())
        .collect();
    let bg_options = BgNbdFitOptions::<Days> {
        threads,
        standard_errors: false,
        bfgs: bfgs(args),
        ..BgNbdFitOptions::default()
    };
    let bg = fit_bg_nbd(&customers, &bg_options).map_err(fail)?;
    let t_bg = t0.elapsed().as_secs_f64();
    let c_bg = cpu_seconds();
    let t1 = Instant::now();
    let gg_options = GammaGammaFitOptions {
        threads,
        standard_errors: false,
        bfgs: bfgs(args),
        ..GammaGammaFitOptions::default()
    };
    let gg = fit_gamma_gamma(&customers, &gg_options).ok();
    let gg_model_ok = gg.as_ref().is_some_and(|g| g.model().is_ok());
    let t_gg = t1.elapsed().as_secs_f64();
    let t_fit = t0.elapsed().as_secs_f64();
    let c_fit = cpu_seconds();

    // 3. predictions through the service's runtime model
    let t2 = Instant::now();
    let p = bg.params;
    let doc = ModelDoc {
        calibration_end: now.as_micros(),
        holdout: None,
        holdout_comparison: Vec::new(),
        time_unit: TimeUnitKind::Days,
        calendar_weeks: false,
        purchase_model: PurchaseModel::BgNbd,
        mbg_nbd: None,
        pareto_nbd: None,
        bg_nbd: BgNbdDoc {
            r: p.r(),
            alpha: p.alpha(),
            a: p.a(),
            b: p.b(),
            log_likelihood: bg.log_likelihood,
            iterations: bg.iterations,
            converged: bg.converged,
            gradient_norm: Some(bg.gradient_norm),
            standard_errors: bg.standard_errors,
            covariance: bg.covariance,
        },
        gamma_gamma: gg.as_ref().filter(|_| gg_model_ok).map(|g| GammaGammaDoc {
            p: g.params.p(),
            q: g.params.q(),
            v: g.params.v(),
            log_likelihood: g.log_likelihood,
            iterations: g.iterations,
            converged: g.converged,
            customers: g.customers,
            gradient_norm: Some(g.gradient_norm),
            standard_errors: g.standard_errors,
            covariance: g.covariance,
        }),
        penalizer_coef: 0.0,
        customers: population.len() as u64,
        horizon_months: args.horizon_months,
        horizon_days: None,
        monthly_discount_rate: args.monthly_discount_rate,
        fit_millis: 0,
        days_since_last_purchase: Cdf::default(),
        purchase_days: Cdf::default(),
        revenue: Cdf::default(),
        predicted_clv: Cdf::default(),
        value_index: Cdf::default(),
    };
    let model = ActiveModel::from_doc(0, now, doc).map_err(fail)?;
    let predictions = predict_all(&model, &population, threads);
    let t_predict = t2.elapsed().as_secs_f64();
    let t_total = started.elapsed().as_secs_f64();
    let c_predict = cpu_seconds();
    let failed = predictions.iter().filter(|p| p.is_none()).count();

    // Not timed: the output file and the whole FitValueModel computation.
    if let Some(out) = &args.out {
        write_predictions(out, &sums, &predictions, money_scale)?;
    }
    let service = if args.skip_service_fit {
        serde_json::Value::Null
    } else {
        let ts = Instant::now();
        let doc = patron_views::model::fit(
            FitRequest {
                calibration_end: now,
                time_unit: TimeUnitKind::Days,
                horizon_months: args.horizon_months,
                horizon_days: None,
                monthly_discount_rate: args.monthly_discount_rate,
                // The comparison is with lifetimes' BetaGeoFitter.
                purchase_model: PurchaseModel::BgNbd,
                penalizer_coef: 0.0,
                holdout_end: now,
                choose_by_holdout: false,
            },
            &population,
            &revenues,
            Vec::new(),
        )
        .map_err(fail)?;
        let secs = ts.elapsed().as_secs_f64();
        // The cost of intervals: every customer's prediction, then every customer's intervals
        // (nine more predictions at most), each on a fresh model (no memo carried over).
        let fresh = || ActiveModel::from_doc(0, now, doc.clone()).map_err(fail);
        let model = fresh()?;
        let ti = Instant::now();
        let plain = predict_all(&model, &population, threads);
        let predict_secs = ti.elapsed().as_secs_f64();
        let model = fresh()?;
        let ti = Instant::now();
        let with = intervals_all(&model, &population, threads);
        let intervals_secs = ti.elapsed().as_secs_f64();
        let b = &doc.bg_nbd;
        json!({
            "seconds": secs,
            "predict_seconds": predict_secs,
            "intervals_seconds": intervals_secs,
            "intervals_per_prediction": intervals_secs / predict_secs,
            "predictions": plain.iter().filter(|p| p.is_some()).count(),
            "with_intervals": with,
            "fit_millis": doc.fit_millis,
            "customers": doc.customers,
            "same_bgnbd_as_fit_stage": (b.r, b.alpha, b.a, b.b) == (p.r(), p.alpha(), p.a(), p.b()),
            "same_gamma_gamma_as_fit_stage": doc.gamma_gamma.as_ref().map(|g| (g.p, g.q, g.v))
                == gg.as_ref().filter(|_| gg_model_ok).map(|g| (g.params.p(), g.params.q(), g.params.v())),
            "bgnbd_iterations": b.iterations,
            "bgnbd_converged": b.converged,
        })
    };
    let options = bfgs(args);
    Ok(json!({
        "tool": "patron",
        "dir": args.dir.display().to_string(),
        "now_micros": now.as_micros(),
        "rows": sums.rows,
        "rows_after_end": sums.rows_after_end,
        "customers": population.len(),
        "threads": threads,
        "money": format!("{:?}", args.money).to_lowercase(),
        "horizon_months": args.horizon_months,
        "expected_purchases_days": f64::from(args.horizon_months) * 30.0,
        "monthly_discount_rate": args.monthly_discount_rate,
        "bfgs": {
            "gradient_tolerance": options.gradient_tolerance,
            "relative_tolerance": options.relative_tolerance,
            "max_iterations": options.max_iterations,
        },
        "times": {
            "summary": t_summary,
            "fit_bgnbd": t_bg,
            "fit_gamma_gamma": t_gg,
            "fit": t_fit,
            "predict": t_predict,
            "total": t_total,
        },
        // Process CPU time (all threads, 10 ms ticks) per stage: on a shared machine, what the
        // stage itself used.
        "cpu": {
            "summary": c_summary - c_start,
            "fit_bgnbd": c_bg - c_summary,
            "fit_gamma_gamma": c_fit - c_bg,
            "fit": c_fit - c_summary,
            "predict": c_predict - c_fit,
            "total": c_predict - c_start,
        },
        "bgnbd": bg_json(&bg),
        "gamma_gamma": gg.as_ref().map(|g| gg_json(g, money_scale)),
        "gamma_gamma_usable": gg_model_ok,
        "predictions_failed": failed,
        "service_fit": service,
    }))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => {
            println!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("clv-compare: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_instants_agree_with_patron_import() {
        for s in [
            "2025-03-01T12:34:56Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2024-02-29T23:59:60Z",
            "1998-06-30T23:59:59Z",
            "9999-12-31T23:59:59Z",
        ] {
            assert_eq!(fast_instant(s.as_bytes()), parse_instant(s).ok(), "{s}");
        }
        // Not the fast shape, or invalid: left to parse_instant.
        for s in [
            "2025-03-01T12:34:56.5Z",
            "2025-03-01T12:34:56+01:00",
            "2025-03-01 12:34:56Z",
            "2025-02-30T00:00:00Z",
            "2025-03-01T24:00:00Z",
            "2025-03-01T12:60:00Z",
            "2025-03-01T12:00:61Z",
            "2025-0a-01T12:00:00Z",
            "20250301",
        ] {
            assert_eq!(fast_instant(s.as_bytes()), None, "{s}");
        }
    }

    #[test]
    fn fast_cents_agree_with_patron_parse_decimal() {
        let usd = Currency::parse("USD").expect("USD");
        for s in [
            "19.99",
            "0.01",
            "0",
            "20",
            "5.5",
            "12.",
            "007.10",
            "999999999999999.99",
        ] {
            assert_eq!(fast_cents(s.as_bytes()), parse_decimal(s, usd).ok(), "{s}");
        }
        for s in [
            "-1.00",
            " 1.00",
            "1.999",
            ".5",
            "",
            "1e3",
            "1,00",
            "1234567890123456.00",
        ] {
            assert_eq!(fast_cents(s.as_bytes()), None, "{s}");
        }
    }

    fn summarise_text(name: &str, csv: &str, threads: usize) -> Vec<(String, Option<DayRfm>)> {
        let dir = std::env::temp_dir().join(format!("clv-compare-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("transactions.csv");
        std::fs::write(&path, csv).expect("write");
        let now = parse_instant("2025-01-10T12:00:00Z").expect("now");
        let sums = summarise(&path, now, threads).expect("summarise");
        std::fs::remove_dir_all(&dir).expect("clean up");
        let mut out: Vec<(String, Option<DayRfm>)> = sums
            .customers
            .iter()
            .enumerate()
            .map(|(n, c)| (sums.ids.get(n).to_owned(), c.map(|c| c.rfm)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn summaries_follow_lifetimes_whatever_the_row_order_and_split() {
        let rows = [
            "a,2025-01-01T10:00:00Z,10.00,o1",
            // Same day as the first purchase: first-day revenue, not a repeat day.
            "a,2025-01-01T23:00:00Z,5.00,o2",
            // Two rows of one order: one order of 10.00.
            "a,2025-01-05T08:00:00Z,7.50,o3",
            "a,2025-01-05T09:00:00Z,2.50,o3",
            "a,2025-01-08T00:00:00Z,20,o4",
            "b,2025-01-03T00:00:00Z,1.00,p1",
            // After the observation end's day: dropped, so c has no model input.
            "c,2025-01-11T00:00:00Z,3.00,q1",
            // On the observation end's day, after its instant: kept (lifetimes keeps the day).
            "b,2025-01-10T23:59:59Z,4.00,p2",
        ];
        let header = "customer_id,timestamp,amount,order_id\n";
        let sorted = format!("{header}{}\n", rows.join("\n"));
        let mut scattered_rows = rows.to_vec();
        scattered_rows.swap(5, 7);
        scattered_rows.swap(0, 6);
        let scattered = format!("{header}{}\n", scattered_rows.join("\n"));
        let want = vec![
            (
                "a".to_owned(),
                Some(DayRfm {
                    frequency: 2,
                    recency: 7.0,
                    age: 9.0,
                    monetary: 1_500.0,
                    days_since_last: 2.0,
                    weeks: None,
                }),
            ),
            (
                "b".to_owned(),
                Some(DayRfm {
                    frequency: 1,
                    recency: 7.0,
                    age: 7.0,
                    monetary: 400.0,
                    days_since_last: 0.0,
                    weeks: None,
                }),
            ),
            ("c".to_owned(), None),
        ];
        for threads in [1, 2, 3, 8] {
            assert_eq!(
                summarise_text("sorted", &sorted, threads),
                want,
                "{threads}"
            );
            assert_eq!(
                summarise_text("scattered", &scattered, threads),
                want,
                "{threads}"
            );
        }
    }

    #[test]
    fn ids_are_numbered_in_order_and_hash_clashes_are_kept_apart() {
        let mut ids = Ids::default();
        assert_eq!(ids.intern(b"a"), Ok(0));
        assert_eq!(ids.intern(b"bb"), Ok(1));
        assert_eq!(ids.intern(b"a"), Ok(0));
        // Force a clash: "c" takes the hash slot of "a".
        ids.by_hash.insert(id_hash(b"c"), 0);
        assert_eq!(ids.intern(b"c"), Ok(2));
        assert_eq!(ids.intern(b"c"), Ok(2));
        assert_eq!((ids.get(0), ids.get(1), ids.get(2)), ("a", "bb", "c"));
        assert!(ids.intern(&[0xff]).is_err());
    }
}
