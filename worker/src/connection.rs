//! A user's own HTTP/1.1 keep-alive connection: request bytes written straight
//! to the socket, the response read by `ResponseReader` from the thread's
//! shared read buffer.
//!
//! This replaced hyper's client connection on the hot path: hyper runs each
//! connection as a separate task fed through a channel and rebuilds a header
//! map per request, which cost about 15% of the CPU per request against wrk
//! (docs/benchmarks.md). Here a request is one `write` of pre-built bytes and
//! the response is parsed in place, in the user's own task.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::recorder::ErrorKind;
use crate::response::{ParseError, Progress, ResponseReader};

/// Bytes one `read` may take. Shared by all users of a thread: a user reads
/// and parses within one poll and never holds it across an await.
pub const READ_BUFFER: usize = 64 * 1024;

/// The read buffer an engine thread's users share.
pub type ReadBuffer = RefCell<Box<[u8]>>;

pub fn read_buffer() -> ReadBuffer {
    RefCell::new(vec![0u8; READ_BUFFER].into_boxed_slice())
}

/// A response as the recorder needs it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// When the first response byte arrived.
    pub first_byte: Instant,
    pub bytes: u64,
}

/// Why an exchange failed, and whether the request may be sent again.
#[derive(Debug)]
struct Failed {
    kind: ErrorKind,
    /// Nothing came back on a connection that had served earlier requests:
    /// the server closed it while idle, so the request was never processed.
    stale: bool,
}

#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    /// A response head split across reads; empty (and unallocated) otherwise,
    /// so an idle user holds no buffer.
    pending: Vec<u8>,
    /// Whether a response has completed on this connection.
    used: bool,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Result<Self, ErrorKind> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|_| ErrorKind::Connect)?;
        // Small request/response exchanges: Nagle would add up to 40 ms per request.
        let _ = stream.set_nodelay(true);
        Ok(Connection {
            stream,
            pending: Vec::new(),
            used: false,
        })
    }

    async fn exchange(
        &mut self,
        request: &[u8],
        head_only: bool,
        buf: &ReadBuffer,
        mut body: Option<&mut Vec<u8>>,
    ) -> Result<(Response, bool), Failed> {
        let stale = self.used;
        self.stream.write_all(request).await.map_err(|_| Failed {
            kind: ErrorKind::Reset,
            stale,
        })?;
        let mut reader = ResponseReader::new(head_only);
        let mut first_byte = None;
        self.pending.clear();
        loop {
            self.stream.readable().await.map_err(|_| Failed {
                kind: ErrorKind::Reset,
                stale: stale && first_byte.is_none(),
            })?;
            let mut buf = buf.borrow_mut();
            let fed = match self.stream.try_read(&mut buf) {
                Ok(0) => {
                    let stale = stale && first_byte.is_none();
                    return match reader.eof() {
                        Ok(()) => Ok((response(&reader, first_byte), false)),
                        Err(_) => Err(Failed {
                            kind: ErrorKind::Reset,
                            stale,
                        }),
                    };
                }
                Ok(n) => {
                    first_byte.get_or_insert_with(Instant::now);
                    reader.feed(&buf[..n], &mut self.pending, body.as_deref_mut())
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => {
                    return Err(Failed {
                        kind: ErrorKind::Reset,
                        stale: stale && first_byte.is_none(),
                    });
                }
            };
            match fed {
                Ok(Progress::NeedMore) => {}
                Ok(Progress::Done { .. }) => {
                    self.used = true;
                    return Ok((response(&reader, first_byte), reader.keep_alive));
                }
                Err(e) => {
                    return Err(Failed {
                        kind: match e {
                            ParseError::Malformed => ErrorKind::Http,
                            ParseError::Incomplete => ErrorKind::Reset,
                        },
                        stale: false,
                    });
                }
            }
        }
    }
}

fn response(reader: &ResponseReader, first_byte: Option<Instant>) -> Response {
    Response {
        status: reader.status,
        first_byte: first_byte.unwrap_or_else(Instant::now),
        bytes: reader.body_bytes,
    }
}

/// Sends `request` on the user's keep-alive connection, (re)connecting when it
/// is gone, and reads the whole response. A connection the server closed while
/// idle is not a failure of this request: it is sent once more on a new one.
pub async fn send(
    conn: &mut Option<Connection>,
    addr: SocketAddr,
    request: &[u8],
    head_only: bool,
    buf: &ReadBuffer,
    mut body: Option<&mut Vec<u8>>,
) -> Result<Response, ErrorKind> {
    loop {
        let c = match conn {
            Some(c) => c,
            None => conn.insert(Connection::open(addr).await?),
        };
        if let Some(b) = body.as_deref_mut() {
            b.clear();
        }
        match c
            .exchange(request, head_only, buf, body.as_deref_mut())
            .await
        {
            Ok((resp, keep_alive)) => {
                if !keep_alive {
                    *conn = None;
                }
                return Ok(resp);
            }
            Err(f) => {
                *conn = None;
                // A fresh connection is never stale, so this retries at most once.
                if !f.stale {
                    return Err(f.kind);
                }
            }
        }
    }
}
