//! A user's WebSocket: the handshake, the reader task that answers pings and counts every message, and the send, receive and close steps of a flow.
//!
//! Each open socket has one reader task on the user's engine thread. It owns
//! the reading half, so the server's pings are answered (tungstenite queues
//! the pong and flushes it on the next read) even while the user thinks, and
//! it records every incoming data message on the connection's `WSIN` row the
//! moment it arrives, so no message goes uncounted whether or not a step
//! waits for it. Steps then take messages from the socket's bounded inbox.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use http::header::{HeaderName, HeaderValue};
use rand::rngs::SmallRng;
use squall_common::EndpointKey;
use squall_common::capture::JsonPath;
use squall_common::check::{Checks, Observed};
use squall_common::scenario::CaptureFrom;
use squall_common::scenario::CaptureSpec;
use squall_common::scenario::ws::{
    MAX_MESSAGE_BYTES, WS_IN_METHOD, WS_MESSAGE_METHOD, WS_METHOD, WS_SEND_METHOD, WsMessage,
    WsStep,
};
use squall_common::template::{Template, Vars};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Bytes, Message};

use super::prepared::PreparedRun;
use super::recorder::SharedRecorder;
use super::streams::{OpenStream, OpenStreams};
use super::user::ThreadCtx;
use crate::error::WorkerError;
use crate::http::{ErrorKind, Outcome};

/// The byte stream under a socket: plain TCP or TLS. One dynamic call per
/// read or write, against a syscall's cost, keeps one socket type for both.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;
type Sink = Rc<tokio::sync::Mutex<SplitSink<Ws, Message>>>;

/// Messages a socket keeps for its `ws_receive` steps; older ones are dropped
/// first (they were counted on arrival). Bounds a user whose server pushes
/// faster than its flow reads to this many messages of at most 1 MiB.
const MAX_INBOX: usize = 64;

/// Buffers per socket: tungstenite's defaults (128 KiB each way, allocated
/// eagerly) would cost 6.4 GB for 50,000 sockets; 4 KiB reads fit chat-sized
/// messages in one read, and larger ones grow the buffer as they come.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

/// A WebSocket step compiled once per run.
#[derive(Debug)]
pub enum PreparedWs {
    Connect {
        endpoint: usize,
        in_endpoint: usize,
        path: Template,
        headers: Vec<(HeaderName, Template, bool)>,
        subprotocol: Option<String>,
        ping: Option<Duration>,
        timeout: Option<Duration>,
    },
    Send {
        endpoint: usize,
        message: Outgoing,
        timeout: Option<Duration>,
    },
    Receive {
        endpoint: usize,
        checks: Checks,
        needs_json: bool,
        captures: Vec<(String, Capture)>,
        timeout: Option<Duration>,
    },
    Close,
}

/// A message to send: rendered per send, or fixed bytes.
#[derive(Debug)]
pub enum Outgoing {
    Text(Template),
    Binary(Bytes),
}

/// Where a `ws_receive` capture takes its value from.
#[derive(Debug)]
pub enum Capture {
    Json(JsonPath),
    Regex(regex::Regex),
}

fn position(endpoints: &[EndpointKey], name: &str, method: &str) -> Result<usize, WorkerError> {
    endpoints
        .iter()
        .position(|e| e.name == name && e.method == method)
        .ok_or_else(|| WorkerError::Scenario(format!("`{method} {name}` is not an endpoint")))
}

/// Compiles one step; a `Start` that does not hold together is refused.
pub fn prepare(step: &WsStep, endpoints: &[EndpointKey]) -> Result<PreparedWs, WorkerError> {
    let bad = |what: String| WorkerError::Scenario(format!("ws step: {what}"));
    let compile = |t: &str| Template::compile(t).map_err(|e| bad(e.to_string()));
    Ok(match step {
        WsStep::Connect {
            name,
            path,
            headers,
            optional_headers,
            subprotocol,
            ping,
            timeout,
        } => PreparedWs::Connect {
            endpoint: position(endpoints, name, WS_METHOD)?,
            in_endpoint: position(endpoints, name, WS_IN_METHOD)?,
            path: compile(path)?,
            headers: headers
                .iter()
                .map(|(n, v)| {
                    let name = HeaderName::try_from(n.as_str()).map_err(|e| bad(e.to_string()))?;
                    Ok((name, compile(v)?, optional_headers.contains(n)))
                })
                .collect::<Result<_, WorkerError>>()?,
            subprotocol: subprotocol.clone(),
            ping: ping.map(|p| p.max(Duration::from_millis(100))),
            timeout: *timeout,
        },
        WsStep::Send {
            name,
            message,
            timeout,
        } => PreparedWs::Send {
            endpoint: position(endpoints, name, WS_SEND_METHOD)?,
            message: match message {
                WsMessage::Text(t) => Outgoing::Text(compile(t)?),
                WsMessage::Json(j) => {
                    Outgoing::Text(Template::compile_json(j).map_err(|e| bad(e.to_string()))?)
                }
                WsMessage::Binary(b) => {
                    use base64::Engine as _;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .map_err(|e| bad(e.to_string()))?;
                    if bytes.len() > MAX_MESSAGE_BYTES {
                        return Err(bad("a binary message above 1MiB".into()));
                    }
                    Outgoing::Binary(Bytes::from(bytes))
                }
            },
            timeout: *timeout,
        },
        WsStep::Receive {
            name,
            until,
            timeout,
            capture,
        } => {
            let checks = Checks::compile(until).map_err(|e| bad(e.to_string()))?;
            let captures = capture
                .iter()
                .map(|(var, c)| {
                    let c = match c {
                        CaptureSpec::Path(p) | CaptureSpec::From(CaptureFrom::Json(p)) => {
                            Capture::Json(JsonPath::parse(p).map_err(|e| bad(e.to_string()))?)
                        }
                        CaptureSpec::From(CaptureFrom::Regex(p)) => Capture::Regex(
                            squall_common::check::regex(p).map_err(|e| bad(e.to_string()))?,
                        ),
                        CaptureSpec::From(_) => {
                            return Err(bad(format!("capture `{var}`: a message has no headers")));
                        }
                    };
                    Ok((var.clone(), c))
                })
                .collect::<Result<Vec<_>, WorkerError>>()?;
            let needs_json =
                checks.needs_json() || captures.iter().any(|(_, c)| matches!(c, Capture::Json(_)));
            PreparedWs::Receive {
                endpoint: position(endpoints, name, WS_MESSAGE_METHOD)?,
                checks,
                needs_json,
                captures,
                timeout: *timeout,
            }
        }
        WsStep::Close => PreparedWs::Close,
    })
}

/// What the reader task shares with the user's steps.
#[derive(Default)]
struct Inbox {
    messages: RefCell<VecDeque<Message>>,
    wake: Notify,
    /// Why the socket ended, once it has.
    ended: Cell<Option<ErrorKind>>,
    /// Counts the socket as open until it ends or the user drops it,
    /// whichever comes first. Released by `Socket::drop` itself, not by the
    /// aborted reader task: an abort only takes effect at the task's next
    /// poll, and a run's last snapshot, taken as its users end, counted
    /// 46,812 of 50,000 sockets still open that way.
    open: Cell<Option<OpenStream>>,
}

/// A user's open WebSocket. Dropping it stops its reader task and closes the
/// TCP connection (the run or the user ended; no close frame is awaited).
pub struct Socket {
    sink: Sink,
    inbox: Rc<Inbox>,
    reader: tokio::task::JoinHandle<()>,
    /// When the user last sent on it: a round trip is timed from here.
    last_send: Option<Instant>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.inbox.open.take();
        self.reader.abort();
    }
}

impl Socket {
    fn is_open(&self) -> bool {
        self.inbox.ended.get().is_none()
    }
}

/// The user state a WebSocket step reads and writes.
pub struct UserParts<'a> {
    pub user_id: u64,
    pub captured: &'a mut HashMap<String, String>,
    pub rng: &'a mut SmallRng,
    pub sequence: &'a Cell<u64>,
    pub scratch: &'a mut String,
    pub socket: &'a mut Option<Socket>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Records a send or receive cut off by a hard stop as `interrupted`, so no
/// step that started goes uncounted.
struct Pending<'a> {
    recorder: &'a SharedRecorder,
    endpoint: usize,
    start: Instant,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            record(
                self.recorder,
                self.endpoint,
                outcome(Some(ErrorKind::Interrupted), None, self.start, 0),
            );
        }
    }
}

fn record(recorder: &SharedRecorder, endpoint: usize, o: Outcome) {
    recorder.borrow_mut().record(endpoint, &o);
}

fn outcome(error: Option<ErrorKind>, status: Option<u16>, since: Instant, bytes: u64) -> Outcome {
    let us = micros(since.elapsed());
    Outcome {
        status,
        error,
        latency_us: us,
        service_us: us,
        ttfb_us: None,
        bytes,
    }
}

/// Runs one WebSocket step and records it; returns its error kind, if it failed.
pub async fn run_step(
    ctx: &ThreadCtx,
    user: UserParts<'_>,
    step: &PreparedWs,
) -> Option<ErrorKind> {
    let timeout_of = |t: &Option<Duration>| t.unwrap_or(ctx.run.spec.timeout);
    match step {
        PreparedWs::Connect {
            endpoint,
            in_endpoint,
            path,
            headers,
            subprotocol,
            ping,
            timeout,
        } => {
            if user.socket.as_ref().is_some_and(Socket::is_open) {
                // Kept across iterations: already connected, nothing to do.
                return None;
            }
            *user.socket = None;
            let start = Instant::now();
            let vars = Vars {
                user_id: user.user_id,
                worker_index: ctx.worker_index,
                captured: user.captured,
                sequence: Some(user.sequence),
            };
            let request = build_request(
                &ctx.run,
                path,
                headers,
                subprotocol.as_deref(),
                &vars,
                user.rng,
                user.scratch,
            );
            let Some(request) = request else {
                record(
                    &ctx.recorder,
                    *endpoint,
                    outcome(Some(ErrorKind::Template), None, start, 0),
                );
                return Some(ErrorKind::Template);
            };
            let opened = tokio::time::timeout(
                timeout_of(timeout),
                open(ctx, request, subprotocol.is_some()),
            )
            .await
            .unwrap_or(Err((ErrorKind::Timeout, None)));
            match opened {
                Ok(ws) => {
                    record(&ctx.recorder, *endpoint, outcome(None, Some(101), start, 0));
                    *user.socket = Some(spawn_reader(
                        ws,
                        ctx.recorder.clone(),
                        *in_endpoint,
                        *ping,
                        ctx.run.open_streams.as_ref(),
                    ));
                    None
                }
                Err((kind, status)) => {
                    record(
                        &ctx.recorder,
                        *endpoint,
                        outcome(Some(kind), status, start, 0),
                    );
                    Some(kind)
                }
            }
        }
        PreparedWs::Send {
            endpoint,
            message,
            timeout,
        } => {
            let start = Instant::now();
            let fail = |kind| {
                record(
                    &ctx.recorder,
                    *endpoint,
                    outcome(Some(kind), None, start, 0),
                );
                Some(kind)
            };
            let Some(socket) = user.socket.as_mut() else {
                return fail(ErrorKind::NoSocket);
            };
            if let Some(kind) = socket.inbox.ended.get() {
                return fail(kind);
            }
            let msg = match message {
                Outgoing::Binary(b) => Message::Binary(b.clone()),
                Outgoing::Text(t) => {
                    let vars = Vars {
                        user_id: user.user_id,
                        worker_index: ctx.worker_index,
                        captured: user.captured,
                        sequence: Some(user.sequence),
                    };
                    let mut out = String::new();
                    if t.render(&vars, user.rng, &mut out).is_err() || out.len() > MAX_MESSAGE_BYTES
                    {
                        return fail(ErrorKind::Template);
                    }
                    Message::text(out)
                }
            };
            let pending = Pending {
                recorder: &ctx.recorder,
                endpoint: *endpoint,
                start,
            };
            let sent = tokio::time::timeout(timeout_of(timeout), async {
                socket.sink.lock().await.send(msg).await
            })
            .await;
            std::mem::forget(pending);
            match sent {
                Ok(Ok(())) => {
                    socket.last_send = Some(start);
                    record(&ctx.recorder, *endpoint, outcome(None, None, start, 0));
                    None
                }
                Ok(Err(e)) => fail(classify(&e)),
                Err(_) => fail(ErrorKind::Timeout),
            }
        }
        PreparedWs::Receive {
            endpoint,
            checks,
            needs_json,
            captures,
            timeout,
        } => {
            let start = Instant::now();
            let Some(socket) = user.socket.as_mut() else {
                record(
                    &ctx.recorder,
                    *endpoint,
                    outcome(Some(ErrorKind::NoSocket), None, start, 0),
                );
                return Some(ErrorKind::NoSocket);
            };
            // A round trip runs from the user's last send, when that came first.
            let since = socket.last_send.filter(|s| *s <= start).unwrap_or(start);
            let deadline = start + timeout_of(timeout);
            let pending = Pending {
                recorder: &ctx.recorder,
                endpoint: *endpoint,
                start: since,
            };
            let error = loop {
                let next = socket.inbox.messages.borrow_mut().pop_front();
                if let Some(msg) = next {
                    let body: &[u8] = match &msg {
                        Message::Text(t) => t.as_bytes(),
                        Message::Binary(b) => b,
                        _ => continue,
                    };
                    let json = needs_json
                        .then(|| serde_json::from_slice::<serde_json::Value>(body).ok())
                        .flatten();
                    let latency_us = micros(since.elapsed());
                    let observed = Observed {
                        headers: &[],
                        body,
                        json: json.as_ref(),
                        latency_us,
                    };
                    if !checks.passes(&observed) {
                        continue;
                    }
                    let error = (!capture(captures, body, json.as_ref(), user.captured))
                        .then_some(ErrorKind::Check);
                    record(
                        &ctx.recorder,
                        *endpoint,
                        Outcome {
                            status: None,
                            error,
                            latency_us,
                            service_us: micros(start.elapsed()),
                            ttfb_us: None,
                            bytes: body.len() as u64,
                        },
                    );
                    break error;
                }
                if let Some(kind) = socket.inbox.ended.get() {
                    record(
                        &ctx.recorder,
                        *endpoint,
                        outcome(Some(kind), None, since, 0),
                    );
                    break Some(kind);
                }
                let woken = tokio::time::timeout_at(deadline.into(), socket.inbox.wake.notified());
                if woken.await.is_err() {
                    record(
                        &ctx.recorder,
                        *endpoint,
                        outcome(Some(ErrorKind::Timeout), None, since, 0),
                    );
                    break Some(ErrorKind::Timeout);
                }
            };
            std::mem::forget(pending);
            error
        }
        PreparedWs::Close => {
            if let Some(socket) = user.socket.take()
                && socket.is_open()
            {
                // A close frame, then the connection goes: the user does not
                // wait for the server's reply, which the reader would count.
                let bye = async { socket.sink.lock().await.send(Message::Close(None)).await };
                let _ = tokio::time::timeout(ctx.run.spec.timeout, bye).await;
            }
            None
        }
    }
}

/// The handshake request: URI, inherited and own headers, subprotocol.
/// None when a header or the path cannot be rendered.
fn build_request(
    run: &PreparedRun,
    path: &Template,
    headers: &[(HeaderName, Template, bool)],
    subprotocol: Option<&str>,
    vars: &Vars<'_>,
    rng: &mut SmallRng,
    scratch: &mut String,
) -> Option<http::Request<()>> {
    let (host, base) = run.host_and_base();
    let scheme = if run.targets[0].tls.is_some() {
        "wss"
    } else {
        "ws"
    };
    scratch.clear();
    path.render(vars, rng, scratch).ok()?;
    if !scratch.starts_with('/') {
        return None;
    }
    let uri = format!("{scheme}://{host}{base}{scratch}");
    let mut request = uri.into_client_request().ok()?;
    for (name, value, optional) in headers {
        scratch.clear();
        match value.render(vars, rng, scratch) {
            Ok(()) => {}
            Err(_) if *optional => continue,
            Err(_) => return None,
        }
        let value = HeaderValue::from_str(scratch).ok()?;
        request.headers_mut().insert(name.clone(), value);
    }
    if let Some(p) = subprotocol {
        let value = HeaderValue::from_str(p).ok()?;
        request
            .headers_mut()
            .insert(http::header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    Some(request)
}

/// A new connection to the target: TCP, then TLS when the host is `https://`.
pub(super) async fn connect_io(ctx: &ThreadCtx) -> Result<Box<dyn Io>, ErrorKind> {
    let tcp = TcpStream::connect(ctx.addr)
        .await
        .map_err(|_| ErrorKind::Connect)?;
    let _ = tcp.set_nodelay(true);
    Ok(match &ctx.run.targets[0].tls {
        None => Box::new(tcp),
        Some(tls) => Box::new(tls.handshake(tcp).await.map_err(|_| ErrorKind::Tls)?),
    })
}

/// TCP, TLS when the host is `https://`, then the upgrade. An error carries
/// its kind and, for a refused upgrade, the status the server answered.
async fn open(
    ctx: &ThreadCtx,
    request: http::Request<()>,
    wants_protocol: bool,
) -> Result<Ws, (ErrorKind, Option<u16>)> {
    let io = connect_io(ctx).await.map_err(|kind| (kind, None))?;
    let (ws, response) = tokio_tungstenite::client_async_with_config(request, io, Some(config()))
        .await
        .map_err(|e| match e {
            tungstenite::Error::Http(r) => (ErrorKind::Handshake, Some(r.status().as_u16())),
            tungstenite::Error::Io(_) => (ErrorKind::Reset, None),
            _ => (ErrorKind::Handshake, None),
        })?;
    if wants_protocol
        && !response
            .headers()
            .contains_key(http::header::SEC_WEBSOCKET_PROTOCOL)
    {
        return Err((ErrorKind::Handshake, Some(101)));
    }
    Ok(ws)
}

/// Starts the socket's reader task on this engine thread.
fn spawn_reader(
    ws: Ws,
    recorder: SharedRecorder,
    in_endpoint: usize,
    ping: Option<Duration>,
    open_streams: Option<&Arc<OpenStreams>>,
) -> Socket {
    let (sink, stream) = ws.split();
    let sink: Sink = Rc::new(tokio::sync::Mutex::new(sink));
    let inbox = Rc::new(Inbox {
        open: Cell::new(open_streams.map(OpenStreams::hold)),
        ..Inbox::default()
    });
    let reader = tokio::task::spawn_local(read_loop(
        stream,
        inbox.clone(),
        sink.clone(),
        recorder,
        in_endpoint,
        ping,
    ));
    Socket {
        sink,
        inbox,
        reader,
        last_send: None,
    }
}

/// Reads until the socket ends: every data message is recorded on `WSIN`
/// (its gap since the previous one) and queued for the steps; pings are
/// answered by tungstenite; own pings go out every `ping`.
async fn read_loop(
    mut stream: SplitStream<Ws>,
    inbox: Rc<Inbox>,
    sink: Sink,
    recorder: SharedRecorder,
    in_endpoint: usize,
    ping: Option<Duration>,
) {
    let mut last = Instant::now();
    let mut ticker = ping.map(|p| tokio::time::interval_at((Instant::now() + p).into(), p));
    let end = |kind: ErrorKind| {
        inbox.open.take();
        inbox.ended.set(Some(kind));
        inbox.wake.notify_one();
    };
    loop {
        let next = match ticker.as_mut() {
            None => stream.next().await,
            Some(t) => tokio::select! {
                m = stream.next() => m,
                _ = t.tick() => {
                    if sink.lock().await.send(Message::Ping(Bytes::new())).await.is_err() {
                        // The read side reports why the socket ended.
                        ticker = None;
                    }
                    continue;
                }
            },
        };
        match next {
            Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                let now = Instant::now();
                let us = micros(now - last);
                last = now;
                record(
                    &recorder,
                    in_endpoint,
                    Outcome {
                        status: None,
                        error: None,
                        latency_us: us,
                        service_us: us,
                        ttfb_us: None,
                        bytes: msg.len() as u64,
                    },
                );
                let mut q = inbox.messages.borrow_mut();
                if q.len() >= MAX_INBOX {
                    q.pop_front();
                }
                q.push_back(msg);
                drop(q);
                inbox.wake.notify_one();
            }
            Some(Ok(Message::Close(_))) | None => return end(ErrorKind::Closed),
            Some(Ok(_)) => {}
            Some(Err(e)) => return end(classify(&e)),
        }
    }
}

/// The kind an error of an open socket is reported under.
fn classify(e: &tungstenite::Error) -> ErrorKind {
    use tungstenite::error::ProtocolError;
    match e {
        tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed
        | tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            ErrorKind::Closed
        }
        tungstenite::Error::Io(_) => ErrorKind::Reset,
        _ => ErrorKind::Protocol,
    }
}

/// Stores a received message's captures; false when one finds nothing.
fn capture(
    captures: &[(String, Capture)],
    body: &[u8],
    json: Option<&serde_json::Value>,
    into: &mut HashMap<String, String>,
) -> bool {
    let mut all = true;
    for (var, c) in captures {
        let value = match c {
            Capture::Json(path) => json.and_then(|j| path.extract(j)),
            Capture::Regex(re) => {
                let text = String::from_utf8_lossy(body);
                re.captures(&text)
                    .and_then(|m| m.get(1).or_else(|| m.get(0)).map(|g| g.as_str().to_owned()))
            }
        };
        match value {
            Some(v) => {
                into.insert(var.clone(), v);
            }
            None => all = false,
        }
    }
    all
}
