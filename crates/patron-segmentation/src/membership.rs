//! Membership over the whole population: counts and member lists evaluate compiled rules against
//! the scoring engine's in-memory summaries, on every core, never through the database.

use std::sync::Arc;

use patron_domain::{CustomerId, Timestamp};
use patron_store::SummaryRow;
use patron_views::engine::{Engine, State};

use crate::rules::{Eval, Facts, Program, SegmentResolver};

/// Whether `row` is in `program`'s segment at `now`.
pub fn is_member(
    row: &SummaryRow,
    program: &Program,
    state: &State,
    segments: &dyn SegmentResolver,
    now: Timestamp,
) -> bool {
    let facts = Facts::new(row, state, now);
    Eval::new(&facts, segments).matches(program)
}

/// The result of a scan.
#[derive(Debug, Default)]
pub struct Scan {
    pub count: u64,
    pub population: u64,
    /// The first `sample` members in id order.
    pub sample: Vec<CustomerId>,
}

/// Customers handed to one worker at a time.
const CHUNK: usize = 4096;

fn workers() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .clamp(1, 16)
}

/// Counts the members among `rows` and keeps the first `sample` of them, on every core.
pub fn count(
    rows: &[Arc<SummaryRow>],
    program: &Program,
    state: &State,
    segments: &(dyn SegmentResolver + Sync),
    now: Timestamp,
    sample: usize,
) -> Scan {
    let chunks: Vec<&[Arc<SummaryRow>]> = rows.chunks(CHUNK).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    // Per chunk: (count, first `sample` members).
    let mut results: Vec<(usize, u64, Vec<CustomerId>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers().min(chunks.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(chunk) = chunks.get(i) else { break };
                        let mut n = 0u64;
                        let mut first = Vec::new();
                        for row in *chunk {
                            if is_member(row, program, state, segments, now) {
                                n += 1;
                                if first.len() < sample {
                                    first.push(row.customer_id.clone());
                                }
                            }
                        }
                        out.push((i, n, first));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    results.sort_unstable_by_key(|r| r.0);
    let mut scan = Scan {
        population: rows.len() as u64,
        ..Scan::default()
    };
    for (_, n, first) in results {
        scan.count += n;
        for id in first {
            if scan.sample.len() < sample {
                scan.sample.push(id);
            }
        }
    }
    scan
}

/// Up to `limit` members strictly after `after`, in id order, reading the index a chunk at a
/// time. Returns them and whether the scan stopped because the page was full.
pub fn page(
    engine: &Engine,
    after: Option<&CustomerId>,
    limit: usize,
    program: &Program,
    state: &State,
    segments: &dyn SegmentResolver,
    now: Timestamp,
) -> (Vec<CustomerId>, bool) {
    let mut out = Vec::with_capacity(limit.min(1024));
    let mut cursor = after.cloned();
    loop {
        let rows = engine.range_after(cursor.as_ref(), CHUNK * 4);
        let Some(last) = rows.last() else {
            return (out, false);
        };
        cursor = Some(last.customer_id.clone());
        for row in &rows {
            if is_member(row, program, state, segments, now) {
                out.push(row.customer_id.clone());
                if out.len() >= limit {
                    return (out, true);
                }
            }
        }
    }
}
