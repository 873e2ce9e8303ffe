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
    /// Set when the run was compared with a baseline (`--baseline`, `coordinator compare`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
    /// One number for dashboards; absent in reports written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<Score>,
    /// What a performance engineer would point out, with the figures behind each.
    #[serde(default)]
    pub recommendations: Vec<Recommendation>,
    /// Set when a threshold marked `abort` failed while the run went on and stopped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<Aborted>,
    /// `setup:` and `teardown:` as they ran, each with its own request rows;
    /// none of their requests are in `totals`, `endpoints`, `timeline` or thresholds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseReport>,
    /// No critical threshold failed and the comparison (if any) found no regression.
    pub passed: bool,
}

/// One run of `setup:` or `teardown:`: sent once by the coordinator, outside the load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseReport {
    /// `setup` or `teardown`.
    pub phase: String,
    pub passed: bool,
    /// Why it failed: the first failing step, its error kinds and statuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: f64,
    /// The names of the variables setup handed to every user; their values
    /// are not written, since they may be credentials.
    #[serde(default)]
    pub captured: Vec<String>,
    /// One row per step endpoint, then the phase's own row (method `FLOW`).
    pub endpoints: Vec<EndpointReport>,
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
    /// Open model: how late the generator itself took each arrival in hand
    /// (handed it to a free user, or queued it for the next one). The rest of
    /// `schedule_lag_ms` is the wait for a free user: the target's latency
    /// at the pool's size, not the generator falling behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator_lag_ms: Option<LatencyMs>,
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
    /// Failed checks by name (`status 200`, `$.ok == true`): each failed
    /// response once, under the first check it failed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, u64>,
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
    /// WebSocket and SSE connections open at the end of the second, over
    /// all workers; absent when the run has no such step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_connections: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThresholdResult {
    pub expr: String,
    pub passed: bool,
    pub actual: f64,
    /// `critical` (a failure fails the run) or `warning` (`, warn`: reported, never fails it).
    #[serde(default = "critical")]
    pub level: String,
    /// The limit, in the same unit as `actual`.
    #[serde(default)]
    pub target: f64,
    /// `(actual - target) / target`, signed; absent when the target is 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deviation: Option<f64>,
}

pub const LEVEL_CRITICAL: &str = "critical";
pub const LEVEL_WARNING: &str = "warning";

fn critical() -> String {
    LEVEL_CRITICAL.to_owned()
}

impl ThresholdResult {
    /// Whether this result fails the run (a crossed warning does not).
    pub fn fails_run(&self) -> bool {
        !self.passed && self.level != LEVEL_WARNING
    }
}

/// A run compared with a baseline run, per endpoint and for the totals.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub baseline: BaselineRef,
    /// The rules the verdicts below were reached with.
    pub rules: RegressionRules,
    /// The totals of both runs.
    pub total: Vec<MetricChange>,
    /// Endpoints present in both runs, in the new run's order.
    pub endpoints: Vec<EndpointComparison>,
    /// Endpoints (`METHOD name`) only the baseline has: listed, not compared.
    pub only_in_baseline: Vec<String>,
    /// Endpoints only the new run has: listed, not compared.
    pub only_in_new: Vec<String>,
    /// How many metric rows (totals and endpoints) regressed.
    pub regressions: u64,
    pub regressed: bool,
}

/// Which report a run was compared with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaselineRef {
    /// The name or path it was given as.
    pub source: String,
    pub run_id: String,
    pub scenario: String,
    pub started_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointComparison {
    pub name: String,
    pub method: String,
    pub metrics: Vec<MetricChange>,
}

/// One metric of one endpoint (or the totals) in both runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricChange {
    /// `p50`, `p95`, `p99`, `mean` (ms), `rps` (req/s) or `error_rate` (fraction).
    pub metric: String,
    pub base: f64,
    pub new: f64,
    /// Latencies and `rps`: `(new - base) / base`; `error_rate`: `new - base` (points as a fraction).
    pub change: f64,
    /// `regression`, `improvement`, `ok` or `noise` (below the noise floor: not judged).
    pub verdict: String,
}

/// When a change counts as a regression; each limit is how much worse a metric may get.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionRules {
    /// Relative increase allowed, per latency metric (0.2 = +20 %).
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub mean: f64,
    /// Relative decrease of requests per second allowed (0.2 = -20 %).
    pub rps: f64,
    /// Increase of the error rate allowed, in points as a fraction (0.01 = +1 point).
    pub error_rate: f64,
    /// Latencies below this in both runs are noise (ms).
    pub floor_ms: f64,
    /// An endpoint (or total) with fewer requests than this in either run is not judged.
    pub min_requests: u64,
}

impl Default for RegressionRules {
    fn default() -> Self {
        RegressionRules {
            p50: 0.2,
            p95: 0.2,
            p99: 0.2,
            mean: 0.2,
            rps: 0.2,
            error_rate: 0.01,
            floor_ms: 1.0,
            min_requests: 100,
        }
    }
}

/// The run's score out of 100 and the parts it is the sum of (formula in docs/report.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub value: u32,
    /// Out of 40: critical thresholds met (a crossed warning costs half as much).
    pub thresholds: f64,
    /// Out of 30: the error rate (0 % gives 30, 5 % or more gives 0).
    pub errors: f64,
    /// Out of 20: regressions against the baseline (20 without a comparison).
    pub regressions: f64,
    /// Out of 10: the total p95 latency (1 s or less gives 10, 5 s or more gives 0).
    pub latency: f64,
}

/// One recommendation: what was seen, what to do, and the figures that triggered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// A stable identifier: `slow_p95`, `high_errors`, `below_target_rps`,
    /// `latency_rises_with_users`, `throughput_knee`, `generator_saturated`.
    pub kind: String,
    pub message: String,
    /// The figures behind it, by name (ms, fractions, req/s, users, percent).
    pub figures: BTreeMap<String, f64>,
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
