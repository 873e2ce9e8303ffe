//! A small hand-built report shared by the renderers' tests.

use squall_common::report::{
    EndpointReport, LatencyMs, Report, SCHEMA, ThresholdResult, TimelinePoint, Totals, WorkerReport,
};

pub(crate) const TARGET: &str = "https://shop.example.com";
pub(crate) const LONG_NAME: &str = "/api/v2/catalogue/products/{product_id}/reviews/summary";
pub(crate) const SCRIPT_NAME: &str = "/search?q=<script>alert(1)</script>";

pub(crate) fn latency(base: f64) -> LatencyMs {
    LatencyMs {
        min: base * 0.2,
        mean: base * 1.1,
        p50: base,
        p90: base * 1.8,
        p95: base * 2.2,
        p99: base * 3.5,
        p999: base * 6.0,
        max: base * 9.0,
    }
}

fn endpoint(
    method: &str,
    name: &str,
    requests: u64,
    failures: u64,
    base: f64,
    status: &[(&str, u64)],
    errors: &[(&str, u64)],
) -> EndpointReport {
    EndpointReport {
        name: name.to_owned(),
        method: method.to_owned(),
        requests,
        failures,
        error_rate: failures as f64 / requests as f64,
        rps: requests as f64 / 60.0,
        latency_ms: latency(base),
        service_ms: latency(base),
        ttfb_ms: latency(base * 0.8),
        bytes_received: requests * 2048,
        status: status.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        errors: errors.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        checks: Default::default(),
        histogram: String::new(),
    }
}

pub(crate) fn sample() -> Report {
    let endpoints = vec![
        endpoint("GET", "/", 6000, 0, 12.5, &[("200", 6000)], &[]),
        endpoint(
            "POST",
            "/login",
            1200,
            30,
            48.0,
            &[("200", 1180), ("500", 10)],
            &[("timeout", 10), ("unexpected status 500", 20)],
        ),
        endpoint("GET", LONG_NAME, 800, 0, 150.0, &[("200", 800)], &[]),
        endpoint(
            "GET",
            SCRIPT_NAME,
            400,
            2,
            4.25,
            &[("200", 398)],
            &[("connect", 2)],
        ),
    ];
    let requests = endpoints.iter().map(|e| e.requests).sum();
    let failures = endpoints.iter().map(|e| e.failures).sum();
    let timeline = (0..10)
        .map(|t| TimelinePoint {
            t,
            users: (t + 1) * 10,
            requests: 800 + t * 10,
            failures: u64::from(t == 4) * 3,
            rps: 800.0 + t as f64 * 10.0,
            p50_ms: 12.0 + t as f64,
            p95_ms: 40.0 + t as f64 * 2.0,
            p99_ms: 90.0 + t as f64 * 5.0,
            planned_users: None,
            planned_rps: None,
            dropped_iterations: 0,
            open_connections: None,
            event: match t {
                0 => Some("stage 1".to_owned()),
                5 => Some("ramp, stage \"2\"".to_owned()),
                _ => None,
            },
        })
        .collect();
    Report {
        broke_at: None,
        comparison: None,
        score: None,
        recommendations: Vec::new(),
        aborted: None,
        phases: Vec::new(),
        schema: SCHEMA.to_owned(),
        run_id: "run-7f3a".to_owned(),
        scenario: "checkout <flow>".to_owned(),
        target: TARGET.to_owned(),
        load_model: "closed".to_owned(),
        started_at: "2024-05-01T12:00:00Z".to_owned(),
        duration_s: 60.0,
        partial: false,
        workers: vec![
            WorkerReport {
                id: "worker-a".to_owned(),
                requests: 5000,
                peak_users: 50,
                lost: false,
                users_per_class: vec![40, 10],
                state: String::new(),
                states: Vec::new(),
                cores: 8,
                cpu_percent_mean: 0.0,
                cpu_percent_max: 0.0,
            },
            WorkerReport {
                id: "worker-b".to_owned(),
                requests: 3400,
                peak_users: 50,
                lost: true,
                users_per_class: vec![40, 10],
                state: String::new(),
                states: Vec::new(),
                cores: 8,
                cpu_percent_mean: 0.0,
                cpu_percent_max: 0.0,
            },
        ],
        totals: Totals {
            requests,
            failures,
            error_rate: failures as f64 / requests as f64,
            rps: requests as f64 / 60.0,
            latency_ms: latency(14.0),
            service_ms: latency(14.0),
            ttfb_ms: latency(11.0),
            bytes_received: requests * 2048,
            dropped_iterations: 0,
            schedule_lag_ms: None,
            generator_lag_ms: None,
        },
        endpoints,
        timeline,
        thresholds: vec![
            ThresholdResult {
                expr: "p95 < 200ms".to_owned(),
                passed: true,
                actual: 30.8,
                level: "critical".to_owned(),
                target: 200.0,
                deviation: Some(-0.846),
            },
            ThresholdResult {
                expr: "error_rate < 0.1%".to_owned(),
                passed: false,
                actual: 0.003_763,
                level: "critical".to_owned(),
                target: 0.001,
                deviation: Some(2.763),
            },
        ],
        passed: false,
    }
}

/// The sample with nothing recorded: no endpoints, workers, timeline or thresholds.
pub(crate) fn empty() -> Report {
    let mut r = sample();
    r.endpoints.clear();
    r.workers.clear();
    r.timeline.clear();
    r.thresholds.clear();
    r.totals = Totals {
        dropped_iterations: 0,
        schedule_lag_ms: None,
        generator_lag_ms: None,
        requests: 0,
        failures: 0,
        error_rate: 0.0,
        rps: 0.0,
        latency_ms: LatencyMs::default(),
        service_ms: LatencyMs::default(),
        ttfb_ms: LatencyMs::default(),
        bytes_received: 0,
    };
    r.partial = true;
    r.passed = true;
    r
}
