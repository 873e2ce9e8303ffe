//! The live view of a run: the latest second's figures, printed every second and checked by `stop_when`.

use std::time::Duration;

use squall_common::report::LatencyMs;

use super::build::{latency_ms, rate};
use crate::aggregator::Aggregator;

/// The numbers the live view shows for one second.
#[derive(Debug, Clone, Default)]
pub struct LiveLine {
    /// The second these numbers are for.
    pub t: u64,
    pub users: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub total_requests: u64,
    pub total_failures: u64,
    /// Whether every live worker has reported this second.
    pub complete: bool,
    /// The second's own figures, for `stop_when` conditions.
    pub requests: u64,
    pub failures: u64,
    pub latency: LatencyMs,
}

/// The most recent second every live worker has reported, for the live view.
pub fn latest(agg: &Aggregator) -> Option<LiveLine> {
    let (t, iv, complete) = agg.latest_second()?;
    let latency = iv
        .latency
        .as_ref()
        .map(|h| latency_ms(&h.to_histogram()))
        .unwrap_or_default();
    let (total_requests, total_failures) = agg.totals();
    Some(LiveLine {
        t,
        users: iv.users.values().sum(),
        rps: rate(iv.requests, iv.window_us),
        p50_ms: latency.p50,
        p95_ms: latency.p95,
        p99_ms: latency.p99,
        total_requests,
        total_failures,
        complete,
        requests: iv.requests,
        failures: iv.failures,
        latency,
    })
}

/// One line: elapsed, users, rps, p50/p95/p99 and errors of the latest complete second.
pub fn line(elapsed: Duration, planned: Duration, l: &LiveLine) -> String {
    let err_pct = if l.total_requests == 0 {
        0.0
    } else {
        l.total_failures as f64 * 100.0 / l.total_requests as f64
    };
    format!(
        "[{:>4}s/{}s] users {:>6}  rps {:>9.1}  p50 {:>8.2}ms  p95 {:>8.2}ms  p99 {:>8.2}ms  requests {:>9}  errors {} ({:.2}%)",
        elapsed.as_secs(),
        planned.as_secs(),
        l.users,
        l.rps,
        l.p50_ms,
        l.p95_ms,
        l.p99_ms,
        l.total_requests,
        l.total_failures,
        err_pct
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_the_numbers() {
        let l = LiveLine {
            users: 100,
            rps: 812.0,
            p50_ms: 23.1,
            p95_ms: 61.2,
            p99_ms: 79.0,
            total_requests: 1000,
            total_failures: 10,
            ..LiveLine::default()
        };
        let s = line(Duration::from_secs(12), Duration::from_secs(20), &l);
        assert!(s.contains("[  12s/20s]"), "{s}");
        assert!(s.contains("users    100"), "{s}");
        assert!(s.contains("812.0"), "{s}");
        assert!(s.contains("errors 10 (1.00%)"), "{s}");
    }
}
