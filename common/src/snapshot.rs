//! Interval statistics: per-endpoint counters and HDR histograms, and how they merge.
//!
//! Workers record into `EndpointStats` and ship one `Snapshot` per interval;
//! the coordinator merges them. Histograms are microseconds, 1 µs to 60 s, 3
//! significant digits, so merged percentiles are exact to HDR precision no
//! matter how many workers contributed.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer, V2Serializer};

/// Highest trackable latency, in microseconds (60 s); longer values are clamped.
pub const MAX_MICROS: u64 = 60_000_000;

/// Why a histogram could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    #[error("cannot decode HDR histogram: {0}")]
    Decode(String),
    #[error("cannot encode HDR histogram: {0}")]
    Encode(String),
    #[error("cannot merge HDR histograms: {0}")]
    Merge(String),
}

/// A new, empty latency histogram with Squall's bounds.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants known to be valid: 1 <= low, high >= 2 * low, sigfig <= 5.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant histogram bounds are valid")
}

/// Records one value in microseconds, clamped into the trackable range.
pub fn record_micros(h: &mut Histogram<u64>, micros: u64) {
    // Clamped into [1, MAX_MICROS], which the histogram always accepts.
    let _ = h.record(micros.clamp(1, MAX_MICROS));
}

/// HDR V2 bytes (the compact wire form).
pub fn encode_v2(h: &Histogram<u64>) -> Result<Vec<u8>, HistogramError> {
    let mut out = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut out)
        .map_err(|e| HistogramError::Encode(format!("{e:?}")))?;
    Ok(out)
}

/// HDR V2 + deflate bytes (the report form, compatible with other HDR tools).
pub fn encode_v2_deflate(h: &Histogram<u64>) -> Result<Vec<u8>, HistogramError> {
    let mut out = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut out)
        .map_err(|e| HistogramError::Encode(format!("{e:?}")))?;
    Ok(out)
}

/// Decodes V2 or V2+deflate bytes; empty input is an empty histogram.
pub fn decode(bytes: &[u8]) -> Result<Histogram<u64>, HistogramError> {
    if bytes.is_empty() {
        return Ok(new_histogram());
    }
    let decoded: Histogram<u64> = Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .map_err(|e| HistogramError::Decode(format!("{e:?}")))?;
    let mut h = new_histogram();
    h.add(&decoded)
        .map_err(|e| HistogramError::Merge(format!("{e:?}")))?;
    Ok(h)
}

/// Counters and histograms of one endpoint over some span of time.
#[derive(Debug, Clone)]
pub struct EndpointStats {
    pub requests: u64,
    pub failures: u64,
    pub status: BTreeMap<u16, u64>,
    pub errors: BTreeMap<String, u64>,
    pub bytes_received: u64,
    /// Latency in µs (from the intended start in the open model).
    pub latency: Histogram<u64>,
    /// Time to the response head in µs.
    pub ttfb: Histogram<u64>,
    /// Raw service time in µs (from the actual send).
    pub service: Histogram<u64>,
}

impl Default for EndpointStats {
    fn default() -> Self {
        Self::new()
    }
}

impl EndpointStats {
    pub fn new() -> Self {
        EndpointStats {
            requests: 0,
            failures: 0,
            status: BTreeMap::new(),
            errors: BTreeMap::new(),
            bytes_received: 0,
            latency: new_histogram(),
            ttfb: new_histogram(),
            service: new_histogram(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requests == 0 && self.failures == 0 && self.errors.is_empty()
    }

    /// Adds another span's stats into this one.
    pub fn merge(&mut self, other: &EndpointStats) -> Result<(), HistogramError> {
        self.requests += other.requests;
        self.failures += other.failures;
        for (k, v) in &other.status {
            *self.status.entry(*k).or_default() += v;
        }
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.bytes_received += other.bytes_received;
        for (mine, theirs) in [
            (&mut self.latency, &other.latency),
            (&mut self.ttfb, &other.ttfb),
            (&mut self.service, &other.service),
        ] {
            mine.add(theirs)
                .map_err(|e| HistogramError::Merge(format!("{e:?}")))?;
        }
        Ok(())
    }

    /// Zeroes everything, keeping the histograms' allocations for reuse.
    pub fn reset(&mut self) {
        self.requests = 0;
        self.failures = 0;
        self.status.clear();
        self.errors.clear();
        self.bytes_received = 0;
        self.latency.reset();
        self.ttfb.reset();
        self.service.reset();
    }
}

/// One endpoint's interval delta as it travels: counters plus HDR V2 bytes.
///
/// Histograms stay encoded from the worker to the coordinator, which adds
/// them straight into its running totals (`EndpointStats::add_delta`) without
/// materialising a histogram per snapshot: a decoded 1 µs–60 s histogram is a
/// 139 KB array, and allocating and merging three of them per endpoint per
/// snapshot held the coordinator to ~250 snapshots/s of 20 endpoints per core.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointDelta {
    pub requests: u64,
    pub failures: u64,
    pub status: BTreeMap<u16, u64>,
    pub errors: BTreeMap<String, u64>,
    pub bytes_received: u64,
    /// HDR V2 bytes of the latency histogram (µs).
    pub latency: Vec<u8>,
    pub ttfb: Vec<u8>,
    pub service: Vec<u8>,
}

impl EndpointDelta {
    pub fn encode(s: &EndpointStats) -> Result<Self, HistogramError> {
        Ok(EndpointDelta {
            requests: s.requests,
            failures: s.failures,
            status: s.status.clone(),
            errors: s.errors.clone(),
            bytes_received: s.bytes_received,
            latency: encode_v2(&s.latency)?,
            ttfb: encode_v2(&s.ttfb)?,
            service: encode_v2(&s.service)?,
        })
    }
}

/// What the coordinator sums per endpoint: counters plus histogram sums.
#[derive(Debug, Clone, Default)]
pub struct EndpointSum {
    pub requests: u64,
    pub failures: u64,
    pub status: BTreeMap<u16, u64>,
    pub errors: BTreeMap<String, u64>,
    pub bytes_received: u64,
    pub latency: HdrSum,
    pub ttfb: HdrSum,
    pub service: HdrSum,
}

impl EndpointSum {
    /// Adds a received delta.
    pub fn add(&mut self, d: &EndpointDelta) -> Result<(), HistogramError> {
        self.requests += d.requests;
        self.failures += d.failures;
        for (k, v) in &d.status {
            *self.status.entry(*k).or_default() += v;
        }
        for (k, v) in &d.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.bytes_received += d.bytes_received;
        self.latency.add_v2(&d.latency)?;
        self.ttfb.add_v2(&d.ttfb)?;
        self.service.add_v2(&d.service)?;
        Ok(())
    }

    /// The sum as ordinary stats, for reporting.
    pub fn to_stats(&self) -> EndpointStats {
        EndpointStats {
            requests: self.requests,
            failures: self.failures,
            status: self.status.clone(),
            errors: self.errors.clone(),
            bytes_received: self.bytes_received,
            latency: self.latency.to_histogram(),
            ttfb: self.ttfb.to_histogram(),
            service: self.service.to_histogram(),
        }
    }
}

/// A running sum of HDR histograms kept as raw counts per bucket index.
///
/// Adding V2 bytes is then an indexed add per non-zero bucket. Going through
/// `Histogram::record_n` instead (index → value → index again) took 60% of
/// the coordinator's CPU with 1,000 workers sending 20 endpoints a second.
#[derive(Debug, Clone, Default)]
pub struct HdrSum {
    counts: Vec<u64>,
}

/// Buckets of a 1 µs–60 s, 3-digit histogram: half-buckets of 1,024 indexes.
const HALF_MAGNITUDE: u32 = 10;
const HALF: u64 = 1 << HALF_MAGNITUDE;

/// The value (lowest of its bucket) at `index` in Squall's histogram layout.
fn value_of(index: u64) -> u64 {
    let bucket = (index >> HALF_MAGNITUDE) as i64 - 1;
    let sub = (index & (HALF - 1)) + HALF;
    if bucket < 0 {
        sub - HALF
    } else {
        sub << bucket
    }
}

impl HdrSum {
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|&c| c == 0)
    }

    /// Adds HDR V2 bytes (any layout; Squall's own takes the fast path).
    pub fn add_v2(&mut self, bytes: &[u8]) -> Result<(), HistogramError> {
        if bytes.is_empty() {
            return Ok(());
        }
        match counts_payload(bytes)? {
            Some(payload) => {
                let limit = new_histogram_len();
                for_each_count(payload, |index, n| {
                    let i = (index as usize).min(limit - 1);
                    if i >= self.counts.len() {
                        self.counts.resize(i + 1, 0);
                    }
                    self.counts[i] += n;
                })
            }
            None => {
                // Another layout or deflated: decode, re-encode in ours, add.
                let h = decode(bytes)?;
                self.add_v2(&encode_v2(&h)?)
            }
        }
    }

    pub fn to_histogram(&self) -> Histogram<u64> {
        let mut h = new_histogram();
        for (i, &n) in self.counts.iter().enumerate() {
            if n > 0 {
                let _ = h.record_n(value_of(i as u64).clamp(1, MAX_MICROS), n);
            }
        }
        h
    }
}

/// Indexes in a `new_histogram()` (computed once).
fn new_histogram_len() -> usize {
    static LEN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LEN.get_or_init(|| new_histogram().distinct_values())
}

/// The counts payload of V2 bytes in Squall's layout, or `None` for another layout.
fn counts_payload(bytes: &[u8]) -> Result<Option<&[u8]>, HistogramError> {
    let bad = |why: &str| HistogramError::Decode(why.to_owned());
    let word = |at: usize| -> Result<u64, HistogramError> {
        let b: [u8; 4] = bytes
            .get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| bad("truncated header"))?;
        Ok(u64::from(u32::from_be_bytes(b)))
    };
    let lowest = bytes
        .get(16..24)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| bad("truncated header"))?;
    if word(0)? != u64::from(V2_COOKIE) || word(8)? != 0 || word(12)? != 3 || lowest != 1 {
        return Ok(None);
    }
    let len = word(4)? as usize;
    bytes
        .get(V2_HEADER_SIZE..V2_HEADER_SIZE + len)
        .map(Some)
        .ok_or_else(|| bad("truncated payload"))
}

/// Calls `f(index, count)` for every non-zero count of a V2 counts payload.
fn for_each_count(payload: &[u8], mut f: impl FnMut(u64, u64)) -> Result<(), HistogramError> {
    let mut index: u64 = 0;
    let mut at = 0;
    while at < payload.len() {
        let (raw, used) = read_varint(&payload[at..])
            .ok_or_else(|| HistogramError::Decode("bad varint".into()))?;
        at += used;
        let n = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
        if n < 0 {
            index += n.unsigned_abs();
        } else {
            if n > 0 {
                f(index, n as u64);
            }
            index += 1;
        }
    }
    Ok(())
}

/// The V2 cookie (uncompressed, as `V2Serializer` writes it).
const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
const V2_HEADER_SIZE: usize = 40;

/// LEB128-64b9B as HdrHistogram writes it: up to 8 groups of 7 bits, then a whole 9th byte.
fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for i in 0..8 {
        let byte = *b.get(i)?;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    let last = *b.get(8)?;
    Some((value | (u64::from(last) << 56), 9))
}

/// Identifies an endpoint across workers: its display name and HTTP method.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    pub name: String,
    pub method: String,
}

/// One worker's delta for one interval of one run.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub run_id: String,
    pub seq: u64,
    pub window_start_us: u64,
    pub window_end_us: u64,
    pub active_users: u64,
    /// Open-model iterations skipped because every pool user was busy.
    pub dropped_iterations: u64,
    /// HDR V2 bytes: how late scheduled requests started (open model, pacing), µs.
    pub schedule_lag: Vec<u8>,
    pub endpoints: Vec<(EndpointKey, EndpointDelta)>,
}

impl Snapshot {
    pub fn requests(&self) -> u64 {
        self.endpoints.iter().map(|(_, d)| d.requests).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_percentiles_equal_whole_percentiles() {
        // The same samples recorded in one histogram, or spread over 3 and merged.
        let mut whole = new_histogram();
        let mut parts = [new_histogram(), new_histogram(), new_histogram()];
        let mut x: u64 = 12345;
        for i in 0..30_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = 100 + (x >> 33) % 200_000;
            record_micros(&mut whole, v);
            record_micros(&mut parts[(i % 3) as usize], v);
        }
        let mut merged = new_histogram();
        for p in &parts {
            let bytes = encode_v2(p).expect("encodes");
            merged
                .add(decode(&bytes).expect("decodes"))
                .expect("merges");
        }
        for q in [0.5, 0.9, 0.95, 0.99, 0.999] {
            assert_eq!(merged.value_at_quantile(q), whole.value_at_quantile(q));
        }
        assert_eq!(merged.len(), 30_000);
    }

    #[test]
    fn hdr_sum_equals_the_crate_decoder() {
        let mut h = new_histogram();
        let mut x: u64 = 7;
        for _ in 0..50_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Values across many buckets, 1 µs to 60 s.
            let v = 1 + (x >> 20) % (1 << ((x >> 58) % 26));
            record_micros(&mut h, v);
        }
        record_micros(&mut h, MAX_MICROS);
        let bytes = encode_v2(&h).expect("encodes");
        let mut slow = decode(&bytes).expect("decodes");
        slow.add(decode(&bytes).expect("decodes")).expect("adds");
        let want: Vec<(u64, u64)> = slow
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        // Plain V2 takes the fast path, deflated V2 the general one; both agree.
        let mut sum = HdrSum::default();
        sum.add_v2(&bytes).expect("adds");
        sum.add_v2(&encode_v2_deflate(&h).expect("encodes"))
            .expect("adds");
        let got: Vec<(u64, u64)> = sum
            .to_histogram()
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        assert_eq!(got, want);
        assert!(HdrSum::default().add_v2(&bytes[..20]).is_err());
        assert!(HdrSum::default().is_empty());
    }

    #[test]
    fn deflate_round_trip_and_clamping() {
        let mut h = new_histogram();
        record_micros(&mut h, 0);
        record_micros(&mut h, 120_000_000);
        let back = decode(&encode_v2_deflate(&h).expect("encodes")).expect("decodes");
        assert_eq!(back.len(), 2);
        assert_eq!(back.min(), 1);
        assert!(back.max() >= MAX_MICROS);
    }

    #[test]
    fn stats_merge_adds_counts() {
        let mut a = EndpointStats::new();
        a.requests = 2;
        a.failures = 1;
        a.status.insert(200, 1);
        a.errors.insert("status".into(), 1);
        let mut b = a.clone();
        b.status.insert(500, 3);
        a.merge(&b).expect("merges");
        assert_eq!(a.requests, 4);
        assert_eq!(a.status[&200], 2);
        assert_eq!(a.status[&500], 3);
        assert_eq!(a.errors["status"], 2);
    }
}
