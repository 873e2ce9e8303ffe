//! Membership: the gRPC listener, the workers attached to it, and the events they produce.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use squall_common::protocol::{CoordinatorMessage, WorkerMessage, WorkerState};
use squall_proto::CoordinatorServer;
use squall_proto::link::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, MAX_MESSAGE_BYTES};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::watch;

use crate::config::Listen;
use crate::error::CoordinatorError;
use crate::listener::Acceptor;
use crate::service::{AttachService, ClusterEvent, Heartbeats, SEND_QUEUE, WorkerLink};
use crate::tls;

/// Most concurrent HTTP/2 streams on one connection: a worker needs one.
const MAX_STREAMS_PER_CONNECTION: u32 = 4;
/// Largest header block a worker may send (its token is the only large header).
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

#[derive(Debug)]
pub struct Member {
    pub link: WorkerLink,
    pub state: WorkerState,
    pub active_users: u64,
    pub cpu_percent: f32,
}

/// An attached worker as HTTP clients see it (serve mode's worker list, `/metrics`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct MemberView {
    pub id: String,
    /// Its latest heartbeat or status: ready, spawning, running, stopping, stopped or failed.
    pub state: &'static str,
    pub active_users: u64,
    pub cpu_percent: f32,
    pub cores: u32,
    pub version: String,
    /// The address it attached from.
    pub peer: Option<String>,
}

/// The coordinator's view of its workers; the single owner of membership state.
pub struct Cluster {
    events: mpsc::Receiver<ClusterEvent>,
    members: BTreeMap<String, Member>,
    /// Events the cluster produced itself (a disconnected worker's Left), delivered before the service's.
    pending: VecDeque<ClusterEvent>,
    addr: SocketAddr,
    /// Where the members are published when they change, for whoever watches (serve mode).
    roster: Option<watch::Sender<Vec<MemberView>>>,
}

impl Cluster {
    /// A plaintext cluster on an ephemeral loopback port, without a token, for unit tests.
    #[cfg(test)]
    pub(crate) async fn loopback() -> Cluster {
        let listen = Listen {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
        };
        Cluster::start(listen, None, Heartbeats::default())
            .await
            .unwrap_or_else(|e| panic!("start: {e}"))
    }

    /// Binds the gRPC listener (TLS when configured) and starts serving `Attach` in the background.
    pub async fn start(
        listen: Listen,
        token: Option<String>,
        heartbeats: Heartbeats,
    ) -> Result<Cluster, CoordinatorError> {
        let bind = listen.addr;
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| CoordinatorError::Bind {
                addr: bind.to_string(),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| CoordinatorError::Bind {
                addr: bind.to_string(),
                source,
            })?;
        let mutual_tls = listen.tls.is_some_and(|t| t.is_mutual());
        if token.is_none() && !mutual_tls && !addr.ip().to_canonical().is_loopback() {
            // Only reachable with --insecure-no-auth (the configuration refuses it otherwise).
            tracing::warn!(
                "accepting any worker on {addr} without authentication (--insecure-no-auth)"
            );
        }
        let (tx, rx) = mpsc::channel(4096);
        let service = CoordinatorServer::new(AttachService::new(tx, token, heartbeats))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let router = tonic::transport::Server::builder()
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .add_service(service);
        let acceptor = Acceptor::new(listener);
        tokio::spawn(async move {
            let served = match listen.tls {
                Some(t) => router.serve_with_incoming(tls::incoming(acceptor, t)).await,
                None => router.serve_with_incoming(acceptor.plain()).await,
            };
            if let Err(e) = served {
                tracing::error!("gRPC server stopped: {e}");
            }
        });
        Ok(Cluster {
            events: rx,
            members: BTreeMap::new(),
            pending: VecDeque::new(),
            addr,
            roster: None,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Attached workers in attach order.
    pub fn links(&self) -> Vec<WorkerLink> {
        let mut v: Vec<WorkerLink> = self.members.values().map(|m| m.link.clone()).collect();
        v.sort_by_key(|l| l.index);
        v
    }

    /// The members, published again whenever one joins, leaves, or changes state or users.
    pub fn watch_members(&mut self) -> watch::Receiver<Vec<MemberView>> {
        let (tx, rx) = watch::channel(self.members_view());
        self.roster = Some(tx);
        rx
    }

    /// Attached workers in attach order, as clients see them.
    pub fn members_view(&self) -> Vec<MemberView> {
        let mut v: Vec<(u32, MemberView)> = self
            .members
            .values()
            .map(|m| {
                (
                    m.link.index,
                    MemberView {
                        id: m.link.id.clone(),
                        state: m.state.as_str(),
                        active_users: m.active_users,
                        cpu_percent: m.cpu_percent,
                        cores: m.link.hello.cores,
                        version: m.link.hello.version.clone(),
                        peer: m.link.peer.map(|p| p.to_string()),
                    },
                )
            })
            .collect();
        v.sort_by_key(|(i, _)| *i);
        v.into_iter().map(|(_, m)| m).collect()
    }

    fn publish_members(&self) {
        if let Some(tx) = &self.roster {
            let now = self.members_view();
            tx.send_if_modified(|old| {
                let changed = *old != now;
                if changed {
                    *old = now;
                }
                changed
            });
        }
    }

    /// The next cluster event, with membership already updated for it.
    /// What a disconnected worker said or did after its disconnection is not news.
    pub async fn next(&mut self) -> Option<ClusterEvent> {
        if let Some(ev) = self.pending.pop_front() {
            return Some(ev);
        }
        loop {
            let ev = self.events.recv().await?;
            if self.update(&ev) {
                if self.roster.is_some()
                    && !matches!(
                        ev,
                        ClusterEvent::Message {
                            msg: WorkerMessage::Snapshot(_),
                            ..
                        }
                    )
                {
                    self.publish_members();
                }
                return Some(ev);
            }
        }
    }

    /// Updates membership for `ev`; false for the stragglers of a disconnected worker.
    fn update(&mut self, ev: &ClusterEvent) -> bool {
        match ev {
            ClusterEvent::Joined(link) => {
                tracing::info!(
                    "worker {} attached from {} ({} cores, v{})",
                    link.id,
                    link.peer.map_or("?".into(), |p| p.to_string()),
                    link.hello.cores,
                    link.hello.version
                );
                self.members.insert(
                    link.id.clone(),
                    Member {
                        link: link.clone(),
                        state: WorkerState::Ready,
                        active_users: 0,
                        cpu_percent: 0.0,
                    },
                );
            }
            ClusterEvent::Left { worker, reason } => {
                if self.members.remove(worker).is_none() {
                    return false;
                }
                tracing::warn!("worker {worker} left: {reason}");
            }
            ClusterEvent::Message { worker, msg } => {
                let Some(m) = self.members.get_mut(worker) else {
                    return false;
                };
                match msg {
                    WorkerMessage::Heartbeat(h) => {
                        m.state = h.state;
                        m.active_users = h.active_users;
                        m.cpu_percent = if h.cpu_percent.is_finite() {
                            h.cpu_percent.clamp(0.0, 100_000.0)
                        } else {
                            0.0
                        };
                    }
                    WorkerMessage::Status(s) => m.state = s.state,
                    WorkerMessage::Hello(_) | WorkerMessage::Snapshot(_) => {}
                }
            }
        }
        true
    }

    /// Waits until `n` workers are attached, or fails after `timeout`.
    pub async fn wait_for(&mut self, n: usize, timeout: Duration) -> Result<(), CoordinatorError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut announced = usize::MAX;
        while self.members.len() < n {
            if announced != self.members.len() {
                announced = self.members.len();
                eprintln!(
                    "waiting for workers on {}: {announced}/{n} attached",
                    self.addr
                );
            }
            match tokio::time::timeout_at(deadline, self.next()).await {
                Ok(Some(_)) => {}
                Ok(None) => return Err(CoordinatorError::Internal("event channel closed".into())),
                Err(_) => {
                    return Err(CoordinatorError::NoWorkers {
                        wanted: n,
                        attached: self.members.len(),
                        waited: started.elapsed(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Queues `msg` for `worker` without waiting. A worker whose queue is
    /// full has stopped reading: it is disconnected, and the next event is
    /// its `Left`, so the run treats it as lost like any other.
    pub fn send(&mut self, worker: &str, msg: CoordinatorMessage) {
        let Some(m) = self.members.get(worker) else {
            return;
        };
        match m.link.tx.try_send(msg) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => self.disconnect(
                worker,
                format!(
                    "it stopped reading its stream ({SEND_QUEUE} messages for it were waiting), so the coordinator disconnected it"
                ),
            ),
        }
    }

    /// Drops `worker` from the cluster and closes its connection.
    fn disconnect(&mut self, worker: &str, reason: String) {
        if let Some(m) = self.members.remove(worker) {
            tracing::warn!("worker {worker}: {reason}");
            m.link.gate.close();
            self.pending.push_back(ClusterEvent::Left {
                worker: worker.to_owned(),
                reason,
            });
            self.publish_members();
        }
    }

    /// Tells every attached worker to exit (used for in-process local workers); never waits.
    pub fn shutdown_all(&self, reason: &str) {
        for m in self.members.values() {
            let _ = m.link.tx.try_send(CoordinatorMessage::Shutdown {
                reason: reason.to_owned(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use squall_common::protocol::{Hello, PROTOCOL_VERSION};
    use squall_proto::{CoordinatorClient, pb};
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::transport::Endpoint;

    /// A worker that stops reading is disconnected once its queue is full:
    /// the cluster never waits on it, reports it as left with the reason,
    /// and closes its connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_that_stops_reading_is_disconnected() {
        let mut cluster = Cluster::loopback().await;
        let channel = Endpoint::from_shared(format!("http://{}", cluster.addr()))
            .unwrap_or_else(|e| panic!("endpoint: {e}"))
            .initial_stream_window_size(1024)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let (tx, rx) = mpsc::channel(8);
        let hello = WorkerMessage::Hello(Hello {
            worker_id: "slow".into(),
            version: "test".into(),
            protocol_version: PROTOCOL_VERSION,
            cores: 1,
            labels: Default::default(),
        });
        let _ = tx
            .send(pb::WorkerMessage::try_from(&hello).unwrap_or_else(|e| panic!("{e}")))
            .await;
        let mut inbound = CoordinatorClient::new(channel)
            .attach(ReceiverStream::new(rx))
            .await
            .unwrap_or_else(|e| panic!("attach: {e}"))
            .into_inner();
        let joined = tokio::time::timeout(Duration::from_secs(5), cluster.next()).await;
        assert!(matches!(joined, Ok(Some(ClusterEvent::Joined(_)))));

        // Acks at a pace a reading worker keeps up with; this one reads nothing.
        let mut sent = 0u64;
        while !cluster.is_empty() && sent < 100 * SEND_QUEUE as u64 {
            for _ in 0..64 {
                cluster.send(
                    "slow",
                    CoordinatorMessage::Ack {
                        run_id: "r".into(),
                        seq: sent,
                    },
                );
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(cluster.is_empty(), "still attached after {sent} messages");
        match tokio::time::timeout(Duration::from_secs(5), cluster.next()).await {
            Ok(Some(ClusterEvent::Left { worker, reason })) => {
                assert_eq!(worker, "slow");
                assert!(reason.contains("stopped reading"), "{reason}");
            }
            other => panic!("expected Left, got {other:?}"),
        }
        // Its connection is closed: after what was in flight, the stream ends.
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(Some(_)) = inbound.message().await {}
        })
        .await;
        assert!(ended.is_ok(), "the stream to the worker is still open");
    }
}
