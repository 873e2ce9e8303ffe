//! The final report's schema (`report.json`, `squall.report/v1`): what a run's results are, for whoever writes or reads them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// Set when a threshold marked `abort` failed while the run went on and stopped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<Aborted>,
    pub passed: bool,
}

/// The live judgement that stopped a run: which `abort` threshold failed, when, and on what value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aborted {
    /// Seconds since the start when the breach was seen.
    pub t: u64,
    /// The threshold as written (its `expr`).
    pub threshold: String,
    /// Its value on the whole run's numbers up to then, in the metric's unit.
    pub actual: f64,
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
    /// Logical cores of the worker's machine: what its CPU percentages are out of.
    #[serde(default)]
    pub cores: u32,
    /// Mean CPU use of the worker's whole machine over the run, percent (0–100); 0 until measured.
    /// Above ~90 % the generator, not the target, may have been the bottleneck.
    #[serde(default)]
    pub cpu_percent_mean: f64,
    /// Highest CPU use seen in one sample, percent of the whole machine (0–100).
    #[serde(default)]
    pub cpu_percent_max: f64,
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

/// The report's one definition of `error_rate` (failures over requests, 0 when
/// nothing was sent), shared by whatever computes or checks it.
pub fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}
