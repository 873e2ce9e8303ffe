//! Merges workers' interval snapshots into run totals, per-endpoint stats and per-second figures, which the report is built from.
//!
//! Snapshots are de-duplicated by (worker, run, seq), so a resend after a
//! reconnect never counts a request twice.

use std::collections::{BTreeMap, BTreeSet};

use squall_common::report::StateChange;
use squall_common::snapshot::{EndpointSum, HdrSum, HistogramError};
use squall_common::{EndpointKey, RunSpec, Snapshot};

/// One second of the run (`t = seq`), summed over the workers that reported it.
#[derive(Debug, Default)]
pub struct Interval {
    /// Active users per worker that reported this second.
    pub users: BTreeMap<String, u64>,
    pub requests: u64,
    pub failures: u64,
    /// `None` until a worker has reported the second (an event alone does not count).
    pub latency: Option<HdrSum>,
    /// The longest window any worker measured for this second, to turn counts into rates.
    pub window_us: u64,
    pub dropped: u64,
    pub events: Vec<String>,
}

/// One member of the run, as far as its snapshots and states tell.
#[derive(Debug, Default)]
pub struct WorkerAgg {
    pub requests: u64,
    pub peak_users: u64,
    pub lost: bool,
    seen: BTreeSet<u64>,
    /// Every seq below this has been received.
    contiguous: u64,
    /// Total snapshots the worker says it sent, once it has stopped.
    expected: Option<u64>,
    pub users_per_class: Vec<u64>,
    pub states: Vec<StateChange>,
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

    /// The most recent second every live worker has reported (`true`), or
    /// failing that the most recent one with any data (`false`).
    pub fn latest_second(&self) -> Option<(u64, &Interval, bool)> {
        let live_workers = self.workers.values().filter(|w| !w.lost).count();
        let complete = |iv: &Interval| iv.users.len() >= live_workers && iv.latency.is_some();
        self.intervals
            .iter()
            .rev()
            .find(|(_, iv)| complete(iv))
            .or_else(|| {
                self.intervals
                    .iter()
                    .rev()
                    .find(|(_, iv)| iv.latency.is_some())
            })
            .map(|(t, iv)| (*t, iv, complete(iv)))
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// How long the run went on, by the latest window end any worker reported.
    pub fn duration_us(&self) -> u64 {
        self.max_window_end_us
    }

    /// Requests and failures so far, over every worker and endpoint.
    pub fn totals(&self) -> (u64, u64) {
        (self.total_requests, self.total_failures)
    }

    /// Every endpoint that saw traffic: the scenario's in its order, then any
    /// others (a worker's endpoint the scenario does not name) in key order.
    pub fn endpoints(&self) -> impl Iterator<Item = (&EndpointKey, &EndpointSum)> {
        let known = self
            .order
            .iter()
            .filter_map(|k| self.endpoints.get_key_value(k));
        let others = self
            .endpoints
            .iter()
            .filter(|(k, _)| !self.order.contains(k));
        known.chain(others)
    }

    /// The per-second figures by second; seconds nobody reported are absent.
    pub fn intervals(&self) -> &BTreeMap<u64, Interval> {
        &self.intervals
    }

    /// The run's members by id.
    pub fn workers(&self) -> &BTreeMap<String, WorkerAgg> {
        &self.workers
    }

    /// How late requests started against their schedule, over the whole run.
    pub fn schedule_lag(&self) -> &HdrSum {
        &self.schedule_lag
    }
}

/// One second of a run with `requests` to endpoint `GET a`, for unit tests here and in the controller.
#[cfg(test)]
pub(crate) fn one_endpoint_second(run_id: &str, seq: u64, users: u64, requests: u64) -> Snapshot {
    let mut s = squall_common::EndpointStats::new();
    s.requests = requests;
    for i in 0..requests {
        squall_common::snapshot::record_micros(&mut s.latency, 1000 + i);
    }
    Snapshot {
        run_id: run_id.into(),
        seq,
        window_start_us: seq * 1_000_000,
        window_end_us: (seq + 1) * 1_000_000,
        active_users: users,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ReportMeta, build};
    use squall_common::scenario::Loaded;

    fn spec() -> RunSpec {
        let text = "host: http://127.0.0.1:1\nscenarios:\n  s: { users: 2, duration: 2s, thresholds: [\"requests >= 3\"] }\nuser_classes:\n  u: { tasks: [ { name: a, get: /a } ] }\n";
        Loaded::from_str("t.yaml", text)
            .and_then(|l| l.resolve("s", &Default::default(), false))
            .expect("valid")
    }

    fn snap(seq: u64, requests: u64) -> Snapshot {
        one_endpoint_second("r", seq, 1, requests)
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
        let r = build(
            &agg,
            ReportMeta {
                spec: &spec,
                started_at: "now".into(),
                partial: false,
                broke_at: None,
            },
        )
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
