//! The verdict: each threshold judged against the finished report, and whether the run passed.

use squall_common::report::{self, LatencyMs, Report, ThresholdResult};
use squall_common::threshold::{Metric, Threshold};

use super::{recommend, score};

/// Decides `passed` (no critical threshold failed, no regression against the
/// baseline) and fills the score and the recommendations; called again after
/// a comparison is attached.
pub fn conclude(report: &mut Report) {
    report.passed = report.aborted.is_none()
        && report.thresholds.iter().all(|t| !t.fails_run())
        && !report.comparison.as_ref().is_some_and(|c| c.regressed);
    report.score = Some(score::score(report));
    report.recommendations = recommend::recommend(report);
}

/// An endpoint threshold must hold for every endpoint with that name (one
/// per method); `actual` is the first failing one's value, and a name
/// absent from the report fails with 0.0 (JSON has no NaN).
pub fn evaluate(t: &Threshold, report: &Report) -> ThresholdResult {
    let (passed, actual) = match &t.endpoint {
        None => {
            let all = &report.totals;
            let checks_failed = report
                .endpoints
                .iter()
                .filter(|e| squall_common::scenario::is_request_method(&e.method))
                .map(|e| e.errors.get("check").copied().unwrap_or(0))
                .sum();
            judge(
                t,
                pick(
                    t,
                    all.requests,
                    all.failures,
                    all.error_rate,
                    all.rps,
                    &all.latency_ms,
                    checks_failed,
                ),
            )
        }
        Some(name) => {
            let mut results = report
                .endpoints
                .iter()
                .filter(|e| &e.name == name)
                .map(|e| {
                    judge(
                        t,
                        pick(
                            t,
                            e.requests,
                            e.failures,
                            e.error_rate,
                            e.rps,
                            &e.latency_ms,
                            e.errors.get("check").copied().unwrap_or(0),
                        ),
                    )
                });
            match results.next() {
                None => (false, 0.0),
                Some(first) if !first.0 => first,
                Some(first) => results.find(|r| !r.0).unwrap_or(first),
            }
        }
    };
    ThresholdResult {
        expr: t.expr.clone(),
        passed,
        actual,
        level: if t.warn {
            report::LEVEL_WARNING
        } else {
            report::LEVEL_CRITICAL
        }
        .to_owned(),
        target: t.value,
        deviation: deviation(actual, t.value),
    }
}

/// How far `actual` is from `target`, relative to it (0.25 = 25 % above);
/// none for a zero target, where no relative figure exists.
pub fn deviation(actual: f64, target: f64) -> Option<f64> {
    (target != 0.0 && actual.is_finite())
        .then(|| ((actual - target) / target.abs() * 10_000.0).round() / 10_000.0)
}

fn pick(
    t: &Threshold,
    requests: u64,
    failures: u64,
    error_rate: f64,
    rps: f64,
    l: &LatencyMs,
    checks_failed: u64,
) -> f64 {
    match t.metric {
        Metric::Latency(stat) => stat.of(l),
        Metric::ErrorRate => error_rate,
        Metric::Rps => rps,
        Metric::Requests => requests as f64,
        Metric::Failures => failures as f64,
        Metric::Checks => 1.0 - squall_common::report::ratio(checks_failed.min(requests), requests),
    }
}

/// Non-finite values fail and are reported as 0.0 so the report stays valid JSON.
fn judge(t: &Threshold, actual: f64) -> (bool, f64) {
    if actual.is_finite() {
        (t.check(actual), actual)
    } else {
        (false, 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_common::report::{EndpointReport, Totals};

    fn latency(base: f64) -> LatencyMs {
        LatencyMs {
            min: base,
            mean: base * 2.0,
            p50: base * 3.0,
            p90: base * 4.0,
            p95: base * 5.0,
            p99: base * 6.0,
            p999: base * 7.0,
            max: base * 8.0,
        }
    }

    fn endpoint(
        name: &str,
        method: &str,
        base: f64,
        requests: u64,
        failures: u64,
    ) -> EndpointReport {
        EndpointReport {
            name: name.into(),
            method: method.into(),
            requests,
            failures,
            error_rate: squall_common::report::ratio(failures, requests),
            rps: requests as f64 / 10.0,
            latency_ms: latency(base),
            service_ms: latency(base),
            ttfb_ms: latency(base),
            bytes_received: 0,
            status: Default::default(),
            errors: Default::default(),
            checks: Default::default(),
            histogram: String::new(),
        }
    }

    fn report() -> Report {
        Report {
            broke_at: None,
            comparison: None,
            score: None,
            recommendations: Vec::new(),
            aborted: None,
            phases: Vec::new(),
            schema: squall_common::report::SCHEMA.into(),
            run_id: "r".into(),
            scenario: "s".into(),
            target: "http://x".into(),
            load_model: "closed".into(),
            started_at: "2025-01-01T00:00:00Z".into(),
            duration_s: 10.0,
            partial: false,
            workers: vec![],
            totals: Totals {
                requests: 2000,
                failures: 10,
                error_rate: 0.005,
                rps: 200.0,
                latency_ms: latency(10.0),
                service_ms: latency(10.0),
                ttfb_ms: latency(10.0),
                bytes_received: 0,
                dropped_iterations: 0,
                schedule_lag_ms: None,
                generator_lag_ms: None,
            },
            endpoints: vec![
                endpoint("list workflows", "GET", 20.0, 1500, 0),
                endpoint("create workflow", "POST", 50.0, 500, 10),
                endpoint("a: b", "GET", 1.0, 1, 0),
                endpoint("twice", "GET", 10.0, 100, 0),
                endpoint("twice", "POST", 100.0, 100, 0),
            ],
            timeline: vec![],
            thresholds: vec![],
            passed: true,
        }
    }

    fn eval(expr: &str) -> (bool, f64) {
        let r = evaluate(&Threshold::parse(expr).expect(expr), &report());
        assert_eq!(r.expr, expr.trim());
        (r.passed, r.actual)
    }

    #[test]
    fn latency_metrics_in_ms() {
        assert_eq!(eval("min < 11"), (true, 10.0));
        assert_eq!(eval("mean < 20ms"), (false, 20.0));
        assert_eq!(eval("avg <= 20ms"), (true, 20.0));
        assert_eq!(eval("med == 30ms"), (true, 30.0));
        assert_eq!(eval("p50 == 30ms"), (true, 30.0));
        assert_eq!(eval("p90 > 39.9"), (true, 40.0));
        assert_eq!(eval("p95 < 0.05s"), (false, 50.0));
        assert_eq!(eval("p(95) <= 1.5s"), (true, 50.0));
        assert_eq!(eval("p99<200ms"), (true, 60.0));
        assert_eq!(eval("P(99) >= 60000us"), (true, 60.0));
        assert_eq!(eval("p999 < 70ms"), (false, 70.0));
        assert_eq!(eval("p(99.9) < 71ms"), (true, 70.0));
        assert_eq!(eval("max < 1s"), (true, 80.0));
    }

    #[test]
    fn rate_and_count_metrics() {
        assert_eq!(eval("error_rate < 1%"), (true, 0.005));
        assert_eq!(eval("error_rate < 0.001"), (false, 0.005));
        assert_eq!(eval("error_rate <= 0.5%"), (true, 0.005));
        assert_eq!(eval("rps > 100"), (true, 200.0));
        assert_eq!(eval("rps > 250/s"), (false, 200.0));
        assert_eq!(eval("requests >= 1000"), (true, 2000.0));
        assert_eq!(eval("failures == 0"), (false, 10.0));
        assert_eq!(eval("failures <= 10"), (true, 10.0));
    }

    #[test]
    fn per_endpoint_thresholds() {
        assert_eq!(eval("list workflows: p95 < 300ms"), (true, 100.0));
        assert_eq!(eval("create workflow: p95 < 200ms"), (false, 250.0));
        assert_eq!(eval("create workflow: failures == 10"), (true, 10.0));
        assert_eq!(eval("create workflow: error_rate < 1%"), (false, 0.02));
        assert_eq!(eval("list workflows: rps > 100"), (true, 150.0));
        // Split at the last ": ", so names may contain one.
        assert_eq!(eval("a: b: requests == 1"), (true, 1.0));
        // Same name, two methods: all must pass; actual is the failing one.
        assert_eq!(eval("twice: p95 < 100ms"), (false, 500.0));
        assert_eq!(eval("twice: p95 < 1s"), (true, 50.0));
    }

    #[test]
    fn results_carry_level_target_and_deviation() {
        let r = evaluate(
            &Threshold::parse("p95 < 40ms, warn").expect("parses"),
            &report(),
        );
        assert_eq!((r.passed, r.actual, r.target), (false, 50.0, 40.0));
        assert_eq!(r.level, "warning");
        assert_eq!(r.deviation, Some(0.25));
        assert!(!r.fails_run(), "a crossed warning does not fail the run");
        let r = evaluate(
            &Threshold::parse("failures == 0").expect("parses"),
            &report(),
        );
        assert_eq!(r.level, "critical");
        assert_eq!(r.deviation, None);
        assert!(r.fails_run());
    }

    #[test]
    fn absent_endpoint_fails_with_zero() {
        let r = evaluate(
            &Threshold::parse("nope: p95 < 1s").expect("parses"),
            &report(),
        );
        assert!(!r.passed);
        assert_eq!(r.actual, 0.0);
    }

    #[test]
    fn non_finite_actual_fails_as_zero() {
        let mut r = report();
        r.totals.rps = f64::NAN;
        let res = evaluate(&Threshold::parse("rps >= 0").expect("parses"), &r);
        assert!(!res.passed);
        assert_eq!(res.actual, 0.0);
    }
}
