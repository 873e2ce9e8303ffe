//! One run on this worker: start users at the share's spawn rate, snapshot every second, stop on request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use squall_common::Share;
use squall_common::protocol::{Start, Status, WorkerMessage, WorkerState};
use squall_common::snapshot::{EndpointKey, Snapshot};
use squall_proto::pb;
use tokio::sync::mpsc;

use crate::agent::to_wire;
use crate::engine::{Engine, EngineOptions};
use crate::prepared::PreparedRun;
use crate::recorder::SampleLog;

/// The order users are started in: classes interleaved in proportion
/// (smooth weighted round-robin), so the mix is right at every moment of the ramp.
pub fn spawn_order(users_per_class: &[u64]) -> Vec<usize> {
    let total: u64 = users_per_class.iter().sum();
    let mut current = vec![0i128; users_per_class.len()];
    let mut order = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, &n) in users_per_class.iter().enumerate() {
            current[i] += i128::from(n);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= i128::from(total);
        order.push(best);
    }
    order
}

/// Drives one run on this worker: spawn at the share's rate, snapshot every second, stop on request.
pub async fn run_task(
    start: Start,
    threads: usize,
    samples: Option<SampleLog>,
    active: Arc<AtomicU64>,
    out: mpsc::Sender<pb::WorkerMessage>,
    mut ctl: mpsc::Receiver<Duration>,
) {
    let run_id = start.run_id.clone();
    let send = |m: WorkerMessage| {
        let out = out.clone();
        async move {
            if let Some(w) = to_wire(&m) {
                let _ = out.send(w).await;
            }
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
    let mut engine = match Engine::start(
        prepared,
        addr,
        active.clone(),
        EngineOptions {
            threads,
            seed: start.seed,
            worker_index: start.worker_index,
            samples,
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

    let order = spawn_order(&start.share.users_per_class);
    let rate = effective_rate(&start.share);
    let t0 = tokio::time::Instant::now();
    let mut spawned = 0usize;
    let mut seq = 0u64;
    let mut last_flush_us = 0u64;
    let mut tick = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stride = u64::from(start.worker_count.max(1));
    let spawn_at = |i: usize| t0 + Duration::from_secs_f64(i as f64 / rate);
    if order.is_empty() {
        send(status(WorkerState::Running, String::new(), 0)).await;
    }

    let graceful = loop {
        let spawning = spawned < order.len();
        tokio::select! {
            _ = tokio::time::sleep_until(if spawning { spawn_at(spawned) } else { t0 }), if spawning => {
                let now = tokio::time::Instant::now();
                while spawned < order.len() && spawn_at(spawned) <= now {
                    let user_id = spawned as u64 * stride + u64::from(start.worker_index) + 1;
                    engine.spawn_user(order[spawned], user_id);
                    spawned += 1;
                }
                if spawned == order.len() {
                    send(status(WorkerState::Running, String::new(), 0)).await;
                }
            }
            _ = tick.tick() => {
                let snap = snapshot(&engine, &keys, &run_id, seq, &mut last_flush_us, t0).await;
                seq += 1;
                send(WorkerMessage::Snapshot(snap)).await;
            }
            c = ctl.recv() => break c.unwrap_or(Duration::ZERO),
        }
    };
    send(status(WorkerState::Stopping, String::new(), seq)).await;
    engine.stop(graceful).await;
    let snap = snapshot(&engine, &keys, &run_id, seq, &mut last_flush_us, t0).await;
    seq += 1;
    send(WorkerMessage::Snapshot(snap)).await;
    send(status(WorkerState::Stopped, String::new(), seq)).await;
    tracing::info!("run {run_id} stopped after {seq} snapshots");
}

fn effective_rate(share: &Share) -> f64 {
    if share.spawn_rate.is_finite() && share.spawn_rate > 0.0 {
        share.spawn_rate
    } else {
        f64::MAX
    }
}

async fn snapshot(
    engine: &Engine,
    keys: &[EndpointKey],
    run_id: &str,
    seq: u64,
    last_flush_us: &mut u64,
    t0: tokio::time::Instant,
) -> Snapshot {
    let stats = engine.flush().await;
    let now_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
    let window_start_us = std::mem::replace(last_flush_us, now_us);
    Snapshot {
        run_id: run_id.to_owned(),
        seq,
        window_start_us,
        window_end_us: now_us,
        active_users: engine.active_users(),
        endpoints: keys
            .iter()
            .cloned()
            .zip(stats)
            .filter(|(_, s)| !s.is_empty())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_order_is_exact_and_interleaved() {
        let order = spawn_order(&[3, 1]);
        assert_eq!(order, vec![0, 0, 1, 0]);
        let order = spawn_order(&[250, 84]);
        assert_eq!(order.iter().filter(|&&c| c == 0).count(), 250);
        assert_eq!(order.iter().filter(|&&c| c == 1).count(), 84);
        // In every prefix the mix stays within one user of the target proportion.
        for n in 1..=order.len() {
            let ones = order[..n].iter().filter(|&&c| c == 1).count() as f64;
            assert!((ones - n as f64 * 84.0 / 334.0).abs() <= 1.0);
        }
        assert!(spawn_order(&[]).is_empty());
    }
}
