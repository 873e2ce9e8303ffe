//! `coordinator merge`: reports of runs of one scenario made into one, exactly from their HDR histograms.
//!
//! The runs are taken to have run side by side (the same test from two
//! clusters or regions): counts add up, the duration is the longest one,
//! rates are requests over that duration and timeline seconds are added by
//! `t`. Latency percentiles of endpoints and totals come from the merged
//! histograms, so they are exact to HDR precision; figures the report keeps
//! no histogram for are combined as documented in docs/report.md.

use std::collections::BTreeMap;

use base64::Engine as _;
use hdrhistogram::Histogram;
use squall_common::Report;
use squall_common::report::{self, EndpointReport, LatencyMs, TimelinePoint, Totals};
use squall_common::snapshot::{decode, encode_v2_deflate, new_histogram};
use squall_common::threshold::Threshold;

use super::build::latency_ms;
use super::verdict;
use crate::error::CoordinatorError;

fn fail(msg: impl Into<String>) -> CoordinatorError {
    CoordinatorError::Merge(msg.into())
}

/// Merges `reports` (at least two, one scenario) into one report; thresholds
/// found in any of them are judged again against the merged figures.
pub fn merge(reports: &[Report]) -> Result<Report, CoordinatorError> {
    let Some(first) = reports.first() else {
        return Err(fail("no reports given"));
    };
    if let Some(other) = reports.iter().find(|r| r.scenario != first.scenario) {
        return Err(fail(format!(
            "the reports are of different scenarios (`{}` and `{}`): only runs of the same scenario can be merged",
            first.scenario, other.scenario
        )));
    }
    let duration_s = reports.iter().map(|r| r.duration_s).fold(0.0, f64::max);

    // Endpoints, keyed by (name, method) in order of first appearance.
    let mut order: Vec<(String, String)> = Vec::new();
    let mut parts: BTreeMap<(String, String), Vec<&EndpointReport>> = BTreeMap::new();
    for r in reports {
        for e in &r.endpoints {
            let key = (e.name.clone(), e.method.clone());
            if !parts.contains_key(&key) {
                order.push(key.clone());
            }
            parts.entry(key).or_default().push(e);
        }
    }
    let mut all = new_histogram();
    let mut endpoints = Vec::new();
    for key in &order {
        let group = &parts[key];
        let mut h = new_histogram();
        for e in group {
            let part = histogram(e)?;
            h.add(&part)
                .map_err(|err| fail(format!("{} {}: {err}", e.method, e.name)))?;
        }
        // A flow's row times whole flows, not requests: not in the totals.
        if squall_common::scenario::is_request_method(&key.1) {
            all.add(&h)
                .map_err(|err| fail(format!("{} {}: {err}", key.1, key.0)))?;
        }
        endpoints.push(endpoint(key, group, &h, duration_s)?);
    }

    let requests = sum(reports.iter().map(|r| r.totals.requests));
    let failures = sum(reports.iter().map(|r| r.totals.failures));
    let latency = latency_ms(&all);
    let totals = Totals {
        requests,
        failures,
        error_rate: report::ratio(failures, requests),
        rps: per_second(requests, duration_s),
        service_ms: combine(
            reports.iter().map(|r| {
                (
                    &r.totals.service_ms,
                    &r.totals.latency_ms,
                    r.totals.requests,
                )
            }),
            &latency,
        ),
        ttfb_ms: combine_approx(
            reports
                .iter()
                .map(|r| (&r.totals.ttfb_ms, r.totals.requests)),
        ),
        latency_ms: latency,
        bytes_received: sum(reports.iter().map(|r| r.totals.bytes_received)),
        dropped_iterations: sum(reports.iter().map(|r| r.totals.dropped_iterations)),
        schedule_lag_ms: combine_present(reports, |t| t.schedule_lag_ms.as_ref()),
        generator_lag_ms: combine_present(reports, |t| t.generator_lag_ms.as_ref()),
    };

    let mut merged = Report {
        schema: report::SCHEMA.to_owned(),
        run_id: reports
            .iter()
            .map(|r| r.run_id.as_str())
            .collect::<Vec<_>>()
            .join("+"),
        scenario: first.scenario.clone(),
        target: distinct(reports.iter().map(|r| r.target.as_str())),
        load_model: distinct(reports.iter().map(|r| r.load_model.as_str())),
        started_at: reports
            .iter()
            .map(|r| r.started_at.clone())
            .min()
            .unwrap_or_default(),
        duration_s,
        partial: reports.iter().any(|r| r.partial),
        workers: reports.iter().flat_map(|r| r.workers.clone()).collect(),
        totals,
        endpoints,
        timeline: timeline(reports),
        thresholds: Vec::new(),
        broke_at: None,
        comparison: None,
        score: None,
        recommendations: Vec::new(),
        aborted: None,
        phases: Vec::new(),
        passed: true,
    };
    let mut exprs: Vec<&str> = Vec::new();
    for t in reports.iter().flat_map(|r| &r.thresholds) {
        if !exprs.contains(&t.expr.as_str()) {
            exprs.push(&t.expr);
        }
    }
    merged.thresholds = exprs
        .into_iter()
        .filter_map(|e| Threshold::parse(e).ok())
        .map(|t| verdict::evaluate(&t, &merged))
        .collect();
    verdict::conclude(&mut merged);
    Ok(merged)
}

fn sum(values: impl Iterator<Item = u64>) -> u64 {
    values.fold(0, u64::saturating_add)
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        (count as f64 / seconds * 100.0).round() / 100.0
    } else {
        0.0
    }
}

/// One value when all agree, else all of them joined (`a, b`).
fn distinct<'a>(values: impl Iterator<Item = &'a str>) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for v in values {
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen.join(", ")
}

/// An endpoint's latency histogram, decoded with the bounded decoder: the
/// file is input, so a forged histogram is an error, not a panic or an
/// allocation it dictates.
fn histogram(e: &EndpointReport) -> Result<Histogram<u64>, CoordinatorError> {
    let what = || format!("endpoint {} {}", e.method, e.name);
    if e.histogram.is_empty() {
        if e.requests == 0 {
            return Ok(new_histogram());
        }
        return Err(fail(format!(
            "{} has {} requests but no histogram, so its percentiles cannot be merged exactly",
            what(),
            e.requests
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&e.histogram)
        .map_err(|err| fail(format!("{}: histogram is not base64: {err}", what())))?;
    decode(&bytes).map_err(|err| fail(format!("{}: bad histogram: {err}", what())))
}

fn endpoint(
    key: &(String, String),
    group: &[&EndpointReport],
    h: &Histogram<u64>,
    duration_s: f64,
) -> Result<EndpointReport, CoordinatorError> {
    let requests = sum(group.iter().map(|e| e.requests));
    let failures = sum(group.iter().map(|e| e.failures));
    let mut status: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut checks: BTreeMap<String, u64> = BTreeMap::new();
    for e in group {
        for (k, v) in &e.status {
            let n = status.entry(k.clone()).or_default();
            *n = n.saturating_add(*v);
        }
        for (k, v) in &e.errors {
            let n = errors.entry(k.clone()).or_default();
            *n = n.saturating_add(*v);
        }
        for (k, v) in &e.checks {
            squall_common::snapshot::add_check(&mut checks, k, *v);
        }
    }
    let latency = latency_ms(h);
    let encoded =
        encode_v2_deflate(h).map_err(|err| fail(format!("{} {}: {err}", key.1, key.0)))?;
    Ok(EndpointReport {
        name: key.0.clone(),
        method: key.1.clone(),
        requests,
        failures,
        error_rate: report::ratio(failures, requests),
        rps: per_second(requests, duration_s),
        service_ms: combine(
            group
                .iter()
                .map(|e| (&e.service_ms, &e.latency_ms, e.requests)),
            &latency,
        ),
        ttfb_ms: combine_approx(group.iter().map(|e| (&e.ttfb_ms, e.requests))),
        latency_ms: latency,
        bytes_received: sum(group.iter().map(|e| e.bytes_received)),
        status,
        errors,
        checks,
        histogram: base64::engine::general_purpose::STANDARD.encode(encoded),
    })
}

/// `service_ms`: where every part had it equal to `latency_ms` (no intended
/// start times), it is the merged latency, exact; otherwise approximated.
fn combine<'a>(
    parts: impl Iterator<Item = (&'a LatencyMs, &'a LatencyMs, u64)>,
    merged_latency: &LatencyMs,
) -> LatencyMs {
    let parts: Vec<_> = parts.collect();
    if parts.iter().all(|(service, latency, _)| service == latency) {
        merged_latency.clone()
    } else {
        combine_approx(parts.into_iter().map(|(s, _, n)| (s, n)))
    }
}

/// Summaries without histograms: min of the mins, max of the maxes, the
/// request-weighted mean, and each percentile the largest of the parts' (an
/// upper bound of the true one).
/// `combine_approx` over the reports that have the optional summary `field`
/// (weighted by their requests); `None` when none has it.
fn combine_present(
    reports: &[Report],
    field: impl Fn(&Totals) -> Option<&LatencyMs>,
) -> Option<LatencyMs> {
    let parts: Vec<_> = reports
        .iter()
        .filter_map(|r| field(&r.totals).map(|l| (l, r.totals.requests)))
        .collect();
    (!parts.is_empty()).then(|| combine_approx(parts.into_iter()))
}

fn combine_approx<'a>(parts: impl Iterator<Item = (&'a LatencyMs, u64)>) -> LatencyMs {
    let parts: Vec<_> = parts.filter(|(_, n)| *n > 0).collect();
    if parts.is_empty() {
        return LatencyMs::default();
    }
    let n: f64 = parts.iter().map(|(_, n)| *n as f64).sum();
    let max = |f: fn(&LatencyMs) -> f64| parts.iter().map(|(l, _)| f(l)).fold(0.0, f64::max);
    LatencyMs {
        min: parts
            .iter()
            .map(|(l, _)| l.min)
            .fold(f64::INFINITY, f64::min),
        mean: (parts.iter().map(|(l, c)| l.mean * *c as f64).sum::<f64>() / n * 1000.0).round()
            / 1000.0,
        p50: max(|l| l.p50),
        p90: max(|l| l.p90),
        p95: max(|l| l.p95),
        p99: max(|l| l.p99),
        p999: max(|l| l.p999),
        max: max(|l| l.max),
    }
}

/// Seconds added by `t`; per-second percentiles (kept without histograms)
/// are the largest of the runs'.
fn timeline(reports: &[Report]) -> Vec<TimelinePoint> {
    let mut by_t: BTreeMap<u64, TimelinePoint> = BTreeMap::new();
    for p in reports.iter().flat_map(|r| &r.timeline) {
        let m = by_t.entry(p.t).or_insert_with(|| TimelinePoint {
            t: p.t,
            ..TimelinePoint::default()
        });
        m.users = m.users.saturating_add(p.users);
        m.requests = m.requests.saturating_add(p.requests);
        m.failures = m.failures.saturating_add(p.failures);
        m.rps = ((m.rps + p.rps) * 100.0).round() / 100.0;
        m.p50_ms = m.p50_ms.max(p.p50_ms);
        m.p95_ms = m.p95_ms.max(p.p95_ms);
        m.p99_ms = m.p99_ms.max(p.p99_ms);
        m.dropped_iterations = m.dropped_iterations.saturating_add(p.dropped_iterations);
        if let Some(o) = p.open_connections {
            m.open_connections = Some(m.open_connections.unwrap_or(0).saturating_add(o));
        }
        if let Some(u) = p.planned_users {
            m.planned_users = Some(m.planned_users.unwrap_or(0).saturating_add(u));
        }
        if let Some(r) = p.planned_rps {
            m.planned_rps = Some(m.planned_rps.unwrap_or(0.0) + r);
        }
        if let Some(e) = &p.event {
            m.event = Some(match m.event.take() {
                Some(prev) => format!("{prev}; {e}"),
                None => e.clone(),
            });
        }
    }
    by_t.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::render::fixture;
    use squall_common::snapshot::record_micros;

    fn with_histogram(mut r: Report, values_us: &[u64]) -> Report {
        for e in &mut r.endpoints {
            let mut h = new_histogram();
            for v in values_us {
                record_micros(&mut h, *v);
            }
            e.requests = values_us.len() as u64;
            e.failures = 0;
            e.latency_ms = latency_ms(&h);
            e.service_ms = e.latency_ms.clone();
            e.histogram = base64::engine::general_purpose::STANDARD
                .encode(encode_v2_deflate(&h).expect("encodes"));
        }
        r.totals.requests = values_us.len() as u64 * r.endpoints.len() as u64;
        r.totals.failures = 0;
        r
    }

    #[test]
    fn counts_add_and_percentiles_come_from_the_merged_histograms() {
        let a = with_histogram(
            fixture::sample(),
            &(1..=1000).map(|v| v * 10).collect::<Vec<_>>(),
        );
        let b = with_histogram(
            fixture::sample(),
            &(1..=1000).map(|v| 10_000 + v * 10).collect::<Vec<_>>(),
        );
        let m = merge(&[a.clone(), b.clone()]).expect("merges");
        assert_eq!(m.totals.requests, a.totals.requests + b.totals.requests);
        assert_eq!(m.endpoints.len(), 4);
        let e = &m.endpoints[0];
        assert_eq!(e.requests, 2000);
        assert_eq!(e.status["200"], 12_000, "status counts add up");
        // 2000 values 10 µs .. 20 ms evenly: p50 = 10 ms, p99 = 19.8 ms.
        assert!(
            (e.latency_ms.p50 - 10.0).abs() <= 0.01,
            "{:?}",
            e.latency_ms
        );
        assert!(
            (e.latency_ms.p99 - 19.8).abs() <= 0.02,
            "{:?}",
            e.latency_ms
        );
        assert_eq!(m.totals.latency_ms.max, e.latency_ms.max);
        assert_eq!(m.timeline[0].requests, a.timeline[0].requests * 2);
        assert_eq!(m.thresholds.len(), 2, "thresholds judged again");
        assert!(m.score.is_some());
    }

    #[test]
    fn optional_lags_combine_over_the_reports_that_have_them() {
        let lag = |p99: f64| squall_common::report::LatencyMs {
            p50: p99 / 10.0,
            p99,
            max: p99 * 2.0,
            ..Default::default()
        };
        let values: Vec<u64> = (1..=100).collect();
        let mut a = with_histogram(fixture::sample(), &values);
        a.totals.schedule_lag_ms = Some(lag(12.0));
        a.totals.generator_lag_ms = Some(lag(0.5));
        let mut b = with_histogram(fixture::sample(), &values);
        b.totals.schedule_lag_ms = Some(lag(3.0));
        let m = merge(&[a.clone(), b.clone()]).expect("merges");
        let s = m.totals.schedule_lag_ms.expect("schedule lag kept");
        // Each percentile the largest of the runs' (an upper bound).
        assert_eq!((s.p99, s.max), (12.0, 24.0));
        let g = m.totals.generator_lag_ms.expect("generator lag kept");
        assert_eq!((g.p99, g.max), (0.5, 1.0));
        b.totals.schedule_lag_ms = None;
        a.totals.schedule_lag_ms = None;
        a.totals.generator_lag_ms = None;
        let m = merge(&[a, b]).expect("merges");
        assert!(m.totals.schedule_lag_ms.is_none() && m.totals.generator_lag_ms.is_none());
    }

    #[test]
    fn different_scenarios_and_forged_histograms_are_refused() {
        let a = fixture::sample();
        let mut b = fixture::sample();
        b.scenario = "other".into();
        let err = merge(&[a.clone(), b]).expect_err("different scenarios");
        assert_eq!(err.exit_code().code(), 2);
        assert!(err.to_string().contains("different scenarios"), "{err}");
        // The fixture has requests but no histograms.
        let err = merge(&[a.clone(), a.clone()]).expect_err("no histogram");
        assert!(err.to_string().contains("no histogram"), "{err}");
        let mut forged = with_histogram(fixture::sample(), &[1, 2, 3]);
        forged.endpoints[0].histogram = "SElTVEZBQUFBQUFB".into();
        let err = merge(&[forged.clone(), forged]).expect_err("forged");
        assert_eq!(err.exit_code().code(), 2, "{err}");
    }
}
