//! Merges workers' interval snapshots into run totals, per-endpoint stats, a per-second timeline and the final report.
//!
//! Snapshots are de-duplicated by (worker, run, seq), so a resend after a
//! reconnect never counts a request twice.

use std::collections::{BTreeMap, BTreeSet};

use squall_common::report::{
    self, BreakPoint, EndpointReport, LatencyMs, Report, StateChange, ThresholdResult,
    TimelinePoint, Totals, WorkerReport,
};
use squall_common::snapshot::{EndpointSum, HdrSum, HistogramError};
use squall_common::{EndpointKey, EndpointStats, RunSpec, Snapshot};

#[derive(Debug, Default)]
struct Interval {
    users: BTreeMap<String, u64>,
    requests: u64,
    failures: u64,
    latency: Option<HdrSum>,
    window_us: u64,
    dropped: u64,
    events: Vec<String>,
}

#[derive(Debug, Default)]
struct WorkerAgg {
    requests: u64,
    peak_users: u64,
    lost: bool,
    seen: BTreeSet<u64>,
    /// Every seq below this has been received.
    contiguous: u64,
    /// Total snapshots the worker says it sent, once it has stopped.
    expected: Option<u64>,
    users_per_class: Vec<u64>,
    states: Vec<StateChange>,
}

/// What `add` did with a snapshot.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    /// New data; acknowledge every seq below this.
    Ack(u64),
    /// Seen before (a resend): ignored.
    Duplicate,
    /// For another run or from a worker not in this run: ignored.
    Foreign,
}

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
}

pub struct Aggregator {
    run_id: String,
    order: Vec<EndpointKey>,
    endpoints: BTreeMap<EndpointKey, EndpointSum>,
    intervals: BTreeMap<u64, Interval>,
    workers: BTreeMap<String, WorkerAgg>,
    max_window_end_us: u64,
    schedule_lag: HdrSum,
    total_requests: u64,
    total_failures: u64,
}

impl Aggregator {
    pub fn new(run_id: &str, spec: &RunSpec, workers: &[(String, Vec<u64>)]) -> Self {
        Aggregator {
            run_id: run_id.to_owned(),
            order: spec
                .endpoints()
                .into_iter()
                .map(|(name, method)| EndpointKey { name, method })
                .collect(),
            endpoints: BTreeMap::new(),
            intervals: BTreeMap::new(),
            workers: workers
                .iter()
                .map(|(id, users)| {
                    (
                        id.clone(),
                        WorkerAgg {
                            users_per_class: users.clone(),
                            ..WorkerAgg::default()
                        },
                    )
                })
                .collect(),
            max_window_end_us: 0,
            schedule_lag: HdrSum::default(),
            total_requests: 0,
            total_failures: 0,
        }
    }

    pub fn add(&mut self, worker: &str, snap: &Snapshot) -> Result<Added, HistogramError> {
        if snap.run_id != self.run_id {
            return Ok(Added::Foreign);
        }
        let Some(w) = self.workers.get_mut(worker) else {
            return Ok(Added::Foreign);
        };
        if snap.seq < w.contiguous || !w.seen.insert(snap.seq) {
            return Ok(Added::Duplicate);
        }
        while w.seen.remove(&w.contiguous) {
            w.contiguous += 1;
        }
        let requests = snap.requests();
        w.requests += requests;
        w.peak_users = w.peak_users.max(snap.active_users);
        let ack = w.contiguous;
        self.max_window_end_us = self.max_window_end_us.max(snap.window_end_us);

        let interval = self.intervals.entry(snap.seq).or_default();
        interval.users.insert(worker.to_owned(), snap.active_users);
        interval.dropped += snap.dropped_iterations;
        self.schedule_lag.add_v2(&snap.schedule_lag)?;
        interval.window_us = interval
            .window_us
            .max(snap.window_end_us.saturating_sub(snap.window_start_us));
        let latency = interval.latency.get_or_insert_with(HdrSum::default);
        for (key, delta) in &snap.endpoints {
            interval.requests += delta.requests;
            interval.failures += delta.failures;
            self.total_requests += delta.requests;
            self.total_failures += delta.failures;
            latency.add_v2(&delta.latency)?;
            self.endpoints.entry(key.clone()).or_default().add(delta)?;
        }
        Ok(Added::Ack(ack))
    }

    /// A worker joining mid-run: its snapshots start at `first_seq`.
    pub fn add_member(&mut self, worker: &str, users_per_class: Vec<u64>, first_seq: u64) {
        self.workers.entry(worker.to_owned()).or_insert(WorkerAgg {
            users_per_class,
            contiguous: first_seq,
            ..WorkerAgg::default()
        });
    }

    /// The worker has stopped; its snapshots end before sequence number `end`.
    pub fn expect(&mut self, worker: &str, end: u64) {
        if let Some(w) = self.workers.get_mut(worker) {
            w.expected = Some(end);
        }
    }

    pub fn mark_lost(&mut self, worker: &str, t: f64) {
        self.set_state(worker, "lost", t);
        if let Some(w) = self.workers.get_mut(worker) {
            w.lost = true;
        }
    }

    /// Records a worker's state when it changes (from Status and Heartbeat messages).
    pub fn set_state(&mut self, worker: &str, state: &str, t: f64) {
        if let Some(w) = self.workers.get_mut(worker)
            && !w.lost
            && w.states.last().is_none_or(|s| s.state != state)
        {
            w.states.push(StateChange {
                t: (t * 1000.0).round() / 1000.0,
                state: state.to_owned(),
            });
        }
    }

    /// Workers per current state, e.g. `2 running, 1 lost`.
    pub fn states_summary(&self) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for w in self.workers.values() {
            let s = w.states.last().map_or("ready", |s| s.state.as_str());
            *counts.entry(s).or_default() += 1;
        }
        counts
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn is_member(&self, worker: &str) -> bool {
        self.workers.contains_key(worker)
    }

    /// Every worker has either delivered all its snapshots or been lost.
    pub fn complete(&self) -> bool {
        self.workers
            .values()
            .all(|w| w.lost || w.expected.is_some_and(|n| w.contiguous >= n))
    }

    pub fn all_lost(&self) -> bool {
        !self.workers.is_empty() && self.workers.values().all(|w| w.lost)
    }

    pub fn missing(&self) -> Vec<String> {
        self.workers
            .iter()
            .filter(|(_, w)| !(w.lost || w.expected.is_some_and(|n| w.contiguous >= n)))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Adds a timeline event (worker lost, stop requested) at second `t`.
    pub fn event(&mut self, t: u64, text: String) {
        self.intervals.entry(t).or_default().events.push(text);
    }

    /// The most recent second every live worker has reported, for the live view.
    pub fn live(&self) -> Option<LiveLine> {
        let live_workers = self.workers.values().filter(|w| !w.lost).count();
        let complete = |iv: &Interval| iv.users.len() >= live_workers && iv.latency.is_some();
        let (t, iv) = self
            .intervals
            .iter()
            .rev()
            .find(|(_, iv)| complete(iv))
            .or_else(|| {
                self.intervals
                    .iter()
                    .rev()
                    .find(|(_, iv)| iv.latency.is_some())
            })?;
        let latency = iv
            .latency
            .as_ref()
            .map(|h| LatencyMs::from_histogram(&h.to_histogram()))
            .unwrap_or_default();
        Some(LiveLine {
            t: *t,
            users: iv.users.values().sum(),
            rps: rate(iv.requests, iv.window_us),
            p50_ms: latency.p50,
            p95_ms: latency.p95,
            p99_ms: latency.p99,
            total_requests: self.total_requests,
            total_failures: self.total_failures,
            complete: complete(iv),
            requests: iv.requests,
            failures: iv.failures,
            latency,
        })
    }

    /// Builds the final report; thresholds decide `passed`.
    pub fn report(&self, meta: ReportMeta) -> Result<Report, HistogramError> {
        let duration_s = self.max_window_end_us as f64 / 1e6;
        let mut all = EndpointStats::new();
        let mut keys: Vec<&EndpointKey> = self
            .order
            .iter()
            .filter(|k| self.endpoints.contains_key(*k))
            .collect();
        keys.extend(self.endpoints.keys().filter(|k| !self.order.contains(k)));
        let mut endpoints = Vec::new();
        for key in keys {
            if let Some(sum) = self.endpoints.get(key) {
                let s = sum.to_stats();
                all.merge(&s)?;
                endpoints.push(EndpointReport::from_stats(
                    &key.name,
                    &key.method,
                    &s,
                    duration_s,
                )?);
            }
        }
        let last = self.intervals.keys().next_back().copied();
        let mut timeline = Vec::new();
        if let Some(last) = last {
            for t in 0..=last {
                let point = match self.intervals.get(&t) {
                    None => TimelinePoint {
                        t,
                        ..TimelinePoint::default()
                    },
                    Some(iv) => {
                        let l = iv
                            .latency
                            .as_ref()
                            .map(|h| LatencyMs::from_histogram(&h.to_histogram()))
                            .unwrap_or_default();
                        TimelinePoint {
                            t,
                            dropped_iterations: iv.dropped,
                            users: iv.users.values().sum(),
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
        let workers = self
            .workers
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
            })
            .collect();
        let mut report = Report {
            schema: report::SCHEMA.to_owned(),
            run_id: self.run_id.clone(),
            scenario: meta.spec.scenario.clone(),
            target: meta.spec.host.clone(),
            load_model: meta.spec.load.name().to_owned(),
            started_at: meta.started_at,
            duration_s: (duration_s * 1000.0).round() / 1000.0,
            partial: meta.partial,
            workers,
            totals: Totals::from_stats(&all, duration_s),
            endpoints,
            timeline,
            thresholds: Vec::new(),
            broke_at: meta.broke_at,
            passed: true,
        };
        report.totals.dropped_iterations = self.intervals.values().map(|iv| iv.dropped).sum();
        report.totals.schedule_lag_ms = (!self.schedule_lag.is_empty())
            .then(|| LatencyMs::from_histogram(&self.schedule_lag.to_histogram()));
        let results: Vec<ThresholdResult> = meta
            .spec
            .thresholds
            .iter()
            .map(|t| t.evaluate(&report))
            .collect();
        report.passed = results.iter().all(|r| r.passed);
        report.thresholds = results;
        Ok(report)
    }
}

/// Run facts the aggregator does not see in snapshots.
pub struct ReportMeta<'a> {
    pub spec: &'a RunSpec,
    pub started_at: String,
    pub partial: bool,
    pub broke_at: Option<BreakPoint>,
}

fn rate(count: u64, window_us: u64) -> f64 {
    let secs = if window_us == 0 {
        1.0
    } else {
        window_us as f64 / 1e6
    };
    report::per_second(count, secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_common::scenario::Loaded;
    use squall_common::snapshot::record_micros;

    fn spec() -> RunSpec {
        let text = "host: http://127.0.0.1:1\nscenarios:\n  s: { users: 2, duration: 2s, thresholds: [\"requests >= 3\"] }\nuser_classes:\n  u: { tasks: [ { name: a, get: /a } ] }\n";
        Loaded::from_str("t.yaml", text)
            .and_then(|l| l.resolve("s", &Default::default(), false))
            .expect("valid")
    }

    fn snap(seq: u64, requests: u64) -> Snapshot {
        let mut s = EndpointStats::new();
        s.requests = requests;
        for i in 0..requests {
            record_micros(&mut s.latency, 1000 + i);
        }
        Snapshot {
            run_id: "r".into(),
            seq,
            window_start_us: seq * 1_000_000,
            window_end_us: (seq + 1) * 1_000_000,
            active_users: 1,
            dropped_iterations: 0,
            schedule_lag: Vec::new(),
            endpoints: vec![(
                EndpointKey {
                    name: "a".into(),
                    method: "GET".into(),
                },
                squall_common::snapshot::EndpointDelta::encode(&s).expect("encodes"),
            )],
        }
    }

    #[test]
    fn dedups_and_acks_contiguously() {
        let spec = spec();
        let mut agg = Aggregator::new(
            "r",
            &spec,
            &[("w1".into(), vec![1]), ("w2".into(), vec![1])],
        );
        assert_eq!(agg.add("w1", &snap(1, 2)).ok(), Some(Added::Ack(0)));
        assert_eq!(agg.add("w1", &snap(0, 1)).ok(), Some(Added::Ack(2)));
        assert_eq!(agg.add("w1", &snap(0, 1)).ok(), Some(Added::Duplicate));
        assert_eq!(agg.add("w9", &snap(0, 1)).ok(), Some(Added::Foreign));
        assert!(!agg.complete());
        agg.expect("w1", 2);
        agg.mark_lost("w2", 1.0);
        assert!(agg.complete());
        let r = agg
            .report(ReportMeta {
                spec: &spec,
                started_at: "now".into(),
                partial: false,
                broke_at: None,
            })
            .expect("report");
        assert_eq!(r.totals.requests, 3);
        assert_eq!(r.endpoints[0].requests, 3);
        assert_eq!(r.timeline.len(), 2);
        assert_eq!(r.timeline[1].requests, 2);
        assert!(r.workers.iter().any(|w| w.id == "w2" && w.lost));
        assert!(r.passed, "{:?}", r.thresholds);
        assert_eq!(r.duration_s, 2.0);
    }
}
