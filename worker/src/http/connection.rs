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
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::outcome::ErrorKind;
use super::response::{ParseError, Progress, ResponseReader};
use super::tls::TargetTlsConnector;

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
    /// The header fields, when the request asked for them (empty otherwise).
    pub headers: Vec<(String, String)>,
    /// `Set-Cookie` values, when a cookie jar asked for them (empty otherwise).
    pub set_cookies: Vec<String>,
}

/// Why an exchange failed, and whether the request may be sent again.
#[derive(Debug)]
struct Failed {
    kind: ErrorKind,
    /// Nothing came back on a connection that had served earlier requests:
    /// the server closed it while idle, so the request was never processed.
    stale: bool,
}

/// Plain TCP for `http://`, TLS over it for `https://`.
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One read's worth of the response.
enum Read {
    Fed(Result<Progress, ParseError>),
    Eof,
    Failed,
}

#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    /// A response head split across reads; empty (and unallocated) otherwise,
    /// so an idle user holds no buffer.
    pending: Vec<u8>,
    /// Whether a response has completed on this connection.
    used: bool,
}

impl Connection {
    async fn open(addr: SocketAddr, tls: Option<&TargetTlsConnector>) -> Result<Self, ErrorKind> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|_| ErrorKind::Connect)?;
        // Small request/response exchanges: Nagle would add up to 40 ms per request.
        let _ = tcp.set_nodelay(true);
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(t) => Stream::Tls(Box::new(
                t.handshake(tcp).await.map_err(|_| ErrorKind::Tls)?,
            )),
        };
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
        body: Option<Body<'_>>,
        want: Keep,
    ) -> Result<(Response, bool), Failed> {
        let stale = self.used;
        let wrote = async {
            self.stream.write_all(request).await?;
            // A no-op on plain TCP; pushes the last TLS record out.
            self.stream.flush().await
        };
        wrote.await.map_err(|_| Failed {
            kind: ErrorKind::Reset,
            stale,
        })?;
        let limit = body.as_ref().map_or(u64::MAX, |b| b.limit);
        let mut body = body.map(|b| b.buf);
        let mut reader = ResponseReader::new(head_only, limit);
        if want.headers {
            reader.keep_headers();
        }
        if want.cookies {
            reader.collect_cookies();
        }
        let mut first_byte = None;
        self.pending.clear();
        loop {
            // The shared buffer is borrowed only inside one poll, never across an await.
            let read = std::future::poll_fn(|cx| {
                let mut shared = buf.borrow_mut();
                let mut rb = ReadBuf::new(&mut shared[..]);
                match Pin::new(&mut self.stream).poll_read(cx, &mut rb) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(_)) => Poll::Ready(Read::Failed),
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            return Poll::Ready(Read::Eof);
                        }
                        first_byte.get_or_insert_with(Instant::now);
                        Poll::Ready(Read::Fed(reader.feed(
                            &shared[..n],
                            &mut self.pending,
                            body.as_deref_mut(),
                        )))
                    }
                }
            })
            .await;
            let nothing_back = stale && first_byte.is_none();
            match read {
                Read::Fed(Ok(Progress::NeedMore)) => {}
                Read::Fed(Ok(Progress::Done { .. })) => {
                    self.used = true;
                    let keep_alive = reader.keep_alive;
                    return Ok((response(&mut reader, first_byte), keep_alive));
                }
                Read::Fed(Err(e)) => {
                    return Err(Failed {
                        kind: match e {
                            ParseError::Malformed => ErrorKind::Http,
                            ParseError::Incomplete => ErrorKind::Reset,
                            ParseError::BodyTooLarge => ErrorKind::BodyTooLarge,
                        },
                        stale: false,
                    });
                }
                Read::Eof => {
                    return match reader.eof() {
                        Ok(()) => Ok((response(&mut reader, first_byte), false)),
                        Err(_) => Err(Failed {
                            kind: ErrorKind::Reset,
                            stale: nothing_back,
                        }),
                    };
                }
                Read::Failed => {
                    return Err(Failed {
                        kind: ErrorKind::Reset,
                        stale: nothing_back,
                    });
                }
            }
        }
    }
}

fn response(reader: &mut ResponseReader, first_byte: Option<Instant>) -> Response {
    Response {
        status: reader.status,
        first_byte: first_byte.unwrap_or_else(Instant::now),
        bytes: reader.body_bytes,
        headers: reader.headers.take().unwrap_or_default(),
        set_cookies: reader.set_cookies.take().unwrap_or_default(),
    }
}

/// What of a response head to keep beyond its framing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Keep {
    /// Every header field (checks and captures on headers).
    pub headers: bool,
    /// `Set-Cookie` values (the user's cookie jar).
    pub cookies: bool,
}

/// Where a response body goes when the request captures from it, and the
/// most of it that may be kept.
#[derive(Debug)]
pub struct Body<'a> {
    pub buf: &'a mut Vec<u8>,
    pub limit: u64,
}

impl Body<'_> {
    fn reborrow(&mut self) -> Body<'_> {
        Body {
            buf: self.buf,
            limit: self.limit,
        }
    }
}

/// Sends `request` on the user's keep-alive connection, (re)connecting when it
/// is gone, and reads the whole response. A connection the server closed while
/// idle is not a failure of this request: it is sent once more on a new one.
/// A body outgrowing `body`'s limit fails the request and drops the connection.
#[allow(clippy::too_many_arguments)] // each is one independent fact of the exchange
pub async fn send(
    conn: &mut Option<Connection>,
    addr: SocketAddr,
    tls: Option<&TargetTlsConnector>,
    request: &[u8],
    head_only: bool,
    buf: &ReadBuffer,
    mut body: Option<Body<'_>>,
    want: Keep,
) -> Result<Response, ErrorKind> {
    loop {
        let c = match conn {
            Some(c) => c,
            // Boxed: the TCP connect and TLS handshake future is 1,264 bytes (a
            // rustls `ClientConnection` alone is 1,056) and, held inline, made
            // this future 1,456 bytes, which the engine moves into its timeout
            // on every request; boxed (432 bytes), it costs one allocation per new
            // connection and this future stays within `tests::SEND_FUTURE_MAX`.
            None => conn.insert(Box::pin(Connection::open(addr, tls)).await?),
        };
        if let Some(b) = body.as_mut() {
            b.buf.clear();
        }
        match c
            .exchange(
                request,
                head_only,
                buf,
                body.as_mut().map(Body::reborrow),
                want,
            )
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The most bytes `send`'s future may take: the engine moves it (inside
    /// its per-request timeout) on every request, so its size is paid in
    /// `memcpy` each time (see `send`).
    const SEND_FUTURE_MAX: usize = 512;

    #[test]
    fn send_future_stays_small() {
        let buf = read_buffer();
        let mut conn = None;
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        let fut = send(
            &mut conn,
            addr,
            None,
            b"",
            false,
            &buf,
            None,
            Keep::default(),
        );
        let size = std::mem::size_of_val(&fut);
        assert!(size <= SEND_FUTURE_MAX, "send's future is {size} bytes");
    }
}
