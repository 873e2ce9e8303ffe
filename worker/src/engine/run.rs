//! One run on this worker: follow its exact part of the plan (users or arrivals), snapshot every second, stop on request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use squall_common::LoadModel;
use squall_common::partition::equal_part;
use squall_common::plan::Roster;
use squall_common::protocol::{Start, Status, WorkerMessage, WorkerState};
use squall_common::snapshot::{EndpointDelta, EndpointKey, Snapshot};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::plan::{Followed, SpawnPace, UserIds, follow_plan, open_plan, roster_for};
use super::prepared::PreparedRun;
use super::realtime::Realtime;
use super::recorder::SampleLog;
use super::streams::OpenStreams;
use super::threads::{Engine, EngineOptions};

/// Where a run sends its snapshots and statuses, in the order it makes them;
/// whoever holds the other end delivers them to the coordinator.
pub type RunOutput = mpsc::Sender<WorkerMessage>;

/// What the link tells a running run.
#[derive(Debug)]
enum RunCtl {
    /// Stop, giving in-flight requests this long.
    Stop(Duration),
    /// The set of workers changed: this worker is now `index` of `count`.
    Adjust { index: u32, count: u32 },
    /// The coordinator's ceiling on the open-model pool (`None`: lifted).
    PoolCeiling(Option<u64>),
}

/// A run in progress on this worker, as the link holds it.
pub struct RunHandle {
    run_id: String,
    ctl: mpsc::Sender<RunCtl>,
    active: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RunHandle {
    /// Starts the run a `Start` message describes on `threads` engine threads.
    pub fn start(
        start: Start,
        (threads, realtime): (usize, Option<Realtime>),
        samples: Option<SampleLog>,
        out: RunOutput,
    ) -> RunHandle {
        let active = Arc::new(AtomicU64::new(0));
        let (ctl, ctl_rx) = mpsc::channel(4);
        let run_id = start.run_id.clone();
        let task = tokio::spawn(run_task(
            start,
            (threads, realtime),
            samples,
            active.clone(),
            out,
            ctl_rx,
        ));
        RunHandle {
            run_id,
            ctl,
            active,
            task,
        }
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Users running now (heartbeats report it).
    pub fn active_users(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Whether the run has ended (its last snapshot and status are sent).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Asks the run to stop, giving in-flight requests `graceful`.
    pub async fn stop(&self, graceful: Duration) {
        let _ = self.ctl.send(RunCtl::Stop(graceful)).await;
    }

    /// Moves the run to its new place among the workers.
    pub async fn adjust(&self, index: u32, count: u32) {
        let _ = self.ctl.send(RunCtl::Adjust { index, count }).await;
    }

    /// Holds the open-model pool to at most `users` (`None` lifts that).
    pub async fn pool_ceiling(&self, users: Option<u64>) {
        let _ = self.ctl.send(RunCtl::PoolCeiling(users)).await;
    }

    /// Waits up to `limit` for the run to send its last snapshot and status.
    pub async fn finished(self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.task).await;
    }
}

/// Drives one run on this worker: spawn at the share's rate, snapshot every second, stop on request.
async fn run_task(
    start: Start,
    threads: (usize, Option<Realtime>),
    samples: Option<SampleLog>,
    active: Arc<AtomicU64>,
    out: RunOutput,
    mut ctl: mpsc::Receiver<RunCtl>,
) {
    let run_id = start.run_id.clone();
    let mut run = match Run::start(start, threads, samples, active, out.clone()).await {
        Ok(run) => run,
        Err(reason) => {
            let _ = out
                .send(status(&run_id, WorkerState::Failed, reason, 0))
                .await;
            return;
        }
    };
    // Checked: `Start` was validated at the wire edge (offset and plan within
    // 30 days), but clock arithmetic on values from the network never panics.
    let far = || Instant::now() + squall_common::duration::MAX;
    let first_tick = run
        .t0
        .checked_add(Duration::from_secs(run.seq.saturating_add(1)))
        .unwrap_or_else(far);
    let mut tick = tokio::time::interval_at(first_tick, Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Closed models: every 20 ms, move this worker's users per class to its
    // exact part of the global plan (the same split every worker computes).
    let mut control = tokio::time::interval(Duration::from_millis(20));
    control.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let planned_end = run.t0.checked_add(run.load.duration()).unwrap_or_else(far);
    let graceful = loop {
        tokio::select! {
            _ = control.tick(), if run.follows_users() => run.on_control().await,
            _ = tokio::time::sleep_until(planned_end) => {
                // The plan is over on this worker's own clock: finish it here
                // rather than wait for the coordinator's Stop, which left later.
                break run.graceful_stop;
            }
            _ = tick.tick() => {
                if let Some(graceful) = run.on_tick().await {
                    break graceful;
                }
            }
            c = ctl.recv() => match c {
                Some(RunCtl::Adjust { index, count }) => run.on_adjust(index, count),
                Some(RunCtl::PoolCeiling(users)) => run.engine.set_pool_ceiling(users),
                Some(RunCtl::Stop(graceful)) => break graceful,
                None => break Duration::ZERO,
            },
        }
    };
    run.finish(graceful).await;
}

fn status(run_id: &str, state: WorkerState, reason: String, sent: u64) -> WorkerMessage {
    WorkerMessage::Status(Status {
        run_id: run_id.to_owned(),
        state,
        reason,
        snapshots_sent: sent,
    })
}

/// A run's state between events: the engine, the plan's clock and this worker's place in it.
struct Run {
    run_id: String,
    engine: Engine,
    /// WebSocket and SSE connections open; None when the run has none to count.
    open_streams: Option<Arc<OpenStreams>>,
    out: RunOutput,
    keys: Vec<EndpointKey>,
    load: LoadModel,
    weights: Vec<u64>,
    graceful_stop: Duration,
    /// The run has an iteration limit, so it may end before its duration.
    limited: bool,
    /// The plan's clock: a worker joining mid-run starts part-way through it.
    t0: Instant,
    /// The next snapshot's sequence number.
    seq: u64,
    last_flush_us: u64,
    ids: UserIds,
    roster: Roster,
    pace: SpawnPace,
    running_sent: bool,
    /// A closed model at its peak with every user started stays flat until
    /// the end or an `Adjust`, so the control tick pauses (the 1 s snapshot
    /// tick still follows the plan). Measured: the 50 ticks a second were
    /// 8.7% of the generator's CPU in benchmark scenario B (1,000 users, 1 s
    /// think time).
    settled: bool,
}

impl Run {
    /// Compiles the scenario, resolves the target, starts the engine threads
    /// and, in an open model, the schedule; `Err` is the reason the run failed.
    async fn start(
        start: Start,
        (threads, realtime): (usize, Option<Realtime>),
        samples: Option<SampleLog>,
        active: Arc<AtomicU64>,
        out: RunOutput,
    ) -> Result<Run, String> {
        let prepared = Arc::new(
            PreparedRun::placed(start.spec, start.worker_index, start.worker_count)
                .map_err(|e| e.to_string())?,
        );
        let addr = resolve(&prepared.authority).await?;
        let keys: Vec<EndpointKey> = prepared.endpoints.clone();
        let open_streams = prepared.open_streams.clone();
        let load = prepared.spec.load.clone();
        let graceful_stop = prepared.spec.graceful_stop;
        let weights = prepared.spec.class_weights();
        let index = u64::from(start.worker_index);
        let count = u64::from(start.worker_count.max(1));
        let limited = prepared.spec.iterations.is_some();
        let iterations = prepared
            .spec
            .iterations
            .map(|total| equal_part(total, count, index));
        // An open-model pool is split per engine thread: never run more threads
        // than this worker has pool users, or small pools drop iterations.
        let threads = match load.max_users() {
            Some(pool) => {
                let mine = equal_part(pool, count, index);
                threads
                    .min(usize::try_from(mine).unwrap_or(usize::MAX))
                    .max(1)
            }
            None => threads,
        };
        let engine = Engine::start(
            prepared,
            addr,
            active,
            EngineOptions {
                threads,
                seed: start.seed,
                worker_index: start.worker_index,
                samples,
                iterations,
                realtime,
            },
        )
        .map_err(|e| format!("cannot start engine threads: {e}"))?;
        let _ = out
            .send(status(
                &start.run_id,
                WorkerState::Spawning,
                String::new(),
                0,
            ))
            .await;

        let now = Instant::now();
        let t0 = now.checked_sub(start.plan_offset).unwrap_or(now);
        let mut run = Run {
            run_id: start.run_id,
            engine,
            open_streams,
            out,
            keys,
            seq: start.plan_offset.as_secs(),
            last_flush_us: u64::try_from(start.plan_offset.as_micros()).unwrap_or(0),
            ids: UserIds {
                next: 0,
                index,
                count,
            },
            roster: roster_for(&load, &weights, index, count),
            pace: SpawnPace::new(&load, count),
            load,
            weights,
            graceful_stop,
            limited,
            t0,
            running_sent: false,
            settled: false,
        };
        if run.load.is_open() {
            run.engine
                .start_open(open_plan(&run.load, index, count, t0), index + 1);
            run.send_status(WorkerState::Running, 0).await;
            run.running_sent = true;
        }
        Ok(run)
    }

    /// Whether the 20 ms control tick has work: a closed model not yet settled.
    fn follows_users(&self) -> bool {
        !self.load.is_open() && !self.settled
    }

    /// The 20 ms control tick: bring the users up (or down) to the plan.
    async fn on_control(&mut self) {
        let followed = self.follow_plan();
        if followed.peak && !self.running_sent {
            self.send_status(WorkerState::Running, 0).await;
            self.running_sent = true;
        }
        self.settled =
            followed.peak && followed.caught_up && matches!(self.load, LoadModel::Closed { .. });
    }

    /// The 1 s tick: send the interval's snapshot; `Some(graceful)` ends the
    /// run (every iteration of a limited run is done).
    async fn on_tick(&mut self) -> Option<Duration> {
        // Bring the user count up to the plan first, so the snapshot's
        // users are those of its window's end.
        if !self.load.is_open() && !self.follow_plan().caught_up {
            self.settled = false;
        }
        let (snap, budget_left) = self.snapshot().await;
        self.seq += 1;
        self.send(WorkerMessage::Snapshot(snap)).await;
        if self.limited && budget_left == 0 && self.engine.active_users() == 0 {
            tracing::info!("run {}: every iteration is done", self.run_id);
            return Some(Duration::ZERO);
        }
        None
    }

    /// Moves this worker's users per class to its part of the plan now.
    fn follow_plan(&mut self) -> Followed {
        follow_plan(
            &mut self.engine,
            &self.load,
            &self.roster,
            &mut self.ids,
            self.t0,
            &mut self.pace,
        )
    }

    /// Workers came or went: take this worker's new place in the plan.
    fn on_adjust(&mut self, index: u32, count: u32) {
        let (index, count) = (u64::from(index), u64::from(count.max(1)));
        tracing::info!("run {}: now worker {} of {count}", self.run_id, index + 1);
        self.ids.index = index;
        self.ids.count = count;
        self.settled = false;
        if self.load.is_open() {
            // A new place among new workers: the coordinator judges their
            // pools afresh (`PoolCeiling`), so a ceiling set before is void.
            self.engine.set_pool_ceiling(None);
            let first_user_id = self.ids.next();
            self.engine
                .start_open(open_plan(&self.load, index, count, self.t0), first_user_id);
        } else {
            self.roster = roster_for(&self.load, &self.weights, index, count);
            self.pace = SpawnPace::new(&self.load, count);
        }
    }

    /// Stops the engine and sends the last snapshot and the final status.
    async fn finish(mut self, graceful: Duration) {
        self.send_status(WorkerState::Stopping, self.seq).await;
        // The last window's users are those running when the stop came.
        let users_at_stop = self.engine.active_users();
        self.engine.stop(graceful).await;
        let (mut snap, _) = self.snapshot().await;
        snap.active_users = users_at_stop;
        self.seq += 1;
        self.send(WorkerMessage::Snapshot(snap)).await;
        // Snapshots `first_seq..seq` were sent; the coordinator waits for them all.
        self.send_status(WorkerState::Stopped, self.seq).await;
        tracing::info!("run {} stopped after {} snapshots", self.run_id, self.seq);
    }

    async fn send(&self, m: WorkerMessage) {
        let _ = self.out.send(m).await;
    }

    async fn send_status(&self, state: WorkerState, sent: u64) {
        self.send(status(&self.run_id, state, String::new(), sent))
            .await;
    }

    /// The interval since the last snapshot, and the iterations the engine may still start.
    async fn snapshot(&mut self) -> (Snapshot, u64) {
        let delta = self.engine.flush().await;
        let now_us = u64::try_from(self.t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        let window_start_us = std::mem::replace(&mut self.last_flush_us, now_us);
        let snap = Snapshot {
            run_id: self.run_id.clone(),
            seq: self.seq,
            window_start_us,
            window_end_us: now_us,
            active_users: self.engine.active_users(),
            open_connections: self.open_streams.as_ref().map(|o| o.get()),
            dropped_iterations: delta.dropped,
            schedule_lag: lag_bytes(&delta.lag),
            generator_lag: lag_bytes(&delta.generator_lag),
            endpoints: self
                .keys
                .iter()
                .zip(delta.stats)
                .filter(|(_, s)| !s.is_empty())
                .filter_map(|(k, s)| match EndpointDelta::encode(&s) {
                    Ok(d) => Some((k.clone(), d)),
                    Err(e) => {
                        tracing::error!("cannot encode the histograms of {}: {e}", k.name);
                        None
                    }
                })
                .collect(),
        };
        (snap, delta.budget_left)
    }
}

/// The target's first address; `Err` says why there is none.
async fn resolve(authority: &str) -> Result<SocketAddr, String> {
    match tokio::net::lookup_host(authority).await {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{authority} resolves to no address")),
        Err(e) => Err(format!("cannot resolve {authority}: {e}")),
    }
}

/// A lag histogram for the snapshot: HDR V2 bytes, none when nothing was recorded.
fn lag_bytes(h: &hdrhistogram::Histogram<u64>) -> Vec<u8> {
    if h.is_empty() {
        Vec::new()
    } else {
        squall_common::snapshot::encode_v2(h).unwrap_or_default()
    }
}
