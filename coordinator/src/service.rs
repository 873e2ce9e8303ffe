//! The gRPC `Attach` service: authenticates workers, checks their protocol, and bridges each stream to the run controller.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use squall_common::protocol::{
    CoordinatorMessage, Hello, PROTOCOL_VERSION, TOKEN_METADATA, Welcome, WorkerMessage,
};
use squall_proto::{Coordinator, decode_worker_message, pb};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::listener::{Admission, Gate};

/// Liveness settings shared with every worker in its Welcome.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeats {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for Heartbeats {
    fn default() -> Self {
        Heartbeats {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Messages waiting for one worker (besides the HTTP/2 window): a worker
/// that lets this many pile up is not reading, and the cluster disconnects
/// it rather than wait. A replay after a reconnect (up to 900 snapshots, so
/// as many Acks) fits.
pub const SEND_QUEUE: usize = 1024;

/// A worker's attached stream, as the controller sees it.
#[derive(Debug, Clone)]
pub struct WorkerLink {
    pub id: String,
    pub index: u32,
    pub hello: Hello,
    pub peer: Option<SocketAddr>,
    pub tx: mpsc::Sender<CoordinatorMessage>,
    /// The connection the worker attached on, to close it when the worker stops reading.
    pub gate: Arc<Gate>,
}

/// What happens on the cluster, in arrival order.
#[derive(Debug)]
pub enum ClusterEvent {
    Joined(WorkerLink),
    Message { worker: String, msg: WorkerMessage },
    Left { worker: String, reason: String },
}

/// Why a worker's attach was refused; turned into a `tonic::Status` in one place.
#[derive(Debug, thiserror::Error)]
enum AttachError {
    #[error("wrong or missing token: pass the coordinator's token with --token or SQUALL_TOKEN")]
    Token,
    #[error(
        "protocol version mismatch: worker speaks v{worker}, coordinator speaks v{coordinator}; run the same Squall version on both"
    )]
    Version { worker: u32, coordinator: u32 },
    #[error("the first message must be Hello")]
    NoHello,
    #[error("a worker with id `{0}` is already attached; give each worker a distinct --id")]
    Duplicate(String),
    #[error(
        "invalid worker id {0:?}: use 1 to {MAX_ID_CHARS} printable characters (--id or SQUALL_WORKER_ID)"
    )]
    BadId(String),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("the coordinator is shutting down")]
    ShuttingDown,
    #[error("the connection did not come through the worker listener")]
    NotAdmitted,
}

impl From<AttachError> for Status {
    fn from(e: AttachError) -> Status {
        let msg = e.to_string();
        match e {
            AttachError::Token => Status::unauthenticated(msg),
            AttachError::Version { .. } | AttachError::BadId(_) => Status::failed_precondition(msg),
            AttachError::NoHello | AttachError::Malformed(_) => Status::invalid_argument(msg),
            AttachError::Duplicate(_) => Status::already_exists(msg),
            AttachError::ShuttingDown => Status::unavailable(msg),
            AttachError::NotAdmitted => Status::internal(msg),
        }
    }
}

pub struct AttachService {
    events: mpsc::Sender<ClusterEvent>,
    token: Option<String>,
    heartbeats: Heartbeats,
    next_index: AtomicU32,
    attached: Arc<Mutex<HashSet<String>>>,
}

impl AttachService {
    pub fn new(
        events: mpsc::Sender<ClusterEvent>,
        token: Option<String>,
        heartbeats: Heartbeats,
    ) -> Self {
        AttachService {
            events,
            token,
            heartbeats,
            next_index: AtomicU32::new(0),
            attached: Arc::default(),
        }
    }

    fn check_token<T>(&self, req: &Request<T>) -> Result<(), AttachError> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let given = req
            .metadata()
            .get(TOKEN_METADATA)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(AttachError::Token)
        }
    }
}

/// Longest worker id accepted; ids appear in terminals, reports and metric labels.
const MAX_ID_CHARS: usize = 128;

/// Whether a worker id is safe to print and to use as a key: no control
/// characters (terminal escapes), not empty, not huge.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.chars().count() <= MAX_ID_CHARS && !id.chars().any(char::is_control)
}

/// Compares without an early exit, so timing reveals nothing about the token.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// Sends one worker's outbound messages, converted to the wire, with a
/// ping every `interval`, until the channel closes, the stream goes or a
/// Shutdown is sent. The first ping comes one interval after the start, and
/// a queued message goes before a due ping: with `interval`'s immediate
/// first tick and an unbiased `select!`, a first poll that came a
/// millisecond late (a loaded or very slow coordinator: seen under
/// valgrind) sent Ping before the Welcome on half the attaches, which the
/// worker took for a broken session ("expected Welcome, got Ping").
async fn forward(
    mut rx: mpsc::Receiver<CoordinatorMessage>,
    wire_tx: mpsc::Sender<Result<pb::CoordinatorMessage, Status>>,
    interval: Duration,
) {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        let msg = tokio::select! {
            biased;
            m = rx.recv() => match m { Some(m) => m, None => break },
            _ = ping.tick() => CoordinatorMessage::Ping,
        };
        let wire = match pb::CoordinatorMessage::try_from(&msg) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!("cannot encode {msg:?}: {e}");
                continue;
            }
        };
        let shutdown = matches!(msg, CoordinatorMessage::Shutdown { .. });
        if wire_tx.send(Ok(wire)).await.is_err() || shutdown {
            break;
        }
    }
}

type OutStream = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Coordinator for AttachService {
    type AttachStream = OutStream;

    async fn attach(
        &self,
        request: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<OutStream>, Status> {
        let Some(Admission(gate)) = request.extensions().get::<Admission>().cloned() else {
            return Err(AttachError::NotAdmitted.into());
        };
        let peer = Some(gate.peer());
        if let Err(e) = self.check_token(&request) {
            tracing::warn!("refused a worker from {peer:?}: {e}");
            return Err(e.into());
        }
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(self.heartbeats.timeout, inbound.message())
            .await
            .map_err(|_| AttachError::NoHello)?
            .map_err(|s| AttachError::Malformed(s.message().to_owned()))?
            .ok_or(AttachError::NoHello)?;
        let hello = match decode_worker_message(first) {
            Ok(WorkerMessage::Hello(h)) => h,
            Ok(_) => return Err(AttachError::NoHello.into()),
            Err(e) => return Err(AttachError::Malformed(e.to_string()).into()),
        };
        if hello.protocol_version != PROTOCOL_VERSION {
            let e = AttachError::Version {
                worker: hello.protocol_version,
                coordinator: PROTOCOL_VERSION,
            };
            tracing::warn!("refused worker {} from {peer:?}: {e}", hello.worker_id);
            return Err(e.into());
        }
        // From here on the stream *is* this worker: every later message is
        // attributed to this id, whatever it claims (a second Hello is ignored).
        let id = hello.worker_id.clone();
        if !valid_id(&id) {
            let e = AttachError::BadId(id.chars().take(MAX_ID_CHARS).collect());
            tracing::warn!("refused a worker from {peer:?}: {e}");
            return Err(e.into());
        }
        {
            let mut attached = self
                .attached
                .lock()
                .map_err(|_| Status::internal("membership lock poisoned"))?;
            if !attached.insert(id.clone()) {
                let e = AttachError::Duplicate(id);
                tracing::warn!("refused a worker from {peer:?}: {e}");
                return Err(e.into());
            }
        }
        // A worker is accepted on this connection: it may outlive the authentication deadline.
        gate.authenticate();
        let index = self.next_index.fetch_add(1, Ordering::Relaxed);

        // Outbound: domain messages from the controller, converted here, plus pings.
        let (tx, rx) = mpsc::channel::<CoordinatorMessage>(SEND_QUEUE);
        let (wire_tx, wire_rx) =
            mpsc::channel::<Result<pb::CoordinatorMessage, Status>>(SEND_QUEUE);
        let welcome = CoordinatorMessage::Welcome(Welcome {
            index,
            heartbeat_interval: self.heartbeats.interval,
            heartbeat_timeout: self.heartbeats.timeout,
        });
        let _ = tx.send(welcome).await;
        tokio::spawn(forward(rx, wire_tx, self.heartbeats.interval));

        let link = WorkerLink {
            id: id.clone(),
            index,
            hello,
            peer,
            tx,
            gate: gate.clone(),
        };
        if self.events.send(ClusterEvent::Joined(link)).await.is_err() {
            return Err(AttachError::ShuttingDown.into());
        }

        // Inbound: every worker message goes to the controller; silence past the timeout means lost.
        let events = self.events.clone();
        let attached = self.attached.clone();
        let timeout = self.heartbeats.timeout;
        tokio::spawn(async move {
            let reason = loop {
                match tokio::time::timeout(timeout, inbound.message()).await {
                    Err(_) => break format!("no heartbeat for {timeout:?}"),
                    Ok(Ok(Some(m))) => match decode_worker_message(m) {
                        Ok(msg) => {
                            let ev = ClusterEvent::Message {
                                worker: id.clone(),
                                msg,
                            };
                            if events.send(ev).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!("worker {id}: ignoring a malformed message: {e}"),
                    },
                    Ok(Ok(None)) => break "the worker closed its stream".to_owned(),
                    Ok(Err(s)) => break format!("stream error: {}", s.message()),
                };
            };
            // A worker declared lost must hear it: the outbound stream would
            // otherwise keep pinging it (the run holds its link until the
            // end), so it would keep its load running and send snapshots
            // nobody reads or acknowledges, and they would miss the report.
            // Closing the connection makes it stop its load, redial and
            // resend what was not acknowledged.
            gate.close();
            // Left before the id is free again: a reconnect's Joined always comes after it.
            let _ = events
                .send(ClusterEvent::Left {
                    worker: id.clone(),
                    reason,
                })
                .await;
            if let Ok(mut a) = attached.lock() {
                a.remove(&id);
            }
        });

        Ok(Response::new(Box::pin(ReceiverStream::new(wire_rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use squall_proto::{CoordinatorClient, pb};

    use crate::cluster::Cluster;

    fn hello(id: &str) -> pb::WorkerMessage {
        let h = WorkerMessage::Hello(Hello {
            worker_id: id.to_owned(),
            version: "test".into(),
            protocol_version: PROTOCOL_VERSION,
            cores: 1,
            labels: Default::default(),
        });
        pb::WorkerMessage::try_from(&h).unwrap_or_else(|e| panic!("encode hello: {e}"))
    }

    async fn next(cluster: &mut Cluster) -> ClusterEvent {
        tokio::time::timeout(Duration::from_secs(5), cluster.next())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no cluster event within 5 s"))
    }

    /// A worker cannot speak for another id: everything on a stream is
    /// attributed to the id of its first Hello, whether it re-sends Hello
    /// under another id or sends snapshots (which carry no worker id).
    #[tokio::test]
    async fn messages_are_attributed_to_the_stream_not_to_their_claims() {
        let mut cluster = Cluster::loopback().await;
        let mut client = CoordinatorClient::connect(format!("http://{}", cluster.addr()))
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let (tx, rx) = mpsc::channel(8);
        let _ = tx.send(hello("a")).await;
        let _inbound = client
            .attach(ReceiverStream::new(rx))
            .await
            .unwrap_or_else(|e| panic!("attach: {e}"));
        match next(&mut cluster).await {
            ClusterEvent::Joined(link) => assert_eq!(link.id, "a"),
            other => panic!("expected Joined, got {other:?}"),
        }

        let snapshot = pb::WorkerMessage {
            kind: Some(pb::worker_message::Kind::Snapshot(pb::Snapshot {
                run_id: "a-run-it-was-not-given".into(),
                ..Default::default()
            })),
        };
        let _ = tx.send(hello("b")).await;
        let _ = tx.send(snapshot).await;
        for _ in 0..2 {
            match next(&mut cluster).await {
                ClusterEvent::Message { worker, .. } => assert_eq!(worker, "a"),
                other => panic!("expected a message from a, got {other:?}"),
            }
        }
        let ids: Vec<String> = cluster.links().into_iter().map(|l| l.id).collect();
        assert_eq!(ids, ["a"]);
    }

    #[test]
    fn worker_ids_must_be_printable_and_bounded() {
        assert!(valid_id("worker-1"));
        assert!(valid_id("ü-1"));
        assert!(!valid_id(""));
        assert!(!valid_id("evil\u{1b}[2J"));
        assert!(!valid_id(&"x".repeat(MAX_ID_CHARS + 1)));
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
