//! One run on this worker: follow its exact part of the plan (users or arrivals), snapshot every second, stop on request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use squall_common::LoadModel;
use squall_common::partition::split;
use squall_common::plan::Roster;
use squall_common::protocol::{Start, Status, WorkerMessage, WorkerState};
use squall_common::snapshot::{EndpointDelta, EndpointKey, Snapshot};
use tokio::sync::mpsc;

use crate::engine::{Engine, EngineOptions, OpenPlan};
use crate::outbox::OutboxSender;
use crate::prepared::PreparedRun;
use crate::recorder::SampleLog;

/// Drives one run on this worker: spawn at the share's rate, snapshot every second, stop on request.
pub async fn run_task(
    start: Start,
    threads: usize,
    samples: Option<SampleLog>,
    active: Arc<AtomicU64>,
    out: OutboxSender,
    mut ctl: mpsc::Receiver<RunCtl>,
) {
    let run_id = start.run_id.clone();
    let send = |m: WorkerMessage| {
        let out = out.clone();
        async move {
            let _ = out.send(m).await;
        }
    };
    let status = |state: WorkerState, reason: String, sent: u64| {
        WorkerMessage::Status(Status {
            run_id: run_id.clone(),
            state,
            reason,
            snapshots_sent: sent,
        })
    };
    let prepared = match PreparedRun::new(start.spec) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            send(status(WorkerState::Failed, e.to_string(), 0)).await;
            return;
        }
    };
    let addr: SocketAddr = match tokio::net::lookup_host(prepared.authority.as_str()).await {
        Ok(mut addrs) => match addrs.next() {
            Some(a) => a,
            None => {
                send(status(
                    WorkerState::Failed,
                    format!("{} resolves to no address", prepared.authority),
                    0,
                ))
                .await;
                return;
            }
        },
        Err(e) => {
            send(status(
                WorkerState::Failed,
                format!("cannot resolve {}: {e}", prepared.authority),
                0,
            ))
            .await;
            return;
        }
    };
    let keys: Vec<EndpointKey> = prepared.endpoints.clone();
    let load = prepared.spec.load.clone();
    let graceful_stop = prepared.spec.graceful_stop;
    let weights = prepared.spec.class_weights();
    let index = u64::from(start.worker_index);
    let count = u64::from(start.worker_count.max(1));
    let limited = prepared.spec.iterations.is_some();
    let iterations = prepared.spec.iterations.map(|total| {
        squall_common::partition::largest_remainder(total, &vec![1; count as usize])[index as usize]
    });
    // An open-model pool is split per engine thread: never run more threads
    // than this worker has pool users, or small pools drop iterations.
    let threads = match load.max_users() {
        Some(pool) => {
            let mine = squall_common::partition::largest_remainder(pool, &vec![1; count as usize])
                [index as usize];
            threads
                .min(usize::try_from(mine).unwrap_or(usize::MAX))
                .max(1)
        }
        None => threads,
    };
    let mut engine = match Engine::start(
        prepared,
        addr,
        active.clone(),
        EngineOptions {
            threads,
            seed: start.seed,
            worker_index: start.worker_index,
            samples,
            iterations,
        },
    ) {
        Ok(e) => e,
        Err(e) => {
            send(status(
                WorkerState::Failed,
                format!("cannot start engine threads: {e}"),
                0,
            ))
            .await;
            return;
        }
    };
    send(status(WorkerState::Spawning, String::new(), 0)).await;

    // The plan's clock: a worker joining mid-run starts part-way through it.
    let now = tokio::time::Instant::now();
    let t0 = now.checked_sub(start.plan_offset).unwrap_or(now);
    let mut seq = start.plan_offset.as_secs();
    let mut last_flush_us = u64::try_from(start.plan_offset.as_micros()).unwrap_or(0);
    let mut tick =
        tokio::time::interval_at(t0 + Duration::from_secs(seq + 1), Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Closed models: every 20 ms, move this worker's users per class to its
    // exact part of the global plan (the same split every worker computes).
    let mut control = tokio::time::interval(Duration::from_millis(20));
    control.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut ids = UserIds {
        next: 0,
        index,
        count,
    };
    let mut roster = roster_for(&load, &weights, index, count);
    let mut pace = SpawnPace::new(&load, count);
    let mut running_sent = false;
    let planned = load.duration();
    if load.is_open() {
        engine.start_open(open_plan(&load, index, count, t0), index + 1);
        send(status(WorkerState::Running, String::new(), 0)).await;
        running_sent = true;
    }

    // A closed model at its peak with every user started stays flat until the
    // end or an `Adjust`, so the control tick pauses (the 1 s snapshot tick
    // still follows the plan). Measured: the 50 ticks a second were 8.7% of
    // the generator's CPU in benchmark scenario B (1,000 users, 1 s think time).
    let mut settled = false;
    let graceful = loop {
        tokio::select! {
            _ = control.tick(), if !load.is_open() && !settled => {
                let followed = follow_plan(&mut engine, &load, &roster, &mut ids, t0, &mut pace);
                if followed.peak && !running_sent {
                    send(status(WorkerState::Running, String::new(), 0)).await;
                    running_sent = true;
                }
                settled = followed.peak
                    && followed.caught_up
                    && matches!(load, LoadModel::Closed { .. });
            }
            _ = tokio::time::sleep_until(t0 + planned) => {
                // The plan is over on this worker's own clock: finish it here
                // rather than wait for the coordinator's Stop, which left later.
                break graceful_stop;
            }
            _ = tick.tick() => {
                // Bring the user count up to the plan first, so the snapshot's
                // users are those of its window's end.
                if !load.is_open()
                    && !follow_plan(&mut engine, &load, &roster, &mut ids, t0, &mut pace).caught_up
                {
                    settled = false;
                }
                let (snap, budget_left) = snapshot(&engine, &keys, &run_id, seq, &mut last_flush_us, t0).await;
                seq += 1;
                send(WorkerMessage::Snapshot(snap)).await;
                if limited && budget_left == 0 && engine.active_users() == 0 {
                    tracing::info!("run {run_id}: every iteration is done");
                    break Duration::ZERO;
                }
            }
            c = ctl.recv() => match c {
                Some(RunCtl::Adjust { index, count }) => {
                    // Workers came or went: take this worker's new place in the plan.
                    let (index, count) = (u64::from(index), u64::from(count.max(1)));
                    tracing::info!("run {run_id}: now worker {} of {count}", index + 1);
                    ids.index = index;
                    ids.count = count;
                    settled = false;
                    if load.is_open() {
                        engine.start_open(open_plan(&load, index, count, t0), ids.next() );
                    } else {
                        roster = roster_for(&load, &weights, index, count);
                        pace = SpawnPace::new(&load, count);
                    }
                }
                Some(RunCtl::Stop(graceful)) => break graceful,
                None => break Duration::ZERO,
            },
        }
    };
    send(status(WorkerState::Stopping, String::new(), seq)).await;
    // The last window's users are those running when the stop came.
    let users_at_stop = engine.active_users();
    engine.stop(graceful).await;
    let (mut snap, _) = snapshot(&engine, &keys, &run_id, seq, &mut last_flush_us, t0).await;
    snap.active_users = users_at_stop;
    seq += 1;
    send(WorkerMessage::Snapshot(snap)).await;
    // Snapshots `first_seq..seq` were sent; the coordinator waits for them all.
    send(status(WorkerState::Stopped, String::new(), seq)).await;
    tracing::info!("run {run_id} stopped after {seq} snapshots");
}

/// What the agent tells a running run.
#[derive(Debug)]
pub enum RunCtl {
    /// Stop, giving in-flight requests this long.
    Stop(Duration),
    /// The set of workers changed: this worker is now `index` of `count`.
    Adjust { index: u32, count: u32 },
}

fn roster_for(load: &LoadModel, weights: &[u64], index: u64, count: u64) -> Roster {
    let peak_shares: Vec<Vec<u64>> = split(load.peak_users(), weights, count as usize, 0.0)
        .into_iter()
        .map(|s| s.users_per_class)
        .collect();
    Roster::new(&peak_shares, index as usize)
}

fn open_plan(load: &LoadModel, index: u64, count: u64, t0: tokio::time::Instant) -> OpenPlan {
    let pool = load.max_users().unwrap_or(0);
    OpenPlan {
        load: load.clone(),
        worker_index: index,
        worker_count: count,
        max_users: squall_common::partition::largest_remainder(pool, &vec![1; count as usize])
            [index as usize],
        t0: t0.into_std(),
    }
}

/// Where `follow_plan` left this worker.
struct Followed {
    /// The plan has reached its peak user count.
    peak: bool,
    /// Every class runs exactly its part of the plan (the spawn pace held nothing back).
    caught_up: bool,
}

/// Moves this worker's users per class to its part of the plan's current user count.
fn follow_plan(
    engine: &mut Engine,
    load: &LoadModel,
    roster: &Roster,
    ids: &mut UserIds,
    t0: tokio::time::Instant,
    pace: &mut SpawnPace,
) -> Followed {
    let global = load.users_at(t0.elapsed().as_secs_f64()).unwrap_or(0);
    let want = roster.users_per_class(global);
    let mut current = engine.users_per_class(want.len());
    let mut allowed = pace.allowance();
    // Interleave classes so the mix stays right within a step.
    loop {
        let mut changed = false;
        for (c, cur) in current.iter_mut().enumerate() {
            if *cur < want[c] && allowed > 0 {
                allowed -= 1;
                pace.spent(1);
                engine.spawn_user(c, ids.next());
                *cur += 1;
                changed = true;
            } else if *cur > want[c] {
                engine.retire_user(c);
                *cur -= 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    Followed {
        peak: global >= load.peak_users(),
        caught_up: current == want,
    }
}

/// Starts users no faster than this worker's part of the spawn rate, so a
/// rebalance moves a lost worker's users over at the spawn rate rather than
/// in one burst. The plan's own ramp fits within it (10 % headroom).
struct SpawnPace {
    per_second: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl SpawnPace {
    fn new(load: &LoadModel, count: u64) -> SpawnPace {
        let per_second = match load {
            LoadModel::Closed { spawn_rate, .. } => spawn_rate * 1.1 / count.max(1) as f64,
            // Stages set their own pace: follow them exactly.
            _ => f64::INFINITY,
        };
        SpawnPace {
            per_second,
            tokens: 1.0,
            last: tokio::time::Instant::now(),
        }
    }

    /// Users that may start now.
    fn allowance(&mut self) -> u64 {
        if self.per_second.is_infinite() {
            return u64::MAX;
        }
        let now = tokio::time::Instant::now();
        let burst = (self.per_second * 0.25).max(1.0);
        self.tokens = (self.tokens + self.per_second * (now - self.last).as_secs_f64()).min(burst);
        self.last = now;
        self.tokens.floor().max(0.0) as u64
    }

    fn spent(&mut self, n: u64) {
        if self.per_second.is_finite() {
            self.tokens -= n as f64;
        }
    }
}

/// User ids unique across the cluster: worker i of W numbers i+1, i+1+W, …
struct UserIds {
    next: u64,
    index: u64,
    count: u64,
}

impl UserIds {
    fn next(&mut self) -> u64 {
        let id = self.next * self.count + self.index + 1;
        self.next += 1;
        id
    }
}

async fn snapshot(
    engine: &Engine,
    keys: &[EndpointKey],
    run_id: &str,
    seq: u64,
    last_flush_us: &mut u64,
    t0: tokio::time::Instant,
) -> (Snapshot, u64) {
    let delta = engine.flush().await;
    let now_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
    let window_start_us = std::mem::replace(last_flush_us, now_us);
    let snap = Snapshot {
        run_id: run_id.to_owned(),
        seq,
        window_start_us,
        window_end_us: now_us,
        active_users: engine.active_users(),
        dropped_iterations: delta.dropped,
        schedule_lag: if delta.lag.is_empty() {
            Vec::new()
        } else {
            squall_common::snapshot::encode_v2(&delta.lag).unwrap_or_default()
        },
        endpoints: keys
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
