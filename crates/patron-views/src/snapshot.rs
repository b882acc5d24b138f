//! The index on local disk: every customer's summary row as of a change-feed position, so that a
//! restarting process reads one file instead of every customer from the database and then
//! catches up from the feed.
//!
//! A snapshot is only a faster way to the same index. It is used only when its database id is
//! the database's, its position is one the feed still holds changes after (not pruned past, not
//! ahead of the head: a restored database), and every frame's checksum matches; otherwise the
//! index is read from the database as before. Rows are re-read from the database for every
//! customer changed after the snapshot's position, so a snapshot can be old but never wrong.
//!
//! Layout (all integers little-endian; `varint` is LEB128, signed values zigzag first):
//! - header: the magic `PATRONIX`, the format (u32, [`FORMAT`]), the database id (varint length
//!   and UTF-8), the position (i64), the row count (u64);
//! - frames of up to [`FRAME_ROWS`] rows: byte length (u32, 0 ends the file), row count (u32),
//!   the frame's bytes, their checksum (u64); a frame's bytes are its table of attribute maps (a
//!   count, then each map's stored JSON text) and its rows;
//! - a row: id, flags, instants, gender, country, its attribute map's number in the table (0:
//!   none), the summary's values in [`columns::all`] order (a presence bit each), orders,
//!   engagement days.
//!
//! Frames decode on every core at once (each frame stands alone).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use patron_domain::{Attributes, CustomerId, Date, Day, Gender, Timestamp};
use patron_store::{EngagementDay, OrderDay, SummaryRow, columns, shared};

/// Bumped whenever the layout or the meaning of a row changes: a file of another format is not
/// read (the index is read from the database, and the next snapshot replaces the file).
pub const FORMAT: u32 = 2;
const MAGIC: &[u8; 8] = b"PATRONIX";
/// Rows per frame: the unit of checksums and of parallel decoding.
pub const FRAME_ROWS: usize = 20_000;
/// A frame larger than this is refused as corrupt before anything is allocated for it.
const MAX_FRAME_BYTES: u32 = 1 << 30;

/// What a snapshot is of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The database's id (`FeedHead::database_id`).
    pub database_id: String,
    /// Every change up to this feed position is in the rows.
    pub position: i64,
    pub rows: u64,
}

/// Why a snapshot was not written or not read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn checksum(bytes: &[u8]) -> u64 {
    // A fixed seed: the file is read by later processes.
    let mut h = foldhash::fast::FixedState::with_seed(0x5041_5452_4f4e).build_hasher();
    h.write(bytes);
    h.finish()
}

// --- encoding ---------------------------------------------------------------------------------

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_varint(out, zigzag(v));
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// The summary's values in [`columns::all`] order, as [`columns::summary_from_values`] reads them.
fn summary_values(row: &SummaryRow) -> impl Iterator<Item = Option<i64>> + '_ {
    let p = &row.summary.purchases;
    columns::delta_values(&row.summary.totals).chain([
        Some(p.order_count),
        Some(p.purchase_days),
        p.first_purchase_day.map(|d| i64::from(d.as_days())),
        p.last_purchase_day.map(|d| i64::from(d.as_days())),
        Some(p.net_revenue),
        Some(p.refunded),
        Some(p.first_day_revenue),
    ])
}

/// Encodes the rows of one frame. Attribute maps are written once per frame, in a table before
/// the rows, and each row names its map by number (0: no attributes): most customers share a few
/// maps, and their JSON would otherwise be a third of the file.
#[derive(Default)]
struct Encoder {
    /// Table numbers by map (shared maps by address: the rows being written keep them alive).
    numbers: HashMap<*const Attributes, u64>,
    table: Vec<String>,
}

impl Encoder {
    fn attributes(&mut self, attributes: &Arc<Attributes>) -> u64 {
        if attributes.is_empty() {
            return 0;
        }
        let next = self.table.len() as u64 + 1;
        *self
            .numbers
            .entry(Arc::as_ptr(attributes))
            .or_insert_with(|| {
                self.table.push(
                    patron_store::encode_attributes(attributes).unwrap_or_else(|_| "{}".to_owned()),
                );
                next
            })
    }

    /// The frame: the table of attribute maps, then the rows.
    fn frame(rows: &[Arc<SummaryRow>], out: &mut Vec<u8>) {
        let mut encoder = Encoder::default();
        let mut body = Vec::with_capacity(rows.len() * 96);
        for row in rows {
            encoder.row(&mut body, row);
        }
        out.clear();
        put_varint(out, encoder.table.len() as u64);
        for json in &encoder.table {
            put_str(out, json);
        }
        out.extend_from_slice(&body);
    }

    fn row(&mut self, out: &mut Vec<u8>, row: &SummaryRow) {
        put_str(out, row.customer_id.as_str());
        let flags = u8::from(row.signed_up_at.is_some())
            | u8::from(row.birth_date.is_some()) << 1
            | u8::from(row.country.is_some()) << 2;
        out.push(flags);
        if let Some(t) = row.signed_up_at {
            put_i64(out, t.as_micros());
        }
        put_i64(out, row.create_time.as_micros());
        if let Some(d) = row.birth_date {
            put_i64(out, i64::from(d.to_day().as_days()));
        }
        put_str(out, row.gender.as_str());
        if let Some(c) = &row.country {
            put_str(out, c);
        }
        let number = self.attributes(&row.attributes);
        put_varint(out, number);
        let values: Vec<Option<i64>> = summary_values(row).collect();
        let mut present = vec![0u8; values.len().div_ceil(8)];
        for (i, v) in values.iter().enumerate() {
            if v.is_some() {
                present[i / 8] |= 1 << (i % 8);
            }
        }
        out.extend_from_slice(&present);
        for v in values.into_iter().flatten() {
            put_i64(out, v);
        }
        put_varint(out, row.orders.len() as u64);
        for o in &row.orders {
            put_i64(out, i64::from(o.day.as_days()));
            put_i64(out, o.net_amount);
        }
        put_varint(out, row.engagement.len() as u64);
        for e in &row.engagement {
            put_i64(out, i64::from(e.day.as_days()));
            put_str(out, &e.activity);
            put_i64(out, e.count);
        }
    }
}

/// Writes `rows` (in id order) as the snapshot at `path`: into a temporary file beside it, synced,
/// then renamed over it, so a reader sees the old file or the new one, never half of one.
pub fn write(path: &Path, header: &Header, rows: &[Arc<SummaryRow>]) -> Result<(), SnapshotError> {
    let io = |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    };
    // Unique per write: a write abandoned at shutdown may still be running on its thread.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}-{n}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        w.write_all(MAGIC)?;
        w.write_all(&FORMAT.to_le_bytes())?;
        let mut head = Vec::new();
        put_str(&mut head, &header.database_id);
        w.write_all(&head)?;
        w.write_all(&header.position.to_le_bytes())?;
        w.write_all(&(rows.len() as u64).to_le_bytes())?;
        let mut frame = Vec::with_capacity(4 << 20);
        for chunk in rows.chunks(FRAME_ROWS) {
            Encoder::frame(chunk, &mut frame);
            let len = u32::try_from(frame.len())
                .ok()
                .filter(|&l| l <= MAX_FRAME_BYTES)
                .ok_or_else(|| std::io::Error::other("a frame of the snapshot is too large"))?;
            w.write_all(&len.to_le_bytes())?;
            w.write_all(&(chunk.len() as u32).to_le_bytes())?;
            w.write_all(&frame)?;
            w.write_all(&checksum(&frame).to_le_bytes())?;
        }
        w.write_all(&0u32.to_le_bytes())?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename itself survives a crash only once the directory is synced.
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Deletes what earlier processes left of writes they did not finish (`PATH.tmp-…` beside
/// `path`: a process killed while writing). Returns how many were deleted. Called once at start;
/// a snapshot at 10,000,000 customers is a gigabyte, and leftovers would fill the volume.
pub fn remove_abandoned_writes(path: &Path) -> usize {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return 0;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut prefix = name.to_owned();
    prefix.push(".tmp-");
    let Some(prefix) = prefix.to_str().map(str::to_owned) else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

// --- decoding ---------------------------------------------------------------------------------

/// A cursor over bytes whose every read is bounds-checked.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.bytes.len() {
            return Err("ends early".into());
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a varint is too long".into())
    }

    fn i64(&mut self) -> Result<i64, String> {
        self.varint().map(unzigzag)
    }

    fn i32(&mut self) -> Result<i32, String> {
        i32::try_from(self.i64()?).map_err(|_| "a day is out of range".to_owned())
    }

    fn len(&mut self) -> Result<usize, String> {
        let n = self.varint()?;
        // Every item takes at least one byte: a length beyond what is left is corrupt, and no
        // allocation is made for it.
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.bytes.len())
            .ok_or_else(|| "a length is larger than the frame".to_owned())
    }

    fn str(&mut self) -> Result<&'a str, String> {
        let n = self.len()?;
        std::str::from_utf8(self.take(n)?).map_err(|_| "a text is not UTF-8".to_owned())
    }
}

/// Shares activity names between the rows of one frame.
fn activity(names: &mut HashSet<Arc<str>>, name: &str) -> Arc<str> {
    if let Some(n) = names.get(name) {
        return Arc::clone(n);
    }
    let n: Arc<str> = Arc::from(name);
    names.insert(Arc::clone(&n));
    n
}

fn decode_row(
    c: &mut Cursor<'_>,
    names: &mut HashSet<Arc<str>>,
    maps: &[Arc<Attributes>],
) -> Result<SummaryRow, String> {
    let customer_id = CustomerId::parse(c.str()?).map_err(|e| format!("customer id: {e}"))?;
    let flags = c.byte()?;
    let signed_up_at = if flags & 1 != 0 {
        Some(Timestamp::from_micros(c.i64()?))
    } else {
        None
    };
    let create_time = Timestamp::from_micros(c.i64()?);
    let birth_date: Option<Date> = if flags & 2 != 0 {
        Some(Day::from_days(c.i32()?).date())
    } else {
        None
    };
    let gender = Gender::parse(c.str()?).ok_or("an unknown gender")?;
    let country = if flags & 4 != 0 {
        Some(shared::country(c.str()?))
    } else {
        None
    };
    let attributes = match usize::try_from(c.varint()?) {
        Ok(0) => Arc::default(),
        Ok(n) => Arc::clone(maps.get(n - 1).ok_or("an attribute map not in the frame")?),
        Err(_) => return Err("an attribute map not in the frame".into()),
    };
    let present = c.take(columns::COUNT.div_ceil(8))?;
    let mut values = [None; columns::COUNT];
    for (i, v) in values.iter_mut().enumerate() {
        if present[i / 8] & (1 << (i % 8)) != 0 {
            *v = Some(c.i64()?);
        }
    }
    let orders = (0..c.len()?)
        .map(|_| {
            Ok(OrderDay {
                day: Day::from_days(c.i32()?),
                net_amount: c.i64()?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let engagement = (0..c.len()?)
        .map(|_| {
            Ok(EngagementDay {
                day: Day::from_days(c.i32()?),
                activity: activity(names, c.str()?),
                count: c.i64()?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(SummaryRow {
        customer_id,
        signed_up_at,
        create_time,
        birth_date,
        gender,
        country,
        attributes,
        summary: columns::summary_from_values(&values),
        orders,
        engagement,
    })
}

/// One frame as read from the file, checked but not decoded.
struct Frame {
    rows: u32,
    bytes: Vec<u8>,
}

fn decode_frame(frame: &Frame) -> Result<Vec<Arc<SummaryRow>>, String> {
    let mut c = Cursor {
        bytes: &frame.bytes,
    };
    let mut names = HashSet::new();
    let maps = (0..c.len()?)
        .map(|_| shared::attributes(c.str()?).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, String>>()?;
    let mut rows = Vec::with_capacity(frame.rows as usize);
    for _ in 0..frame.rows {
        rows.push(Arc::new(decode_row(&mut c, &mut names, &maps)?));
    }
    if !c.bytes.is_empty() {
        return Err("a frame holds more than its rows".into());
    }
    Ok(rows)
}

/// Decodes frames on up to one thread per core, results in frame order.
fn decode_frames(frames: &[Frame]) -> Vec<Result<Vec<Arc<SummaryRow>>, String>> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    if threads < 2 || frames.len() < 2 {
        return frames.iter().map(decode_frame).collect();
    }
    let per = frames.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = frames
            .chunks(per)
            .map(|part| scope.spawn(move || part.iter().map(decode_frame).collect::<Vec<_>>()))
            .collect();
        let mut out = Vec::with_capacity(frames.len());
        for h in handles {
            match h.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

fn read_exact<const N: usize>(r: &mut impl Read) -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

/// Reads the header of the snapshot at `path`; `Ok(None)` when there is no file.
pub fn read_header(path: &Path) -> Result<Option<Header>, SnapshotError> {
    match std::fs::File::open(path) {
        Ok(f) => header(path, &mut std::io::BufReader::new(f)).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SnapshotError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn header(path: &Path, r: &mut impl Read) -> Result<Header, SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let io = |e: std::io::Error| corrupt(format!("header: {e}"));
    if &read_exact::<8>(r).map_err(io)? != MAGIC {
        return Err(corrupt("not an index snapshot".into()));
    }
    let format = u32::from_le_bytes(read_exact(r).map_err(io)?);
    if format != FORMAT {
        return Err(corrupt(format!(
            "format {format}, this build reads {FORMAT}"
        )));
    }
    let mut len = 0u64;
    for shift in (0..35).step_by(7) {
        let b = read_exact::<1>(r).map_err(io)?[0];
        len |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
    }
    if len > 1024 {
        return Err(corrupt("the database id is too long".into()));
    }
    let mut id = vec![0u8; len as usize];
    r.read_exact(&mut id).map_err(io)?;
    let database_id = String::from_utf8(id).map_err(|_| corrupt("database id".into()))?;
    let position = i64::from_le_bytes(read_exact(r).map_err(io)?);
    let rows = u64::from_le_bytes(read_exact(r).map_err(io)?);
    Ok(Header {
        database_id,
        position,
        rows,
    })
}

/// Reads the whole snapshot at `path`: its header and its rows in id order. Frames are checked
/// as they are read and decoded a few at a time, one per core, so no more than that many frames
/// of bytes are held at once.
pub fn read(path: &Path) -> Result<(Header, Vec<Arc<SummaryRow>>), SnapshotError> {
    let corrupt = |reason: String| SnapshotError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, file);
    let header = header(path, &mut r)?;
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    // Rows are only counted against the header as they come: a damaged count allocates nothing.
    let mut rows: Vec<Arc<SummaryRow>> = Vec::new();
    let mut read_frames = 0usize;
    let mut ended = false;
    while !ended {
        let mut batch = Vec::with_capacity(threads);
        while batch.len() < threads {
            let io = |e: std::io::Error| corrupt(format!("frame {read_frames}: {e}"));
            let len = u32::from_le_bytes(read_exact(&mut r).map_err(io)?);
            if len == 0 {
                ended = true;
                break;
            }
            if len > MAX_FRAME_BYTES {
                return Err(corrupt(format!("frame {read_frames}: {len} bytes")));
            }
            let count = u32::from_le_bytes(read_exact(&mut r).map_err(io)?);
            let mut bytes = vec![0u8; len as usize];
            r.read_exact(&mut bytes).map_err(io)?;
            let sum = u64::from_le_bytes(read_exact(&mut r).map_err(io)?);
            if sum != checksum(&bytes) {
                return Err(corrupt(format!("frame {read_frames}: checksum")));
            }
            read_frames += 1;
            batch.push(Frame { rows: count, bytes });
        }
        let first = read_frames - batch.len();
        for (i, part) in decode_frames(&batch).into_iter().enumerate() {
            rows.extend(part.map_err(|e| corrupt(format!("frame {}: {e}", first + i)))?);
        }
        if rows.len() as u64 > header.rows {
            return Err(corrupt(format!(
                "more rows than the {} of the header",
                header.rows
            )));
        }
    }
    if rows.len() as u64 != header.rows {
        return Err(corrupt(format!(
            "{} rows in the frames, {} in the header",
            rows.len(),
            header.rows
        )));
    }
    if rows
        .windows(2)
        .any(|w| w[0].customer_id >= w[1].customer_id)
    {
        return Err(corrupt("rows out of id order".into()));
    }
    Ok((header, rows))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use patron_domain::summary::{CustomerSummary, PurchaseStats, RatingTotal, SummaryDelta};
    use patron_domain::{AttributeKey, AttributeValue, Attributes, CustomerId, Date, Day};
    use patron_domain::{Gender, Timestamp};
    use patron_store::{EngagementDay, OrderDay, SummaryRow};

    use super::{FRAME_ROWS, Header, SnapshotError, read, read_header, write};

    fn bare(id: &str) -> SummaryRow {
        SummaryRow {
            customer_id: CustomerId::parse(id).expect("id"),
            signed_up_at: None,
            create_time: Timestamp::from_micros(0),
            birth_date: None,
            gender: Gender::Unspecified,
            country: None,
            attributes: Arc::default(),
            summary: CustomerSummary::default(),
            orders: Vec::new(),
            engagement: Vec::new(),
        }
    }

    /// Every field set, with values at the edges of their types.
    fn full(id: &str, n: i64) -> SummaryRow {
        let mut attributes = Attributes::new();
        let key = |k: &str| AttributeKey::parse(k).expect("key");
        attributes.insert(key("plan"), AttributeValue::String("gold ✓".into()));
        attributes.insert(key("seats"), AttributeValue::Int(i64::MIN + n));
        attributes.insert(key("ratio"), AttributeValue::Double(-0.0));
        attributes.insert(key("big"), AttributeValue::Double(f64::MAX));
        attributes.insert(key("vip"), AttributeValue::Bool(true));
        attributes.insert(
            key("renewal"),
            AttributeValue::Date(Date::new(2027, 2, 28).expect("date")),
        );
        let rating = |s: i32| RatingTotal { sum: s, count: 2 };
        SummaryRow {
            customer_id: CustomerId::parse(id).expect("id"),
            signed_up_at: Some(Timestamp::from_micros(-1_234_567 - n)),
            create_time: Timestamp::from_micros(i64::MAX - n),
            birth_date: Some(Date::new(1900, 1, 1).expect("date")),
            gender: Gender::Undisclosed,
            country: Some(Arc::from("DE")),
            attributes: Arc::new(attributes),
            summary: CustomerSummary {
                totals: SummaryDelta {
                    event_count: i64::MAX,
                    engagement_count: n,
                    last_engagement_at: Some(Timestamp::from_micros(i64::MIN)),
                    support_count: 3,
                    support_first_contact_resolved: 2,
                    survey_count: 4,
                    csat_count: 4,
                    csat_sum: 17,
                    nps_promoters: 1,
                    nps_passives: 0,
                    nps_detractors: 3,
                    last_nps: Some(10),
                    last_nps_at: Some(Timestamp::from_micros(5)),
                    benefits: [rating(1), rating(2), rating(3), rating(4)],
                    costs: [rating(-5), rating(6), rating(7), rating(i32::MIN)],
                    custom_event_count: 9,
                    first_event_at: Some(Timestamp::from_micros(-7)),
                    last_event_at: Some(Timestamp::from_micros(8)),
                },
                purchases: PurchaseStats {
                    order_count: 2,
                    purchase_days: 2,
                    first_purchase_day: Some(Day::from_days(-3)),
                    last_purchase_day: Some(Day::from_days(i32::MAX)),
                    net_revenue: i64::MIN,
                    refunded: 0,
                    first_day_revenue: -1,
                },
            },
            orders: vec![
                OrderDay {
                    day: Day::from_days(i32::MIN),
                    net_amount: 0,
                },
                OrderDay {
                    day: Day::from_days(20_000),
                    net_amount: i64::MAX,
                },
            ],
            engagement: vec![
                EngagementDay {
                    day: Day::from_days(20_001),
                    activity: Arc::from("login"),
                    count: 1,
                },
                EngagementDay {
                    day: Day::from_days(20_001),
                    activity: Arc::from("ページ"),
                    count: i64::MAX,
                },
            ],
        }
    }

    fn header(rows: &[Arc<SummaryRow>]) -> Header {
        Header {
            database_id: "db-1".into(),
            position: 42,
            rows: rows.len() as u64,
        }
    }

    /// Rows over several frames: bare ones, full ones and some in between (these sharing one
    /// attribute map).
    fn rows(n: usize) -> Vec<Arc<SummaryRow>> {
        let mut plan = Attributes::new();
        plan.insert(
            AttributeKey::parse("plan").expect("key"),
            AttributeValue::String("basic".into()),
        );
        let plan = Arc::new(plan);
        (0..n)
            .map(|i| {
                let id = format!("c{i:07}");
                Arc::new(match i % 3 {
                    0 => bare(&id),
                    1 => full(&id, i as i64),
                    _ => SummaryRow {
                        country: Some(Arc::from("FR")),
                        attributes: Arc::clone(&plan),
                        orders: vec![OrderDay {
                            day: Day::from_days(i as i32),
                            net_amount: 1999,
                        }],
                        ..bare(&id)
                    },
                })
            })
            .collect()
    }

    #[test]
    fn every_field_reads_back_as_written() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("index.snapshot");
        let rows = rows(2 * FRAME_ROWS + 7);
        write(&path, &header(&rows), &rows).expect("write");
        assert_eq!(read_header(&path).expect("header"), Some(header(&rows)));
        let (h, back) = read(&path).expect("read");
        assert_eq!(h, header(&rows));
        assert_eq!(back.len(), rows.len());
        for (a, b) in rows.iter().zip(&back) {
            assert_eq!(a, b);
        }
        // -0.0 == 0.0 for PartialEq: the sign must survive too.
        let ratio = |r: &Arc<SummaryRow>| match r.attributes.values().nth(2) {
            Some(AttributeValue::Double(d)) => d.to_bits(),
            other => panic!("{other:?}"),
        };
        assert_eq!(ratio(&back[1]), (-0.0f64).to_bits());
        // A shared map reads back shared, within a frame and across frames.
        assert!(Arc::ptr_eq(&back[2].attributes, &back[5].attributes));
        assert!(Arc::ptr_eq(
            &back[2].attributes,
            &back[2 * FRAME_ROWS + 1].attributes
        ));
        assert_eq!(back[2].attributes.len(), 1);
        // Equal countries share one allocation after reading.
        assert!(Arc::ptr_eq(
            back[2].country.as_ref().expect("FR"),
            back[5].country.as_ref().expect("FR")
        ));
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["index.snapshot"]);
    }

    #[test]
    fn abandoned_writes_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("index.snapshot");
        let rows = rows(3);
        write(&path, &header(&rows), &rows).expect("write");
        for leftover in ["index.snapshot.tmp-12-0", "index.snapshot.tmp-99-7"] {
            std::fs::write(dir.path().join(leftover), b"half").expect("leftover");
        }
        std::fs::write(dir.path().join("other.snapshot.tmp-1-0"), b"x").expect("other");
        assert_eq!(super::remove_abandoned_writes(&path), 2);
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["index.snapshot", "other.snapshot.tmp-1-0"]);
        assert_eq!(read(&path).expect("still readable").1.len(), 3);
    }

    #[test]
    fn an_empty_index_reads_back_empty_and_a_missing_file_is_none() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s");
        assert_eq!(read_header(&path).expect("no file"), None);
        assert!(matches!(read(&path), Err(SnapshotError::Io { .. })));
        write(&path, &header(&[]), &[]).expect("write");
        let (h, back) = read(&path).expect("read");
        assert_eq!((h.rows, back.len()), (0, 0));
    }

    /// A damaged file is an error, never a panic and never rows that differ from those written:
    /// cut at every length, every byte flipped in turn (a small file), a wrong format.
    #[test]
    fn a_damaged_snapshot_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s");
        let rows = rows(5);
        write(&path, &header(&rows), &rows).expect("write");
        let good = std::fs::read(&path).expect("bytes");
        let damaged = dir.path().join("d");
        for cut in 0..good.len() {
            std::fs::write(&damaged, &good[..cut]).expect("write");
            assert!(read(&damaged).is_err(), "cut at {cut}");
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x5a;
            std::fs::write(&damaged, &bad).expect("write");
            match read(&damaged) {
                Err(_) => {}
                // Only the header's own fields can change without a checksum noticing, and
                // then the header says so (another database id, position or count).
                Ok((h, back)) => {
                    assert_ne!(h, header(&rows), "byte {i} flipped unnoticed");
                    assert_eq!(back.len(), rows.len());
                    for (a, b) in rows.iter().zip(&back) {
                        assert_eq!(a, b, "byte {i}");
                    }
                }
            }
        }
        let mut other_format = good.clone();
        other_format[8] = 99;
        std::fs::write(&damaged, &other_format).expect("write");
        let err = read_header(&damaged).expect_err("format");
        assert!(err.to_string().contains("format 99"), "{err}");
    }
}
