//! The run's score out of 100: thresholds 40, errors 30, regressions 20, latency 10 (the formula is in docs/report.md).

use squall_common::report::{LEVEL_WARNING, Report, Score};

/// An error rate at or above this scores no error points.
const ERRORS_AT_ZERO: f64 = 0.05;
/// Each regressed metric row costs this many of the 20 regression points.
const PER_REGRESSION: f64 = 5.0;
/// The total p95 (ms) up to which latency keeps its 10 points, and where it has none left.
const P95_FULL_MS: f64 = 1000.0;
const P95_ZERO_MS: f64 = 5000.0;

/// Scores a finished report; a run without any traffic scores 0.
///
/// A run of WebSocket or SSE steps only has no HTTP requests in its totals
/// but rows of its own (`WS`, `WSMSG`, ...): its error part is taken from
/// those rows and its latency part is not judged (full marks), rather than
/// scoring a passing run 0.
pub fn score(r: &Report) -> Score {
    let (other_requests, other_failures) = r
        .endpoints
        .iter()
        .filter(|e| e.method != squall_common::scenario::FLOW_METHOD)
        .filter(|e| !squall_common::scenario::is_request_method(&e.method))
        .fold((0u64, 0u64), |(n, f), e| {
            (n.saturating_add(e.requests), f.saturating_add(e.failures))
        });
    let streams_only = r.totals.requests == 0 && other_requests > 0;
    if r.totals.requests == 0 && !streams_only {
        return Score {
            value: 0,
            thresholds: 0.0,
            errors: 0.0,
            regressions: 0.0,
            latency: 0.0,
        };
    }
    // A critical threshold weighs 2, a warning 1: crossing a warning costs half.
    let weight = |level: &str| if level == LEVEL_WARNING { 1.0 } else { 2.0 };
    let all: f64 = r.thresholds.iter().map(|t| weight(&t.level)).sum();
    let failed: f64 = r
        .thresholds
        .iter()
        .filter(|t| !t.passed)
        .map(|t| weight(&t.level))
        .sum();
    let thresholds = if all > 0.0 {
        40.0 * (1.0 - failed / all)
    } else {
        40.0
    };
    let error_rate = if streams_only {
        other_failures as f64 / other_requests as f64
    } else {
        r.totals.error_rate
    };
    let errors = 30.0 * (1.0 - error_rate / ERRORS_AT_ZERO).clamp(0.0, 1.0);
    let regressions = r.comparison.as_ref().map_or(20.0, |c| {
        (20.0 - PER_REGRESSION * c.regressions as f64).max(0.0)
    });
    let p95 = r.totals.latency_ms.p95;
    let latency = if streams_only {
        10.0
    } else if p95.is_finite() {
        10.0 * ((P95_ZERO_MS - p95) / (P95_ZERO_MS - P95_FULL_MS)).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let round1 = |x: f64| (x * 10.0).round() / 10.0;
    let (thresholds, errors, regressions, latency) = (
        round1(thresholds),
        round1(errors),
        round1(regressions),
        round1(latency),
    );
    Score {
        value: (thresholds + errors + regressions + latency)
            .round()
            .clamp(0.0, 100.0) as u32,
        thresholds,
        errors,
        regressions,
        latency,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::render::fixture;
    use squall_common::report::ThresholdResult;

    fn threshold(passed: bool, level: &str) -> ThresholdResult {
        ThresholdResult {
            expr: "x".into(),
            passed,
            actual: 0.0,
            level: level.into(),
            target: 0.0,
            deviation: None,
        }
    }

    #[test]
    fn a_clean_fast_run_scores_100() {
        let mut r = fixture::sample();
        r.thresholds.clear();
        r.totals.failures = 0;
        r.totals.error_rate = 0.0;
        r.totals.latency_ms.p95 = 120.0;
        let s = score(&r);
        assert_eq!(s.value, 100, "{s:?}");
    }

    #[test]
    fn each_part_follows_the_formula() {
        let mut r = fixture::sample();
        r.totals.error_rate = 0.01; // 1 % of 5 %: 30 * 0.8 = 24
        r.totals.latency_ms.p95 = 3000.0; // halfway from 1 s to 5 s: 5
        r.thresholds = vec![
            threshold(true, "critical"),
            threshold(false, "critical"),
            threshold(false, "warning"),
        ];
        // weights 2 + 2 + 1 = 5, failed 3: 40 * 2/5 = 16
        let s = score(&r);
        assert_eq!(
            (s.thresholds, s.errors, s.regressions, s.latency),
            (16.0, 24.0, 20.0, 5.0)
        );
        assert_eq!(s.value, 65);
    }

    #[test]
    fn regressions_cost_five_points_each_and_no_requests_scores_zero() {
        let mut r = fixture::sample();
        let base = fixture::sample();
        let mut slow = fixture::sample();
        slow.totals.latency_ms.p95 *= 2.0;
        slow.totals.latency_ms.p99 *= 2.0;
        r.comparison = Some(crate::report::compare::compare(
            &base,
            &slow,
            &Default::default(),
        ));
        assert_eq!(score(&r).regressions, 10.0);
        r.totals.requests = 0;
        assert_eq!(score(&r).value, 0);
    }

    #[test]
    fn a_websocket_only_run_is_scored_from_its_own_rows() {
        let mut r = fixture::sample();
        r.thresholds.clear();
        r.totals.requests = 0;
        r.totals.failures = 0;
        r.totals.error_rate = 0.0;
        r.endpoints.truncate(2);
        for (i, e) in r.endpoints.iter_mut().enumerate() {
            e.method = if i == 0 { "WS" } else { "WSMSG" }.into();
            e.requests = 100;
            e.failures = 0;
        }
        let s = score(&r);
        assert_eq!(s.value, 100, "{s:?}");
        // 1 failure in 100 messages of 200 rows: 0.5 % of 5 %: 30 * 0.9 = 27.
        r.endpoints[0].failures = 1;
        assert_eq!(score(&r).errors, 27.0, "{:?}", score(&r));
    }
}
