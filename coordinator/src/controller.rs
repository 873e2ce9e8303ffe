//! The run controller: one run as a state machine with one handler per event (worker joined, left, message, tick, interrupt), and the loop that feeds it.
//!
//! The handlers do no I/O: each returns the [`Effects`] it wants (messages to
//! send, lines to print), so the same object can be driven by the one-shot
//! command here, by serve mode, and by unit tests without gRPC.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use squall_common::protocol::{
    CoordinatorMessage, Heartbeat, Start, Status, WorkerMessage, WorkerState,
};
use squall_common::report::{Aborted, BreakPoint};
use squall_common::threshold::{Metric, Threshold};
use squall_common::{LoadModel, Report, RunSpec, Snapshot, partition};

use crate::aggregator::{Added, Aggregator};
use crate::ceiling::{Ceilings, Figures, Verdict as Ceiling};
use crate::cluster::Cluster;
use crate::error::CoordinatorError;
use crate::report::live::{HeartbeatFigures, ViewMeta};
use crate::report::{LiveLine, LiveSender, LiveView, Phase, ReportMeta, abort, build, live};
use crate::service::ClusterEvent;
use crate::worker_text;

/// How a run ended.
#[derive(Debug)]
pub struct RunResult {
    pub report: Report,
    /// Every worker was lost before the run completed.
    pub all_lost: bool,
}

/// How the run treats the people watching it and the workers that come and go.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// No live line every second.
    pub headless: bool,
    /// Move a lost worker's share to the others and give newcomers a share.
    pub rebalance: bool,
    /// Where the run's [`LiveView`] is published every second (the dashboard,
    /// REST status, `/metrics` and the terminal view watch it); the plain
    /// progress line is printed either way unless `headless`.
    pub live: Option<LiveSender>,
    /// The run's id when the caller chose it (serve mode answers the start request with it); random otherwise.
    pub run_id: Option<String>,
    /// A stop request from outside (serve mode's REST stop): handled like a first interrupt.
    pub stop: Option<Arc<tokio::sync::Notify>>,
}

/// What a handler wants done, in order: messages for workers and lines for the terminal.
#[derive(Debug, Default)]
pub struct Effects {
    pub sends: Vec<(String, CoordinatorMessage)>,
    pub notes: Vec<String>,
}

impl Effects {
    fn send(&mut self, worker: &str, msg: CoordinatorMessage) {
        self.sends.push((worker.to_owned(), msg));
    }

    fn note(&mut self, text: String) {
        self.notes.push(text);
    }
}

/// After a Stop, how long past the graceful timeout the controller waits for final snapshots.
const FINAL_SNAPSHOT_SLACK: Duration = Duration::from_secs(5);
/// How long the end of a run waits for members lost by their link to come
/// back and resend what the coordinator has not acknowledged, counted from
/// the moment every other member is done. A worker that hears nothing for
/// the heartbeat timeout (5 s) stops its load and redials at once; the
/// coordinator frees its id within the same 5 s, so a worker whose link
/// works again is back within about 11 s: 15 s covers that with slack on
/// a saturated machine, and bounds what a member that never returns costs.
pub const RETURN_WAIT: Duration = Duration::from_secs(15);
/// A member lost before it ever reported on the run, and back this long
/// without a word about it, never started it (its Start was lost with its
/// link): it has nothing to resend. One that did start it sends its final
/// status (its load was stopped when the link went) within a second of its
/// return. Seen at 600 workers on 2 cores: 85 workers lost 6 s into the run
/// came back with 0 requests and were waited for in vain.
const NOTHING_TO_RESEND_AFTER: Duration = Duration::from_secs(3);
/// Workers end the plan on their own clocks; the controller's Stop is a fallback this long after.
const FALLBACK_STOP_AFTER: Duration = Duration::from_secs(3);
/// A worker busier than this (percent of its machine) may be the bottleneck rather than the target.
pub const BUSY_CPU_PERCENT: f32 = 90.0;
/// Heartbeats in a row at [`BUSY_CPU_PERCENT`] or more before the warning: a
/// second of spawning thousands of users is not a saturated generator.
const BUSY_HEARTBEATS: u32 = 2;

/// One run's state. Times are the run's elapsed time, passed in by the caller.
pub struct RunController<'a> {
    spec: &'a RunSpec,
    run_id: String,
    seed: u64,
    /// The closed model's spawn rate, split with the users (0 for other models).
    spawn_rate: f64,
    options: RunOptions,
    agg: Aggregator,
    /// Every worker that took part, in plan order: Stop goes to all of them.
    members: Vec<String>,
    /// The workers still running, in plan order: their index is their place in the split.
    running: Vec<String>,
    /// Set once Stop was sent: the elapsed time after which the controller stops waiting.
    stop_deadline: Option<Duration>,
    /// An interrupt arrived while already stopping: end without waiting.
    abandoned: bool,
    partial: bool,
    broke_at: Option<BreakPoint>,
    /// The `abort` threshold that stopped the run.
    aborted: Option<Aborted>,
    checked_second: Option<u64>,
    /// Workers already warned about as too busy (once each per run).
    busy: std::collections::BTreeSet<String>,
    /// Each running worker's heartbeats in a row at `BUSY_CPU_PERCENT` or more.
    hot: BTreeMap<String, u32>,
    /// Workers already warned about as not meeting the arrival rate (once each per run).
    behind: std::collections::BTreeSet<String>,
    /// Workers whose snapshots were refused at least once (the first refusal is logged as a warning).
    refused: std::collections::BTreeSet<String>,
    /// The latest heartbeat of each worker (users, CPU), for the live view.
    heartbeats: BTreeMap<String, HeartbeatFigures>,
    /// Members lost by their link whose snapshots are not all in, with when
    /// they were lost: the run's end waits [`RETURN_WAIT`] for them.
    away: BTreeMap<String, Duration>,
    /// Set once only `away` members are awaited: when the run stops waiting for them.
    return_deadline: Option<Duration>,
    /// The wait for `away` members was announced.
    wait_announced: bool,
    /// Members left since the last tick: the survivors get their Adjust at the next one.
    rebalance_due: bool,
    /// `away` members that attached again, and when.
    back: BTreeMap<String, Duration>,
    /// Stopped from outside (interrupt, stop request): whoever asked wants
    /// the report now (`docker stop` kills 10 s after its SIGTERM), so lost
    /// members are not waited for.
    stopped_from_outside: bool,
    /// Members that sent a snapshot or a status for this run.
    heard: std::collections::BTreeSet<String>,
    /// The open model's pools across workers (`ceiling`).
    ceilings: Ceilings,
    /// The first ceiling was explained on the terminal (once per run).
    ceiling_noted: bool,
}

impl<'a> RunController<'a> {
    /// Splits the run over `workers` (in plan order) and returns the Start for each.
    pub fn new(
        spec: &'a RunSpec,
        workers: &[String],
        options: RunOptions,
        run_id: String,
        seed: u64,
    ) -> (Self, Effects) {
        // Each worker derives its exact part of the plan at every moment; the
        // share sent here is its part at the plan's peak (shown and reported).
        let spawn_rate = match spec.load {
            LoadModel::Closed { spawn_rate, .. } => spawn_rate,
            _ => 0.0,
        };
        let shares = partition::split(
            spec.load.peak_users(),
            &spec.class_weights(),
            workers.len(),
            spawn_rate,
        );
        let members: Vec<(String, Vec<u64>)> = workers
            .iter()
            .zip(&shares)
            .map(|(id, s)| (id.clone(), s.users_per_class.clone()))
            .collect();
        let agg = Aggregator::new(&run_id, spec, &members);
        let mut fx = Effects::default();
        fx.note(format!(
            "run {run_id}: scenario `{}` against {}: {} for {} on {} worker(s)",
            spec.scenario,
            spec.host,
            spec.load,
            squall_common::duration::format(spec.load.duration()),
            workers.len()
        ));
        let run = RunController {
            spec,
            run_id,
            seed,
            spawn_rate,
            options,
            agg,
            members: workers.to_vec(),
            running: workers.to_vec(),
            stop_deadline: None,
            abandoned: false,
            partial: false,
            broke_at: None,
            aborted: None,
            checked_second: None,
            busy: Default::default(),
            hot: BTreeMap::new(),
            behind: Default::default(),
            refused: Default::default(),
            heartbeats: BTreeMap::new(),
            away: BTreeMap::new(),
            return_deadline: None,
            wait_announced: false,
            rebalance_due: false,
            back: BTreeMap::new(),
            stopped_from_outside: false,
            heard: Default::default(),
            ceilings: Ceilings::default(),
            ceiling_noted: false,
        };
        for (i, (id, share)) in workers.iter().zip(&shares).enumerate() {
            fx.note(format!(
                "  worker {id}: up to {} users {:?}",
                share.users(),
                share.users_per_class
            ));
            fx.send(
                id,
                run.start(share.clone(), i, workers.len(), Duration::ZERO),
            );
        }
        (run, fx)
    }

    fn start(
        &self,
        share: partition::Share,
        index: usize,
        count: usize,
        plan_offset: Duration,
    ) -> CoordinatorMessage {
        CoordinatorMessage::Start(Box::new(Start {
            run_id: self.run_id.clone(),
            spec: self.spec.clone(),
            share,
            seed: self.seed,
            worker_index: u32::try_from(index).unwrap_or(u32::MAX),
            worker_count: u32::try_from(count).unwrap_or(u32::MAX),
            plan_offset,
        }))
    }

    fn stopping(&self) -> bool {
        self.stop_deadline.is_some()
    }

    /// A worker attached while the run is going: it gets a share, part-way through the plan.
    pub fn on_joined(&mut self, worker: &str, elapsed: Duration) -> Effects {
        let mut fx = Effects::default();
        if self.away.contains_key(worker) {
            // Its load stopped when it lost the link and its share has moved:
            // it only resends what it recorded (its outbox replays first).
            self.back.insert(worker.to_owned(), elapsed);
            let text = format!("worker {worker} is back; collecting the snapshots it resends");
            fx.note(text.clone());
            self.agg.event(self.event_second(elapsed), text);
            return fx;
        }
        if !self.options.rebalance || self.stopping() || self.agg.is_member(worker) {
            fx.note(format!(
                "worker {worker} attached mid-run; it will take part in the next run"
            ));
            return fx;
        }
        self.running.push(worker.to_owned());
        self.members.push(worker.to_owned());
        // Their Adjust lifts the pools' ceilings (`ceiling`).
        self.ceilings.reset();
        let n = self.running.len();
        let shares = self.split(n);
        self.agg.add_member(
            worker,
            shares[n - 1].users_per_class.clone(),
            elapsed.as_secs(),
        );
        fx.send(worker, self.start(shares[n - 1].clone(), n - 1, n, elapsed));
        self.adjust(&mut fx, &self.running[..n - 1], &shares);
        // Everyone has its place over the `n` running now.
        self.rebalance_due = false;
        let text = format!("worker {worker} joined; load rebalanced over {n} workers");
        fx.note(text.clone());
        self.agg.event(elapsed.as_secs(), text);
        fx
    }

    /// The cores a worker's Hello announced, for the report's CPU figures.
    pub fn set_cores(&mut self, worker: &str, cores: u32) {
        self.agg.set_cores(worker, cores);
    }

    /// A worker's stream ended (it was lost, or left).
    pub fn on_left(&mut self, worker: &str, reason: &str, elapsed: Duration) -> Effects {
        let mut fx = Effects::default();
        if self.running.iter().any(|id| id == worker) {
            let reason = worker_text::clean(reason);
            fx.note(format!("warning: worker {worker} lost: {reason}"));
            self.drop_worker(worker, "lost", elapsed);
            // What it recorded and the coordinator has not acknowledged is in
            // its outbox: it resends that when it comes back. (A failed worker
            // left the run before and stays out: it has nothing to resend;
            // one whose snapshots were refused is not trusted to resend any.)
            if !self.agg.delivered(worker) && !self.refused.contains(worker) {
                self.away.insert(worker.to_owned(), elapsed);
            }
        }
        fx
    }

    /// A message from an attached worker.
    pub fn on_message(&mut self, worker: &str, msg: &WorkerMessage, elapsed: Duration) -> Effects {
        if let WorkerMessage::Snapshot(Snapshot { run_id, .. })
        | WorkerMessage::Status(Status { run_id, .. }) = msg
            && *run_id == self.run_id
            && self.agg.is_member(worker)
            && !self.heard.contains(worker)
        {
            self.heard.insert(worker.to_owned());
        }
        let mut fx = self.on_member_message(worker, msg, elapsed);
        if self.away.contains_key(worker) && self.agg.delivered(worker) {
            self.away.remove(worker);
            let text = format!("worker {worker} came back and delivered all its snapshots");
            fx.note(text.clone());
            self.agg.event(self.event_second(elapsed), text);
        }
        fx
    }

    fn on_member_message(
        &mut self,
        worker: &str,
        msg: &WorkerMessage,
        elapsed: Duration,
    ) -> Effects {
        match msg {
            WorkerMessage::Snapshot(s) => self.on_snapshot(worker, s, elapsed),
            WorkerMessage::Status(st) if st.run_id == self.run_id => {
                self.on_status(worker, st, elapsed)
            }
            WorkerMessage::Heartbeat(h) if self.agg.is_member(worker) => {
                self.heartbeats.insert(
                    worker.to_owned(),
                    HeartbeatFigures {
                        active_users: h.active_users,
                        cpu_percent: if h.cpu_percent.is_finite() {
                            h.cpu_percent.clamp(0.0, 100_000.0)
                        } else {
                            0.0
                        },
                    },
                );
                self.on_heartbeat(worker, h, elapsed)
            }
            _ => Effects::default(),
        }
    }

    /// A running worker's CPU: kept for the report, and a warning (once) when
    /// it stays so busy that the generator, not the target, may set the numbers.
    fn on_heartbeat(&mut self, worker: &str, hb: &Heartbeat, elapsed: Duration) -> Effects {
        let mut fx = Effects::default();
        if hb.state != WorkerState::Running || !self.running.iter().any(|id| id == worker) {
            return fx;
        }
        self.agg.record_cpu(worker, hb.cpu_percent);
        let hot = self.hot.entry(worker.to_owned()).or_default();
        *hot = if hb.cpu_percent.is_finite() && hb.cpu_percent >= BUSY_CPU_PERCENT {
            hot.saturating_add(1)
        } else {
            0
        };
        if *hot >= BUSY_HEARTBEATS && self.busy.insert(worker.to_owned()) {
            let pct = hb.cpu_percent.min(100.0);
            fx.note(format!(
                "warning: worker {worker} is using {pct:.0}% of its machine's CPU: it may be the bottleneck, not the target (add workers or cores)"
            ));
            self.agg.event(
                elapsed.as_secs(),
                format!("worker {worker} CPU at {pct:.0}%"),
            );
        }
        fx
    }

    fn on_snapshot(&mut self, worker: &str, snap: &Snapshot, elapsed: Duration) -> Effects {
        let mut fx = Effects::default();
        match self.agg.add(worker, snap, elapsed) {
            Ok(Added::Ack(seq)) => {
                self.warn_if_behind(&mut fx, worker, snap);
                self.judge_pools(&mut fx, worker, snap);
                fx.send(
                    worker,
                    CoordinatorMessage::Ack {
                        run_id: self.run_id.clone(),
                        seq,
                    },
                )
            }
            Ok(Added::Duplicate | Added::Foreign) => {}
            // Once per worker and run: a worker sending nothing but bad snapshots must not flood the log.
            Err(e) if self.refused.insert(worker.to_owned()) => tracing::warn!(
                "worker {worker}: refused snapshot {} (not counted; further refusals are logged at debug level): {e}",
                snap.seq
            ),
            Err(e) => tracing::debug!("worker {worker}: refused snapshot {}: {e}", snap.seq),
        }
        fx
    }

    /// An open model whose worker dropped arrivals (no idle pool user, or
    /// too late to start on time) is not getting the rate asked for: say so
    /// at the first snapshot that shows it (each worker sends one a second),
    /// once per worker, with the rate it managed in that window.
    fn warn_if_behind(&mut self, fx: &mut Effects, worker: &str, snap: &Snapshot) {
        if snap.dropped_iterations == 0 || !self.spec.load.is_open() {
            return;
        }
        if !self.behind.insert(worker.to_owned()) {
            return;
        }
        let (start, end) = (
            snap.window_start_us as f64 / 1e6,
            snap.window_end_us as f64 / 1e6,
        );
        let secs = (end - start).max(1e-3);
        let planned = self.planned(start, end) / self.running.len().max(1) as f64;
        let dropped = snap.dropped_iterations as f64;
        let text = format!(
            "warning: arrival rate not met on worker {worker}: {:.0}/s of {:.0}/s, {} dropped in {:.1}s: add workers or max_users",
            ((planned - dropped) / secs).max(0.0),
            planned / secs,
            snap.dropped_iterations,
            secs,
        );
        self.agg.event(
            snap.seq,
            format!(
                "worker {worker} dropped {} arrivals",
                snap.dropped_iterations
            ),
        );
        fx.note(text);
    }

    /// The open model's arrivals planned between `start` and `end` (seconds
    /// into the run), over all workers; 0 for other models.
    fn planned(&self, start: f64, end: f64) -> f64 {
        let load = &self.spec.load;
        load.arrivals_until(end)
            .zip(load.arrivals_until(start))
            .map(|(b, a)| (b - a).max(0.0))
            .unwrap_or(0.0)
    }

    /// Open model on several workers: judges each whole second of the
    /// cluster's pools (`ceiling`) and holds or lifts every worker's pool.
    /// One worker judges its own pool exactly and is left alone.
    fn judge_pools(&mut self, fx: &mut Effects, worker: &str, snap: &Snapshot) {
        if !self.spec.load.is_open() || self.running.len() < 2 || self.stopping() {
            return;
        }
        let planned = self.planned(snap.seq as f64, snap.seq.saturating_add(1) as f64);
        let figures = Figures {
            users: snap.active_users,
            completions: snap.requests(),
            dropped: snap.dropped_iterations,
        };
        let verdict = self
            .ceilings
            .observe(worker, snap.seq, figures, &self.running, planned);
        let ceilings: Vec<(String, Option<u64>)> = match verdict {
            Some(Ceiling::Hold {
                per_worker,
                from,
                to,
                gain,
                hold_s,
            }) => {
                let gain = gain * 100.0;
                if !std::mem::replace(&mut self.ceiling_noted, true) {
                    fx.note(format!(
                        "note: the workers' pools grew from {from} to {to} users and the cluster's completions by {gain:+.1}%: the target is at its capacity; pools are held where they were (arrivals it cannot take are dropped and counted)"
                    ));
                }
                let text = format!(
                    "pools held at {from} users for {hold_s}s: growing to {to} gained {gain:+.1}% completions"
                );
                self.agg.event(snap.seq, text);
                per_worker.into_iter().map(|(w, u)| (w, Some(u))).collect()
            }
            Some(Ceiling::Raise { per_worker }) => {
                per_worker.into_iter().map(|(w, u)| (w, Some(u))).collect()
            }
            Some(Ceiling::Lift) => self.running.iter().map(|w| (w.clone(), None)).collect(),
            None => Vec::new(),
        };
        for (w, users) in ceilings {
            // With `RUST_LOG=squall::growth=debug`, beside the workers' own steps.
            tracing::debug!(target: "squall::growth", worker = %w, ?users, second = snap.seq, "pool ceiling");
            let msg = CoordinatorMessage::PoolCeiling {
                run_id: self.run_id.clone(),
                users,
            };
            fx.send(&w, msg);
        }
    }

    /// A worker's state for this run; a failure is handled once, however often it is repeated.
    fn on_status(&mut self, worker: &str, st: &Status, elapsed: Duration) -> Effects {
        let mut fx = Effects::default();
        if !self.running.iter().any(|id| id == worker) {
            // Not (or no longer) running this run: a dropped worker's later
            // statuses change nothing, and a stranger's never did.
            if self.agg.is_member(worker) && st.state == WorkerState::Stopped {
                self.agg.expect(worker, st.snapshots_sent);
            }
            return fx;
        }
        self.agg
            .set_state(worker, st.state.as_str(), elapsed.as_secs_f64());
        match st.state {
            WorkerState::Stopped => self.agg.expect(worker, st.snapshots_sent),
            WorkerState::Failed => {
                let reason = worker_text::clean(&st.reason);
                fx.note(format!("error: worker {worker} failed: {reason}"));
                let what = format!("failed ({reason})");
                self.drop_worker(worker, &what, elapsed);
            }
            _ => {}
        }
        fx
    }

    /// Once a second: the live line, the stop conditions on the newest complete second, the fallback Stop.
    pub fn on_tick(&mut self, elapsed: Duration) -> Effects {
        let mut fx = Effects::default();
        if std::mem::take(&mut self.rebalance_due) && !self.stopping() && !self.running.is_empty() {
            let shares = self.split(self.running.len());
            self.adjust(&mut fx, &self.running, &shares);
        }
        let line = live::latest(&self.agg);
        if !self.options.headless
            && !self.stopping()
            && let Some(l) = &line
        {
            fx.note(format!(
                "{}  workers: {}",
                live::line(elapsed, self.spec.load.duration(), l),
                self.agg.states_summary()
            ));
        }
        // Stress runs: check each newly completed second against the stop conditions.
        if !self.stopping()
            && let Some(l) = line.filter(|l| l.complete && Some(l.t) != self.checked_second)
        {
            self.checked_second = Some(l.t);
            if let Some((cond, actual)) = self
                .spec
                .stop_when
                .iter()
                .map(|c| (c, second_value(c, &l)))
                .find(|(c, v)| c.check(*v))
            {
                let text = format!(
                    "stop condition `{}` met at {}s ({actual:.3}): broke at {} users, {:.1} rps",
                    cond.expr, l.t, l.users, l.rps
                );
                fx.note(text.clone());
                self.agg.event(l.t, text);
                self.broke_at = Some(BreakPoint {
                    t: l.t,
                    users: l.users,
                    rps: l.rps,
                    condition: cond.expr.clone(),
                    actual,
                });
                self.stop_all(&mut fx, elapsed);
            }
        }
        // Live abort: `abort` thresholds on the whole run so far, while the plan goes on.
        if !self.stopping()
            && elapsed < self.spec.load.duration()
            && let Some(breach) = abort::breach(&self.agg, self.spec, elapsed)
        {
            let text = format!(
                "threshold `{}` failed at {}s ({:.3}): run aborted",
                breach.threshold, breach.t, breach.actual
            );
            fx.note(text.clone());
            self.agg.event(breach.t, text);
            self.aborted = Some(breach);
            self.stop_all(&mut fx, elapsed);
        }
        if !self.stopping() && elapsed >= self.spec.load.duration() + FALLBACK_STOP_AFTER {
            self.stop_all(&mut fx, elapsed);
        }
        let idle: Vec<String> = self
            .back
            .iter()
            .filter(|(id, at)| {
                elapsed >= **at + NOTHING_TO_RESEND_AFTER
                    && !self.heard.contains(*id)
                    && self.away.contains_key(*id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            self.away.remove(&id);
            let text =
                format!("worker {id} came back with nothing to resend: it had not started the run");
            fx.note(text.clone());
            self.agg.event(self.event_second(elapsed), text);
        }
        if self.return_deadline.is_some() && !self.away.is_empty() && !self.wait_announced {
            self.wait_announced = true;
            fx.note(format!(
                "waiting up to {}s for {} lost worker(s) to come back with their snapshots: {}",
                RETURN_WAIT.as_secs(),
                self.away.len(),
                self.away_list()
            ));
        }
        fx
    }

    /// Ctrl-C or SIGTERM: the first stops the run and collects what is left, the second ends it at once.
    pub fn on_interrupt(&mut self, elapsed: Duration) -> Effects {
        let mut fx = Effects::default();
        self.partial = true;
        if self.stopping() {
            fx.note("interrupted again: not waiting for the last snapshots".into());
            self.abandoned = true;
            return fx;
        }
        fx.note(
            "interrupted: stopping the run and collecting the last snapshots (interrupt again to stop waiting)"
                .into(),
        );
        self.agg.event(elapsed.as_secs(), "interrupted".into());
        self.stopped_from_outside = true;
        self.stop_all(&mut fx, elapsed);
        fx
    }

    /// A stop request (serve mode): like a first interrupt, but a second one does not abandon the run.
    pub fn on_stop_request(&mut self, elapsed: Duration) -> Effects {
        let mut fx = Effects::default();
        if self.stopping() {
            return fx;
        }
        self.partial = true;
        fx.note(format!(
            "run {}: stop requested; collecting the last snapshots",
            self.run_id
        ));
        self.agg.event(elapsed.as_secs(), "stop requested".into());
        self.stopped_from_outside = true;
        self.stop_all(&mut fx, elapsed);
        fx
    }

    /// `Some` once the run is over (with what to say about it): every snapshot
    /// is in, or every worker is lost, or the wait for final snapshots ran out,
    /// and then members lost by their link came back with all their snapshots
    /// or [`RETURN_WAIT`] ran out; or at once on a second interrupt.
    pub fn over(&mut self, elapsed: Duration) -> Option<Effects> {
        let mut fx = Effects::default();
        if self.abandoned {
            return Some(fx);
        }
        let all_lost = self.agg.all_lost();
        let done = self.agg.complete();
        let timed_out = self.stop_deadline.is_some_and(|d| elapsed >= d);
        if !(all_lost || done || timed_out) {
            return None;
        }
        if !self.away.is_empty() {
            // Said on the next tick (see `on_tick`): this method only decides.
            let until = *self.return_deadline.get_or_insert(elapsed + RETURN_WAIT);
            if elapsed < until && !self.stopped_from_outside {
                return None;
            }
            let text = format!(
                "{} lost worker(s) never came back; not in the report: {}",
                self.away.len(),
                self.unaccounted()
            );
            fx.note(format!("warning: {text}"));
            self.agg.event(self.event_second(elapsed), text);
            self.partial = true;
        }
        if all_lost {
            self.partial = true;
        } else if !done {
            fx.note(format!(
                "warning: stopped waiting for the final snapshots of {}",
                self.agg.missing().join(", ")
            ));
            self.partial = true;
        }
        Some(fx)
    }

    /// The second a return-related event goes in: now, but never past the
    /// last second with data, so that waiting for lost members does not
    /// add empty seconds to the timeline.
    fn event_second(&self, elapsed: Duration) -> u64 {
        match self
            .agg
            .intervals()
            .iter()
            .rev()
            .find(|(_, iv)| iv.reported())
        {
            Some((t, _)) => elapsed.as_secs().min(*t),
            None => elapsed.as_secs(),
        }
    }

    /// The members still away, e.g. `w3, w7`.
    fn away_list(&self) -> String {
        self.away.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// What each member still away owes the report, e.g. `w3 (lost at 12s): snapshot(s) 4..9 (5)`.
    fn unaccounted(&self) -> String {
        self.away
            .iter()
            .map(|(id, lost)| {
                let lost = lost.as_secs();
                match self.agg.outstanding(id) {
                    Some((from, Some(end))) => format!(
                        "{id} (lost at {lost}s): snapshot(s) {from}..{end} ({})",
                        end.saturating_sub(from)
                    ),
                    Some((from, None)) => format!(
                        "{id} (lost at {lost}s): its snapshots from second {from} on (how many it sent never came)"
                    ),
                    None => id.clone(),
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Where the run is: starting until a worker reports a second, stopping once Stop is sent.
    pub fn phase(&self) -> Phase {
        if self.stopping() {
            Phase::Stopping
        } else if self.agg.intervals().is_empty() {
            Phase::Starting
        } else {
            Phase::Running
        }
    }

    /// The run's whole live state at `elapsed` (`Phase::Done` once the run is over).
    pub fn live_view(&self, elapsed: Duration, done: bool) -> LiveView {
        live::view(
            &self.agg,
            ViewMeta {
                spec: self.spec,
                phase: if done { Phase::Done } else { self.phase() },
                elapsed,
                heartbeats: &self.heartbeats,
            },
        )
    }

    /// Sends the live view to whoever watches, if anyone does.
    fn publish(&self, elapsed: Duration, done: bool) {
        if let Some(tx) = &self.options.live {
            tx.send_replace(Some(Arc::new(self.live_view(elapsed, done))));
        }
    }

    /// The merged report of the run.
    pub fn finish(self, started_at: String) -> Result<RunResult, CoordinatorError> {
        let all_lost = self.agg.all_lost();
        let report = build(
            &self.agg,
            ReportMeta {
                spec: self.spec,
                started_at,
                partial: self.partial,
                broke_at: self.broke_at,
                aborted: self.aborted,
            },
        )
        .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
        Ok(RunResult { report, all_lost })
    }

    fn split(&self, n: usize) -> Vec<partition::Share> {
        partition::split(
            self.spec.load.peak_users(),
            &self.spec.class_weights(),
            n,
            self.spawn_rate,
        )
    }

    /// A worker left the run (lost or failed): record it and, while the run
    /// is going and rebalancing is on, give its share to the others. Only
    /// once per worker: a worker that already left changes nothing.
    fn drop_worker(&mut self, worker: &str, what: &str, elapsed: Duration) {
        let Some(place) = self.running.iter().position(|id| id == worker) else {
            return;
        };
        self.running.remove(place);
        // The survivors' Adjust lifts their pools' ceilings (`ceiling`).
        self.ceilings.reset();
        self.agg.mark_lost(worker, elapsed.as_secs_f64());
        let t = elapsed.as_secs();
        let what = worker_text::clean(what);
        let moving = self.options.rebalance && !self.stopping();
        if moving && !self.running.is_empty() {
            let n = self.running.len();
            // The survivors hear their new place at the next tick, once for
            // every loss since the last: when 464 of 600 workers were lost
            // within a second, an Adjust per loss and survivor was about
            // 140,000 messages, and worker 0 applied 464 Adjusts in a row
            // (one `now worker 1 of N` line each), its link loop waiting on
            // the hand-over of each to the run.
            self.rebalance_due = true;
            self.agg.event(
                t,
                format!("worker {worker} {what}; its load moved to {n} survivor(s)"),
            );
        } else {
            self.agg.event(t, format!("worker {worker} {what}"));
        }
    }

    /// Tells each of `workers` its new place after the set of workers changed.
    fn adjust(&self, fx: &mut Effects, workers: &[String], shares: &[partition::Share]) {
        for (i, id) in workers.iter().enumerate() {
            fx.send(
                id,
                CoordinatorMessage::Adjust {
                    run_id: self.run_id.clone(),
                    share: shares[i].clone(),
                    worker_index: u32::try_from(i).unwrap_or(u32::MAX),
                    worker_count: u32::try_from(shares.len()).unwrap_or(u32::MAX),
                },
            );
        }
    }

    /// Stop to every worker that took part, and the deadline for their final snapshots.
    fn stop_all(&mut self, fx: &mut Effects, elapsed: Duration) {
        let graceful = self.spec.graceful_stop;
        for id in &self.members {
            fx.send(
                id,
                CoordinatorMessage::Stop {
                    run_id: self.run_id.clone(),
                    graceful,
                },
            );
        }
        self.stop_deadline = Some(elapsed + graceful + FINAL_SNAPSHOT_SLACK);
    }
}

/// The value a stop condition looks at in one second's figures.
fn second_value(t: &Threshold, l: &LiveLine) -> f64 {
    match t.metric {
        Metric::Latency(stat) => stat.of(&l.latency),
        Metric::ErrorRate => squall_common::report::ratio(l.failures, l.requests),
        Metric::Rps => l.rps,
        Metric::Requests => l.requests as f64,
        Metric::Failures => l.failures as f64,
        // Refused in `stop_when` when the file is loaded: a second's figures
        // do not break failures down by kind.
        Metric::Checks => f64::NAN,
    }
}

/// Runs one scenario on every currently attached worker: feeds the cluster's
/// events, a one-second tick and interrupts to a [`RunController`] until the run is over.
pub async fn run_scenario(
    cluster: &mut Cluster,
    spec: &RunSpec,
    options: RunOptions,
) -> Result<RunResult, CoordinatorError> {
    let links = cluster.links();
    let workers: Vec<String> = links.iter().map(|l| l.id.clone()).collect();
    if workers.is_empty() {
        return Err(CoordinatorError::NoWorkers {
            wanted: 1,
            attached: 0,
            waited: Duration::ZERO,
        });
    }
    let run_id = options.run_id.clone().unwrap_or_else(new_run_id);
    let stop = options.stop.clone();
    let spec_with_phases = spec;
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let (shared, mut phases) = match setup(spec, stop.as_deref()).await {
        Ok(done) => done,
        Err(reason) => return Err(CoordinatorError::SetupFailed { reason }),
    };
    // Workers get what setup captured, and never the phases themselves.
    let load_spec = RunSpec {
        setup: None,
        teardown: None,
        shared_vars: shared.clone(),
        ..spec.clone()
    };
    let spec = &load_spec;
    let (mut run, fx) = RunController::new(spec, &workers, options, run_id, rand::random());
    for l in &links {
        run.set_cores(&l.id, l.hello.cores);
    }
    apply(cluster, fx);

    let t0 = Instant::now();
    run.publish(Duration::ZERO, false);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = squall_worker::cli::signal::interrupted();
    tokio::pin!(ctrl_c);
    loop {
        if let Some(fx) = run.over(t0.elapsed()) {
            apply(cluster, fx);
            break;
        }
        let fx = tokio::select! {
            ev = cluster.next() => match ev {
                None => return Err(CoordinatorError::Internal("event channel closed".into())),
                Some(ClusterEvent::Joined(link)) => {
                    let fx = run.on_joined(&link.id, t0.elapsed());
                    run.set_cores(&link.id, link.hello.cores);
                    fx
                }
                Some(ClusterEvent::Left { worker, reason }) => run.on_left(&worker, &reason, t0.elapsed()),
                Some(ClusterEvent::Message { worker, msg }) => run.on_message(&worker, &msg, t0.elapsed()),
            },
            _ = tick.tick() => {
                let fx = run.on_tick(t0.elapsed());
                run.publish(t0.elapsed(), false);
                fx
            }
            _ = &mut ctrl_c => {
                ctrl_c.set(squall_worker::cli::signal::interrupted());
                run.on_interrupt(t0.elapsed())
            }
            () = stop_requested(stop.as_deref()) => run.on_stop_request(t0.elapsed()),
        };
        apply(cluster, fx);
    }
    run.publish(t0.elapsed(), true);
    let mut result = run.finish(started_at);
    if let Some(done) = teardown(spec_with_phases, &shared, stop.as_deref()).await {
        phases.push(done);
    }
    if let Ok(r) = &mut result {
        r.report.phases = phases;
    }
    result
}

/// Runs `setup:` (if any) before any user starts: what it captured and its
/// report, or why it failed, after `teardown:` cleaned up what it made.
async fn setup(
    spec: &RunSpec,
    stop: Option<&tokio::sync::Notify>,
) -> Result<
    (
        Vec<(String, String)>,
        Vec<squall_common::report::PhaseReport>,
    ),
    String,
> {
    let Some(flow) = &spec.setup else {
        return Ok((Vec::new(), Vec::new()));
    };
    let done = crate::setup::run(spec, flow, &[], stop).await;
    crate::terminal::note(&crate::setup::line(&done));
    if let Some(reason) = done.report.error.clone() {
        // Setup may have made something before the failing step: clean it up.
        teardown(spec, &done.captured, stop).await;
        return Err(reason);
    }
    Ok((done.captured, vec![done.report]))
}

/// Runs `teardown:` (if any) with what setup captured; a failure is a
/// warning, never a change of the verdict.
async fn teardown(
    spec: &RunSpec,
    shared: &[(String, String)],
    stop: Option<&tokio::sync::Notify>,
) -> Option<squall_common::report::PhaseReport> {
    let flow = spec.teardown.as_ref()?;
    let done = crate::setup::run(spec, flow, shared, stop).await;
    let line = crate::setup::line(&done);
    crate::terminal::note(&if done.passed() {
        line
    } else {
        format!("warning: {line}")
    });
    Some(done.report)
}

/// A fresh run id: 12 lowercase hex digits (what serve mode accepts in its paths).
pub fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Resolves when a stop is requested from outside; never without a way to request one.
async fn stop_requested(stop: Option<&tokio::sync::Notify>) {
    match stop {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// Prints the handler's lines and queues its messages, in order, without
/// waiting on any worker: one that does not keep up is disconnected (see
/// [`Cluster::send`]), so the loop always gets to its tick and to interrupts.
fn apply(cluster: &mut Cluster, fx: Effects) {
    for line in fx.notes {
        crate::terminal::note(&line);
    }
    for (worker, msg) in fx.sends {
        cluster.send(&worker, msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_common::scenario::Loaded;

    fn spec(scenario: &str) -> RunSpec {
        let text = "host: http://127.0.0.1:1\nscenarios:\n  s: { users: 4, spawn_rate: 4, duration: 10s }\n  stress: { users: 4, duration: 10s, stop_when: [\"requests > 5\"] }\n  guarded: { users: 4, duration: 10s, thresholds: [\"requests < 5, abort after 2s\"] }\nuser_classes:\n  u: { tasks: [ { name: a, get: /a } ] }\n";
        Loaded::from_str("t.yaml", text)
            .and_then(|l| l.resolve(scenario, &Default::default(), false))
            .expect("valid")
    }

    const OPTIONS: RunOptions = RunOptions {
        headless: true,
        rebalance: true,
        live: None,
        run_id: None,
        stop: None,
    };

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn snap(run_id: &str, seq: u64, requests: u64) -> WorkerMessage {
        WorkerMessage::Snapshot(crate::aggregator::one_endpoint_second(
            run_id, seq, 2, requests,
        ))
    }

    fn status(run_id: &str, state: WorkerState, snapshots_sent: u64) -> WorkerMessage {
        WorkerMessage::Status(Status {
            run_id: run_id.into(),
            state,
            reason: "boom".into(),
            snapshots_sent,
        })
    }

    /// The lost-worker tests' start: w1 and w2 on scenario `s`; w2 sends its
    /// first second (4 requests) and is lost by its link at 6 s, so the run's
    /// end is to wait for it to come back with what it may still hold.
    fn w2_lost_at_6s(spec: &RunSpec) -> RunController<'_> {
        let (mut run, _) = RunController::new(spec, &ids(&["w1", "w2"]), OPTIONS, "r".into(), 7);
        run.on_message("w2", &snap("r", 0, 4), secs(1));
        run.on_left("w2", "no heartbeat for 5s", secs(6));
        run
    }

    /// Whether an event on a report's timeline mentions `text`.
    fn has_event(timeline: &[squall_common::report::TimelinePoint], text: &str) -> bool {
        timeline
            .iter()
            .any(|p| p.event.as_deref().is_some_and(|e| e.contains(text)))
    }

    /// (worker, kind, worker_index, worker_count) of each message sent.
    fn sent(fx: &Effects) -> Vec<(String, &'static str, u32, u32)> {
        fx.sends
            .iter()
            .map(|(w, m)| match m {
                CoordinatorMessage::Start(s) => {
                    (w.clone(), "start", s.worker_index, s.worker_count)
                }
                CoordinatorMessage::Adjust {
                    worker_index,
                    worker_count,
                    ..
                } => (w.clone(), "adjust", *worker_index, *worker_count),
                CoordinatorMessage::Stop { .. } => (w.clone(), "stop", 0, 0),
                CoordinatorMessage::Ack { seq, .. } => (w.clone(), "ack", *seq as u32, 0),
                _ => (w.clone(), "other", 0, 0),
            })
            .collect()
    }

    #[test]
    fn starts_every_worker_with_its_place_in_the_split() {
        let spec = spec("s");
        let (_, fx) = RunController::new(&spec, &ids(&["w1", "w2"]), OPTIONS, "r".into(), 7);
        assert_eq!(
            sent(&fx),
            vec![("w1".into(), "start", 0, 2), ("w2".into(), "start", 1, 2)]
        );
        assert!(
            fx.notes[0].starts_with("run r: scenario `s`"),
            "{:?}",
            fx.notes
        );
    }

    #[test]
    fn a_lost_worker_moves_its_share_and_is_handled_once() {
        let spec = spec("s");
        let (mut run, _) =
            RunController::new(&spec, &ids(&["w1", "w2", "w3"]), OPTIONS, "r".into(), 7);
        assert!(run.on_left("w2", "stream closed", secs(2)).sends.is_empty());
        // The survivors hear their new place at the next tick, once.
        let fx = run.on_tick(secs(2));
        assert_eq!(
            sent(&fx),
            vec![("w1".into(), "adjust", 0, 2), ("w3".into(), "adjust", 1, 2)]
        );
        assert!(run.on_tick(secs(3)).sends.is_empty());
        assert!(run.over(secs(2)).is_none());
        // A worker that was never a member is not news.
        assert!(run.on_left("w9", "gone", secs(3)).sends.is_empty());
    }

    /// A worker lost by its link may come back with snapshots the
    /// coordinator never acknowledged: the run waits for it (boundedly)
    /// once the others are done, counts what it resends once, and ends as
    /// soon as it has delivered everything.
    #[test]
    fn the_end_waits_for_a_lost_worker_that_comes_back_and_counts_its_resends_once() {
        let spec = spec("s");
        let mut run = w2_lost_at_6s(&spec);
        run.on_message("w1", &snap("r", 0, 3), secs(1));
        run.on_message("w1", &status("r", WorkerState::Stopped, 1), secs(10));
        assert!(run.over(secs(10)).is_none(), "w2 may come back");
        let fx = run.on_tick(secs(10));
        assert!(
            fx.notes.iter().any(|n| n.contains(
                "waiting up to 15s for 1 lost worker(s) to come back with their snapshots: w2"
            )),
            "{:?}",
            fx.notes
        );
        let back = run.on_joined("w2", secs(12));
        assert!(back.sends.is_empty(), "no load for a member that was lost");
        assert!(back.notes[0].contains("w2 is back"), "{:?}", back.notes);
        // Its outbox replays from its oldest unacknowledged snapshot: seq 0 again, then 1.
        run.on_message("w2", &snap("r", 0, 4), secs(12));
        run.on_message("w2", &snap("r", 1, 6), secs(12));
        assert!(
            run.over(secs(12)).is_none(),
            "its final count is not in yet"
        );
        let fx = run.on_message("w2", &status("r", WorkerState::Stopped, 2), secs(12));
        assert!(fx.notes[0].contains("w2 came back and delivered all its snapshots"));
        let fx = run.over(secs(12)).expect("everything is in");
        assert!(fx.notes.is_empty(), "{:?}", fx.notes);
        let report = run.finish("now".into()).expect("report").report;
        assert_eq!(
            report.totals.requests, 13,
            "4 + 6 from w2 (seq 0 once), 3 from w1"
        );
        assert!(!report.partial);
    }

    #[test]
    fn a_lost_worker_that_never_comes_back_is_waited_for_boundedly_and_named() {
        let spec = spec("s");
        let mut run = w2_lost_at_6s(&spec);
        run.on_message("w1", &snap("r", 0, 3), secs(1));
        run.on_message("w1", &status("r", WorkerState::Stopped, 1), secs(10));
        assert!(run.over(secs(10)).is_none());
        assert!(
            run.over(secs(10) + RETURN_WAIT - Duration::from_millis(1))
                .is_none()
        );
        let fx = run
            .over(secs(10) + RETURN_WAIT)
            .expect("the wait is bounded");
        assert!(
            fx.notes[0].contains("1 lost worker(s) never came back; not in the report: w2 (lost at 6s): its snapshots from second 1 on"),
            "{:?}",
            fx.notes
        );
        let report = run.finish("now".into()).expect("report").report;
        assert!(report.partial);
        assert_eq!(report.totals.requests, 7);
        assert!(has_event(&report.timeline, "never came back"));
    }

    /// A member lost before its Start reached it comes back with nothing: not waited for.
    #[test]
    fn a_lost_worker_that_never_started_is_not_waited_for() {
        let spec = spec("s");
        let (mut run, _) = RunController::new(&spec, &ids(&["w1", "w2"]), OPTIONS, "r".into(), 7);
        run.on_left("w2", "the worker closed its stream", secs(6));
        run.on_joined("w2", secs(7));
        run.on_message("w1", &snap("r", 0, 3), secs(1));
        run.on_message("w1", &status("r", WorkerState::Stopped, 1), secs(9));
        assert!(run.over(secs(9)).is_none());
        assert!(
            run.on_tick(secs(9))
                .notes
                .iter()
                .all(|n| !n.contains("nothing to resend"))
        );
        let fx = run.on_tick(secs(10));
        assert!(
            fx.notes
                .iter()
                .any(|n| n.contains("worker w2 came back with nothing to resend")),
            "{:?}",
            fx.notes
        );
        assert!(run.over(secs(10)).is_some());
        assert!(!run.finish("now".into()).expect("report").report.partial);
    }

    /// An interrupted run ends without waiting for lost members, naming them.
    #[test]
    fn an_interrupted_run_does_not_wait_for_lost_workers() {
        let spec = spec("s");
        let mut run = w2_lost_at_6s(&spec);
        run.on_interrupt(secs(7));
        run.on_message("w1", &status("r", WorkerState::Stopped, 0), secs(8));
        let fx = run.over(secs(8)).expect("no wait after an interrupt");
        assert!(fx.notes[0].contains("never came back"), "{:?}", fx.notes);
    }

    /// When every worker is lost the run is over, but what they recorded may still come back.
    #[test]
    fn all_lost_still_waits_for_returns() {
        let spec = spec("s");
        let (mut run, _) = RunController::new(&spec, &ids(&["w1"]), OPTIONS, "r".into(), 7);
        run.on_left("w1", "no heartbeat for 5s", secs(6));
        assert!(run.over(secs(6)).is_none());
        run.on_joined("w1", secs(8));
        run.on_message("w1", &snap("r", 0, 3), secs(8));
        run.on_message("w1", &status("r", WorkerState::Stopped, 1), secs(8));
        assert!(run.over(secs(8)).is_some());
        let result = run.finish("now".into()).expect("report");
        assert!(result.all_lost);
        assert_eq!(result.report.totals.requests, 3);
    }

    #[test]
    fn no_rebalance_keeps_shares_where_they_are() {
        let spec = spec("s");
        let options = RunOptions {
            rebalance: false,
            ..OPTIONS
        };
        let (mut run, _) = RunController::new(&spec, &ids(&["w1", "w2"]), options, "r".into(), 7);
        assert!(run.on_left("w2", "gone", secs(2)).sends.is_empty());
        assert!(run.on_tick(secs(2)).sends.is_empty());
        assert!(run.on_joined("w3", secs(3)).sends.is_empty());
    }

    #[test]
    fn a_newcomer_starts_part_way_and_the_others_adjust() {
        let spec = spec("s");
        let (mut run, _) = RunController::new(&spec, &ids(&["w1"]), OPTIONS, "r".into(), 7);
        let fx = run.on_joined("w2", secs(4));
        assert_eq!(
            sent(&fx),
            vec![("w2".into(), "start", 1, 2), ("w1".into(), "adjust", 0, 2)]
        );
        match &fx.sends[0].1 {
            CoordinatorMessage::Start(s) => assert_eq!(s.plan_offset, secs(4)),
            other => panic!("expected Start, got {other:?}"),
        }
    }

    #[test]
    fn snapshots_are_acked_and_the_run_ends_when_all_are_in() {
        let spec = spec("s");
        let (mut run, _) = RunController::new(&spec, &ids(&["w1"]), OPTIONS, "r".into(), 7);
        let fx = run.on_message("w1", &snap("r", 0, 3), secs(1));
        assert_eq!(sent(&fx), vec![("w1".into(), "ack", 1, 0)]);
        // Another run's snapshot is neither acked nor counted.
        assert!(
            run.on_message("w1", &snap("old", 1, 9), secs(1))
                .sends
                .is_empty()
        );
        run.on_message("w1", &status("r", WorkerState::Stopped, 2), secs(10));
        assert!(run.over(secs(10)).is_none(), "seq 1 is still missing");
        run.on_message("w1", &snap("r", 1, 2), secs(10));
        assert!(run.over(secs(10)).is_some());
        let result = run.finish("now".into()).expect("report");
        assert_eq!(result.report.totals.requests, 5);
        assert!(!result.all_lost);
        assert!(!result.report.partial);
    }

    #[test]
    fn a_failed_worker_is_dropped_and_all_lost_ends_the_run() {
        let spec = spec("s");
        let (mut run, _) = RunController::new(&spec, &ids(&["w1"]), OPTIONS, "r".into(), 7);
        let fx = run.on_message("w1", &status("r", WorkerState::Failed, 0), secs(1));
        assert!(fx.notes[0].contains("failed: boom"), "{:?}", fx.notes);
        assert!(run.over(secs(1)).is_some());
        let result = run.finish("now".into()).expect("report");
        assert!(result.all_lost);
        assert!(result.report.partial);
    }

    #[test]
    fn the_fallback_stop_goes_out_after_the_plan_and_the_wait_is_bounded() {
        let spec = spec("s");
        let (mut run, _) = RunController::new(&spec, &ids(&["w1", "w2"]), OPTIONS, "r".into(), 7);
        assert!(run.on_tick(secs(12)).sends.is_empty());
        let fx = run.on_tick(secs(13));
        assert_eq!(
            sent(&fx),
            vec![("w1".into(), "stop", 0, 0), ("w2".into(), "stop", 0, 0)]
        );
        // Stop is sent once.
        assert!(run.on_tick(secs(14)).sends.is_empty());
        let deadline = secs(13) + spec.graceful_stop + FINAL_SNAPSHOT_SLACK;
        assert!(run.over(deadline - Duration::from_millis(1)).is_none());
        let fx = run.over(deadline).expect("over at the deadline");
        assert!(fx.notes[0].contains("w1, w2"), "{:?}", fx.notes);
    }

    #[test]
    fn interrupts_stop_then_abandon() {
        let spec = spec("s");
        let (mut run, _) = RunController::new(&spec, &ids(&["w1"]), OPTIONS, "r".into(), 7);
        let fx = run.on_interrupt(secs(2));
        assert_eq!(sent(&fx), vec![("w1".into(), "stop", 0, 0)]);
        assert!(run.over(secs(3)).is_none());
        assert!(run.on_interrupt(secs(3)).sends.is_empty());
        assert!(run.over(secs(3)).is_some());
        assert!(run.finish("now".into()).expect("report").report.partial);
    }

    #[test]
    fn a_stop_condition_stops_the_run_and_records_the_break_point() {
        let spec = spec("stress");
        let (mut run, _) = RunController::new(&spec, &ids(&["w1"]), OPTIONS, "r".into(), 7);
        run.on_message("w1", &snap("r", 0, 3), secs(1));
        run.on_message("w1", &snap("r", 1, 9), secs(2));
        let fx = run.on_tick(secs(2));
        assert_eq!(sent(&fx), vec![("w1".into(), "stop", 0, 0)]);
        assert!(
            fx.notes
                .iter()
                .any(|n| n.contains("stop condition `requests > 5` met"))
        );
        run.on_message("w1", &status("r", WorkerState::Stopped, 2), secs(3));
        assert!(run.over(secs(3)).is_some());
        let report = run.finish("now".into()).expect("report").report;
        let broke = report.broke_at.expect("break point");
        assert_eq!(broke.condition, "requests > 5");
        assert_eq!(broke.actual, 9.0);
    }

    /// A FAILED status repeated is handled once: one note, one Adjust round,
    /// one timeline event, and its reason cleaned and bounded everywhere.
    #[test]
    fn a_repeated_failure_is_handled_once_and_its_reason_is_cleaned() {
        let spec = spec("s");
        let (mut run, _) =
            RunController::new(&spec, &ids(&["w1", "w2", "w3"]), OPTIONS, "r".into(), 7);
        let failed = WorkerMessage::Status(Status {
            run_id: "r".into(),
            state: WorkerState::Failed,
            reason: format!("\x1b]0;pwned\x07\x1b[2J{}", "A".repeat(100_000)),
            snapshots_sent: 0,
        });
        let fx = run.on_message("w2", &failed, secs(2));
        assert!(fx.sends.is_empty());
        assert_eq!(
            sent(&run.on_tick(secs(2))),
            vec![("w1".into(), "adjust", 0, 2), ("w3".into(), "adjust", 1, 2)]
        );
        assert_eq!(fx.notes.len(), 1);
        assert!(!fx.notes[0].contains('\x1b'), "{:?}", fx.notes[0]);
        assert!(fx.notes[0].len() < 1_000, "{}", fx.notes[0].len());
        for t in 3..10 {
            let again = run.on_message("w2", &failed, secs(t));
            assert!(again.sends.is_empty() && again.notes.is_empty());
            assert!(run.on_tick(secs(t)).sends.is_empty());
        }
        // Its stream closing afterwards is not news either.
        let left = run.on_left("w2", "the worker closed its stream", secs(10));
        assert!(left.sends.is_empty() && left.notes.is_empty());
        // A lost worker's escapes are cleaned too.
        let lost = run.on_left("w3", "stream error: \x1b[2J", secs(10));
        assert!(!lost.notes[0].contains('\x1b'), "{:?}", lost.notes);
        let report = run.finish("now".into()).expect("report").report;
        let events: Vec<&String> = report
            .timeline
            .iter()
            .filter_map(|p| p.event.as_ref())
            .collect();
        let w2: Vec<_> = events.iter().filter(|e| e.contains("worker w2")).collect();
        assert_eq!(w2.len(), 1, "{events:?}");
        assert!(w2[0].len() < 1_000 && !w2[0].contains('\x1b'), "{}", w2[0]);
        let w2 = report.workers.iter().find(|w| w.id == "w2").expect("w2");
        assert_eq!(w2.states.iter().filter(|s| s.state == "lost").count(), 1);
    }

    #[test]
    fn an_abort_threshold_stops_the_run_and_fails_it() {
        let spec = spec("guarded");
        let (mut run, _) = RunController::new(&spec, &ids(&["w1"]), OPTIONS, "r".into(), 7);
        run.on_message("w1", &snap("r", 0, 9), secs(1));
        // Not judged before its delay.
        assert!(run.on_tick(secs(1)).sends.is_empty());
        let fx = run.on_tick(secs(2));
        assert_eq!(sent(&fx), vec![("w1".into(), "stop", 0, 0)]);
        assert!(
            fx.notes
                .iter()
                .any(|n| n.contains("threshold `requests < 5, abort after 2s` failed at 2s")),
            "{:?}",
            fx.notes
        );
        // Stop goes out once.
        assert!(run.on_tick(secs(3)).sends.is_empty());
        run.on_message("w1", &snap("r", 1, 1), secs(3));
        run.on_message("w1", &status("r", WorkerState::Stopped, 2), secs(3));
        assert!(run.over(secs(3)).is_some());
        let report = run.finish("now".into()).expect("report").report;
        let aborted = report.aborted.expect("aborted");
        assert_eq!(
            (aborted.t, aborted.threshold.as_str(), aborted.actual),
            (2, "requests < 5, abort after 2s", 9.0)
        );
        assert!(!report.passed);
        assert_eq!(report.totals.requests, 10);
        assert!(!report.thresholds[0].passed);
        assert!(has_event(&report.timeline, "run aborted"));
    }

    #[test]
    fn heartbeats_record_cpu_and_warn_once_when_busy() {
        let spec = spec("s");
        let (mut run, _) = RunController::new(&spec, &ids(&["w1", "w2"]), OPTIONS, "r".into(), 7);
        let hb = |state, cpu_percent| {
            WorkerMessage::Heartbeat(Heartbeat {
                state,
                active_users: 2,
                cpu_percent,
            })
        };
        // Idle heartbeats (before the run reached the worker) do not count.
        assert!(
            run.on_message("w1", &hb(WorkerState::Ready, 80.0), secs(0))
                .notes
                .is_empty()
        );
        assert!(
            run.on_message("w1", &hb(WorkerState::Running, 30.0), secs(1))
                .notes
                .is_empty()
        );
        // One busy second (spawning, say) is not news; two in a row are.
        for (t, pct) in [(2, 95.0), (3, 50.0), (4, 95.0)] {
            assert!(
                run.on_message("w1", &hb(WorkerState::Running, pct), secs(t))
                    .notes
                    .is_empty()
            );
        }
        let fx = run.on_message("w1", &hb(WorkerState::Running, 97.0), secs(5));
        assert!(
            fx.notes[0].contains("worker w1 is using 97% of its machine's CPU"),
            "{:?}",
            fx.notes
        );
        // Once per run.
        assert!(
            run.on_message("w1", &hb(WorkerState::Running, 99.0), secs(6))
                .notes
                .is_empty()
        );
        run.on_message("w2", &hb(WorkerState::Running, 10.0), secs(1));
        let cpu = &run.agg.workers()["w1"].cpu;
        assert_eq!(cpu.max(), Some(99.0));
        // 30, 95, 50, 95, 97, 99.
        assert!((cpu.mean().expect("mean") - 466.0 / 6.0).abs() < 1e-3);
        assert_eq!(run.agg.workers()["w2"].cpu.max(), Some(10.0));
    }

    /// The live view follows the run: starting, running with the latest
    /// second's figures and cumulative endpoints, stopping, done; heartbeats
    /// give each worker's users and CPU.
    #[test]
    fn the_live_view_follows_the_run() {
        let spec = spec("s");
        let (tx, rx) = tokio::sync::watch::channel(None);
        let options = RunOptions {
            live: Some(tx),
            ..OPTIONS
        };
        let (mut run, _) = RunController::new(&spec, &ids(&["w1", "w2"]), options, "r".into(), 7);
        assert_eq!(run.live_view(secs(0), false).phase, Phase::Starting);
        run.on_message(
            "w1",
            &WorkerMessage::Heartbeat(squall_common::protocol::Heartbeat {
                state: WorkerState::Running,
                active_users: 2,
                cpu_percent: 12.5,
            }),
            secs(1),
        );
        for w in ["w1", "w2"] {
            run.on_message(w, &snap("r", 0, 3), secs(1));
            run.on_message(w, &snap("r", 1, 5), secs(2));
        }
        run.on_tick(secs(2));
        run.publish(secs(2), false);
        let v = rx.borrow().clone().expect("published");
        assert_eq!(v.phase, Phase::Running);
        assert_eq!((v.run_id.as_str(), v.scenario.as_str()), ("r", "s"));
        assert_eq!(v.t, Some(1));
        assert!(v.complete);
        assert_eq!(v.users, 4);
        assert_eq!(v.rps, 10.0);
        assert_eq!((v.total_requests, v.total_failures), (16, 0));
        assert_eq!(v.planned_s, 10.0);
        assert_eq!(v.users_planned, 4);
        assert!(v.p99_ms > 0.0);
        assert_eq!(v.endpoints.len(), 1);
        assert_eq!(v.endpoints[0].requests, 16);
        assert_eq!(v.endpoints[0].rps, 8.0);
        let w1 = &v.workers[0];
        assert_eq!((w1.id.as_str(), w1.cpu_percent, w1.users), ("w1", 12.5, 2));
        let json = serde_json::to_value(&*v).expect("serialises");
        assert_eq!(json["phase"], "running");
        run.on_interrupt(secs(3));
        assert_eq!(run.live_view(secs(3), false).phase, Phase::Stopping);
        assert_eq!(run.live_view(secs(3), true).phase, Phase::Done);
    }
}
