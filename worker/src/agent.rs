//! The worker's side of the cluster: dial the coordinator, retry with backoff, and run what it says.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use squall_common::Share;
use squall_common::protocol::{
    CoordinatorMessage, Heartbeat, Hello, PROTOCOL_VERSION, Start, Status, TOKEN_METADATA,
    WorkerMessage, WorkerState,
};
use squall_common::snapshot::{EndpointKey, Snapshot};
use squall_proto::pb;
use squall_proto::{CoordinatorClient, decode_coordinator_message};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::engine::{Engine, EngineOptions};
use crate::error::WorkerError;
use crate::prepared::PreparedRun;
use crate::recorder::SampleLog;

/// Largest gRPC message either side accepts: a snapshot with hundreds of endpoints fits easily.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// A validated worker configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `http://host:port` of the coordinator.
    pub master: String,
    pub token: Option<String>,
    pub id: String,
    /// Engine threads (one current-thread runtime each).
    pub threads: usize,
    pub labels: BTreeMap<String, String>,
    pub samples_file: Option<PathBuf>,
    /// Stop retrying after this long without reaching a coordinator; `None` retries forever.
    pub give_up_after: Option<Duration>,
}

impl AgentConfig {
    /// Normalises `host:port` or `http://host:port` into a URL tonic can dial.
    pub fn master_url(master: &str) -> Result<String, WorkerError> {
        let url = if master.contains("://") {
            master.to_owned()
        } else {
            format!("http://{master}")
        };
        let parsed: http::Uri = url
            .parse()
            .map_err(|_| WorkerError::MasterAddress(master.to_owned()))?;
        if parsed.host().is_none() || parsed.port_u16().is_none() {
            return Err(WorkerError::MasterAddress(master.to_owned()));
        }
        Ok(url)
    }
}

/// How a session with a coordinator ended.
enum SessionEnd {
    Shutdown(String),
    Lost(String),
}

enum SessionError {
    Unreachable(String),
    Refused(String),
}

/// Attaches to the coordinator and serves runs until told to shut down.
/// Reconnects with backoff when the coordinator is not there or goes away.
pub async fn run(cfg: AgentConfig) -> Result<(), WorkerError> {
    let samples = match &cfg.samples_file {
        Some(p) => Some(SampleLog::create(p)?),
        None => None,
    };
    let mut backoff = Duration::from_millis(250);
    let mut unreachable_since: Option<Instant> = None;
    loop {
        match session(&cfg, samples.clone()).await {
            Ok(SessionEnd::Shutdown(reason)) => {
                tracing::info!("coordinator asked this worker to shut down: {reason}");
                return Ok(());
            }
            Ok(SessionEnd::Lost(reason)) => {
                tracing::warn!("lost the coordinator ({reason}); load stopped; reconnecting");
                backoff = Duration::from_millis(250);
                unreachable_since = None;
            }
            Err(SessionError::Refused(msg)) => return Err(WorkerError::Refused(msg)),
            Err(SessionError::Unreachable(msg)) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if let Some(limit) = cfg.give_up_after
                    && since.elapsed() >= limit
                {
                    return Err(WorkerError::Unreachable {
                        master: cfg.master.clone(),
                        waited: limit,
                    });
                }
                tracing::warn!(
                    "no coordinator at {} ({msg}); retrying in {:.1}s",
                    cfg.master,
                    backoff.as_secs_f64()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn to_wire(m: &WorkerMessage) -> Option<pb::WorkerMessage> {
    match pb::WorkerMessage::try_from(m) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!("cannot encode a message for the coordinator: {e}");
            None
        }
    }
}

/// A run in progress on this worker.
struct RunHandle {
    run_id: String,
    ctl: mpsc::Sender<Duration>,
    active: Arc<AtomicU64>,
}

async fn session(
    cfg: &AgentConfig,
    samples: Option<SampleLog>,
) -> Result<SessionEnd, SessionError> {
    let channel: Channel = Endpoint::from_shared(cfg.master.clone())
        .map_err(|e| SessionError::Refused(format!("bad coordinator address: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| SessionError::Unreachable(error_chain(&e)))?;
    let mut client = CoordinatorClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let (out_tx, out_rx) = mpsc::channel::<pb::WorkerMessage>(1024);
    let hello = WorkerMessage::Hello(Hello {
        worker_id: cfg.id.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol_version: PROTOCOL_VERSION,
        cores: u32::try_from(cfg.threads).unwrap_or(u32::MAX),
        labels: cfg.labels.clone(),
    });
    if let Some(w) = to_wire(&hello) {
        let _ = out_tx.send(w).await;
    }
    let mut request = tonic::Request::new(ReceiverStream::new(out_rx));
    if let Some(token) = &cfg.token {
        let value = token.parse().map_err(|_| {
            SessionError::Refused("the token holds characters gRPC metadata cannot carry".into())
        })?;
        request.metadata_mut().insert(TOKEN_METADATA, value);
    }
    let mut inbound = match client.attach(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            return Err(match status.code() {
                tonic::Code::Unauthenticated
                | tonic::Code::PermissionDenied
                | tonic::Code::FailedPrecondition
                | tonic::Code::AlreadyExists => SessionError::Refused(status.message().to_owned()),
                _ => SessionError::Unreachable(status.message().to_owned()),
            });
        }
    };

    let welcome = match inbound.message().await {
        Ok(Some(m)) => match decode_coordinator_message(m) {
            Ok(CoordinatorMessage::Welcome(w)) => w,
            Ok(other) => return Ok(SessionEnd::Lost(format!("expected Welcome, got {other:?}"))),
            Err(e) => return Ok(SessionEnd::Lost(e.to_string())),
        },
        Ok(None) => return Ok(SessionEnd::Lost("stream closed before Welcome".into())),
        Err(status) => {
            return match status.code() {
                tonic::Code::Unauthenticated
                | tonic::Code::PermissionDenied
                | tonic::Code::FailedPrecondition
                | tonic::Code::AlreadyExists => {
                    Err(SessionError::Refused(status.message().to_owned()))
                }
                _ => Ok(SessionEnd::Lost(status.message().to_owned())),
            };
        }
    };
    tracing::info!(
        "attached to coordinator {} as worker {} (#{})",
        cfg.master,
        cfg.id,
        welcome.index
    );
    let hb_timeout = welcome.heartbeat_timeout.max(Duration::from_secs(1));
    let mut heartbeat =
        tokio::time::interval(welcome.heartbeat_interval.max(Duration::from_millis(100)));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut current: Option<RunHandle> = None;

    let end = loop {
        tokio::select! {
            msg = tokio::time::timeout(hb_timeout, inbound.message()) => {
                let m = match msg {
                    Err(_) => break SessionEnd::Lost(format!("no word from the coordinator for {hb_timeout:?}")),
                    Ok(Ok(Some(m))) => m,
                    Ok(Ok(None)) => break SessionEnd::Lost("the coordinator closed the stream".into()),
                    Ok(Err(status)) => break SessionEnd::Lost(status.message().to_owned()),
                };
                let m = match decode_coordinator_message(m) {
                    Ok(m) => m,
                    Err(e) => { tracing::warn!("ignoring a malformed message: {e}"); continue; }
                };
                match m {
                    CoordinatorMessage::Start(start) => {
                        if let Some(old) = current.take() {
                            let _ = old.ctl.send(Duration::ZERO).await;
                        }
                        tracing::info!("run {} starting: {} users", start.run_id, start.share.users());
                        let active = Arc::new(AtomicU64::new(0));
                        let (ctl_tx, ctl_rx) = mpsc::channel(4);
                        current = Some(RunHandle { run_id: start.run_id.clone(), ctl: ctl_tx, active: active.clone() });
                        tokio::spawn(run_task(*start, cfg.threads, samples.clone(), active, out_tx.clone(), ctl_rx));
                    }
                    CoordinatorMessage::Stop { run_id, graceful } => {
                        if let Some(run) = current.take_if(|r| r.run_id == run_id) {
                            tracing::info!("run {run_id} stopping (graceful {graceful:?})");
                            let _ = run.ctl.send(graceful).await;
                        }
                    }
                    CoordinatorMessage::Shutdown { reason } => break SessionEnd::Shutdown(reason),
                    CoordinatorMessage::Adjust { .. } => {
                        tracing::warn!("share adjustments are not supported by this worker yet; keeping the current share");
                    }
                    CoordinatorMessage::Ack { .. } | CoordinatorMessage::Ping | CoordinatorMessage::Welcome(_) => {}
                }
            }
            _ = heartbeat.tick() => {
                let (state, users) = match &current {
                    Some(r) => (WorkerState::Running, r.active.load(Ordering::Relaxed)),
                    None => (WorkerState::Ready, 0),
                };
                let hb = WorkerMessage::Heartbeat(Heartbeat { state, active_users: users, cpu_percent: 0.0 });
                if let Some(w) = to_wire(&hb) && out_tx.send(w).await.is_err() {
                    break SessionEnd::Lost("the outbound stream closed".into());
                }
            }
        }
    };
    // Safety: never leave load running without a coordinator.
    if let Some(run) = current.take() {
        let _ = run.ctl.send(Duration::ZERO).await;
    }
    Ok(end)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

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
async fn run_task(
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

    #[test]
    fn master_addresses() {
        assert_eq!(
            AgentConfig::master_url("127.0.0.1:5557").ok().as_deref(),
            Some("http://127.0.0.1:5557")
        );
        assert!(AgentConfig::master_url("nohost").is_err());
        assert!(AgentConfig::master_url("http://h").is_err());
    }
}
