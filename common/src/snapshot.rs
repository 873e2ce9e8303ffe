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
    pub endpoints: Vec<(EndpointKey, EndpointStats)>,
}

impl Snapshot {
    pub fn requests(&self) -> u64 {
        self.endpoints.iter().map(|(_, s)| s.requests).sum()
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
