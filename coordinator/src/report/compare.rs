//! One run against a baseline run: per endpoint and for the totals, each metric's change and whether it is a regression.
//!
//! Pure: two reports and the rules in, a [`Comparison`] out. The run command,
//! `coordinator compare` and serve mode's REST API all call [`compare`].

use squall_common::report::{
    BaselineRef, Comparison, EndpointComparison, EndpointReport, LatencyMs, MetricChange,
    RegressionRules, Report,
};

pub const REGRESSION: &str = "regression";
pub const IMPROVEMENT: &str = "improvement";
pub const OK: &str = "ok";
pub const NOISE: &str = "noise";

/// The figures of one endpoint (or the totals) that are compared.
struct Figures<'a> {
    requests: u64,
    rps: f64,
    error_rate: f64,
    latency: &'a LatencyMs,
}

impl<'a> From<&'a EndpointReport> for Figures<'a> {
    fn from(e: &'a EndpointReport) -> Self {
        Figures {
            requests: e.requests,
            rps: e.rps,
            error_rate: e.error_rate,
            latency: &e.latency_ms,
        }
    }
}

/// Compares `new` with `base`: endpoints are matched by name and method;
/// those in only one run are listed, not compared. `baseline.source` is the
/// base's run id; callers that know its name or path set it.
pub fn compare(base: &Report, new: &Report, rules: &RegressionRules) -> Comparison {
    let total = metrics(
        &Figures {
            requests: base.totals.requests,
            rps: base.totals.rps,
            error_rate: base.totals.error_rate,
            latency: &base.totals.latency_ms,
        },
        &Figures {
            requests: new.totals.requests,
            rps: new.totals.rps,
            error_rate: new.totals.error_rate,
            latency: &new.totals.latency_ms,
        },
        rules,
    );
    let find = |r: &'_ Report, e: &EndpointReport| {
        r.endpoints
            .iter()
            .position(|o| o.name == e.name && o.method == e.method)
    };
    let mut endpoints = Vec::new();
    let mut only_in_new = Vec::new();
    for e in &new.endpoints {
        match find(base, e) {
            Some(i) => endpoints.push(EndpointComparison {
                name: e.name.clone(),
                method: e.method.clone(),
                metrics: metrics(&Figures::from(&base.endpoints[i]), &Figures::from(e), rules),
            }),
            None => only_in_new.push(label(e)),
        }
    }
    let only_in_baseline = base
        .endpoints
        .iter()
        .filter(|e| find(new, e).is_none())
        .map(label)
        .collect();
    let regressions = total
        .iter()
        .chain(endpoints.iter().flat_map(|e| &e.metrics))
        .filter(|m| m.verdict == REGRESSION)
        .count() as u64;
    Comparison {
        baseline: BaselineRef {
            source: base.run_id.clone(),
            run_id: base.run_id.clone(),
            scenario: base.scenario.clone(),
            started_at: base.started_at.clone(),
        },
        rules: rules.clone(),
        total,
        endpoints,
        only_in_baseline,
        only_in_new,
        regressions,
        regressed: regressions > 0,
    }
}

fn label(e: &EndpointReport) -> String {
    format!("{} {}", e.method, e.name)
}

/// Which way is worse for a metric.
#[derive(Clone, Copy)]
enum Kind {
    /// Higher is worse; change is relative; both under the floor is noise.
    Latency,
    /// Lower is worse; change is relative.
    Throughput,
    /// Higher is worse; change is in points.
    Errors,
}

fn metrics(base: &Figures, new: &Figures, rules: &RegressionRules) -> Vec<MetricChange> {
    let too_few = base.requests < rules.min_requests || new.requests < rules.min_requests;
    let (b, n) = (base.latency, new.latency);
    [
        ("p50", Kind::Latency, b.p50, n.p50, rules.p50),
        ("p95", Kind::Latency, b.p95, n.p95, rules.p95),
        ("p99", Kind::Latency, b.p99, n.p99, rules.p99),
        ("mean", Kind::Latency, b.mean, n.mean, rules.mean),
        ("rps", Kind::Throughput, base.rps, new.rps, rules.rps),
        (
            "error_rate",
            Kind::Errors,
            base.error_rate,
            new.error_rate,
            rules.error_rate,
        ),
    ]
    .into_iter()
    .map(|(metric, kind, base, new, limit)| {
        let (change, verdict) = judge(kind, base, new, limit, too_few, rules.floor_ms);
        MetricChange {
            metric: metric.to_owned(),
            base,
            new,
            change,
            verdict: verdict.to_owned(),
        }
    })
    .collect()
}

/// The change and the verdict for one metric. A change exactly at the limit
/// is not a regression ("more than 20 %").
fn judge(
    kind: Kind,
    base: f64,
    new: f64,
    limit: f64,
    too_few: bool,
    floor_ms: f64,
) -> (f64, &'static str) {
    let round = |x: f64| (x * 10_000.0).round() / 10_000.0;
    if !base.is_finite() || !new.is_finite() {
        return (0.0, NOISE);
    }
    let change = match kind {
        Kind::Errors => new - base,
        Kind::Latency | Kind::Throughput if base > 0.0 => (new - base) / base,
        Kind::Latency | Kind::Throughput => 0.0,
    };
    let change = round(change);
    let below_floor = match kind {
        Kind::Latency => base < floor_ms && new < floor_ms,
        Kind::Throughput => base <= 0.0,
        Kind::Errors => false,
    };
    if too_few || below_floor {
        return (change, NOISE);
    }
    // Compare on the rounded change so that what is printed decides.
    let worse = match kind {
        Kind::Latency | Kind::Errors => change,
        Kind::Throughput => -change,
    };
    let verdict = if worse > limit {
        REGRESSION
    } else if -worse > limit {
        IMPROVEMENT
    } else {
        OK
    };
    (change, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_common::report::{SCHEMA, Totals};

    fn latency(p: f64) -> LatencyMs {
        LatencyMs {
            min: p / 2.0,
            mean: p,
            p50: p,
            p90: p * 1.5,
            p95: p * 2.0,
            p99: p * 3.0,
            p999: p * 4.0,
            max: p * 5.0,
        }
    }

    fn endpoint(name: &str, requests: u64, failures: u64, p: f64) -> EndpointReport {
        EndpointReport {
            name: name.into(),
            method: "GET".into(),
            requests,
            failures,
            error_rate: squall_common::report::ratio(failures, requests),
            rps: requests as f64 / 10.0,
            latency_ms: latency(p),
            service_ms: latency(p),
            ttfb_ms: latency(p),
            bytes_received: 0,
            status: Default::default(),
            errors: Default::default(),
            checks: Default::default(),
            histogram: String::new(),
        }
    }

    fn report(endpoints: Vec<EndpointReport>) -> Report {
        let requests = endpoints.iter().map(|e| e.requests).sum();
        let failures = endpoints.iter().map(|e| e.failures).sum();
        let p = endpoints.first().map_or(0.0, |e| e.latency_ms.p50);
        Report {
            schema: SCHEMA.into(),
            run_id: "base1".into(),
            scenario: "s".into(),
            target: "http://x".into(),
            load_model: "closed".into(),
            started_at: "2025-01-01T00:00:00Z".into(),
            duration_s: 10.0,
            partial: false,
            workers: vec![],
            totals: Totals {
                requests,
                failures,
                error_rate: squall_common::report::ratio(failures, requests),
                rps: requests as f64 / 10.0,
                latency_ms: latency(p),
                service_ms: latency(p),
                ttfb_ms: latency(p),
                bytes_received: 0,
                dropped_iterations: 0,
                schedule_lag_ms: None,
                generator_lag_ms: None,
            },
            endpoints,
            timeline: vec![],
            thresholds: vec![],
            broke_at: None,
            comparison: None,
            score: None,
            recommendations: Vec::new(),
            aborted: None,
            phases: Vec::new(),
            passed: true,
        }
    }

    fn verdict(c: &[MetricChange], metric: &str) -> (f64, String) {
        let m = c.iter().find(|m| m.metric == metric).expect(metric);
        (m.change, m.verdict.clone())
    }

    #[test]
    fn thirty_percent_slower_regresses_ten_percent_does_not() {
        let base = report(vec![endpoint("a", 1000, 0, 10.0)]);
        let slower = report(vec![endpoint("a", 1000, 0, 13.0)]);
        let c = compare(&base, &slower, &RegressionRules::default());
        assert_eq!(verdict(&c.total, "p95"), (0.3, REGRESSION.to_owned()));
        assert_eq!(verdict(&c.endpoints[0].metrics, "p50").1, REGRESSION);
        assert!(c.regressed);
        assert_eq!(
            c.regressions, 8,
            "four latency metrics, totals and endpoint"
        );
        let c = compare(
            &base,
            &report(vec![endpoint("a", 1000, 0, 11.0)]),
            &RegressionRules::default(),
        );
        assert_eq!(verdict(&c.total, "p95"), (0.1, OK.to_owned()));
        assert!(!c.regressed);
        // --regression 5%: the same 10 % is now a regression.
        let strict = RegressionRules::parse("5%").expect("rule");
        assert!(compare(&base, &report(vec![endpoint("a", 1000, 0, 11.0)]), &strict).regressed);
    }

    #[test]
    fn exactly_at_the_limit_is_not_a_regression_and_faster_is_an_improvement() {
        let base = report(vec![endpoint("a", 1000, 0, 10.0)]);
        let c = compare(
            &base,
            &report(vec![endpoint("a", 1000, 0, 12.0)]),
            &RegressionRules::default(),
        );
        assert_eq!(verdict(&c.total, "p50"), (0.2, OK.to_owned()));
        let c = compare(
            &base,
            &report(vec![endpoint("a", 1000, 0, 5.0)]),
            &RegressionRules::default(),
        );
        assert_eq!(verdict(&c.total, "p50"), (-0.5, IMPROVEMENT.to_owned()));
        assert!(!c.regressed);
    }

    #[test]
    fn throughput_down_and_error_points_up_regress() {
        let base = report(vec![endpoint("a", 1000, 0, 10.0)]);
        let c = compare(
            &base,
            &report(vec![endpoint("a", 700, 0, 10.0)]),
            &RegressionRules::default(),
        );
        assert_eq!(verdict(&c.total, "rps"), (-0.3, REGRESSION.to_owned()));
        // 0 % to 1.5 % errors: 1.5 points, above the 1 point default.
        let c = compare(
            &base,
            &report(vec![endpoint("a", 1000, 15, 10.0)]),
            &RegressionRules::default(),
        );
        assert_eq!(
            verdict(&c.total, "error_rate"),
            (0.015, REGRESSION.to_owned())
        );
        let c = compare(
            &base,
            &report(vec![endpoint("a", 1000, 5, 10.0)]),
            &RegressionRules::default(),
        );
        assert_eq!(verdict(&c.total, "error_rate"), (0.005, OK.to_owned()));
    }

    #[test]
    fn below_the_noise_floor_nothing_is_judged() {
        // Both under 1 ms: +100 % is noise.
        let base = report(vec![endpoint("a", 1000, 0, 0.2)]);
        let c = compare(
            &base,
            &report(vec![endpoint("a", 1000, 0, 0.4)]),
            &RegressionRules::default(),
        );
        assert_eq!(verdict(&c.total, "p50"), (1.0, NOISE.to_owned()));
        // p99 is 1.2 ms in the new run: above the floor, so judged.
        assert_eq!(verdict(&c.total, "p99").1, REGRESSION);
        // Too few requests in one run: every metric is noise.
        let base = report(vec![endpoint("a", 99, 0, 10.0)]);
        let c = compare(
            &base,
            &report(vec![endpoint("a", 1000, 50, 50.0)]),
            &RegressionRules::default(),
        );
        assert!(c.total.iter().all(|m| m.verdict == NOISE), "{:?}", c.total);
        assert!(!c.regressed);
    }

    #[test]
    fn endpoints_in_one_run_only_are_listed_not_compared() {
        let base = report(vec![
            endpoint("a", 1000, 0, 10.0),
            endpoint("gone", 500, 0, 10.0),
        ]);
        let new = report(vec![
            endpoint("new", 500, 0, 10.0),
            endpoint("a", 1000, 0, 10.0),
        ]);
        let c = compare(&base, &new, &RegressionRules::default());
        assert_eq!(c.endpoints.len(), 1);
        assert_eq!(c.endpoints[0].name, "a");
        assert_eq!(c.only_in_baseline, vec!["GET gone".to_owned()]);
        assert_eq!(c.only_in_new, vec!["GET new".to_owned()]);
        assert_eq!(c.baseline.run_id, "base1");
    }
}
