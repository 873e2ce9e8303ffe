//! One attachment to the coordinator: dial, Hello, Welcome, then one handler per event (a coordinator message, a run's message, the heartbeat, silence, an interrupt) until the session ends.

use std::time::Duration;

use futures::FutureExt as _;
use squall_common::protocol::{
    CoordinatorMessage, Heartbeat, Hello, PROTOCOL_VERSION, Status, TOKEN_METADATA, WorkerMessage,
    WorkerState,
};
use squall_proto::link::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MAX_MESSAGE_BYTES};
use squall_proto::pb;
use squall_proto::{CoordinatorClient, decode_coordinator_message};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

use super::config::AgentConfig;
use super::cpu::{CpuMeter, machine_cores};
use super::outbox::Outbox;
use super::wire::encode;
use crate::engine::{Realtime, RunHandle, RunOutput, SampleLog};
use crate::error::WorkerError;

/// How long a worker told to leave (SIGTERM) lets in-flight requests finish.
const LEAVING_GRACE: Duration = Duration::from_secs(5);

/// How a session with a coordinator ended.
pub(super) enum SessionEnd {
    Shutdown(String),
    Lost(String),
}

/// Why a session could not start: worth a retry, or not.
pub(super) enum SessionError {
    Unreachable(String),
    /// The coordinator already has a worker with this id.
    Duplicate(String),
    Fatal(WorkerError),
}

impl SessionError {
    /// Classifies a failed connect or attach: a TLS handshake failure is a
    /// configuration mismatch, so it is fatal; anything else is the network.
    fn from_transport(cfg: &AgentConfig, err: &(dyn std::error::Error + 'static)) -> Self {
        match cfg.tls.as_ref().and_then(|t| t.explain(err)) {
            Some(reason) => SessionError::Fatal(WorkerError::Tls {
                master: cfg.master.clone(),
                reason,
            }),
            None => SessionError::Unreachable(error_chain(err)),
        }
    }

    /// A refusal status from the coordinator (token, version, duplicate id) is fatal.
    fn from_status(cfg: &AgentConfig, status: &tonic::Status) -> Option<Self> {
        match status.code() {
            tonic::Code::AlreadyExists => {
                Some(SessionError::Duplicate(status.message().to_owned()))
            }
            tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
            | tonic::Code::FailedPrecondition => Some(SessionError::Fatal(WorkerError::Refused(
                status.message().to_owned(),
            ))),
            _ => match SessionError::from_transport(cfg, status) {
                SessionError::Unreachable(_) => None,
                fatal => Some(fatal),
            },
        }
    }
}

/// Resolves once the signal flag is raised (without holding its lock across awaits).
pub(super) async fn raised(signal: &mut watch::Receiver<bool>) {
    let _ = signal.wait_for(|s| *s).await;
}

/// Pings a worker accepts while it waits for its Welcome.
const MAX_PINGS_BEFORE_WELCOME: u32 = 3;

/// Attaches once and serves the coordinator until the session ends.
pub(super) async fn session(
    cfg: &AgentConfig,
    samples: Option<SampleLog>,
    mut signal: watch::Receiver<bool>,
    (run_output, outbox): (&RunOutput, &mut Outbox),
) -> Result<SessionEnd, SessionError> {
    let (out, mut inbound) = attach(cfg).await?;
    // A coordinator before 2026-12-07 could send its first Ping ahead of
    // the Welcome: a ping carries nothing, so it is skipped, a few at most.
    let mut pings = 0;
    let welcome = loop {
        match inbound.message().await {
            Ok(Some(m)) => match decode_coordinator_message(m) {
                Ok(CoordinatorMessage::Welcome(w)) => break w,
                Ok(CoordinatorMessage::Ping) if pings < MAX_PINGS_BEFORE_WELCOME => pings += 1,
                Ok(other) => {
                    return Ok(SessionEnd::Lost(format!("expected Welcome, got {other:?}")));
                }
                Err(e) => return Ok(SessionEnd::Lost(e.to_string())),
            },
            Ok(None) => return Ok(SessionEnd::Lost("stream closed before Welcome".into())),
            Err(status) => {
                return match SessionError::from_status(cfg, &status) {
                    Some(e) => Err(e),
                    None => Ok(SessionEnd::Lost(status.message().to_owned())),
                };
            }
        }
    };
    tracing::info!(
        "attached to coordinator {} as worker {} (#{}){}",
        cfg.master,
        cfg.id,
        welcome.index,
        match &cfg.tls {
            Some(t) if t.has_identity() => " over mTLS",
            Some(_) => " over TLS",
            None => "",
        }
    );
    let hb_timeout = welcome.heartbeat_timeout.max(Duration::from_secs(1));
    let mut heartbeat =
        tokio::time::interval(welcome.heartbeat_interval.max(Duration::from_millis(100)));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let replay = outbox.replay();
    if !replay.is_empty() {
        tracing::info!("resending {} unacknowledged message(s)", replay.len());
    }
    for m in replay {
        let _ = out.send(m).await;
    }
    let mut s = Session {
        threads: cfg.threads,
        realtime: cfg.realtime,
        samples,
        run_output,
        outbox,
        out,
        current: None,
        cpu: CpuMeter::new(),
    };
    // Safety: silence from the coordinator for the heartbeat timeout ends the
    // session (and its load), even while the TCP connection looks alive.
    let mut last_heard = tokio::time::Instant::now();
    let end = loop {
        let ended = tokio::select! {
            () = raised(&mut signal) => Some(s.on_interrupt().await),
            _ = tokio::time::sleep_until(last_heard + hb_timeout) => {
                // A loop that was not polled for the timeout (a starved
                // machine, a stopped process) wakes with its timer and the
                // coordinator's waiting messages both ready, and `select!`
                // picks either: only silence is a lost coordinator.
                match inbound.message().now_or_never() {
                    Some(Ok(Some(m))) => {
                        last_heard = tokio::time::Instant::now();
                        s.on_wire_message(m).await
                    }
                    Some(Ok(None)) => Some(SessionEnd::Lost("the coordinator closed the stream".into())),
                    Some(Err(status)) => Some(SessionEnd::Lost(status.message().to_owned())),
                    None => Some(SessionEnd::Lost(format!(
                        "no word from the coordinator for {hb_timeout:?}"
                    ))),
                }
            }
            msg = inbound.message() => {
                last_heard = tokio::time::Instant::now();
                match msg {
                    Ok(Some(m)) => s.on_wire_message(m).await,
                    Ok(None) => Some(SessionEnd::Lost("the coordinator closed the stream".into())),
                    Err(status) => Some(SessionEnd::Lost(status.message().to_owned())),
                }
            }
            Some(m) = s.outbox.recv() => s.on_run_message(&m).await,
            _ = heartbeat.tick() => s.on_heartbeat().await,
        };
        if let Some(end) = ended {
            break end;
        }
    };
    s.close(&end, inbound).await;
    Ok(end)
}

/// Dials the coordinator, sends Hello and opens the `Attach` stream.
async fn attach(
    cfg: &AgentConfig,
) -> Result<
    (
        mpsc::Sender<pb::WorkerMessage>,
        Streaming<pb::CoordinatorMessage>,
    ),
    SessionError,
> {
    let connected = match &cfg.tls {
        Some(tls) => tls.dial(&cfg.master).map_err(SessionError::Fatal)?.await,
        None => {
            Endpoint::from_shared(cfg.master.clone())
                .map_err(|e| {
                    SessionError::Fatal(WorkerError::Usage(format!(
                        "bad coordinator address {}: {e}",
                        cfg.master
                    )))
                })?
                .connect_timeout(Duration::from_secs(3))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                .keep_alive_while_idle(true)
                .connect()
                .await
        }
    };
    let channel: Channel = connected.map_err(|e| SessionError::from_transport(cfg, &e))?;
    let mut client = CoordinatorClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let (out, out_rx) = mpsc::channel::<pb::WorkerMessage>(1024);
    let hello = WorkerMessage::Hello(Hello {
        worker_id: cfg.id.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol_version: PROTOCOL_VERSION,
        cores: u32::try_from(machine_cores()).unwrap_or(u32::MAX),
        labels: cfg.labels.clone(),
    });
    if let Some(w) = encode(&hello) {
        let _ = out.send(w).await;
    }
    let mut request = tonic::Request::new(ReceiverStream::new(out_rx));
    if let Some(token) = &cfg.token {
        let value = token.parse().map_err(|_| {
            SessionError::Fatal(WorkerError::Usage(
                "the token holds characters gRPC metadata cannot carry".into(),
            ))
        })?;
        request.metadata_mut().insert(TOKEN_METADATA, value);
    }
    match client.attach(request).await {
        Ok(r) => Ok((out, r.into_inner())),
        Err(status) => Err(SessionError::from_status(cfg, &status)
            .unwrap_or_else(|| SessionError::Unreachable(status_text(&status)))),
    }
}

/// An attached session's state between events.
struct Session<'a> {
    threads: usize,
    /// SCHED_FIFO for the engine threads (`--realtime-priority`).
    realtime: Option<Realtime>,
    samples: Option<SampleLog>,
    /// Where runs send their messages; it outlives the session, like the outbox.
    run_output: &'a RunOutput,
    outbox: &'a mut Outbox,
    /// This session's stream to the coordinator.
    out: mpsc::Sender<pb::WorkerMessage>,
    current: Option<RunHandle>,
    /// This process's CPU use between heartbeats.
    cpu: CpuMeter,
}

impl Session<'_> {
    /// Leaving (SIGINT, SIGTERM): stop the load, deliver the last snapshots,
    /// then close the stream so the coordinator moves this worker's share at once.
    async fn on_interrupt(&mut self) -> SessionEnd {
        if let Some(run) = self.current.take() {
            tracing::info!(
                "interrupted: stopping run {} and saying goodbye",
                run.run_id()
            );
            run.stop(LEAVING_GRACE).await;
            run.finished(LEAVING_GRACE + Duration::from_secs(5)).await;
        }
        SessionEnd::Shutdown("interrupted".into())
    }

    async fn on_wire_message(&mut self, m: pb::CoordinatorMessage) -> Option<SessionEnd> {
        match decode_coordinator_message(m) {
            Ok(m) => self.on_message(m).await,
            Err(e) => match e.run_id() {
                // A refused Start or Adjust: that run fails here, the link stays.
                Some(run_id) => {
                    tracing::error!("{e}");
                    if let Some(run) = self.current.take_if(|r| r.run_id() == run_id) {
                        run.stop(Duration::ZERO).await;
                    }
                    let failed = WorkerMessage::Status(Status {
                        run_id: run_id.to_owned(),
                        state: WorkerState::Failed,
                        reason: e.to_string(),
                        snapshots_sent: 0,
                    });
                    let _ = self.run_output.send(failed).await;
                    None
                }
                None => {
                    tracing::warn!("ignoring a malformed message: {e}");
                    None
                }
            },
        }
    }

    /// A message from the coordinator; `Some` ends the session.
    async fn on_message(&mut self, m: CoordinatorMessage) -> Option<SessionEnd> {
        match m {
            CoordinatorMessage::Start(start) => {
                if let Some(old) = self.current.take() {
                    old.stop(Duration::ZERO).await;
                }
                tracing::info!(
                    "run {} starting: {} users",
                    start.run_id,
                    start.share.users()
                );
                self.current = Some(RunHandle::start(
                    *start,
                    (self.threads, self.realtime),
                    self.samples.clone(),
                    self.run_output.clone(),
                ));
            }
            CoordinatorMessage::Stop { run_id, graceful } => {
                if let Some(run) = self.current.take_if(|r| r.run_id() == run_id) {
                    tracing::info!("run {run_id} stopping (graceful {graceful:?})");
                    run.stop(graceful).await;
                }
            }
            CoordinatorMessage::Shutdown { reason } => return Some(SessionEnd::Shutdown(reason)),
            CoordinatorMessage::Adjust {
                run_id,
                worker_index,
                worker_count,
                ..
            } => {
                if let Some(run) = self.current.as_ref().filter(|r| r.run_id() == run_id) {
                    run.adjust(worker_index, worker_count).await;
                }
            }
            CoordinatorMessage::Ack { run_id, seq } => self.outbox.ack(&run_id, seq),
            CoordinatorMessage::PoolCeiling { run_id, users } => {
                if let Some(run) = self.current.as_ref().filter(|r| r.run_id() == run_id) {
                    run.pool_ceiling(users).await;
                }
            }
            CoordinatorMessage::Ping | CoordinatorMessage::Welcome(_) => {}
        }
        None
    }

    /// A run's snapshot or status: kept until acknowledged, sent now.
    async fn on_run_message(&mut self, m: &WorkerMessage) -> Option<SessionEnd> {
        let w = self.outbox.accept(m)?;
        self.send(w).await
    }

    /// Tells the coordinator this worker is alive, how many users it runs and how busy its machine's cores are with it.
    async fn on_heartbeat(&mut self) -> Option<SessionEnd> {
        // A run that ended on its own (its planned duration, its iterations)
        // leaves its handle here until the next Start: the worker is ready again.
        let (state, users) = match &self.current {
            Some(r) if !r.is_finished() => (WorkerState::Running, r.active_users()),
            _ => (WorkerState::Ready, 0),
        };
        let hb = WorkerMessage::Heartbeat(Heartbeat {
            state,
            active_users: users,
            cpu_percent: self.cpu.sample(),
        });
        let w = encode(&hb)?;
        self.send(w).await
    }

    async fn send(&self, w: pb::WorkerMessage) -> Option<SessionEnd> {
        match self.out.send(w).await {
            Ok(()) => None,
            Err(_) => Some(SessionEnd::Lost("the outbound stream closed".into())),
        }
    }

    /// Ends the session: never leave load running without a coordinator, and
    /// when leaving on purpose, deliver what the run sent last.
    async fn close(mut self, end: &SessionEnd, mut inbound: Streaming<pb::CoordinatorMessage>) {
        if let Some(run) = self.current.take() {
            run.stop(Duration::ZERO).await;
        }
        if matches!(end, SessionEnd::Shutdown(_)) {
            // Leaving on purpose: deliver what the run sent last, end our stream,
            // and wait (briefly) until the coordinator has closed its side.
            while let Some(m) = self.outbox.try_recv() {
                if let Some(w) = self.outbox.accept(&m) {
                    let _ = self.out.send(w).await;
                }
            }
            drop(self.out);
            let drained = async { while let Ok(Some(_)) = inbound.message().await {} };
            let _ = tokio::time::timeout(Duration::from_secs(3), drained).await;
        }
    }
}

/// A status's message and the errors behind it, on one line.
fn status_text(status: &tonic::Status) -> String {
    match std::error::Error::source(status) {
        Some(src) => format!("{}: {}", status.message(), error_chain(src)),
        None => status.message().to_owned(),
    }
}

/// An error and its sources on one line, for messages a user acts on.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        // Wrappers often repeat their source's text; say it once.
        let text = inner.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_common::protocol::Status;
    use squall_proto::decode_worker_message;

    /// A session between events, without gRPC: what it sends arrives on the receiver.
    fn session<'a>(
        run_output: &'a RunOutput,
        outbox: &'a mut Outbox,
    ) -> (Session<'a>, mpsc::Receiver<pb::WorkerMessage>) {
        let (out, rx) = mpsc::channel(16);
        let s = Session {
            threads: 1,
            realtime: None,
            samples: None,
            run_output,
            outbox,
            out,
            current: None,
            cpu: CpuMeter::new(),
        };
        (s, rx)
    }

    #[tokio::test]
    async fn heartbeats_say_ready_while_no_run_is_in_progress() {
        let (run_output, mut outbox) = Outbox::new();
        let (mut s, mut rx) = session(&run_output, &mut outbox);
        assert!(s.on_heartbeat().await.is_none());
        let sent = rx.recv().await.map(decode_worker_message);
        assert!(
            matches!(
                sent,
                Some(Ok(WorkerMessage::Heartbeat(Heartbeat {
                    state: WorkerState::Ready,
                    active_users: 0,
                    ..
                })))
            ),
            "{sent:?}"
        );
    }

    #[tokio::test]
    async fn run_messages_are_sent_and_kept_until_acknowledged() {
        let (run_output, mut outbox) = Outbox::new();
        let (mut s, mut rx) = session(&run_output, &mut outbox);
        let stopped = WorkerMessage::Status(Status {
            run_id: "r".into(),
            state: WorkerState::Stopped,
            reason: String::new(),
            snapshots_sent: 0,
        });
        assert!(s.on_run_message(&stopped).await.is_none());
        assert!(rx.recv().await.is_some(), "sent at once");
        assert_eq!(s.outbox.replay().len(), 1, "kept for a reconnect");
        let ack = CoordinatorMessage::Ack {
            run_id: "r".into(),
            seq: 0,
        };
        assert!(s.on_message(ack).await.is_none());
        assert!(s.outbox.replay().is_empty());
    }

    #[tokio::test]
    async fn a_stop_for_another_run_is_ignored_and_shutdown_ends_the_session() {
        let (run_output, mut outbox) = Outbox::new();
        let (mut s, _rx) = session(&run_output, &mut outbox);
        let stop = CoordinatorMessage::Stop {
            run_id: "other".into(),
            graceful: Duration::ZERO,
        };
        assert!(s.on_message(stop).await.is_none());
        let shutdown = CoordinatorMessage::Shutdown {
            reason: "done".into(),
        };
        assert!(matches!(
            s.on_message(shutdown).await,
            Some(SessionEnd::Shutdown(reason)) if reason == "done"
        ));
    }

    #[tokio::test]
    async fn a_closed_stream_loses_the_coordinator() {
        let (run_output, mut outbox) = Outbox::new();
        let (mut s, rx) = session(&run_output, &mut outbox);
        drop(rx);
        assert!(matches!(s.on_heartbeat().await, Some(SessionEnd::Lost(_))));
    }
}
