//! The final report (`report.json`, schema `squall.report/v1`) and how it is built from merged stats.

use std::collections::BTreeMap;

use base64::Engine as _;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::snapshot::{EndpointStats, HistogramError, encode_v2_deflate};

pub const SCHEMA: &str = "squall.report/v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub run_id: String,
    pub scenario: String,
    pub target: String,
    pub load_model: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub duration_s: f64,
    /// True when the run was cut short (signal, all workers lost).
    #[serde(default)]
    pub partial: bool,
    pub workers: Vec<WorkerReport>,
    pub totals: Totals,
    pub endpoints: Vec<EndpointReport>,
    pub timeline: Vec<TimelinePoint>,
    pub thresholds: Vec<ThresholdResult>,
    /// Set when a `stop_when` condition ended the run: where the target broke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broke_at: Option<BreakPoint>,
    pub passed: bool,
}

/// The moment a stress run's stop condition was met.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BreakPoint {
    /// Seconds since the start.
    pub t: u64,
    pub users: u64,
    pub rps: f64,
    pub condition: String,
    pub actual: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerReport {
    pub id: String,
    pub requests: u64,
    pub peak_users: u64,
    pub lost: bool,
    /// Users per class this worker was given, in the scenario's class order.
    #[serde(default)]
    pub users_per_class: Vec<u64>,
    /// The last state seen: ready, spawning, running, stopping, stopped, failed or lost.
    #[serde(default)]
    pub state: String,
    /// Every state change, in order.
    #[serde(default)]
    pub states: Vec<StateChange>,
}

/// A worker's state change during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateChange {
    /// Seconds since the run started.
    pub t: f64,
    pub state: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyMs {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl LatencyMs {
    /// Summarises a µs histogram in milliseconds; all zeros when empty.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
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
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Totals {
    pub requests: u64,
    pub failures: u64,
    /// Failures / requests, as a fraction (0.01 = 1%).
    pub error_rate: f64,
    pub rps: f64,
    pub latency_ms: LatencyMs,
    pub service_ms: LatencyMs,
    pub ttfb_ms: LatencyMs,
    pub bytes_received: u64,
    /// Open model: iterations skipped because the user pool was exhausted.
    #[serde(default)]
    pub dropped_iterations: u64,
    /// Open model and pacing: how late requests started against their schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_lag_ms: Option<LatencyMs>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointReport {
    pub name: String,
    pub method: String,
    pub requests: u64,
    pub failures: u64,
    pub error_rate: f64,
    pub rps: f64,
    pub latency_ms: LatencyMs,
    pub service_ms: LatencyMs,
    pub ttfb_ms: LatencyMs,
    pub bytes_received: u64,
    pub status: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    /// Latency histogram, HDR V2 + deflate, base64.
    pub histogram: String,
}

impl Totals {
    pub fn from_stats(s: &EndpointStats, duration_s: f64) -> Self {
        Totals {
            requests: s.requests,
            failures: s.failures,
            error_rate: ratio(s.failures, s.requests),
            rps: per_second(s.requests, duration_s),
            latency_ms: LatencyMs::from_histogram(&s.latency),
            service_ms: LatencyMs::from_histogram(&s.service),
            ttfb_ms: LatencyMs::from_histogram(&s.ttfb),
            bytes_received: s.bytes_received,
            dropped_iterations: 0,
            schedule_lag_ms: None,
        }
    }
}

impl EndpointReport {
    pub fn from_stats(
        name: &str,
        method: &str,
        s: &EndpointStats,
        duration_s: f64,
    ) -> Result<Self, HistogramError> {
        let totals = Totals::from_stats(s, duration_s);
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
            histogram: base64::engine::general_purpose::STANDARD
                .encode(encode_v2_deflate(&s.latency)?),
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the run started (the interval [t, t+1)).
    pub t: u64,
    pub users: u64,
    pub requests: u64,
    pub failures: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// What the plan asked for at the end of this second: users (closed models)…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_users: Option<u64>,
    /// …or iterations started during it (open models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_rps: Option<f64>,
    #[serde(default)]
    pub dropped_iterations: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThresholdResult {
    pub expr: String,
    pub passed: bool,
    pub actual: f64,
}

pub fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

pub fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        0.0
    } else {
        (count as f64 / seconds * 100.0).round() / 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{new_histogram, record_micros};

    #[test]
    fn latency_summary_in_ms() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            record_micros(&mut h, v * 1000);
        }
        let l = LatencyMs::from_histogram(&h);
        assert_eq!(l.min, 1.0);
        assert!((l.p50 - 500.0).abs() <= 0.5, "{l:?}");
        assert!((l.p99 - 990.0).abs() <= 1.0, "{l:?}");
        assert!((l.max - 1000.0).abs() <= 1.0, "{l:?}");
        assert_eq!(
            LatencyMs::from_histogram(&new_histogram()),
            LatencyMs::default()
        );
    }

    #[test]
    fn endpoint_histogram_round_trips() {
        let mut s = EndpointStats::new();
        s.requests = 3;
        for v in [100, 200, 300] {
            record_micros(&mut s.latency, v);
        }
        let r = EndpointReport::from_stats("x", "GET", &s, 1.0).expect("encodes");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&r.histogram)
            .expect("base64");
        let h = crate::snapshot::decode(&bytes).expect("decodes");
        assert_eq!(h.len(), 3);
        assert_eq!(r.rps, 3.0);
    }
}
