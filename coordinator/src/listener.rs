//! The worker listener's connections: accepted with back-off, capped in number, and closed when they do not authenticate in time or when the cluster disconnects them.
//!
//! Every connection the gRPC server sees is a [`Guarded`] one. Until a
//! worker on it has been accepted by the `Attach` service (token, Hello,
//! protocol version, a free id) it has [`AUTH_DEADLINE`] from its TCP accept,
//! TLS handshake included; then its reads fail and the server drops it. So
//! idle sockets, half-open handshakes and silent HTTP/2 prefaces cannot hold
//! file descriptors or the connection cap for long.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

/// How long a new connection has, from its TCP accept, to attach a worker
/// (TLS handshake, token, Hello); then it is closed.
pub const AUTH_DEADLINE: Duration = Duration::from_secs(5);

/// Most worker connections open at once. Further ones wait in the kernel's
/// accept backlog until one closes, so a flood of idle sockets delays a
/// worker by at most [`AUTH_DEADLINE`] instead of locking it out.
pub const MAX_CONNECTIONS: usize = 4096;

/// The first pause after a failed accept (out of file descriptors, ...); it doubles up to [`MAX_ACCEPT_BACKOFF`].
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(20);
/// The longest pause between accept attempts while accepting keeps failing.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_millis(500);

/// One connection's state, shared by its I/O and by whoever may close it:
/// the `Attach` service marks it authenticated, the cluster closes it when
/// the worker on it stops reading.
#[derive(Debug)]
pub struct Gate {
    peer: SocketAddr,
    authenticated: AtomicBool,
    closed: AtomicBool,
    /// The connection task's waker, so that `close` takes effect at once.
    waker: AtomicWaker,
}

impl Gate {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// A worker was accepted on this connection: it may stay past the deadline.
    pub fn authenticate(&self) {
        self.authenticated.store(true, Ordering::Release);
    }

    /// Closes the connection: its next read or write fails and the server drops it.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// What a request on a guarded connection finds in its extensions.
#[derive(Debug, Clone)]
pub struct Admission(pub Arc<Gate>);

/// Accepts TCP connections for the worker listener: at most
/// [`MAX_CONNECTIONS`] open, and a growing pause (woken early when a
/// connection closes) while accepting fails, instead of a busy loop.
pub struct Acceptor {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    freed: Arc<Notify>,
    failing: bool,
}

impl Acceptor {
    pub fn new(listener: TcpListener) -> Acceptor {
        Acceptor {
            listener,
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            freed: Arc::new(Notify::new()),
            failing: false,
        }
    }

    /// The next connection and its ticket (its place under the cap and its deadline).
    pub async fn accept(&mut self) -> (TcpStream, Ticket) {
        let mut backoff = MIN_ACCEPT_BACKOFF;
        loop {
            // The semaphore is never closed, so this only waits for a free slot.
            let Ok(permit) = self.slots.clone().acquire_owned().await else {
                std::future::pending::<()>().await;
                continue;
            };
            match self.listener.accept().await {
                Ok((tcp, peer)) => {
                    if std::mem::take(&mut self.failing) {
                        tracing::info!("accepting worker connections again");
                    }
                    let _ = tcp.set_nodelay(true);
                    let gate = Arc::new(Gate {
                        peer,
                        authenticated: AtomicBool::new(false),
                        closed: AtomicBool::new(false),
                        waker: AtomicWaker::new(),
                    });
                    let ticket = Ticket {
                        gate,
                        deadline: Instant::now() + AUTH_DEADLINE,
                        _permit: permit,
                        freed: self.freed.clone(),
                    };
                    return (tcp, ticket);
                }
                Err(e) => {
                    drop(permit);
                    if self.failing {
                        tracing::debug!("cannot accept a worker connection: {e}");
                    } else {
                        self.failing = true;
                        tracing::warn!(
                            "cannot accept worker connections: {e}; retrying with back-off (unauthenticated connections close after {AUTH_DEADLINE:?})"
                        );
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.freed.notified() => {}
                    }
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                }
            }
        }
    }

    /// Plain-text connections, guarded, as the gRPC server takes them.
    pub fn plain(self) -> impl Stream<Item = Result<Guarded<TcpStream>, io::Error>> {
        futures::stream::unfold(self, |mut acceptor| async move {
            let (tcp, ticket) = acceptor.accept().await;
            Some((Ok(ticket.guard(tcp)), acceptor))
        })
    }
}

/// An accepted connection's place under the cap (released when it is
/// dropped) and the instant by which it must authenticate.
pub struct Ticket {
    gate: Arc<Gate>,
    deadline: Instant,
    _permit: OwnedSemaphorePermit,
    freed: Arc<Notify>,
}

impl Ticket {
    pub fn peer(&self) -> SocketAddr {
        self.gate.peer
    }

    /// When the connection is closed if no worker has authenticated on it.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Wraps the connection's stream (TCP, or TLS over it) for the server.
    pub fn guard<IO>(self, io: IO) -> Guarded<IO> {
        Guarded {
            io,
            gate: self.gate.clone(),
            deadline: Some(Box::pin(tokio::time::sleep_until(self.deadline))),
            _ticket: self,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // An accept loop pausing after EMFILE may try again now.
        self.freed.notify_waiters();
    }
}

/// A connection stream that fails once its [`Gate`] is closed, or once its
/// deadline passes before a worker authenticated on it.
pub struct Guarded<IO> {
    io: IO,
    gate: Arc<Gate>,
    /// `None` once a worker has authenticated.
    deadline: Option<Pin<Box<Sleep>>>,
    _ticket: Ticket,
}

impl<IO> Guarded<IO> {
    /// Fails when the connection must close; registers the task to be woken when that changes.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        self.gate.waker.register(cx.waker());
        if self.gate.closed.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed by the coordinator",
            ));
        }
        if let Some(deadline) = &mut self.deadline {
            if self.gate.authenticated.load(Ordering::Acquire) {
                self.deadline = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                tracing::debug!(
                    "closed a connection from {}: no worker attached on it within {AUTH_DEADLINE:?}",
                    self.gate.peer
                );
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no worker attached in time",
                ));
            }
        }
        Ok(())
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<IO> Connected for Guarded<IO> {
    type ConnectInfo = Admission;

    fn connect_info(&self) -> Admission {
        Admission(self.gate.clone())
    }
}
