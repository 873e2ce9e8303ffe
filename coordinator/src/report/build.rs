//! Turns what the aggregator merged into the final `Report`: summaries in milliseconds, rates, the timeline against the plan, and the thresholds' verdict.

use base64::Engine as _;
use hdrhistogram::Histogram;
use squall_common::report::{
    self, Aborted, BreakPoint, EndpointReport, LatencyMs, Report, ThresholdResult, TimelinePoint,
    Totals, WorkerReport,
};
use squall_common::snapshot::{HistogramError, encode_v2_deflate};
use squall_common::{EndpointStats, RunSpec};

use crate::aggregator::{Aggregator, Interval};
use crate::report::verdict;

/// Run facts the aggregator does not see in snapshots.
pub struct ReportMeta<'a> {
    pub spec: &'a RunSpec,
    pub started_at: String,
    pub partial: bool,
    pub broke_at: Option<BreakPoint>,
    /// The `abort` threshold that stopped the run, if one did.
    pub aborted: Option<Aborted>,
}

/// Whether endpoint reports carry their encoded histogram (the final report) or not (a live judgement).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Histograms {
    Encoded,
    Left,
}

/// The whole run's numbers so far, for judging `abort` thresholds live with
/// the same [`verdict::evaluate`] as the final verdict: totals and endpoints
/// exactly as the final report computes them, without what no threshold
/// reads (histogram encodings, the timeline, workers, schedule lag).
pub fn interim(agg: &Aggregator, spec: &RunSpec) -> Result<Report, HistogramError> {
    let (totals, endpoints) = figures(agg, Histograms::Left)?;
    Ok(Report {
        schema: report::SCHEMA.to_owned(),
        run_id: agg.run_id().to_owned(),
        scenario: spec.scenario.clone(),
        target: spec.host.clone(),
        load_model: spec.load.name().to_owned(),
        started_at: String::new(),
        duration_s: agg.duration_us() as f64 / 1e6,
        partial: true,
        workers: Vec::new(),
        totals,
        endpoints,
        timeline: Vec::new(),
        thresholds: Vec::new(),
        broke_at: None,
        comparison: None,
        score: None,
        recommendations: Vec::new(),
        aborted: None,
        phases: Vec::new(),
        passed: true,
    })
}

/// Totals and per-endpoint reports over everything merged so far.
fn figures(
    agg: &Aggregator,
    histograms: Histograms,
) -> Result<(Totals, Vec<EndpointReport>), HistogramError> {
    let duration_s = agg.duration_us() as f64 / 1e6;
    let mut all = EndpointStats::new();
    let mut endpoints = Vec::new();
    for (key, sum) in agg.endpoints() {
        let s = sum.to_stats();
        if squall_common::scenario::is_request_method(&key.method) {
            all.merge(&s)?;
        }
        endpoints.push(endpoint(
            &key.name,
            &key.method,
            &s,
            duration_s,
            histograms,
        )?);
    }
    Ok((totals(&all, duration_s), endpoints))
}

/// Builds the final report; thresholds decide `passed`.
pub fn build(agg: &Aggregator, meta: ReportMeta) -> Result<Report, HistogramError> {
    let duration_s = agg.duration_us() as f64 / 1e6;
    let (totals, endpoints) = figures(agg, Histograms::Encoded)?;
    let intervals = agg.intervals();
    let last = intervals.keys().next_back().copied();
    let mut timeline = Vec::new();
    if let Some(last) = last {
        for t in 0..=last {
            let point = match intervals.get(&t) {
                None => TimelinePoint {
                    t,
                    ..TimelinePoint::default()
                },
                Some(iv) => second(t, iv),
            };
            let load = &meta.spec.load;
            let end = (t + 1) as f64;
            timeline.push(TimelinePoint {
                planned_users: load.users_at(end),
                planned_rps: load
                    .arrivals_until(end)
                    .zip(load.arrivals_until(t as f64))
                    .map(|(b, a)| (b - a).round()),
                ..point
            });
        }
    }
    let workers = agg
        .workers()
        .iter()
        .map(|(id, w)| WorkerReport {
            id: id.clone(),
            requests: w.requests,
            peak_users: w.peak_users,
            lost: w.lost,
            users_per_class: w.users_per_class.clone(),
            state: w
                .states
                .last()
                .map_or_else(|| "ready".to_owned(), |s| s.state.clone()),
            states: w.states.clone(),
            cores: w.cores,
            cpu_percent_mean: w.cpu.mean().map_or(0.0, |m| (m * 10.0).round() / 10.0),
            cpu_percent_max: w.cpu.max().map_or(0.0, |m| (m * 10.0).round() / 10.0),
        })
        .collect();
    let mut report = Report {
        schema: report::SCHEMA.to_owned(),
        run_id: agg.run_id().to_owned(),
        scenario: meta.spec.scenario.clone(),
        target: meta.spec.host.clone(),
        load_model: meta.spec.load.name().to_owned(),
        started_at: meta.started_at,
        duration_s: (duration_s * 1000.0).round() / 1000.0,
        partial: meta.partial,
        workers,
        totals,
        endpoints,
        timeline,
        thresholds: Vec::new(),
        broke_at: meta.broke_at,
        comparison: None,
        score: None,
        recommendations: Vec::new(),
        aborted: meta.aborted,
        phases: Vec::new(),
        passed: true,
    };
    report.totals.dropped_iterations = intervals
        .values()
        .fold(0u64, |n, iv| n.saturating_add(iv.dropped));
    let lag = agg.schedule_lag();
    report.totals.schedule_lag_ms = (!lag.is_empty()).then(|| latency_ms(&lag.to_histogram()));
    let own = agg.generator_lag();
    report.totals.generator_lag_ms = (!own.is_empty()).then(|| latency_ms(&own.to_histogram()));
    let mut results: Vec<ThresholdResult> = meta
        .spec
        .thresholds
        .iter()
        .map(|t| verdict::evaluate(t, &report))
        .collect();
    // The threshold that aborted the run failed, even if the numbers of the
    // few seconds until the workers stopped happen to pass it.
    if let Some(a) = &report.aborted
        && let Some(r) = results
            .iter_mut()
            .find(|r| r.expr == a.threshold && r.passed)
    {
        r.passed = false;
        r.actual = a.actual;
    }
    report.thresholds = results;
    verdict::conclude(&mut report);
    Ok(report)
}

/// One second of the timeline as the workers reported it (the plan is added by the caller).
fn second(t: u64, iv: &Interval) -> TimelinePoint {
    let l = iv.latency_ms();
    TimelinePoint {
        t,
        dropped_iterations: iv.dropped,
        open_connections: iv.open_connections,
        users: iv.users(),
        requests: iv.requests,
        failures: iv.failures,
        rps: rate(iv.requests, iv.window_us),
        p50_ms: l.p50,
        p95_ms: l.p95,
        p99_ms: l.p99,
        event: (!iv.events.is_empty()).then(|| iv.events.join("; ")),
        ..TimelinePoint::default()
    }
}

/// Summarises a µs histogram in milliseconds; all zeros when empty.
pub fn latency_ms(h: &Histogram<u64>) -> LatencyMs {
    if h.is_empty() {
        return LatencyMs::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    LatencyMs {
        min: ms(h.min()),
        mean: round3(h.mean() / 1000.0),
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p95: ms(h.value_at_quantile(0.95)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn totals(s: &EndpointStats, duration_s: f64) -> Totals {
    Totals {
        requests: s.requests,
        failures: s.failures,
        error_rate: report::ratio(s.failures, s.requests),
        rps: per_second(s.requests, duration_s),
        latency_ms: latency_ms(&s.latency),
        service_ms: latency_ms(&s.service),
        ttfb_ms: latency_ms(&s.ttfb),
        bytes_received: s.bytes_received,
        dropped_iterations: 0,
        schedule_lag_ms: None,
        generator_lag_ms: None,
    }
}

fn endpoint(
    name: &str,
    method: &str,
    s: &EndpointStats,
    duration_s: f64,
    histograms: Histograms,
) -> Result<EndpointReport, HistogramError> {
    let totals = totals(s, duration_s);
    Ok(EndpointReport {
        name: name.to_owned(),
        method: method.to_owned(),
        requests: totals.requests,
        failures: totals.failures,
        error_rate: totals.error_rate,
        rps: totals.rps,
        latency_ms: totals.latency_ms,
        service_ms: totals.service_ms,
        ttfb_ms: totals.ttfb_ms,
        bytes_received: totals.bytes_received,
        status: s.status.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        errors: s.errors.clone(),
        checks: s.checks.clone(),
        histogram: match histograms {
            Histograms::Encoded => {
                base64::engine::general_purpose::STANDARD.encode(encode_v2_deflate(&s.latency)?)
            }
            Histograms::Left => String::new(),
        },
    })
}

/// A `setup:` or `teardown:` row: summarised like a load endpoint, over the phase's own duration.
pub fn phase_endpoint(
    name: &str,
    method: &str,
    s: &EndpointStats,
    duration_s: f64,
) -> Result<EndpointReport, HistogramError> {
    endpoint(name, method, s, duration_s, Histograms::Encoded)
}

/// Requests per second over a window of `window_us` (a second when the
/// workers measured none), rounded to 2 decimals like every rate in the report.
pub fn rate(count: u64, window_us: u64) -> f64 {
    let secs = if window_us == 0 {
        1.0
    } else {
        window_us as f64 / 1e6
    };
    per_second(count, secs)
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        0.0
    } else {
        (count as f64 / seconds * 100.0).round() / 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_common::snapshot::{new_histogram, record_micros};

    #[test]
    fn latency_summary_in_ms() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            record_micros(&mut h, v * 1000);
        }
        let l = latency_ms(&h);
        assert_eq!(l.min, 1.0);
        assert!((l.p50 - 500.0).abs() <= 0.5, "{l:?}");
        assert!((l.p99 - 990.0).abs() <= 1.0, "{l:?}");
        assert!((l.max - 1000.0).abs() <= 1.0, "{l:?}");
        assert_eq!(latency_ms(&new_histogram()), LatencyMs::default());
    }

    #[test]
    fn endpoint_histogram_round_trips() {
        let mut s = EndpointStats::new();
        s.requests = 3;
        for v in [100, 200, 300] {
            record_micros(&mut s.latency, v);
        }
        let r = endpoint("x", "GET", &s, 1.0, Histograms::Encoded).expect("encodes");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&r.histogram)
            .expect("base64");
        let h = squall_common::snapshot::decode(&bytes).expect("decodes");
        assert_eq!(h.len(), 3);
        assert_eq!(r.rps, 3.0);
    }
}
