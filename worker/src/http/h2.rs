//! HTTP/2 to the target: every user of a worker multiplexes its requests over a few shared connections, each held to `max_streams` concurrent streams.
//!
//! hyper's HTTP/2 client does the framing, HPACK and flow control; this module
//! owns the pool. The pool lives in the run (`PreparedRun`), which all engine
//! threads of a worker share, so `http2.connections` is a count per worker:
//! each connection is driven by a task on the engine thread that opened it,
//! and any thread's users may send on it. A request is the same HTTP/1.1 bytes
//! the rest of the engine builds (templates, cookies, redirects), read back
//! with httparse into an `http::Request`: one encoder serves both protocols.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo};
use squall_common::scenario::Http2Spec;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::connection::{Body, Keep, Response};
use super::outcome::ErrorKind;
use super::tls::TargetTlsConnector;

/// The most header bytes (HPACK-decoded, as HTTP/2 counts them) a response
/// may carry: the same 64 KiB bound as an HTTP/1.1 head.
const MAX_HEADER_LIST: u32 = 64 * 1024;
/// Header fields our own request may carry when read back from its bytes.
const MAX_REQUEST_HEADERS: usize = 128;

/// One live connection: the handle requests go through, and the streams
/// this worker may still open on it.
struct Live {
    sender: SendRequest<Full<Bytes>>,
    streams: Semaphore,
}

/// One of the worker's `connections`: the live one, if any, and a lock that
/// lets a single request open a new one while the others wait for it.
#[derive(Default)]
struct Slot {
    live: Mutex<Option<Arc<Live>>>,
    opening: tokio::sync::Mutex<()>,
}

impl Slot {
    fn current(&self) -> Option<Arc<Live>> {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.as_ref().filter(|l| !l.sender.is_closed()).cloned()
    }

    /// Forgets `dead` (not a newer connection another request opened since).
    fn drop_if(&self, dead: &Arc<Live>) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if live.as_ref().is_some_and(|l| Arc::ptr_eq(l, dead)) {
            *live = None;
        }
    }
}

/// The worker's HTTP/2 connections to the target.
pub struct H2Pool {
    spec: Http2Spec,
    /// TLS offering only `h2` by ALPN; None for prior knowledge over TCP.
    tls: Option<TargetTlsConnector>,
    scheme: Scheme,
    /// The host URL's authority, for requests whose Host header is the default.
    authority: Authority,
    slots: Box<[Slot]>,
    /// Round-robin over the slots, so that every connection carries an even share.
    next: AtomicUsize,
}

impl std::fmt::Debug for H2Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Pool").field("spec", &self.spec).finish()
    }
}

/// Why one request failed, and whether its connection is gone.
struct Failure {
    kind: ErrorKind,
    /// The request never left: the connection was closed before it was sent.
    unsent: bool,
}

impl H2Pool {
    pub fn new(spec: Http2Spec, tls: Option<TargetTlsConnector>, authority: Authority) -> Self {
        let scheme = if tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let slots = (0..spec.connections).map(|_| Slot::default()).collect();
        H2Pool {
            spec,
            tls,
            scheme,
            authority,
            slots,
            next: AtomicUsize::new(0),
        }
    }

    /// Sends `wire` (an HTTP/1.1 request as the engine builds it) as an
    /// HTTP/2 stream on one of the worker's connections, (re)opening it when
    /// it is gone, and reads the whole response, counting the body and keeping
    /// only what `body` asks for. A request refused because its connection
    /// had just closed is sent once more, on a new one.
    pub async fn send(
        &self,
        addr: SocketAddr,
        wire: &[u8],
        head_only: bool,
        mut body: Option<Body<'_>>,
        want: Keep,
    ) -> Result<Response, ErrorKind> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let mut retried = false;
        loop {
            let request = self.request(wire)?;
            let live = self.live(slot, addr).await?;
            if let Some(b) = body.as_mut() {
                b.buf.clear();
            }
            match exchange(&live, request, head_only, body.as_mut(), want).await {
                Ok(resp) => return Ok(resp),
                Err(f) => {
                    if live.sender.is_closed() {
                        slot.drop_if(&live);
                    }
                    if !f.unsent || retried {
                        return Err(f.kind);
                    }
                    retried = true;
                }
            }
        }
    }

    /// The slot's live connection, or a new one.
    async fn live(&self, slot: &Slot, addr: SocketAddr) -> Result<Arc<Live>, ErrorKind> {
        if let Some(l) = slot.current() {
            return Ok(l);
        }
        let _opening = slot.opening.lock().await;
        if let Some(l) = slot.current() {
            return Ok(l);
        }
        let live = Arc::new(self.open(addr).await?);
        *slot.live.lock().unwrap_or_else(PoisonError::into_inner) = Some(live.clone());
        Ok(live)
    }

    async fn open(&self, addr: SocketAddr) -> Result<Live, ErrorKind> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|_| ErrorKind::Connect)?;
        // Small frames each way: Nagle would hold them for up to 40 ms.
        let _ = tcp.set_nodelay(true);
        let sender = match &self.tls {
            None => handshake(tcp).await?,
            Some(t) => {
                let tls = t.handshake(tcp).await.map_err(|_| ErrorKind::Tls)?;
                // h2 is required, not preferred: a server that picks
                // nothing (or HTTP/1.1) fails the handshake as `tls`.
                if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(ErrorKind::Tls);
                }
                handshake(tls).await?
            }
        };
        let permits = usize::try_from(self.spec.max_streams).unwrap_or(usize::MAX);
        Ok(Live {
            sender,
            streams: Semaphore::new(permits.min(Semaphore::MAX_PERMITS)),
        })
    }

    /// Reads the engine's HTTP/1.1 request bytes back into an HTTP/2 request:
    /// the Host header becomes `:authority`, connection-specific fields
    /// (forbidden in HTTP/2) are left out, the rest is the body.
    fn request(&self, wire: &[u8]) -> Result<Request<Full<Bytes>>, ErrorKind> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
        let mut parsed = httparse::Request::new(&mut fields);
        // Our own bytes, built from a checked scenario: failing here is a
        // template that rendered something HTTP cannot carry.
        let head = match parsed.parse(wire) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => return Err(ErrorKind::Template),
        };
        let method = parsed
            .method
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .ok_or(ErrorKind::Template)?;
        let path = parsed
            .path
            .and_then(|p| PathAndQuery::try_from(p).ok())
            .ok_or(ErrorKind::Template)?;
        let mut authority = None;
        let mut builder = Request::builder().method(method);
        for h in parsed.headers.iter() {
            if h.name.eq_ignore_ascii_case("host") {
                authority = Authority::try_from(h.value).ok();
                continue;
            }
            if [
                "connection",
                "keep-alive",
                "proxy-connection",
                "transfer-encoding",
                "upgrade",
            ]
            .iter()
            .any(|c| h.name.eq_ignore_ascii_case(c))
            {
                continue;
            }
            let name =
                HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| ErrorKind::Template)?;
            let value = HeaderValue::from_bytes(h.value).map_err(|_| ErrorKind::Template)?;
            builder = builder.header(name, value);
        }
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(authority.unwrap_or_else(|| self.authority.clone()))
            .path_and_query(path)
            .build()
            .map_err(|_| ErrorKind::Template)?;
        let rest = &wire[head..];
        let body = if rest.is_empty() {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(rest)
        };
        builder
            .uri(uri)
            .body(Full::new(body))
            .map_err(|_| ErrorKind::Template)
    }
}

/// The HTTP/2 handshake over `io`; the connection's driver runs as a task
/// on this engine thread until the connection ends.
async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, ErrorKind>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = Builder::new(TokioExecutor::new())
        .max_header_list_size(MAX_HEADER_LIST)
        // The server does not push; a peer that opens streams anyway is refused.
        .max_concurrent_streams(0)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| classify(&e))?;
    tokio::spawn(async move {
        // Its end (GOAWAY, reset, EOF) shows in the requests on it.
        let _ = conn.await;
    });
    Ok(sender)
}

/// One stream: the request out, the response head, then the body counted
/// (and kept up to its limit when asked), all within one stream permit.
async fn exchange(
    live: &Live,
    request: Request<Full<Bytes>>,
    head_only: bool,
    body: Option<&mut Body<'_>>,
    want: Keep,
) -> Result<Response, Failure> {
    let _stream = live.streams.acquire().await.map_err(|_| Failure {
        kind: ErrorKind::Reset,
        unsent: true,
    })?;
    let mut sender = live.sender.clone();
    let resp = sender.send_request(request).await.map_err(|e| Failure {
        kind: classify(&e),
        unsent: e.is_canceled(),
    })?;
    let first_byte = Instant::now();
    let status = resp.status().as_u16();
    let (head, mut incoming) = resp.into_parts();
    let mut headers = Vec::new();
    let mut set_cookies = Vec::new();
    if want.headers || want.cookies {
        for (name, value) in &head.headers {
            let text = || String::from_utf8_lossy(value.as_bytes()).into_owned();
            if want.cookies && name == http::header::SET_COOKIE {
                set_cookies.push(text());
            }
            if want.headers {
                headers.push((name.as_str().to_owned(), text()));
            }
        }
    }
    let failed = |kind| Failure {
        kind,
        unsent: false,
    };
    let mut keep = body.map(|b| (b.limit, &mut *b.buf));
    // A declared length beyond the limit fails before any of it is read.
    if let Some((limit, _)) = &keep {
        let declared = head
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|d| d > *limit) {
            return Err(failed(ErrorKind::BodyTooLarge));
        }
    }
    let mut bytes: u64 = 0;
    if !head_only {
        // hyper hands back flow-control credit as each frame is taken, so the
        // body streams through without being held: only `keep` grows.
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| failed(classify(&e)))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            bytes = bytes.saturating_add(data.len() as u64);
            if let Some((limit, buf)) = keep.as_mut() {
                let fits = (buf.len() as u64)
                    .checked_add(data.len() as u64)
                    .is_some_and(|n| n <= *limit);
                if !fits {
                    // Dropping the body resets the stream: the rest is never read.
                    return Err(failed(ErrorKind::BodyTooLarge));
                }
                // Grow by doubling as usual, but never past the limit.
                let needed = buf.len() + data.len();
                if needed > buf.capacity() {
                    let cap = usize::try_from(*limit).unwrap_or(usize::MAX);
                    let target = needed.max(buf.capacity().saturating_mul(2)).min(cap);
                    buf.reserve_exact(target - buf.len());
                }
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(Response {
        status,
        first_byte,
        bytes,
        headers,
        set_cookies,
    })
}

/// How a failed stream or connection is reported: the server ending it
/// (GOAWAY, RST_STREAM, a closed socket) is `reset`; a server that broke the
/// protocol (bad frames, oversized or malformed headers) is `protocol`.
fn classify(e: &hyper::Error) -> ErrorKind {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            if h2.is_io() || h2.is_remote() {
                let broken = h2.reason().is_some_and(|r| {
                    matches!(
                        r,
                        h2::Reason::PROTOCOL_ERROR
                            | h2::Reason::COMPRESSION_ERROR
                            | h2::Reason::FRAME_SIZE_ERROR
                    )
                });
                return if broken {
                    ErrorKind::Protocol
                } else {
                    ErrorKind::Reset
                };
            }
            return ErrorKind::Protocol;
        }
        if s.downcast_ref::<std::io::Error>().is_some() {
            return ErrorKind::Reset;
        }
        source = s.source();
    }
    if e.is_parse() || e.is_user() {
        ErrorKind::Protocol
    } else {
        ErrorKind::Reset
    }
}
