//! The demo target's streaming side: a WebSocket chat (an echo that answers after a delay, broadcast rooms), a server-sent event stream, and the server's own message counts that tests compare reports with.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

/// Where the chat's counters are read: like the HTTP stats route, polling it
/// is not counted as served traffic by the WebSocket counters.
pub const CHAT_STATS_PATH: &str = "/__squall/ws";

/// The echo's default delay: long enough that a round trip is not all loopback.
const DEFAULT_DELAY_MS: u64 = 10;
/// The longest echo delay a client may ask for.
const MAX_DELAY_MS: u64 = 10_000;
/// The most rooms at once, and the messages a slow member may lag behind
/// before it misses some: the demo target is exposed to any client.
const MAX_ROOMS: usize = 1000;
const ROOM_BACKLOG: usize = 1024;
/// The largest message the demo accepts.
const MAX_MESSAGE: usize = 64 << 10;
/// Buffers per socket. axum's defaults (tungstenite's 128 KiB read buffer,
/// allocated up front, and a 128 KiB write buffer) made the demo target use
/// 682 MB for 5,000 sockets; 4 KiB reads fit a chat message in one read
/// (bigger ones grow the buffer while they arrive) and a write goes out at
/// once. The write buffer grows past a message only while the client does
/// not read, up to a few of the largest messages.
const READ_BUFFER: usize = 4 << 10;
const MAX_WRITE_BUFFER: usize = 4 * MAX_MESSAGE;

/// The upgrade with this demo's message limit and small buffers.
fn upgrade(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.max_message_size(MAX_MESSAGE)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
}

/// Counters and rooms shared by every socket.
#[derive(Default)]
pub struct Chat {
    /// Data messages received from clients.
    received: AtomicU64,
    /// Data messages sent to clients (echoes and room deliveries).
    sent: AtomicU64,
    /// Sockets accepted, and those open now.
    opened: AtomicU64,
    open: AtomicU64,
    rooms: Mutex<HashMap<String, broadcast::Sender<Message>>>,
    /// Server-sent events written to clients.
    events: AtomicU64,
}

/// The chat's routes, with their shared state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let chat = Arc::new(Chat::default());
    Router::new()
        .route("/ws/chat", get(echo))
        .route("/ws/room/{room}", get(room))
        .route("/sse/ticks", get(ticks))
        .route(CHAT_STATS_PATH, get(stats))
        .layer(Extension(chat))
}

#[derive(Deserialize)]
struct EchoQuery {
    delay_ms: Option<u64>,
}

/// Counts a socket as open for as long as it lives.
struct OpenGuard(Arc<Chat>);

impl OpenGuard {
    fn new(chat: &Arc<Chat>) -> Self {
        chat.opened.fetch_add(1, Ordering::Relaxed);
        chat.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(chat.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn is_data(m: &Message) -> bool {
    matches!(m, Message::Text(_) | Message::Binary(_))
}

/// `GET /ws/chat?delay_ms=N`: every text or binary message comes back as it
/// was, N ms later (10 by default, at most 10 s), one at a time.
async fn echo(
    ws: WebSocketUpgrade,
    Query(q): Query<EchoQuery>,
    Extension(chat): Extension<Arc<Chat>>,
) -> Response {
    let delay = Duration::from_millis(q.delay_ms.unwrap_or(DEFAULT_DELAY_MS).min(MAX_DELAY_MS));
    upgrade(ws).on_upgrade(move |socket| echo_loop(socket, chat, delay))
}

async fn echo_loop(mut socket: WebSocket, chat: Arc<Chat>, delay: Duration) {
    let _open = OpenGuard::new(&chat);
    while let Some(Ok(msg)) = socket.recv().await {
        if matches!(msg, Message::Close(_)) {
            break;
        }
        if !is_data(&msg) {
            continue;
        }
        chat.received.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(delay).await;
        if socket.send(msg).await.is_err() {
            break;
        }
        chat.sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// `GET /ws/room/{room}`: every message a member sends goes to every member
/// of the room, the sender included.
async fn room(
    ws: WebSocketUpgrade,
    Path(name): Path<String>,
    Extension(chat): Extension<Arc<Chat>>,
) -> Response {
    let tx = {
        let mut rooms = chat.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.retain(|_, tx| tx.receiver_count() > 0);
        match rooms.get(&name) {
            Some(tx) => tx.clone(),
            None if rooms.len() >= MAX_ROOMS => {
                return (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "too many rooms",
                )
                    .into_response();
            }
            None => {
                let (tx, _) = broadcast::channel(ROOM_BACKLOG);
                rooms.insert(name, tx.clone());
                tx
            }
        }
    };
    upgrade(ws).on_upgrade(move |socket| room_loop(socket, chat, tx))
}

async fn room_loop(socket: WebSocket, chat: Arc<Chat>, tx: broadcast::Sender<Message>) {
    let _open = OpenGuard::new(&chat);
    let mut rx = tx.subscribe();
    let (mut sink, mut stream) = socket.split();
    let counts = chat.clone();
    let mut deliver = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(msg) => {
                    if sink.send(msg).await.is_err() {
                        break;
                    }
                    counts.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    loop {
        tokio::select! {
            next = stream.next() => match next {
                Some(Ok(msg)) if is_data(&msg) => {
                    chat.received.fetch_add(1, Ordering::Relaxed);
                    let _ = tx.send(msg);
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            _ = &mut deliver => break,
        }
    }
    deliver.abort();
}

#[derive(Deserialize)]
struct TicksQuery {
    n: Option<u64>,
    every_ms: Option<u64>,
}

/// `GET /sse/ticks?n=N&every_ms=M`: N events (10 by default, at most
/// 100,000), one every M ms (100 by default, at most 10 s), each
/// `data: {"seq": i}`, with a comment before the first; then the stream ends.
async fn ticks(Query(q): Query<TicksQuery>, Extension(chat): Extension<Arc<Chat>>) -> Response {
    use axum::response::sse::{Event, Sse};
    let n = q.n.unwrap_or(10).min(100_000);
    let every = Duration::from_millis(q.every_ms.unwrap_or(100).min(MAX_DELAY_MS));
    let events = futures::stream::unfold(0u64, move |i| {
        let chat = chat.clone();
        async move {
            if i > n {
                return None;
            }
            if i == 0 {
                return Some((
                    Ok::<_, std::convert::Infallible>(Event::default().comment("ticks")),
                    1,
                ));
            }
            tokio::time::sleep(every).await;
            // Counted as it is handed to the response: a client that left
            // ends the stream before the next one is made.
            chat.events.fetch_add(1, Ordering::Relaxed);
            Some((
                Ok(Event::default().data(json!({ "seq": i }).to_string())),
                i + 1,
            ))
        }
    });
    Sse::new(events).into_response()
}

/// The counters, for tests to compare a report with.
async fn stats(Extension(chat): Extension<Arc<Chat>>) -> Response {
    axum::Json(json!({
        "received": chat.received.load(Ordering::Relaxed),
        "sent": chat.sent.load(Ordering::Relaxed),
        "opened": chat.opened.load(Ordering::Relaxed),
        "open": chat.open.load(Ordering::Relaxed),
        "events": chat.events.load(Ordering::Relaxed),
    }))
    .into_response()
}
