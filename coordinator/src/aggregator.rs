//! Merges workers' interval snapshots into run totals, per-endpoint stats and per-second figures, which the report is built from.
//!
//! Snapshots are de-duplicated by (worker, run, seq), so a resend after a
//! reconnect never counts a request twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use squall_common::report::{LatencyMs, StateChange};
use squall_common::snapshot::{DeltaHistograms, EndpointSum, HdrSum, HistogramError, V2Counts};
use squall_common::{EndpointKey, RunSpec, Snapshot};

use crate::report::latency_ms;
use crate::worker_text;

/// How far ahead of the coordinator's own clock a worker's seq and window may
/// run: a worker starts its clock after the Start arrives, so a real one is
/// never ahead; the slack absorbs scheduling delays on a loaded machine.
const CLOCK_SLACK: Duration = Duration::from_secs(10);
/// Active users (or open connections) a snapshot may claim: far above any real worker, and low
/// enough that summing every worker's claim cannot overflow.
const MAX_ACTIVE_USERS: u64 = u32::MAX as u64;
/// Seconds of the run, behind the coordinator's clock, that keep their
/// histogram and per-worker users; older ones keep only their numbers
/// ([`Interval::compact`]). What reads a second's histogram looks at the
/// latest seconds only: the live view and `stop_when` (the latest complete
/// second), the break point (the live line); the report's rules
/// (`recommend.rs`, `abort.rs`) read the timeline's numbers and the endpoint
/// histograms, which are never compacted. 120 s covers a worker that lags or
/// reconnects and resends for two minutes. Each second's histogram held
/// about 33 KiB with 40 endpoints, 2.8 GiB over a day (issue 17, item 5).
const COMPACT_AFTER_S: u64 = 120;

/// Why a snapshot was refused as a whole: none of it was counted or acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("seq {seq} is ahead of the run's elapsed time (at most {max} expected now)")]
    Seq { seq: u64, max: u64 },
    #[error(
        "window {start}..{end} µs does not fit the run's elapsed time (start <= end <= {max} µs expected)"
    )]
    Window { start: u64, end: u64, max: u64 },
    #[error("endpoint `{method} {name}` is not one of the scenario's endpoints")]
    UnknownEndpoint { name: String, method: String },
    #[error("{what}: {source}")]
    Histogram {
        what: String,
        #[source]
        source: HistogramError,
    },
}

/// One second of the run (`t = seq`), summed over the workers that reported it.
///
/// A second older than [`COMPACT_AFTER_S`] is compacted: it keeps its numbers
/// (the users' sum, percentiles) and drops its histogram and per-worker
/// users, so a day-long run or weeks of serve mode hold ~100 bytes a second.
#[derive(Debug, Default)]
pub struct Interval {
    /// Active users per worker that reported this second (emptied by compaction).
    users: BTreeMap<String, u64>,
    /// Users and reporting workers of a compacted second, and of late
    /// snapshots for it.
    users_compacted: u64,
    reporters_compacted: usize,
    pub requests: u64,
    pub failures: u64,
    /// `None` until a worker has reported the second (an event alone does not count).
    latency: Option<SecondLatency>,
    /// The longest window any worker measured for this second, to turn counts into rates.
    pub window_us: u64,
    pub dropped: u64,
    /// WebSocket and SSE connections open at the second's end, summed over
    /// the workers that counted them (None: none did).
    pub open_connections: Option<u64>,
    pub events: Vec<String>,
}

/// A second's latencies: the histogram while the second is recent, its summary once compacted.
#[derive(Debug)]
enum SecondLatency {
    Histogram(HdrSum),
    Summary(LatencyMs),
}

impl Interval {
    /// Whether any worker has reported this second (an event alone does not count).
    pub fn reported(&self) -> bool {
        self.latency.is_some()
    }

    /// Active users over the workers that reported this second.
    pub fn users(&self) -> u64 {
        self.users
            .values()
            .fold(self.users_compacted, |n, u| n.saturating_add(*u))
    }

    /// Workers that reported this second.
    pub fn reporters(&self) -> usize {
        self.users.len() + self.reporters_compacted
    }

    /// Active users one worker reported for this second; `None` once compacted.
    pub fn users_of(&self, worker: &str) -> Option<u64> {
        self.users.get(worker).copied()
    }

    /// The second's latency summary in ms (zeros before any report). For a
    /// compacted second: that of the snapshots that arrived before it was
    /// compacted (a late resend counts in the numbers, not the percentiles).
    pub fn latency_ms(&self) -> LatencyMs {
        match &self.latency {
            None => LatencyMs::default(),
            Some(SecondLatency::Histogram(h)) => latency_ms(&h.to_histogram()),
            Some(SecondLatency::Summary(l)) => l.clone(),
        }
    }

    fn add_users(&mut self, worker: &str, users: u64, compacted: bool) {
        if compacted {
            self.users_compacted = self.users_compacted.saturating_add(users);
            self.reporters_compacted += 1;
        } else {
            self.users.insert(worker.to_owned(), users);
        }
    }

    /// Keeps the second's numbers, drops its histogram and per-worker users.
    fn compact(&mut self) {
        if let Some(SecondLatency::Histogram(h)) = &self.latency {
            self.latency = Some(SecondLatency::Summary(latency_ms(&h.to_histogram())));
        }
        let users = std::mem::take(&mut self.users);
        self.reporters_compacted += users.len();
        self.users_compacted = users
            .values()
            .fold(self.users_compacted, |n, u| n.saturating_add(*u));
    }
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
    /// Logical cores of its machine, as its Hello said: what its CPU percentages are out of.
    pub cores: u32,
    /// The CPU its heartbeats reported while it ran this run.
    pub cpu: CpuRecord,
}

/// A worker's CPU use during a run, from its heartbeats: percent of its whole machine.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CpuRecord {
    samples: u64,
    sum: f64,
    max: f64,
}

impl CpuRecord {
    /// Counts one heartbeat's reading; a worker's number is untrusted, so
    /// anything not finite is ignored and the rest is held to 0..=100.
    pub fn add(&mut self, percent: f32) {
        if !percent.is_finite() {
            return;
        }
        let p = f64::from(percent).clamp(0.0, 100.0);
        self.samples = self.samples.saturating_add(1);
        self.sum += p;
        self.max = self.max.max(p);
    }

    /// The mean of the readings, `None` before the first.
    pub fn mean(&self) -> Option<f64> {
        (self.samples > 0).then(|| self.sum / self.samples as f64)
    }

    /// The highest reading, `None` before the first.
    pub fn max(&self) -> Option<f64> {
        (self.samples > 0).then_some(self.max)
    }
}

/// A snapshot's histograms, checked; one per endpoint, in the snapshot's order.
struct Checked<'s> {
    schedule_lag: V2Counts<'s>,
    generator_lag: V2Counts<'s>,
    endpoints: Vec<DeltaHistograms<'s>>,
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
    /// The scenario's endpoints: the only ones a snapshot may report.
    known: BTreeSet<EndpointKey>,
    endpoints: BTreeMap<EndpointKey, EndpointSum>,
    intervals: BTreeMap<u64, Interval>,
    workers: BTreeMap<String, WorkerAgg>,
    max_window_end_us: u64,
    schedule_lag: HdrSum,
    generator_lag: HdrSum,
    total_requests: u64,
    total_failures: u64,
    /// Seconds older than this many behind the clock are compacted.
    compact_after_s: u64,
    /// Every second below this has been compacted.
    compacted_below: u64,
}

impl Aggregator {
    pub fn new(run_id: &str, spec: &RunSpec, workers: &[(String, Vec<u64>)]) -> Self {
        let order: Vec<EndpointKey> = spec
            .endpoints()
            .into_iter()
            .map(|(name, method)| EndpointKey { name, method })
            .collect();
        Aggregator {
            run_id: run_id.to_owned(),
            known: order.iter().cloned().collect(),
            order,
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
            generator_lag: HdrSum::default(),
            total_requests: 0,
            total_failures: 0,
            compact_after_s: COMPACT_AFTER_S,
            compacted_below: 0,
        }
    }

    /// The same aggregator with compaction after `seconds` instead of [`COMPACT_AFTER_S`].
    #[cfg(test)]
    fn compacting_after(mut self, seconds: u64) -> Self {
        self.compact_after_s = seconds;
        self
    }

    /// Compacts every second more than `compact_after_s` behind `elapsed`; a
    /// second is compacted once, so this costs one histogram summary a second.
    fn compact(&mut self, elapsed: Duration) {
        let below = elapsed.as_secs().saturating_sub(self.compact_after_s);
        if below <= self.compacted_below {
            return;
        }
        for (_, iv) in self.intervals.range_mut(self.compacted_below..below) {
            iv.compact();
        }
        self.compacted_below = below;
    }

    /// Counts a worker's snapshot, `elapsed` into the run by the coordinator's clock.
    ///
    /// The whole snapshot is checked before anything changes: its seq and
    /// window must fit the elapsed time (so a worker cannot make the timeline
    /// or the de-duplication set grow), every endpoint must be the scenario's,
    /// and every histogram must be in Squall's layout. Counts saturate.
    pub fn add(
        &mut self,
        worker: &str,
        snap: &Snapshot,
        elapsed: Duration,
    ) -> Result<Added, Refused> {
        if snap.run_id != self.run_id || !self.workers.contains_key(worker) {
            return Ok(Added::Foreign);
        }
        let checked = self.check(snap, elapsed)?;
        let Some(w) = self.workers.get_mut(worker) else {
            return Ok(Added::Foreign);
        };
        if snap.seq < w.contiguous || !w.seen.insert(snap.seq) {
            return Ok(Added::Duplicate);
        }
        while w.seen.remove(&w.contiguous) {
            w.contiguous += 1;
        }
        let active_users = snap.active_users.min(MAX_ACTIVE_USERS);
        w.requests = w.requests.saturating_add(snap.requests());
        w.peak_users = w.peak_users.max(active_users);
        let ack = w.contiguous;
        self.max_window_end_us = self.max_window_end_us.max(snap.window_end_us);

        let compacted = snap.seq < self.compacted_below;
        let interval = self.intervals.entry(snap.seq).or_default();
        interval.add_users(worker, active_users, compacted);
        interval.dropped = interval.dropped.saturating_add(snap.dropped_iterations);
        if let Some(open) = snap.open_connections {
            let open = open.min(MAX_ACTIVE_USERS);
            interval.open_connections =
                Some(interval.open_connections.unwrap_or(0).saturating_add(open));
        }
        self.schedule_lag.add(checked.schedule_lag);
        self.generator_lag.add(checked.generator_lag);
        interval.window_us = interval
            .window_us
            .max(snap.window_end_us - snap.window_start_us);
        let mut latency = match interval
            .latency
            .get_or_insert_with(|| SecondLatency::Histogram(HdrSum::default()))
        {
            SecondLatency::Histogram(h) => Some(h),
            SecondLatency::Summary(_) => None,
        };
        for ((key, delta), h) in snap.endpoints.iter().zip(&checked.endpoints) {
            // A flow's row times a whole flow, not a request: it has its own
            // endpoint row but stays out of the totals.
            if squall_common::scenario::is_request_method(&key.method) {
                interval.requests = interval.requests.saturating_add(delta.requests);
                interval.failures = interval.failures.saturating_add(delta.failures);
                self.total_requests = self.total_requests.saturating_add(delta.requests);
                self.total_failures = self.total_failures.saturating_add(delta.failures);
                if let Some(l) = latency.as_mut() {
                    l.add(h.latency);
                }
            }
            match self.endpoints.get_mut(key) {
                Some(sum) => sum.add_checked(delta, h),
                None => {
                    let mut sum = EndpointSum::default();
                    sum.add_checked(delta, h);
                    self.endpoints.insert(key.clone(), sum);
                }
            }
        }
        if compacted {
            // A late snapshot for a second nobody had reported before it was
            // compacted: its own histogram, summarised at once.
            interval.compact();
        }
        self.compact(elapsed);
        Ok(Added::Ack(ack))
    }

    /// Everything `add` needs to know before it may change anything.
    fn check<'s>(&self, snap: &'s Snapshot, elapsed: Duration) -> Result<Checked<'s>, Refused> {
        let ahead = elapsed.saturating_add(CLOCK_SLACK);
        let max_seq = ahead.as_secs();
        if snap.seq > max_seq {
            return Err(Refused::Seq {
                seq: snap.seq,
                max: max_seq,
            });
        }
        let max_us = u64::try_from(ahead.as_micros()).unwrap_or(u64::MAX);
        if snap.window_start_us > snap.window_end_us || snap.window_end_us > max_us {
            return Err(Refused::Window {
                start: snap.window_start_us,
                end: snap.window_end_us,
                max: max_us,
            });
        }
        let schedule_lag =
            V2Counts::parse(&snap.schedule_lag).map_err(|source| Refused::Histogram {
                what: "schedule lag".into(),
                source,
            })?;
        let generator_lag =
            V2Counts::parse(&snap.generator_lag).map_err(|source| Refused::Histogram {
                what: "generator lag".into(),
                source,
            })?;
        let mut endpoints = Vec::with_capacity(snap.endpoints.len().min(self.known.len()));
        for (key, delta) in &snap.endpoints {
            if !self.known.contains(key) {
                return Err(Refused::UnknownEndpoint {
                    name: worker_text::clean(&key.name),
                    method: worker_text::clean(&key.method),
                });
            }
            let h: DeltaHistograms<'s> =
                delta.histograms().map_err(|source| Refused::Histogram {
                    what: format!("endpoint `{} {}`", key.method, key.name),
                    source,
                })?;
            endpoints.push(h);
        }
        Ok(Checked {
            schedule_lag,
            generator_lag,
            endpoints,
        })
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

    /// The cores a member's machine has (from its Hello).
    pub fn set_cores(&mut self, worker: &str, cores: u32) {
        if let Some(w) = self.workers.get_mut(worker) {
            w.cores = cores;
        }
    }

    /// A heartbeat's CPU reading for a member of the run (others are ignored).
    pub fn record_cpu(&mut self, worker: &str, percent: f32) {
        if let Some(w) = self.workers.get_mut(worker)
            && !w.lost
        {
            w.cpu.add(percent);
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

    /// The worker said how many snapshots it sent for this run, and every one is in.
    pub fn delivered(&self, worker: &str) -> bool {
        self.workers
            .get(worker)
            .is_some_and(|w| w.expected.is_some_and(|n| w.contiguous >= n))
    }

    /// A member's first missing seq, and the end of its snapshots once its final status said it.
    pub fn outstanding(&self, worker: &str) -> Option<(u64, Option<u64>)> {
        self.workers.get(worker).map(|w| (w.contiguous, w.expected))
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
        let complete = |iv: &Interval| iv.reporters() >= live_workers && iv.reported();
        self.intervals
            .iter()
            .rev()
            .find(|(_, iv)| complete(iv))
            .or_else(|| self.intervals.iter().rev().find(|(_, iv)| iv.reported()))
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

    /// Every endpoint that saw traffic, in the scenario's order (snapshots
    /// naming any other endpoint are refused, see [`Refused::UnknownEndpoint`]).
    pub fn endpoints(&self) -> impl Iterator<Item = (&EndpointKey, &EndpointSum)> {
        self.order
            .iter()
            .filter_map(|k| self.endpoints.get_key_value(k))
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

    /// How late the open model's schedules took arrivals in hand, over the whole run.
    pub fn generator_lag(&self) -> &HdrSum {
        &self.generator_lag
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
        open_connections: None,
        dropped_iterations: 0,
        schedule_lag: Vec::new(),
        generator_lag: Vec::new(),
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

    fn report(agg: &Aggregator, spec: &RunSpec) -> squall_common::Report {
        build(
            agg,
            ReportMeta {
                spec,
                started_at: "now".into(),
                partial: false,
                broke_at: None,
                aborted: None,
            },
        )
        .expect("report")
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
        assert_eq!(
            agg.add("w1", &snap(1, 2), Duration::from_secs(2)).ok(),
            Some(Added::Ack(0))
        );
        assert_eq!(
            agg.add("w1", &snap(0, 1), Duration::from_secs(2)).ok(),
            Some(Added::Ack(2))
        );
        assert_eq!(
            agg.add("w1", &snap(0, 1), Duration::from_secs(2)).ok(),
            Some(Added::Duplicate)
        );
        assert_eq!(
            agg.add("w9", &snap(0, 1), Duration::from_secs(2)).ok(),
            Some(Added::Foreign)
        );
        assert!(!agg.complete());
        agg.expect("w1", 2);
        agg.mark_lost("w2", 1.0);
        assert!(agg.complete());
        let r = report(&agg, &spec);
        assert_eq!(r.totals.requests, 3);
        assert_eq!(r.endpoints[0].requests, 3);
        assert_eq!(r.timeline.len(), 2);
        assert_eq!(r.timeline[1].requests, 2);
        assert!(r.workers.iter().any(|w| w.id == "w2" && w.lost));
        assert!(r.passed, "{:?}", r.thresholds);
        assert_eq!(r.duration_s, 2.0);
    }

    /// Nothing of a refused snapshot is counted, acknowledged or remembered:
    /// not even the endpoints before the one that is wrong.
    #[test]
    fn hostile_snapshots_are_refused_whole() {
        let spec = spec();
        let mut agg = Aggregator::new("r", &spec, &[("w1".into(), vec![1])]);
        let now = Duration::from_secs(2);
        let invented = |mut s: Snapshot| {
            s.endpoints[0].0.name = "\x1b[31minvented".into();
            s
        };
        let err = agg
            .add("w1", &invented(snap(0, 5)), now)
            .expect_err("unknown endpoint");
        assert!(matches!(err, Refused::UnknownEndpoint { .. }), "{err}");
        assert!(!err.to_string().contains('\x1b'), "{err}");
        let mut lying = snap(0, 5);
        let mut bad = lying.endpoints[0].clone();
        bad.1.latency.truncate(40);
        bad.1.latency[12..16].copy_from_slice(&2u32.to_be_bytes());
        lying.endpoints.push(bad);
        assert!(matches!(
            agg.add("w1", &lying, now),
            Err(Refused::Histogram { .. })
        ));
        assert!(matches!(
            agg.add("w1", &snap(13, 5), now),
            Err(Refused::Seq { seq: 13, max: 12 })
        ));
        let mut past_the_end = snap(0, 5);
        past_the_end.window_end_us = u64::MAX;
        assert!(matches!(
            agg.add("w1", &past_the_end, now),
            Err(Refused::Window { .. })
        ));
        assert_eq!(agg.totals(), (0, 0));
        assert!(agg.intervals().is_empty());
        assert_eq!(agg.endpoints().count(), 0);
        // The same seq, well-formed, is still new.
        assert_eq!(agg.add("w1", &snap(0, 5), now).ok(), Some(Added::Ack(1)));
        assert_eq!(agg.add("w1", &snap(11, 1), now).ok(), Some(Added::Ack(1)));
    }

    #[test]
    fn cpu_mean_and_max_per_worker() {
        let spec = spec();
        let mut agg = Aggregator::new("r", &spec, &[("w1".into(), vec![1])]);
        assert_eq!(agg.workers()["w1"].cpu.mean(), None);
        for p in [20.0, 40.0, f32::NAN, f32::INFINITY, 90.0, 250.0, -5.0] {
            agg.record_cpu("w1", p);
        }
        agg.record_cpu("stranger", 99.0);
        let cpu = &agg.workers()["w1"].cpu;
        // 20, 40, 90, 100 (held), 0 (held): mean 50, max 100.
        assert_eq!(cpu.mean(), Some(50.0));
        assert_eq!(cpu.max(), Some(100.0));
        assert!(!agg.is_member("stranger"));
    }

    /// Two workers' seconds 0..n, with latencies that differ second to second.
    fn feed(agg: &mut Aggregator, n: u64, skip: Option<(&str, u64)>) {
        for seq in 0..n {
            for w in ["w1", "w2"] {
                if skip == Some((w, seq)) {
                    continue;
                }
                let s = one_endpoint_second("r", seq, 1 + seq % 3, 5 + seq % 7);
                agg.add(w, &s, Duration::from_secs(seq + 1)).expect("adds");
            }
        }
    }

    fn two_workers(spec: &RunSpec) -> Aggregator {
        Aggregator::new("r", spec, &[("w1".into(), vec![1]), ("w2".into(), vec![1])])
    }

    fn json(r: &impl serde::Serialize) -> String {
        serde_json::to_string(r).expect("serialises")
    }

    /// Compaction keeps every number of the report: the same snapshots with
    /// and without it give the same report.json, byte for byte.
    #[test]
    fn compaction_leaves_the_report_identical() {
        let spec = spec();
        let mut whole = two_workers(&spec).compacting_after(u64::MAX);
        let mut compact = two_workers(&spec).compacting_after(3);
        feed(&mut whole, 40, None);
        feed(&mut compact, 40, None);
        let old = compact.intervals().range(..30).filter(|(_, iv)| {
            matches!(iv.latency, Some(SecondLatency::Summary(_))) && iv.users.is_empty()
        });
        assert_eq!(old.count(), 30, "seconds 0..30 are compacted");
        assert!(
            whole
                .intervals()
                .values()
                .all(|iv| matches!(iv.latency, Some(SecondLatency::Histogram(_))))
        );
        for agg in [&mut whole, &mut compact] {
            agg.expect("w1", 40);
            agg.expect("w2", 40);
        }
        let (a, b) = (report(&whole, &spec), report(&compact, &spec));
        assert_eq!(a.timeline.len(), 40);
        assert!(a.timeline[5].p95_ms > 0.0 && a.timeline[5].users == 2 * (1 + 5 % 3));
        assert_eq!(json(&a), json(&b));
        // The live line of a compacted second (a worker lagging behind) is the same too.
        let line = |agg: &Aggregator| {
            let iv = &agg.intervals()[&2];
            (iv.users(), iv.reporters(), iv.latency_ms())
        };
        assert_eq!(line(&whole), line(&compact));
    }

    /// A snapshot that arrives after its second was compacted (a resend after a
    /// reconnect) counts exactly in the totals, the endpoints and the second's
    /// requests and users; the second's percentiles stay those of the snapshots
    /// that arrived in time.
    #[test]
    fn late_snapshot_for_a_compacted_second_counts_exactly() {
        let spec = spec();
        let mut whole = two_workers(&spec).compacting_after(u64::MAX);
        let mut compact = two_workers(&spec).compacting_after(3);
        for agg in [&mut whole, &mut compact] {
            // w2's second 4 arrives only at the end, long after compaction.
            feed(agg, 30, Some(("w2", 4)));
            let late = one_endpoint_second("r", 4, 2, 9);
            assert_eq!(
                agg.add("w2", &late, Duration::from_secs(31)).ok(),
                Some(Added::Ack(30))
            );
            assert_eq!(
                agg.add("w2", &late, Duration::from_secs(31)).ok(),
                Some(Added::Duplicate)
            );
            agg.event(31, "stop requested".into());
            agg.expect("w1", 30);
            agg.expect("w2", 30);
        }
        let (a, b) = (report(&whole, &spec), report(&compact, &spec));
        assert_eq!(json(&a.totals), json(&b.totals));
        assert_eq!(json(&a.endpoints), json(&b.endpoints));
        assert_eq!(a.timeline.len(), b.timeline.len());
        for (x, y) in a.timeline.iter().zip(&b.timeline) {
            assert_eq!(
                (x.t, x.requests, x.failures, x.users, x.rps.to_bits()),
                (y.t, y.requests, y.failures, y.users, y.rps.to_bits())
            );
            if x.t != 4 {
                assert_eq!(json(x), json(y));
            }
        }
        // Second 4 in the compacted run: w1's latencies only (both workers
        // sent the same shape here, so the summary matches anyway).
        assert_eq!((b.timeline[4].requests, b.timeline[4].users), (18, 4));
        assert!(b.timeline[4].p95_ms > 0.0);
    }

    /// A late snapshot for a compacted second nobody had reported gets its own percentiles.
    #[test]
    fn late_snapshot_for_an_unreported_compacted_second_has_percentiles() {
        let spec = spec();
        let mut agg = Aggregator::new("r", &spec, &[("w1".into(), vec![1])]).compacting_after(3);
        agg.event(2, "worker w1 reconnected".into());
        for seq in (0..20).filter(|s| *s != 2) {
            agg.add("w1", &snap(seq, 4), Duration::from_secs(seq + 1))
                .expect("adds");
        }
        assert!(!agg.intervals()[&2].reported());
        agg.add("w1", &snap(2, 4), Duration::from_secs(21))
            .expect("adds");
        let iv = &agg.intervals()[&2];
        assert!(matches!(iv.latency, Some(SecondLatency::Summary(_))));
        assert_eq!((iv.requests, iv.users(), iv.reporters()), (4, 1, 1));
        assert_eq!(iv.latency_ms().p50, 1.001);
        assert_eq!(iv.events, ["worker w1 reconnected"]);
        agg.expect("w1", 20);
        assert_eq!(report(&agg, &spec).totals.requests, 80);
    }

    /// Counts a worker makes up saturate instead of wrapping or panicking.
    #[test]
    fn counts_saturate() {
        let spec = spec();
        let mut agg = Aggregator::new("r", &spec, &[("w1".into(), vec![1])]);
        for seq in 0..3 {
            let mut s = snap(seq, 1);
            s.endpoints[0].1.requests = u64::MAX;
            s.endpoints[0].1.failures = u64::MAX;
            s.endpoints[0].1.errors.insert("connect".into(), u64::MAX);
            s.dropped_iterations = u64::MAX;
            s.active_users = u64::MAX;
            s.open_connections = Some(u64::MAX);
            agg.add("w1", &s, Duration::from_secs(3)).expect("adds");
        }
        assert_eq!(agg.totals(), (u64::MAX, u64::MAX));
        agg.expect("w1", 3);
        let r = report(&agg, &spec);
        assert_eq!(r.totals.requests, u64::MAX);
        assert_eq!(r.totals.dropped_iterations, u64::MAX);
        assert_eq!(r.endpoints[0].errors["connect"], u64::MAX);
    }
}
