//! The live view of a run: the latest second's figures (`LiveLine`, printed every second and checked by
//! `stop_when`) and the whole live state (`LiveView`, published every second for the dashboard, the REST
//! API, `/metrics` and the terminal view).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use squall_common::RunSpec;
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
    /// WebSocket and SSE connections open at the second's end (None: the run has no such step).
    pub open_connections: Option<u64>,
}

/// The most recent second every live worker has reported, for the live view.
pub fn latest(agg: &Aggregator) -> Option<LiveLine> {
    let (t, iv, complete) = agg.latest_second()?;
    let latency = iv.latency_ms();
    let (total_requests, total_failures) = agg.totals();
    Some(LiveLine {
        t,
        users: iv.users(),
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
        open_connections: iv.open_connections,
    })
}

/// Where a run is in its life, as the live view shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Started, but no worker has reported a second yet.
    #[default]
    Starting,
    Running,
    /// Stop was sent (plan over, stop condition, interrupt or a stop request): collecting the last snapshots.
    Stopping,
    /// The report is built; the figures are final.
    Done,
}

/// The whole live state of a run, rebuilt from the aggregator every second and
/// shared (as JSON) with whoever watches: the terminal view, the dashboard over
/// SSE, the REST status and `/metrics`. The per-second figures are those of the
/// latest second (see [`LiveLine`]); the endpoint table is cumulative since the
/// start, because the aggregator merges endpoints over the whole run.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct LiveView {
    pub run_id: String,
    pub scenario: String,
    pub phase: Phase,
    /// Seconds since the run started, by the coordinator's clock.
    pub elapsed_s: f64,
    /// The plan's duration in seconds.
    pub planned_s: f64,
    /// The second the per-second figures are for (`None` before the first report).
    pub t: Option<u64>,
    /// Whether every live worker has reported that second.
    pub complete: bool,
    /// Users the plan wants now (closed and staged models; the pool size for open models).
    pub users_planned: u64,
    /// Arrivals per second the plan wants now (open models only).
    pub rate_planned: Option<f64>,
    /// Active users the workers reported for that second.
    pub users: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub errors_per_s: f64,
    /// Since the start of the run.
    pub total_requests: u64,
    pub total_failures: u64,
    pub error_rate: f64,
    pub endpoints: Vec<LiveEndpoint>,
    pub workers: Vec<LiveWorker>,
    /// Active users per user class: the latest second's users split over the
    /// classes by weight, exactly as the plan splits them (largest remainder).
    pub classes: Vec<LiveClass>,
}

/// Active users of one user class.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct LiveClass {
    pub name: String,
    pub users: u64,
}

/// One endpoint's figures since the start of the run.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct LiveEndpoint {
    pub name: String,
    pub method: String,
    pub requests: u64,
    pub failures: u64,
    /// Requests per second averaged over the run so far.
    pub rps: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Responses by status code.
    pub status: BTreeMap<u16, u64>,
    /// Failures by kind (`connect`, `timeout`, `status`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Requests per latency bucket of [`DURATION_BUCKETS_S`] (the last one is
    /// everything above), counted from the merged HDR histogram: `/metrics`
    /// exports them as `squall_request_duration_seconds`.
    #[serde(skip)]
    pub duration_buckets: Vec<u64>,
    /// The sum of all latencies in seconds, for the same histogram.
    #[serde(skip)]
    pub duration_sum_s: f64,
}

/// Upper bounds (seconds) of the latency buckets `/metrics` exports; HDR
/// histograms keep far finer buckets, these are what dashboards need.
pub const DURATION_BUCKETS_S: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Counts per bucket of [`DURATION_BUCKETS_S`] plus one for the rest, and the
/// sum in seconds. A value counts in a bucket when its HDR bucket's highest
/// equivalent value is within the bound.
fn duration_buckets(h: &hdrhistogram::Histogram<u64>) -> (Vec<u64>, f64) {
    let mut counts = vec![0u64; DURATION_BUCKETS_S.len() + 1];
    let mut sum_us = 0.0;
    for v in h.iter_recorded() {
        let us = v.value_iterated_to();
        let n = v.count_at_value();
        sum_us += h.median_equivalent(us) as f64 * n as f64;
        let secs = us as f64 / 1e6;
        let i = DURATION_BUCKETS_S
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(DURATION_BUCKETS_S.len());
        counts[i] = counts[i].saturating_add(n);
    }
    (counts, sum_us / 1e6)
}

/// One member of the run.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct LiveWorker {
    pub id: String,
    /// The latest state it reported (`ready`, `spawning`, `running`, `stopping`, `stopped`, `failed`, `lost`).
    pub state: String,
    /// Active users in its latest heartbeat or snapshot.
    pub users: u64,
    /// CPU use in its latest heartbeat (workers report 0 until they measure it).
    pub cpu_percent: f32,
    pub lost: bool,
}

/// Where the controller publishes the live view: every second, and once more
/// when the run is done. `None` until the first publication.
pub type LiveSender = tokio::sync::watch::Sender<Option<std::sync::Arc<LiveView>>>;

/// What the workers' heartbeats said last, which the aggregator does not keep.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeartbeatFigures {
    pub active_users: u64,
    pub cpu_percent: f32,
}

/// Facts about the run the aggregator does not know.
#[derive(Debug, Clone, Copy)]
pub struct ViewMeta<'a> {
    pub spec: &'a RunSpec,
    pub phase: Phase,
    pub elapsed: Duration,
    pub heartbeats: &'a BTreeMap<String, HeartbeatFigures>,
}

/// The run's live state now.
pub fn view(agg: &Aggregator, meta: ViewMeta<'_>) -> LiveView {
    let line = latest(agg);
    let elapsed_s = meta.elapsed.as_secs_f64();
    let load = &meta.spec.load;
    let run_s = agg.duration_us() as f64 / 1e6;
    let endpoints = agg
        .endpoints()
        .map(|(key, sum)| {
            let h = sum.latency.to_histogram();
            let l = if h.is_empty() {
                LatencyMs::default()
            } else {
                latency_ms(&h)
            };
            let (duration_buckets, duration_sum_s) = duration_buckets(&h);
            LiveEndpoint {
                name: key.name.clone(),
                method: key.method.clone(),
                requests: sum.requests,
                failures: sum.failures,
                rps: rate(sum.requests, (run_s * 1e6) as u64),
                p50_ms: l.p50,
                p95_ms: l.p95,
                p99_ms: l.p99,
                status: sum.status.clone(),
                errors: sum.errors.clone(),
                duration_buckets,
                duration_sum_s,
            }
        })
        .collect();
    let latest = line.as_ref().and_then(|l| agg.intervals().get(&l.t));
    let workers = agg
        .workers()
        .iter()
        .map(|(id, w)| {
            let hb = meta.heartbeats.get(id).copied().unwrap_or_default();
            let users = if w.lost {
                0
            } else {
                hb.active_users
                    .max(latest.and_then(|iv| iv.users_of(id)).unwrap_or(0))
            };
            LiveWorker {
                id: id.clone(),
                state: w
                    .states
                    .last()
                    .map_or_else(|| "ready".to_owned(), |s| s.state.clone()),
                users,
                cpu_percent: hb.cpu_percent,
                lost: w.lost,
            }
        })
        .collect();
    let (total_requests, total_failures) = agg.totals();
    let l = line.unwrap_or_default();
    let window = agg
        .intervals()
        .get(&l.t)
        .map_or(1_000_000, |iv| iv.window_us);
    LiveView {
        run_id: agg.run_id().to_owned(),
        scenario: meta.spec.scenario.clone(),
        phase: meta.phase,
        elapsed_s: (elapsed_s * 1000.0).round() / 1000.0,
        planned_s: load.duration().as_secs_f64(),
        t: agg.latest_second().map(|(t, _, _)| t),
        complete: l.complete,
        users_planned: load.users_at(elapsed_s).or(load.max_users()).unwrap_or(0),
        rate_planned: load.rate_at(elapsed_s),
        users: l.users,
        rps: l.rps,
        p50_ms: l.p50_ms,
        p95_ms: l.p95_ms,
        p99_ms: l.p99_ms,
        errors_per_s: rate(l.failures, window),
        total_requests,
        total_failures,
        error_rate: squall_common::report::ratio(total_failures, total_requests),
        endpoints,
        workers,
        classes: classes(meta.spec, l.users),
    }
}

/// `users` split over the spec's classes by weight, as the plan does.
fn classes(spec: &RunSpec, users: u64) -> Vec<LiveClass> {
    let split = squall_common::partition::split(users, &spec.class_weights(), 1, 0.0);
    let per_class = split
        .first()
        .map(|s| s.users_per_class.clone())
        .unwrap_or_default();
    spec.classes
        .iter()
        .zip(per_class.into_iter().chain(std::iter::repeat(0)))
        .map(|(c, users)| LiveClass {
            name: c.name.clone(),
            users,
        })
        .collect()
}

/// One line: elapsed, users, rps, p50/p95/p99 and errors of the latest complete second.
pub fn line(elapsed: Duration, planned: Duration, l: &LiveLine) -> String {
    let err_pct = if l.total_requests == 0 {
        0.0
    } else {
        l.total_failures as f64 * 100.0 / l.total_requests as f64
    };
    let mut s = format!(
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
    );
    if let Some(open) = l.open_connections {
        s.push_str(&format!("  open {open}"));
    }
    s
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
        assert!(!s.contains("open"), "{s}");
        let ws = LiveLine {
            open_connections: Some(5000),
            ..l
        };
        let s = line(Duration::from_secs(12), Duration::from_secs(20), &ws);
        assert!(s.ends_with("  open 5000"), "{s}");
    }
}
