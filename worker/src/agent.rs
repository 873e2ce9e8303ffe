//! The worker's side of the cluster: dial the coordinator, retry with backoff, and run what it says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use squall_common::protocol::{
    CoordinatorMessage, Heartbeat, Hello, PROTOCOL_VERSION, TOKEN_METADATA, WorkerMessage,
    WorkerState,
};
use squall_proto::pb;
use squall_proto::{CoordinatorClient, decode_coordinator_message};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::error::WorkerError;
use crate::outbox::{Outbox, OutboxSender};
use crate::recorder::SampleLog;

// Declared here rather than in lib.rs so the agent owns its transport security.
#[path = "tls.rs"]
pub mod tls;

use tls::ClientTls;

/// Largest gRPC message either side accepts: a snapshot with hundreds of endpoints fits easily.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// A validated worker configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `http://host:port` or, with `tls`, `https://host:port` of the coordinator.
    pub master: String,
    /// TLS towards the coordinator; `None` dials in plaintext (loopback, trusted networks).
    pub tls: Option<ClientTls>,
    pub token: Option<String>,
    pub id: String,
    /// Engine threads (one current-thread runtime each).
    pub threads: usize,
    pub labels: BTreeMap<String, String>,
    pub samples_file: Option<PathBuf>,
    /// Stop retrying after this long without reaching a coordinator; `None` retries forever.
    pub give_up_after: Option<Duration>,
    /// React to SIGINT/SIGTERM (stop the load, say goodbye, exit). Off for
    /// in-process workers, whose coordinator handles the signal.
    pub handle_signals: bool,
}

impl AgentConfig {
    /// Normalises `host:port`, `http://host:port` or `https://host:port` into a URL tonic can dial.
    ///
    /// `tls` says whether TLS settings (`--tls-ca`) were given: `host:port`
    /// then means `https://`, and a scheme that contradicts them is refused
    /// rather than silently dialling in plaintext or without a CA.
    pub fn master_url(master: &str, tls: bool) -> Result<String, WorkerError> {
        let url = match master.split_once("://") {
            None if tls => format!("https://{master}"),
            None => format!("http://{master}"),
            Some(("http", _)) if tls => {
                return Err(WorkerError::Usage(format!(
                    "--master {master} is plaintext (http://) but --tls-ca was given: use https://HOST:PORT or HOST:PORT"
                )));
            }
            Some(("https", _)) if !tls => {
                return Err(WorkerError::Usage(format!(
                    "--master {master} asks for TLS: pass --tls-ca FILE, the CA that signed the coordinator's certificate"
                )));
            }
            Some(("http" | "https", _)) => master.to_owned(),
            Some(_) => return Err(WorkerError::MasterAddress(master.to_owned())),
        };
        let parsed: http::Uri = url
            .parse()
            .map_err(|_| WorkerError::MasterAddress(master.to_owned()))?;
        if parsed.host().is_none() || parsed.port_u16().is_none() {
            return Err(WorkerError::MasterAddress(master.to_owned()));
        }
        Ok(url)
    }

    /// Reads and checks the TLS files for dialling the coordinator: the CA
    /// (`--tls-ca`), an optional client certificate and key for mTLS
    /// (`--tls-cert`, `--tls-key`) and an optional name to verify (`--tls-domain`).
    pub fn load_tls(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
        domain: Option<String>,
    ) -> Result<ClientTls, WorkerError> {
        ClientTls::load(ca, identity, domain)
    }
}

/// How a session with a coordinator ended.
enum SessionEnd {
    Shutdown(String),
    Lost(String),
}

/// Why a session could not start: worth a retry, or not.
enum SessionError {
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

/// Attaches to the coordinator and serves runs until told to shut down.
/// Reconnects with backoff when the coordinator is not there or goes away.
pub async fn run(cfg: AgentConfig) -> Result<(), WorkerError> {
    // Outlives sessions: what a run sent and the coordinator has not yet
    // acknowledged is replayed after a reconnect, so a cut loses no data.
    let (outbox_tx, mut outbox) = Outbox::new();
    let samples = match &cfg.samples_file {
        Some(p) => Some(SampleLog::create(p)?),
        None => None,
    };
    if let Some(tls) = &cfg.tls {
        // Fail fast (exit 2) on settings that can never connect, e.g. a --master host that is no valid TLS name.
        tls.check(&cfg.master)?;
    }
    let mut backoff = Duration::from_millis(250);
    let mut unreachable_since: Option<Instant> = None;
    let (signal_tx, signal) = watch::channel(false);
    if cfg.handle_signals {
        tokio::spawn(async move {
            crate::signal::interrupted().await;
            let _ = signal_tx.send(true);
        });
    }
    // After a session, a refusal as a duplicate id is this worker's own old
    // stream, which the coordinator drops within its heartbeat timeout: retry.
    let mut attached_before = false;
    loop {
        let interrupted = *signal.borrow();
        if interrupted {
            return Ok(());
        }
        match session(
            &cfg,
            samples.clone(),
            signal.clone(),
            (&outbox_tx, &mut outbox),
        )
        .await
        {
            Err(SessionError::Duplicate(msg)) if attached_before => {
                tracing::warn!(
                    "{msg}: the coordinator still holds this worker's previous stream; retrying"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(SessionError::Duplicate(msg)) => return Err(WorkerError::Refused(msg)),
            Ok(SessionEnd::Shutdown(reason)) => {
                tracing::info!("coordinator asked this worker to shut down: {reason}");
                return Ok(());
            }
            Ok(SessionEnd::Lost(reason)) => {
                tracing::warn!("lost the coordinator ({reason}); load stopped; reconnecting");
                backoff = Duration::from_millis(250);
                unreachable_since = None;
                attached_before = true;
            }
            Err(SessionError::Fatal(e)) => return Err(e),
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
                // A plaintext HTTP/2 client reads a TLS alert record as an oversized frame.
                let hint = if cfg.tls.is_none() && msg.contains("frame with invalid size") {
                    " (if the coordinator uses TLS, pass --tls-ca FILE)"
                } else {
                    ""
                };
                tracing::warn!(
                    "no coordinator at {} ({msg}){hint}; retrying in {:.1}s",
                    cfg.master,
                    backoff.as_secs_f64()
                );
                let mut signal = signal.clone();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    () = raised(&mut signal) => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Resolves once the signal flag is raised (without holding its lock across awaits).
async fn raised(signal: &mut watch::Receiver<bool>) {
    let _ = signal.wait_for(|s| *s).await;
}

pub(crate) fn to_wire(m: &WorkerMessage) -> Option<pb::WorkerMessage> {
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
    ctl: mpsc::Sender<crate::run::RunCtl>,
    active: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// How long a worker told to leave (SIGTERM) lets in-flight requests finish.
const LEAVING_GRACE: Duration = Duration::from_secs(5);

async fn session(
    cfg: &AgentConfig,
    samples: Option<SampleLog>,
    mut signal: watch::Receiver<bool>,
    (outbox_tx, outbox): (&OutboxSender, &mut Outbox),
) -> Result<SessionEnd, SessionError> {
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
                .connect()
                .await
        }
    };
    let channel: Channel = connected.map_err(|e| SessionError::from_transport(cfg, &e))?;
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
            SessionError::Fatal(WorkerError::Usage(
                "the token holds characters gRPC metadata cannot carry".into(),
            ))
        })?;
        request.metadata_mut().insert(TOKEN_METADATA, value);
    }
    let mut inbound = match client.attach(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            return Err(SessionError::from_status(cfg, &status)
                .unwrap_or_else(|| SessionError::Unreachable(status_text(&status))));
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
            return match SessionError::from_status(cfg, &status) {
                Some(e) => Err(e),
                None => Ok(SessionEnd::Lost(status.message().to_owned())),
            };
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
        let _ = out_tx.send(m).await;
    }
    let mut current: Option<RunHandle> = None;
    // Safety: silence from the coordinator for the heartbeat timeout ends the
    // session (and its load), even while the TCP connection looks alive.
    let mut last_heard = tokio::time::Instant::now();

    let end = loop {
        tokio::select! {
            () = raised(&mut signal) => {
                // Leaving: stop the load, deliver the last snapshots, then close
                // the stream so the coordinator moves this worker's share at once.
                if let Some(run) = current.take() {
                    tracing::info!("interrupted: stopping run {} and saying goodbye", run.run_id);
                    let _ = run.ctl.send(crate::run::RunCtl::Stop(LEAVING_GRACE)).await;
                    let _ = tokio::time::timeout(LEAVING_GRACE + Duration::from_secs(5), run.task).await;
                }
                break SessionEnd::Shutdown("interrupted".into());
            }
            _ = tokio::time::sleep_until(last_heard + hb_timeout) => {
                break SessionEnd::Lost(format!("no word from the coordinator for {hb_timeout:?}"));
            }
            msg = inbound.message() => {
                last_heard = tokio::time::Instant::now();
                let m = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => break SessionEnd::Lost("the coordinator closed the stream".into()),
                    Err(status) => break SessionEnd::Lost(status.message().to_owned()),
                };
                let m = match decode_coordinator_message(m) {
                    Ok(m) => m,
                    Err(e) => { tracing::warn!("ignoring a malformed message: {e}"); continue; }
                };
                match m {
                    CoordinatorMessage::Start(start) => {
                        if let Some(old) = current.take() {
                            let _ = old.ctl.send(crate::run::RunCtl::Stop(Duration::ZERO)).await;
                        }
                        tracing::info!("run {} starting: {} users", start.run_id, start.share.users());
                        let active = Arc::new(AtomicU64::new(0));
                        let (ctl_tx, ctl_rx) = mpsc::channel(4);
                        let run_id = start.run_id.clone();
                        let task = tokio::spawn(crate::run::run_task(*start, cfg.threads, samples.clone(), active.clone(), outbox_tx.clone(), ctl_rx));
                        current = Some(RunHandle { run_id, ctl: ctl_tx, active, task });
                    }
                    CoordinatorMessage::Stop { run_id, graceful } => {
                        if let Some(run) = current.take_if(|r| r.run_id == run_id) {
                            tracing::info!("run {run_id} stopping (graceful {graceful:?})");
                            let _ = run.ctl.send(crate::run::RunCtl::Stop(graceful)).await;
                        }
                    }
                    CoordinatorMessage::Shutdown { reason } => break SessionEnd::Shutdown(reason),
                    CoordinatorMessage::Adjust { run_id, worker_index, worker_count, .. } => {
                        if let Some(run) = current.as_ref().filter(|r| r.run_id == run_id) {
                            let adjust = crate::run::RunCtl::Adjust { index: worker_index, count: worker_count };
                            let _ = run.ctl.send(adjust).await;
                        }
                    }
                    CoordinatorMessage::Ack { run_id, seq } => outbox.ack(&run_id, seq),
                    CoordinatorMessage::Ping | CoordinatorMessage::Welcome(_) => {}
                }
            }
            Some(m) = outbox.recv() => {
                if let Some(w) = outbox.accept(&m) && out_tx.send(w).await.is_err() {
                    break SessionEnd::Lost("the outbound stream closed".into());
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
        let _ = run.ctl.send(crate::run::RunCtl::Stop(Duration::ZERO)).await;
    }
    if matches!(end, SessionEnd::Shutdown(_)) {
        // Leaving on purpose: deliver what the run sent last, end our stream,
        // and wait (briefly) until the coordinator has closed its side.
        while let Some(m) = outbox.try_recv() {
            if let Some(w) = outbox.accept(&m) {
                let _ = out_tx.send(w).await;
            }
        }
        drop(out_tx);
        let drained = async { while let Ok(Some(_)) = inbound.message().await {} };
        let _ = tokio::time::timeout(Duration::from_secs(3), drained).await;
    }
    Ok(end)
}

/// A status's message and the errors behind it, on one line.
fn status_text(status: &tonic::Status) -> String {
    match std::error::Error::source(status) {
        Some(src) => format!("{}: {}", status.message(), error_chain(src)),
        None => status.message().to_owned(),
    }
}

/// An error and its sources on one line, for messages a user acts on.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
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

    #[test]
    fn master_addresses() {
        assert_eq!(
            AgentConfig::master_url("127.0.0.1:5557", false)
                .ok()
                .as_deref(),
            Some("http://127.0.0.1:5557")
        );
        assert!(AgentConfig::master_url("nohost", false).is_err());
        assert!(AgentConfig::master_url("http://h", false).is_err());
    }

    #[test]
    fn tls_master_addresses() {
        assert_eq!(
            AgentConfig::master_url("coord:5557", true).ok().as_deref(),
            Some("https://coord:5557")
        );
        assert_eq!(
            AgentConfig::master_url("https://coord:5557", true)
                .ok()
                .as_deref(),
            Some("https://coord:5557")
        );
        // A scheme that contradicts the TLS settings is refused, never silently downgraded.
        assert!(AgentConfig::master_url("http://coord:5557", true).is_err());
        assert!(AgentConfig::master_url("https://coord:5557", false).is_err());
        assert!(AgentConfig::master_url("ftp://coord:5557", false).is_err());
    }
}
