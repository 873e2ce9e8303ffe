//! HTTP/2 to the target: every user of a worker multiplexes its requests over a few shared connections, each held to `max_streams` concurrent streams.
//!
//! The `h2` crate does the framing, HPACK and flow control, driven directly
//! rather than through hyper's client: hyper puts every request through a
//! channel to a dispatch task of its own and a oneshot back, on top of h2's
//! own connection task (measured in docs/benchmarks.md, "HTTP/2"). This
//! module owns the pool. The pool lives in the run (`PreparedRun`), which all
//! engine threads of a worker share, so `http2.connections` is a count per
//! worker: each connection is driven by a task on the engine thread that
//! opened it, and any thread's users may send on it.
//!
//! A static request's HTTP/2 head is built once, when the run is prepared
//! (`H2Request`); a request with rendered parts, a cookie or a redirect is
//! the same HTTP/1.1 bytes the rest of the engine builds, read back with
//! httparse: one encoder serves both protocols.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use h2::client::{Builder, SendRequest};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
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
/// Receive windows as hyper's client set them (2 MiB a stream, 5 MiB the
/// connection): h2's default 64 KiB would stall a large body for a round
/// trip per 64 KiB.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// An HTTP/2 request head and body, ready to send as many times as needed:
/// each send clones the parts (reference counts, and one header map).
#[derive(Debug, Clone)]
pub struct H2Request {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl H2Request {
    /// A `Request<()>` for h2 (the body goes separately).
    fn head(&self) -> Request<()> {
        let mut r = Request::new(());
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }
}

impl std::fmt::Display for H2Request {
    /// `METHOD absolute-URI`, as the report and tests name a request.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.uri)
    }
}

/// Which of the worker's connections a user sends on, for all its
/// requests: the users whose responses one read brought then send their
/// next requests on that same connection, in one write. Spread request by
/// request, every read's users wrote to most of the connections: 0.29
/// writes per request in scenario D under a 40 % CPU budget, against 0.10
/// for h2load and 0.11 for oha, whose streams each keep their connection.
#[derive(Debug, Default)]
pub struct Seat(Option<usize>);

/// One live connection: the handle requests go through, the streams this
/// worker may still open on it, and whether its driver has ended.
struct Live {
    sender: SendRequest<Bytes>,
    streams: Semaphore,
    closed: Arc<AtomicBool>,
}

impl Live {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
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
        live.as_ref().filter(|l| !l.is_closed()).cloned()
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
    /// Hands each user its connection (`Seat`) in turn, so that every
    /// connection carries an even share of the users.
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
    /// The request never left (or the server refused it unprocessed): it
    /// may be sent again on a new connection.
    unsent: bool,
    /// The connection refused a new stream: it is gone, whether or not its
    /// driver has noticed yet.
    dead: bool,
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

    /// Sends a request as an HTTP/2 stream on one of the worker's
    /// connections, (re)opening it when it is gone, and reads the whole
    /// response, counting the body and keeping only what `body` asks for.
    /// `prebuilt` is the request's head built at prepare time, when `wire`
    /// is the static request as prepared; otherwise `wire` (an HTTP/1.1
    /// request as the engine builds it) is read back into one. A request
    /// refused because its connection had just closed is sent once more,
    /// on a new one. `seat` is the user's connection, taken at its first
    /// request.
    #[allow(clippy::too_many_arguments)] // as `connection::send`, plus the user's seat
    pub async fn send(
        &self,
        seat: &mut Seat,
        addr: SocketAddr,
        prebuilt: Option<&H2Request>,
        wire: &[u8],
        head_only: bool,
        mut body: Option<Body<'_>>,
        want: Keep,
    ) -> Result<Response, ErrorKind> {
        let i = *seat
            .0
            .get_or_insert_with(|| self.next.fetch_add(1, Ordering::Relaxed));
        let slot = &self.slots[i % self.slots.len()];
        let rendered;
        let request = match prebuilt {
            Some(r) => r,
            None => {
                rendered = self.request(wire)?;
                &rendered
            }
        };
        let mut retried = false;
        loop {
            let live = self.live(slot, addr).await?;
            if let Some(b) = body.as_mut() {
                b.buf.clear();
            }
            match exchange(&live, request, head_only, body.as_mut(), want).await {
                Ok(resp) => return Ok(resp),
                Err(f) => {
                    if live.is_closed() || f.dead {
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
        // Boxed: the connect and TLS handshake futures are large and run once
        // per connection, while their space would otherwise be part of every
        // request's future and copied each time it is built (memcpy was 14%
        // of the engine thread's samples in scenario D, most of it moving
        // request futures).
        let live = Arc::new(Box::pin(self.open(addr)).await?);
        *slot.live.lock().unwrap_or_else(PoisonError::into_inner) = Some(live.clone());
        Ok(live)
    }

    async fn open(&self, addr: SocketAddr) -> Result<Live, ErrorKind> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|_| ErrorKind::Connect)?;
        // Small frames each way: Nagle would hold them for up to 40 ms.
        let _ = tcp.set_nodelay(true);
        let closed = Arc::new(AtomicBool::new(false));
        let sender = match &self.tls {
            None => handshake(tcp, closed.clone()).await?,
            Some(t) => {
                let tls = t.handshake(tcp).await.map_err(|_| ErrorKind::Tls)?;
                // h2 is required, not preferred: a server that picks
                // nothing (or HTTP/1.1) fails the handshake as `tls`.
                if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(ErrorKind::Tls);
                }
                handshake(tls, closed.clone()).await?
            }
        };
        let permits = usize::try_from(self.spec.max_streams).unwrap_or(usize::MAX);
        Ok(Live {
            sender,
            streams: Semaphore::new(permits.min(Semaphore::MAX_PERMITS)),
            closed,
        })
    }

    /// The HTTP/2 form of a static request, built once at prepare time; None
    /// when its bytes cannot be one (the same request then fails as
    /// `template` when sent, as before).
    pub fn prebuild(&self, wire: &[u8]) -> Option<H2Request> {
        self.request(wire).ok()
    }

    /// Reads the engine's HTTP/1.1 request bytes back into an HTTP/2 request:
    /// the Host header becomes `:authority`, connection-specific fields
    /// (forbidden in HTTP/2) are left out, the rest is the body.
    fn request(&self, wire: &[u8]) -> Result<H2Request, ErrorKind> {
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
        // Grown only by the fields kept: a request with none (the common
        // case, Host going to `:authority`) keeps an unallocated map, which
        // `H2Request::head` then clones per request without an allocation.
        let mut headers = HeaderMap::new();
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
            headers.append(name, value);
        }
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(authority.unwrap_or_else(|| self.authority.clone()))
            .path_and_query(path)
            .build()
            .map_err(|_| ErrorKind::Template)?;
        Ok(H2Request {
            method,
            uri,
            headers,
            body: Bytes::copy_from_slice(&wire[head..]),
        })
    }
}

/// The HTTP/2 handshake over `io`; the connection's driver runs as a task
/// on this engine thread until the connection ends, then sets `closed`.
async fn handshake<T>(io: T, closed: Arc<AtomicBool>) -> Result<SendRequest<Bytes>, ErrorKind>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = Builder::new()
        .max_header_list_size(MAX_HEADER_LIST)
        // The server does not push.
        .enable_push(false)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| classify(&e))?;
    tokio::spawn(async move {
        // Its end (GOAWAY, reset, EOF) shows in the requests on it.
        let _ = conn.await;
        closed.store(true, Ordering::Relaxed);
    });
    Ok(sender)
}

/// One stream: the request out, the response head, then the body counted
/// (and kept up to its limit when asked), all within one stream permit.
async fn exchange(
    live: &Live,
    request: &H2Request,
    head_only: bool,
    body: Option<&mut Body<'_>>,
    want: Keep,
) -> Result<Response, Failure> {
    let unsent = |e: h2::Error| Failure {
        kind: classify(&e),
        unsent: true,
        dead: true,
    };
    let _stream = live.streams.acquire().await.map_err(|_| Failure {
        kind: ErrorKind::Reset,
        unsent: true,
        dead: true,
    })?;
    // A clone per request: h2's `send_request` takes `&mut self`. A fresh
    // handle has no pending-open stream of another request to wait on, so
    // `ready()` would only repeat the connection-error and stream-id checks
    // that `send_request` makes itself (h2 0.4, `Streams::poll_pending_open`
    // against `Streams::send_request`), failing the same way: it is skipped.
    // (This, the cookie lookup and the early end of the body loop below cut
    // the request path from 17,719 to 16,903 instructions per request, and
    // the engine thread from 56,921 to 56,019: callgrind, `ci` build,
    // scenario D against nginx.)
    let mut sender = live.sender.clone();
    let empty = request.body.is_empty();
    let (pending, mut out) = sender.send_request(request.head(), empty).map_err(unsent)?;
    if !empty {
        // h2 buffers what the send window does not yet allow. A server may
        // answer before it reads the body and then reset the stream with
        // NO_ERROR (RFC 9113, 8.1); if that happens before this line (the
        // connection's driver may run on another engine thread), the stream
        // is inactive and the body cannot go, yet the response stands. So a
        // failed send is judged by the response: a connection or stream that
        // really failed fails `pending` below with its own error. (Seen in
        // e2e http2::h2_over_tls_is_chosen_by_alpn: 1 run in 6 counted POSTs
        // the server had answered as `protocol`, h2's InactiveStreamId.)
        let _ = out.send_data(request.body.clone(), true);
    }
    let resp = pending.await.map_err(|e| Failure {
        kind: classify(&e),
        // The server refused the stream unprocessed: safe to send again.
        unsent: e.reason() == Some(h2::Reason::REFUSED_STREAM),
        dead: false,
    })?;
    let first_byte = Instant::now();
    let status = resp.status().as_u16();
    let (head, mut incoming) = resp.into_parts();
    let mut headers = Vec::new();
    let mut set_cookies = Vec::new();
    let text = |value: &HeaderValue| String::from_utf8_lossy(value.as_bytes()).into_owned();
    if want.headers {
        for (name, value) in &head.headers {
            if want.cookies && name == http::header::SET_COOKIE {
                set_cookies.push(text(value));
            }
            headers.push((name.as_str().to_owned(), text(value)));
        }
    } else if want.cookies {
        // One lookup, not a walk over every field: cookies are on by
        // default, and nginx sends seven fields with each response.
        set_cookies.extend(
            head.headers
                .get_all(http::header::SET_COOKIE)
                .iter()
                .map(text),
        );
    }
    let failed = |kind| Failure {
        kind,
        unsent: false,
        dead: false,
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
        while let Some(data) = incoming.data().await {
            let data = data.map_err(|e| failed(classify(&e)))?;
            // The frame that ended the stream (END_STREAM, no trailers)
            // needs neither its credit returned nor another poll: h2 gives
            // a closed stream's window back to the connection when the
            // stream is dropped (`Recv::release_closed_capacity`).
            let last = incoming.is_end_stream();
            if !last {
                // Credit goes back as each frame is taken, so the body
                // streams through without being held: only `keep` grows.
                let _ = incoming.flow_control().release_capacity(data.len());
            }
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
            if last {
                break;
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
fn classify(e: &h2::Error) -> ErrorKind {
    if e.is_io() || e.is_remote() {
        let broken = e.reason().is_some_and(|r| {
            matches!(
                r,
                h2::Reason::PROTOCOL_ERROR
                    | h2::Reason::COMPRESSION_ERROR
                    | h2::Reason::FRAME_SIZE_ERROR
            )
        });
        if broken {
            ErrorKind::Protocol
        } else {
            ErrorKind::Reset
        }
    } else {
        ErrorKind::Protocol
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(tls: bool) -> H2Pool {
        let spec = Http2Spec {
            connections: 2,
            max_streams: 8,
            prior_knowledge: !tls,
        };
        let mut p = H2Pool::new(spec, None, Authority::from_static("example.test:8080"));
        if tls {
            p.scheme = Scheme::HTTPS;
        }
        p
    }

    #[test]
    fn http11_bytes_become_an_http2_head_without_connection_fields() {
        let wire = b"POST /a?b=1 HTTP/1.1\r\nHost: other.test\r\nConnection: keep-alive\r\n\
            Transfer-Encoding: chunked\r\nX-One: 1\r\nX-One: 2\r\ncontent-length: 3\r\n\r\nabc";
        let r = pool(true).request(wire).expect("converts");
        assert_eq!(r.to_string(), "POST https://other.test/a?b=1");
        assert!(r.headers.get("connection").is_none());
        assert!(r.headers.get("transfer-encoding").is_none());
        assert!(r.headers.get("host").is_none());
        assert_eq!(r.headers.get_all("x-one").iter().count(), 2);
        assert_eq!(&r.body[..], b"abc");
        let head = r.head();
        assert_eq!(
            head.uri().authority().map(|a| a.as_str()),
            Some("other.test")
        );
    }

    #[test]
    fn the_default_authority_serves_a_request_without_host() {
        let r = pool(false)
            .request(b"GET / HTTP/1.1\r\n\r\n")
            .expect("converts");
        assert_eq!(r.to_string(), "GET http://example.test:8080/");
        assert!(r.body.is_empty());
    }

    #[test]
    fn a_request_with_only_host_keeps_an_unallocated_header_map() {
        let r = pool(true)
            .request(b"GET /api/fast HTTP/1.1\r\nhost: example.test\r\n\r\n")
            .expect("converts");
        assert!(r.headers.is_empty());
        // Cloned per request: an empty map with no capacity clones without
        // allocating.
        assert_eq!(r.head().headers().capacity(), 0);
    }

    #[test]
    fn bytes_that_are_not_a_request_fail_as_template() {
        assert!(matches!(
            pool(false).request(b"GET / HTTP/1.1\r\nX: y"),
            Err(ErrorKind::Template)
        ));
        assert!(pool(false).prebuild(b"\x01 / HTTP/1.1\r\n\r\n").is_none());
    }
}
