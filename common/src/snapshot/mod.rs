//! Interval statistics: per-endpoint counters and HDR histograms, and how they merge.
//!
//! Workers record into `EndpointStats` and ship one `Snapshot` per interval;
//! the coordinator merges them. Histograms are microseconds, 1 µs to 60 s, 3
//! significant digits, so merged percentiles are exact to HDR precision no
//! matter how many workers contributed.

mod hdr;

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::check::{MAX_CHECK_NAMES, OTHER_CHECKS, is_check_name};

pub use hdr::{
    HdrSum, HistogramError, MAX_MICROS, V2Counts, decode, encode_v2, encode_v2_deflate, layout_len,
    max_v2_bytes, new_histogram, record_micros,
};

/// Distinct error kinds kept per endpoint; further kinds are counted under [`OTHER_ERRORS`].
pub const MAX_ERROR_KINDS: usize = 32;
/// The error kind that collects kinds past [`MAX_ERROR_KINDS`] and kinds that are not a plain word.
pub const OTHER_ERRORS: &str = "other";
/// Longest error kind kept as sent.
const MAX_ERROR_KIND_LEN: usize = 32;

/// Whether a worker's error key is a plain kind (`connect`, `body_too_large`):
/// 1 to 32 lowercase ASCII letters, digits and `_`. Anything else could be
/// markup, escapes or a flood of distinct keys, and is counted as "other".
pub fn is_error_kind(key: &str) -> bool {
    (1..=MAX_ERROR_KIND_LEN).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Adds `n` failures of kind `key` into `errors`, keeping the map within
/// [`MAX_ERROR_KINDS`] plain kinds plus "other".
fn add_error(errors: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    let key = if is_error_kind(key) && (errors.contains_key(key) || errors.len() < MAX_ERROR_KINDS)
    {
        key
    } else {
        OTHER_ERRORS
    };
    match errors.get_mut(key) {
        Some(v) => *v = v.saturating_add(n),
        None => {
            errors.insert(key.to_owned(), n);
        }
    }
}

/// Adds `n` failures of check `name` into `checks`, keeping the map within
/// [`MAX_CHECK_NAMES`] printable names plus [`OTHER_CHECKS`]: the names come
/// from workers, so they are bounded like error kinds.
pub fn add_check(checks: &mut BTreeMap<String, u64>, name: &str, n: u64) {
    let name =
        if is_check_name(name) && (checks.contains_key(name) || checks.len() < MAX_CHECK_NAMES) {
            name
        } else {
            OTHER_CHECKS
        };
    match checks.get_mut(name) {
        Some(v) => *v = v.saturating_add(n),
        None => {
            checks.insert(name.to_owned(), n);
        }
    }
}

/// Counters and histograms of one endpoint over some span of time.
#[derive(Debug, Clone)]
pub struct EndpointStats {
    pub requests: u64,
    pub failures: u64,
    pub status: BTreeMap<u16, u64>,
    pub errors: BTreeMap<String, u64>,
    /// Failed checks by name (`status 200`, `$.ok == true`): each failed
    /// response counts once, under the first check it failed.
    pub checks: BTreeMap<String, u64>,
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
            checks: BTreeMap::new(),
            bytes_received: 0,
            latency: new_histogram(),
            ttfb: new_histogram(),
            service: new_histogram(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requests == 0 && self.failures == 0 && self.errors.is_empty() && self.checks.is_empty()
    }

    /// Adds another span's stats into this one.
    /// Counts saturate: sums of sums of worker-supplied counts must not wrap or panic.
    pub fn merge(&mut self, other: &EndpointStats) -> Result<(), HistogramError> {
        self.requests = self.requests.saturating_add(other.requests);
        self.failures = self.failures.saturating_add(other.failures);
        for (k, v) in &other.status {
            let c = self.status.entry(*k).or_default();
            *c = c.saturating_add(*v);
        }
        for (k, v) in &other.errors {
            let c = self.errors.entry(k.clone()).or_default();
            *c = c.saturating_add(*v);
        }
        for (k, v) in &other.checks {
            add_check(&mut self.checks, k, *v);
        }
        self.bytes_received = self.bytes_received.saturating_add(other.bytes_received);
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
        self.checks.clear();
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
    /// Failed checks by name (`status 200`, `$.ok == true`): each failed
    /// response counts once, under the first check it failed.
    pub checks: BTreeMap<String, u64>,
    pub bytes_received: u64,
    /// HDR V2 bytes of the latency histogram (µs).
    pub latency: Vec<u8>,
    pub ttfb: Vec<u8>,
    pub service: Vec<u8>,
}

/// An [`EndpointDelta`]'s three histograms, checked to be in Squall's layout.
#[derive(Debug, Clone, Copy)]
pub struct DeltaHistograms<'a> {
    pub latency: V2Counts<'a>,
    pub ttfb: V2Counts<'a>,
    pub service: V2Counts<'a>,
}

impl EndpointDelta {
    /// Checks all three histograms, so that adding the delta cannot fail half-way.
    pub fn histograms(&self) -> Result<DeltaHistograms<'_>, HistogramError> {
        Ok(DeltaHistograms {
            latency: V2Counts::parse(&self.latency)?,
            ttfb: V2Counts::parse(&self.ttfb)?,
            service: V2Counts::parse(&self.service)?,
        })
    }

    pub fn encode(s: &EndpointStats) -> Result<Self, HistogramError> {
        Ok(EndpointDelta {
            requests: s.requests,
            failures: s.failures,
            status: s.status.clone(),
            errors: s.errors.clone(),
            checks: s.checks.clone(),
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
    /// Failed checks by name (`status 200`, `$.ok == true`): each failed
    /// response counts once, under the first check it failed.
    pub checks: BTreeMap<String, u64>,
    pub bytes_received: u64,
    pub latency: HdrSum,
    pub ttfb: HdrSum,
    pub service: HdrSum,
}

impl EndpointSum {
    /// Adds a received delta, all of it or (when a histogram is not in
    /// Squall's layout) none of it.
    pub fn add(&mut self, d: &EndpointDelta) -> Result<(), HistogramError> {
        let h = d.histograms()?;
        self.add_checked(d, &h);
        Ok(())
    }

    /// Adds a delta whose histograms were checked (see [`EndpointDelta::histograms`]):
    /// counts saturate, and error kinds are capped (see [`MAX_ERROR_KINDS`]).
    pub fn add_checked(&mut self, d: &EndpointDelta, h: &DeltaHistograms<'_>) {
        self.requests = self.requests.saturating_add(d.requests);
        self.failures = self.failures.saturating_add(d.failures);
        for (k, v) in &d.status {
            let c = self.status.entry(*k).or_default();
            *c = c.saturating_add(*v);
        }
        for (k, v) in &d.errors {
            add_error(&mut self.errors, k, *v);
        }
        for (k, v) in &d.checks {
            add_check(&mut self.checks, k, *v);
        }
        self.bytes_received = self.bytes_received.saturating_add(d.bytes_received);
        self.latency.add(h.latency);
        self.ttfb.add(h.ttfb);
        self.service.add(h.service);
    }

    /// The sum as ordinary stats, for reporting.
    pub fn to_stats(&self) -> EndpointStats {
        EndpointStats {
            requests: self.requests,
            failures: self.failures,
            status: self.status.clone(),
            errors: self.errors.clone(),
            checks: self.checks.clone(),
            bytes_received: self.bytes_received,
            latency: self.latency.to_histogram(),
            ttfb: self.ttfb.to_histogram(),
            service: self.service.to_histogram(),
        }
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
    /// WebSocket and SSE connections open at the window's end (None: the
    /// run has no such step), so a user holding a quiet socket still shows.
    pub open_connections: Option<u64>,
    /// Open-model iterations skipped because every pool user was busy.
    pub dropped_iterations: u64,
    /// HDR V2 bytes: how late scheduled requests started (open model, pacing), µs.
    pub schedule_lag: Vec<u8>,
    /// HDR V2 bytes: how late the open model's schedule took each arrival in
    /// hand, before any wait for a free user (the generator's own part of
    /// `schedule_lag`), µs. Empty outside the open model.
    pub generator_lag: Vec<u8>,
    pub endpoints: Vec<(EndpointKey, EndpointDelta)>,
}

impl Snapshot {
    /// Requests over every endpoint (saturating: the counts come from a worker).
    pub fn requests(&self) -> u64 {
        self.endpoints
            .iter()
            .filter(|(k, _)| crate::scenario::is_request_method(&k.method))
            .fold(0u64, |n, (_, d)| n.saturating_add(d.requests))
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

    /// Check names from workers merge exactly, within a bound on how many
    /// and which names an endpoint keeps.
    #[test]
    fn check_names_merge_and_are_capped() {
        let mut sum = EndpointSum::default();
        let mut d = EndpointDelta::default();
        d.checks.insert("$.ok == true".into(), 3);
        d.checks.insert("status 200".into(), 1);
        sum.add(&d).expect("adds");
        sum.add(&d).expect("adds");
        assert_eq!(sum.checks["$.ok == true"], 6);
        assert_eq!(sum.checks["status 200"], 2);
        let mut hostile = EndpointDelta::default();
        hostile.checks.insert("\x1b[2Jwiped".into(), 1);
        for i in 0..100 {
            hostile.checks.insert(format!("check {i}"), 1);
        }
        sum.add(&hostile).expect("adds");
        assert!(
            sum.checks.len() <= MAX_CHECK_NAMES + 1,
            "{}",
            sum.checks.len()
        );
        assert!(sum.checks.keys().all(|k| is_check_name(k)));
        assert_eq!(sum.checks.values().sum::<u64>(), 8 + 101);
    }

    /// Invented error kinds cannot grow an endpoint's map past the cap, and
    /// kinds that are not a plain word (escapes, markup, huge) become "other".
    #[test]
    fn error_kinds_are_capped_and_plain() {
        let mut sum = EndpointSum::default();
        let mut d = EndpointDelta::default();
        d.errors.insert("connect".into(), 2);
        d.errors.insert("\x1b[2Jwiped".into(), 1);
        d.errors.insert("x".repeat(1000), 1);
        for i in 0..100 {
            d.errors.insert(format!("kind_{i}"), u64::MAX);
        }
        sum.add(&d).expect("adds");
        sum.add(&d).expect("adds");
        assert!(
            sum.errors.len() <= MAX_ERROR_KINDS + 1,
            "{:?}",
            sum.errors.len()
        );
        assert_eq!(sum.errors["connect"], 4);
        assert_eq!(sum.errors[OTHER_ERRORS], u64::MAX);
        assert!(sum.errors.keys().all(|k| is_error_kind(k)));
    }
}
