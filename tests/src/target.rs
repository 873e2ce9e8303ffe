//! A purpose-built HTTP target that counts every request it receives, per path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

#[derive(Default)]
struct Counts {
    total: AtomicU64,
    per_path: Mutex<BTreeMap<String, u64>>,
}

/// Routes: `/ok` 200, `/created` 201, `/fail` 500, `/slow` 200 after 1 s,
/// `/jitter` 200 after 0–15 ms (varies per request), `/stall` (see `stall`), `/login` 200 with a token,
/// `/start/{anything}` 200, `/huge/{bytes}` (see `huge`). Every request is
/// counted on arrival.
pub struct CountingTarget {
    addr: SocketAddr,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

async fn count(State(c): State<Arc<Counts>>, req: Request, next: Next) -> Response {
    c.total.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut m) = c.per_path.lock() {
        *m.entry(req.uri().path().to_owned()).or_default() += 1;
    }
    next.run(req).await
}

async fn jitter() -> impl IntoResponse {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    // A spread of latencies so percentiles differ: 0..15 ms in 16 steps, scrambled.
    let ms = n.wrapping_mul(7919) % 16;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    "ok"
}

/// Answers at once, except during the first second of every five since the
/// target started: then every request waits until that second is over, like
/// a server stalled by a GC pause.
async fn stall(started: tokio::time::Instant) -> &'static str {
    let phase = started.elapsed().as_millis() % 5000;
    if phase < 1000 {
        tokio::time::sleep(std::time::Duration::from_millis((1000 - phase) as u64)).await;
    }
    "ok"
}

/// How long `/serial` holds its one place per request.
const SERIAL_SERVICE: Duration = Duration::from_micros(100);

/// Serves one request at a time, each holding the place for
/// `SERIAL_SERVICE` of the CPU: a target whose capacity (at most 10,000/s)
/// more concurrency cannot raise, only queue at, like a server bound by one
/// lock or one core.
async fn serial(place: Arc<tokio::sync::Mutex<()>>) -> &'static str {
    let _held = place.lock().await;
    let began = std::time::Instant::now();
    while began.elapsed() < SERIAL_SERVICE {
        std::hint::spin_loop();
    }
    "ok"
}

/// What `/huge` streams: the same block over and over, never allocated per request.
static FILL: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// A 200 whose chunked body of `bytes` bytes is generated as it is sent (the
/// start of a JSON document that never ends in time): a target that answers
/// with more than anyone should keep, at the cost of no memory here. A client
/// that hangs up stops the generation.
async fn huge(Path(bytes): Path<u64>) -> Response {
    const HEAD: &[u8] = br#"{"token":""#;
    let blocks = futures::stream::unfold(bytes, move |left| async move {
        if left == 0 {
            return None;
        }
        let block = if left == bytes && left >= HEAD.len() as u64 {
            Bytes::from_static(HEAD)
        } else {
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(FILL.len());
            Bytes::from_static(&FILL[..n])
        };
        let next = left - block.len() as u64;
        Some((Ok::<_, std::convert::Infallible>(block), next))
    });
    (
        [("content-type", "application/json")],
        Body::from_stream(blocks),
    )
        .into_response()
}

impl CountingTarget {
    pub async fn start() -> CountingTarget {
        Self::start_on("127.0.0.1:0").await
    }

    /// Listens on `addr` in this process's namespace.
    pub async fn start_on(addr: &str) -> CountingTarget {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind target");
        Self::serve(listener)
    }

    /// Listens on `addr` inside network namespace `ns` (e.g. a test host's
    /// veth address), while being served and counted in this process.
    pub async fn start_in(ns: &str, addr: &str) -> CountingTarget {
        let listener = tokio::net::TcpListener::from_std(crate::netns::listen_in(ns, addr))
            .expect("listener into tokio");
        Self::serve(listener)
    }

    fn serve(listener: tokio::net::TcpListener) -> CountingTarget {
        let counts = Arc::new(Counts::default());
        let started = tokio::time::Instant::now();
        let place = Arc::new(tokio::sync::Mutex::new(()));
        let app = Router::new()
            .route("/ok", any(|| async { "ok" }))
            .route("/created", post(|| async { (StatusCode::CREATED, "{}") }))
            .route(
                "/fail",
                any(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    "slow"
                }),
            )
            .route("/jitter", get(jitter))
            .route("/stall", get(move || stall(started)))
            .route("/serial", get(move || serial(place.clone())))
            .route(
                "/login",
                post(|| async {
                    (
                        [("content-type", "application/json")],
                        r#"{"access_token":"t0k"}"#,
                    )
                }),
            )
            .route("/start/{class}", any(|| async { "started" }))
            // One path per value, so `path()` tells which values arrived (feeder rows).
            .route("/row/{value}", any(|| async { "ok" }))
            .route("/huge/{bytes}", get(huge))
            .layer(middleware::from_fn_with_state(counts.clone(), count));
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CountingTarget { addr, counts, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn total(&self) -> u64 {
        self.counts.total.load(Ordering::SeqCst)
    }

    pub fn path(&self, path: &str) -> u64 {
        self.counts
            .per_path
            .lock()
            .map(|m| m.get(path).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for CountingTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}
