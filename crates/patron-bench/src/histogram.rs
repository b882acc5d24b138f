//! A log-linear latency histogram in the style of HdrHistogram: exact below 256 ns, then 128
//! sub-buckets per power of two, so every recorded value is kept within 0.8 % (1/128) of its
//! true value, from nanoseconds to centuries, in a fixed 58 KiB array. Workers record into their
//! own histogram and the results are merged.

use std::time::Duration;

/// log2 of the number of exact values; each later power of two has half as many sub-buckets.
const SUB_BITS: u32 = 8;
const HALF: usize = 1 << (SUB_BITS - 1);
/// Index of the largest value, `u64::MAX`, plus one.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * HALF + HALF;

/// Latencies in nanoseconds.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn index(v: u64) -> usize {
    if v < (1 << SUB_BITS) {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - (SUB_BITS - 1);
    let mantissa = (v >> shift) as usize; // in [HALF, 2 * HALF)
    shift as usize * HALF + mantissa
}

/// The largest value that lands in bucket `i`.
fn highest_in(i: usize) -> u64 {
    if i < (1 << SUB_BITS) {
        return i as u64;
    }
    let shift = (i / HALF - 1) as u32;
    let mantissa = (i - shift as usize * HALF) as u64;
    ((mantissa + 1) << shift).wrapping_sub(1)
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    /// Records one value in nanoseconds.
    pub fn record(&mut self, nanos: u64) {
        self.counts[index(nanos)] += 1;
        self.total += 1;
        self.min = self.min.min(nanos);
        self.max = self.max.max(nanos);
        self.sum += u128::from(nanos);
    }

    /// Records one duration.
    pub fn record_duration(&mut self, d: Duration) {
        self.record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Adds every value recorded in `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Number of recorded values.
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The largest recorded value, exactly; 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The mean, exactly; 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at or below which `percentile` % of the recorded values fall (as HdrHistogram
    /// reports it: the highest value equivalent to the bucket's, capped at the maximum); 0 when
    /// empty.
    pub fn percentile(&self, percentile: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((percentile / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return highest_in(i).min(self.max).max(self.min);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_bounded() {
        assert_eq!(index(0), 0);
        assert_eq!(index(255), 255);
        assert_eq!(index(256), 256);
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        let mut prev = 0;
        for v in (0..1_000_000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let i = index(v);
            assert!(i == prev || i == prev + 1 || v > 1_000_000, "gap at {v}");
            assert!(highest_in(i) >= v, "{v} above its bucket's top");
            let low = if i == 0 { 0 } else { highest_in(i - 1) + 1 };
            assert!(low <= v, "{v} below its bucket");
            assert!((highest_in(i) - low) as f64 <= v as f64 / 127.0 + 1.0);
            prev = i;
        }
    }

    #[test]
    fn percentiles_are_within_one_percent() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 1_000);
        }
        for (p, want) in [
            (50.0, 50_000_000.0),
            (90.0, 90_000_000.0),
            (99.0, 99_000_000.0),
        ] {
            let got = h.percentile(p) as f64;
            assert!((got - want).abs() / want < 0.01, "p{p}: {got} vs {want}");
        }
        assert_eq!(h.percentile(100.0), 100_000_000);
        assert_eq!(h.max(), 100_000_000);
        assert_eq!(h.len(), 100_000);
    }

    #[test]
    fn merging_adds_counts() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(10);
        b.record(1_000_000);
        b.record(3);
        a.merge(&b);
        assert_eq!(a.len(), 3);
        assert_eq!(a.max(), 1_000_000);
        assert_eq!(a.percentile(1.0), 3);
        assert_eq!(a.percentile(50.0), 10);
        assert!(Histogram::new().is_empty());
        assert_eq!(Histogram::new().percentile(99.0), 0);
    }
}
