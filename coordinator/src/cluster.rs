//! Membership: the gRPC listener, the workers attached to it, and the events they produce.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use squall_common::protocol::{CoordinatorMessage, WorkerMessage, WorkerState};
use squall_proto::CoordinatorServer;
use squall_proto::link::MAX_MESSAGE_BYTES;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::Listen;
use crate::error::CoordinatorError;
use crate::service::{AttachService, ClusterEvent, Heartbeats, WorkerLink};
use crate::tls;

#[derive(Debug)]
pub struct Member {
    pub link: WorkerLink,
    pub state: WorkerState,
    pub active_users: u64,
}

/// The coordinator's view of its workers; the single owner of membership state.
pub struct Cluster {
    events: mpsc::Receiver<ClusterEvent>,
    members: BTreeMap<String, Member>,
    addr: SocketAddr,
}

impl Cluster {
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
            .tcp_nodelay(true)
            .add_service(service);
        tokio::spawn(async move {
            let served = match listen.tls {
                Some(t) => router.serve_with_incoming(tls::incoming(listener, t)).await,
                None => {
                    router
                        .serve_with_incoming(TcpListenerStream::new(listener))
                        .await
                }
            };
            if let Err(e) = served {
                tracing::error!("gRPC server stopped: {e}");
            }
        });
        Ok(Cluster {
            events: rx,
            members: BTreeMap::new(),
            addr,
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

    /// The next cluster event, with membership already updated for it.
    pub async fn next(&mut self) -> Option<ClusterEvent> {
        let ev = self.events.recv().await?;
        match &ev {
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
                    },
                );
            }
            ClusterEvent::Left { worker, reason } => {
                if self.members.remove(worker).is_some() {
                    tracing::warn!("worker {worker} left: {reason}");
                }
            }
            ClusterEvent::Message { worker, msg } => {
                if let Some(m) = self.members.get_mut(worker) {
                    match msg {
                        WorkerMessage::Heartbeat(h) => {
                            m.state = h.state;
                            m.active_users = h.active_users;
                        }
                        WorkerMessage::Status(s) => m.state = s.state,
                        WorkerMessage::Hello(_) | WorkerMessage::Snapshot(_) => {}
                    }
                }
            }
        }
        Some(ev)
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

    pub async fn send(&self, worker: &str, msg: CoordinatorMessage) {
        if let Some(m) = self.members.get(worker) {
            let _ = m.link.tx.send(msg).await;
        }
    }

    /// Tells every attached worker to exit (used for in-process local workers).
    pub async fn shutdown_all(&self, reason: &str) {
        for m in self.members.values() {
            let _ = m
                .link
                .tx
                .send(CoordinatorMessage::Shutdown {
                    reason: reason.to_owned(),
                })
                .await;
        }
    }
}
