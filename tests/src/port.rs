//! A loopback port that nobody answers on, held for as long as a test needs it.

use std::net::SocketAddr;

use tokio::net::TcpSocket;

/// A loopback port bound but never listening, for the tests that must name an
/// address before anything listens there (a worker retrying before its
/// coordinator starts, a worker refused before it dials). Dialling it is
/// refused at once; unlike a port found free and then released, no other
/// process can take it in between, except a listener that binds with
/// `SO_REUSEADDR` as tokio's does, which is how a coordinator started on it
/// later still gets it. The kernel never hands it out for port 0.
pub struct ReservedPort {
    _socket: TcpSocket,
    addr: SocketAddr,
}

impl ReservedPort {
    pub fn loopback() -> ReservedPort {
        let socket = TcpSocket::new_v4().expect("TCP socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind an ephemeral loopback port");
        let addr = socket.local_addr().expect("local addr");
        ReservedPort {
            _socket: socket,
            addr,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }
}
