//! The embedded demo target: a small in-process HTTP API shaped like an AI-agent
//! platform, so that `coordinator demo`, the tests and the benchmarks have
//! something realistic to load without any external service.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::alarm::AlarmClock;
use super::runs::{POLLS_TO_DONE, RunStore};
use super::store::{TokenStore, Workflow, WorkflowStore, lock};

/// The stats route; it is the only request the `served` counter ignores, so
/// that polling it never perturbs the number a test or benchmark checks.
const STATS_PATH: &str = "/__squall/stats";
/// The tenants' counts, for tests; like the stats route, not counted as served.
const TENANTS_PATH: &str = "/__squall/tenants";

/// `/api` routes reachable without a token: login must be (it issues them),
/// health is for probes, and `fast` measures raw throughput without auth cost.
const PUBLIC_API_PATHS: [&str; 7] = [
    "/api/health",
    "/api/auth/login",
    "/api/fast",
    "/api/session/login",
    "/api/session/me",
    "/api/redirect",
    "/api/echo",
];
/// Also public: `/api/delay/{ms}`, a fixed service time for benchmarks.
const PUBLIC_API_PREFIX: &str = "/api/delay/";

/// Bounds of the simulated model latency of `POST /api/chat`, in ms: slow
/// enough to make latency percentiles interesting, fast enough for tests.
const CHAT_LATENCY_MS: std::ops::RangeInclusive<u64> = 20..=80;

/// How long [`DemoTarget::shutdown`] waits for in-flight requests before it
/// aborts the server, so a client that never finishes cannot hang shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A running demo target. Dropping it without [`DemoTarget::shutdown`] also
/// starts a graceful shutdown in the background, so a forgotten or panicking
/// test never leaves a server behind.
pub struct DemoTarget {
    addr: SocketAddr,
    state: Arc<AppState>,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for DemoTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoTarget")
            .field("addr", &self.addr)
            .field("served", &self.served())
            .finish()
    }
}

impl DemoTarget {
    /// Binds and serves in a background tokio task.
    ///
    /// Binding happens before this returns, so the address is ready for
    /// clients at once and a port conflict surfaces here as an error.
    pub async fn start(bind: SocketAddr) -> std::io::Result<DemoTarget> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        // Small request/response exchanges must not wait on Nagle's algorithm,
        // or the target would add tens of ms to the latencies it is used to
        // measure.
        let listener = listener.tap_io(|stream| {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::trace!("demo target: cannot set TCP_NODELAY: {err}");
            }
        });
        let state = Arc::new(AppState::new()?);
        let app = router(Arc::clone(&state));
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let signal = async {
                // A send or a dropped sender both mean "stop".
                let _ = shutdown_rx.await;
            };
            if let Err(err) = axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
            {
                tracing::warn!("demo target stopped with an error: {err}");
            }
        });
        tracing::debug!("demo target listening on http://{addr}");
        Ok(DemoTarget {
            addr,
            state,
            shutdown_tx: Some(shutdown_tx),
            task: Some(task),
        })
    }

    /// The real bound address (port 0 resolved), for clients to dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, ready to put in a scenario's `target`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests served so far, except those to the stats route: the ground
    /// truth that load-generator counts are checked against.
    pub fn served(&self) -> u64 {
        self.state.served.load(Ordering::Relaxed)
    }

    /// Graceful stop: stops accepting, lets in-flight requests finish (for at
    /// most [`SHUTDOWN_GRACE`], then aborts), and awaits the server task.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            tracing::warn!("demo target: in-flight requests outlived the grace period");
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for DemoTarget {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
    }
}

/// State shared by all handlers.
struct AppState {
    served: AtomicU64,
    tokens: TokenStore,
    workflows: Mutex<WorkflowStore>,
    /// Fixed list bodies, serialised once: they never change, and the list
    /// routes are hit at high rates by benchmarks.
    workflows_body: Bytes,
    agents_body: Bytes,
    /// Precise waits for `/api/delay/{ms}`; `delays` numbers them.
    alarm: AlarmClock,
    delays: AtomicU64,
    /// Workflow runs started by `execute`, done after a few polls.
    runs: RunStore,
    /// Tenants made by scenarios' `setup:` and removed by their `teardown:`.
    tenants: super::tenants::TenantStore,
}

impl AppState {
    fn new() -> std::io::Result<Self> {
        Ok(AppState {
            served: AtomicU64::new(0),
            tokens: TokenStore::new(),
            workflows: Mutex::new(WorkflowStore::default()),
            workflows_body: Bytes::from(json!(seed_workflows()).to_string()),
            agents_body: Bytes::from(
                json!([
                    {"id": "agent-research", "name": "Research Assistant", "model": "sq-large", "status": "online"},
                    {"id": "agent-support", "name": "Support Triage", "model": "sq-small", "status": "online"},
                    {"id": "agent-coder", "name": "Code Reviewer", "model": "sq-large", "status": "busy"},
                    {"id": "agent-ops", "name": "Ops Runbook", "model": "sq-medium", "status": "offline"},
                ])
                .to_string(),
            ),
            alarm: AlarmClock::start()?,
            delays: AtomicU64::new(0),
            runs: RunStore::default(),
            tenants: Default::default(),
        })
    }
}

/// The fixed workflows that `GET /api/workflows` lists, so that a scenario
/// sees stable data whatever other users created.
fn seed_workflows() -> Vec<Workflow> {
    [
        ("wf-onboarding", "Customer onboarding", 4),
        ("wf-summarize", "Summarize support tickets", 3),
        ("wf-release", "Release notes drafting", 5),
    ]
    .into_iter()
    .map(|(id, name, steps)| Workflow {
        id: id.to_owned(),
        name: name.to_owned(),
        steps,
    })
    .collect()
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/fast", get(fast))
        .route("/api/delay/{ms}", get(delay))
        .route("/api/auth/login", post(login))
        .route("/api/workflows", get(list_workflows).post(create_workflow))
        .route("/api/workflows/{id}", get(get_workflow))
        .route("/api/workflows/{id}/execute", post(execute_workflow))
        .route("/api/runs/{id}", get(run_status))
        .route("/api/runs/{id}/result", get(run_result))
        .route("/api/large/{kib}", get(large))
        .route("/api/session/login", post(session_login))
        .route("/api/session/me", get(session_me))
        .route("/api/redirect", get(redirect))
        .route("/api/echo", axum::routing::any(echo))
        .route("/api/agents", get(list_agents))
        .route("/api/chat", post(chat))
        .route(STATS_PATH, get(stats))
        .route("/api/tenants", post(create_tenant))
        .route("/api/tenants/{id}", axum::routing::delete(delete_tenant))
        .route("/api/tenants/{id}/items", get(tenant_items))
        .route(TENANTS_PATH, get(tenant_stats))
        .merge(super::chat::routes())
        .fallback(not_found)
        // One middleware for counting and auth keeps the per-request overhead
        // of the throughput route minimal; `layer` also covers the fallback,
        // so 404s are counted and unknown /api paths answer 401 without a token.
        .layer(middleware::from_fn_with_state(Arc::clone(&state), gate))
        .with_state(state)
}

/// Counts served requests and enforces bearer auth on the private /api routes.
async fn gate(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let counted =
        path != STATS_PATH && path != TENANTS_PATH && path != super::chat::CHAT_STATS_PATH;
    let needs_auth = (path == "/api" || path.starts_with("/api/"))
        && !PUBLIC_API_PATHS.contains(&path)
        && !path.starts_with(PUBLIC_API_PREFIX)
        && !path.starts_with("/api/large/");
    let response = if needs_auth && !authorized(&state, req.headers()) {
        error(StatusCode::UNAUTHORIZED, "unauthorized")
    } else {
        next.run(req).await
    };
    // Counted once the response exists, so a request whose client went away
    // mid-handler (its future dropped) is not reported as served.
    if counted {
        state.served.fetch_add(1, Ordering::Relaxed);
    }
    response
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return false;
    };
    // The auth scheme is case-insensitive (RFC 9110 §11.1).
    scheme.eq_ignore_ascii_case("bearer") && state.tokens.is_valid(token.trim())
}

/// A JSON error body, the one shape every failure of the API has.
fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// A precomputed JSON body.
fn json_bytes(body: &Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response()
}

/// Parses a JSON body regardless of its Content-Type (load scenarios often
/// omit it); callers answer every failure with [`bad_json`], a 400 with a
/// JSON error, unlike axum's `Json` extractor (415/422, plain-text bodies).
fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(body)
}

fn bad_json(err: &serde_json::Error) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        &format!("invalid JSON body: {err}"),
    )
}

fn non_empty(field: Option<String>) -> Option<String> {
    field.filter(|s| !s.trim().is_empty())
}

async fn health() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn fast() -> &'static str {
    "ok"
}

/// Answers `ok` after `ms` milliseconds (at most 10 s): a server with a known
/// service time, for checking a generator's latency and pacing against it.
async fn delay(State(state): State<Arc<AppState>>, Path(ms): Path<u64>) -> &'static str {
    let at = Instant::now() + Duration::from_millis(ms.min(10_000));
    let seq = state.delays.fetch_add(1, Ordering::Relaxed);
    state.alarm.sleep_until(at, seq).await;
    "ok"
}

async fn stats(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(json!({ "served": state.served.load(Ordering::Relaxed) })).into_response()
}

/// `POST /api/tenants`: 201 with the new tenant's id.
async fn create_tenant(State(state): State<Arc<AppState>>) -> Response {
    match state.tenants.create() {
        Some(id) => (StatusCode::CREATED, axum::Json(json!({ "id": id }))).into_response(),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "too many tenants"),
    }
}

/// `DELETE /api/tenants/{id}`: 204, or 404 for an unknown tenant.
async fn delete_tenant(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if state.tenants.delete(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, "tenant not found")
    }
}

/// `GET /api/tenants/{id}/items`: the tenant's items, or 404 for an unknown tenant.
async fn tenant_items(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if state.tenants.hit(&id) {
        axum::Json(json!({ "tenant": id, "items": ["alpha", "beta"] })).into_response()
    } else {
        error(StatusCode::NOT_FOUND, "tenant not found")
    }
}

async fn tenant_stats(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(state.tenants.stats()).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not found")
}

#[derive(Deserialize)]
struct LoginRequest {
    username: Option<String>,
    password: Option<String>,
}

/// Both logins accept any non-empty credentials: the demo models the cost
/// and shape of a login, not a user database.
/// The refusal to send, or `None` when the credentials will do.
fn refuse_credentials(body: &Bytes) -> Option<Response> {
    let req: LoginRequest = match parse_json(body) {
        Ok(req) => req,
        Err(err) => return Some(bad_json(&err)),
    };
    (non_empty(req.username).is_none() || non_empty(req.password).is_none()).then(|| {
        error(
            StatusCode::BAD_REQUEST,
            "username and password are required",
        )
    })
}

/// The bearer-token login.
async fn login(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    if let Some(refused) = refuse_credentials(&body) {
        return refused;
    }
    let token = state.tokens.issue();
    axum::Json(json!({ "access_token": token, "token_type": "bearer" })).into_response()
}

async fn list_workflows(State(state): State<Arc<AppState>>) -> Response {
    json_bytes(&state.workflows_body)
}

async fn list_agents(State(state): State<Arc<AppState>>) -> Response {
    json_bytes(&state.agents_body)
}

#[derive(Deserialize)]
struct CreateWorkflow {
    name: Option<String>,
    steps: Option<u32>,
}

async fn create_workflow(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let req: CreateWorkflow = match parse_json(&body) {
        Ok(req) => req,
        Err(err) => return bad_json(&err),
    };
    let Some(name) = non_empty(req.name) else {
        return error(StatusCode::BAD_REQUEST, "name is required");
    };
    let wf = Workflow {
        id: uuid::Uuid::new_v4().to_string(),
        name,
        steps: req.steps.unwrap_or(1),
    };
    let body = axum::Json(wf.clone());
    lock(&state.workflows).insert(wf);
    (StatusCode::CREATED, body).into_response()
}

/// Fetches a seeded or created workflow, so scenarios can chain
/// create → read with an extracted id.
async fn get_workflow(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if let Some(wf) = seed_workflows().into_iter().find(|wf| wf.id == id) {
        return axum::Json(wf).into_response();
    }
    let found = lock(&state.workflows).by_id.get(&id).cloned();
    match found {
        Some(wf) => axum::Json(wf).into_response(),
        None => error(StatusCode::NOT_FOUND, "workflow not found"),
    }
}

/// Accepts any id: a run starts, which `GET /api/runs/{run_id}` reports as
/// `running` until its third poll and `done` from then on; a load test should
/// not fail because its workflow was evicted from the bounded store.
async fn execute_workflow(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let run_id = state.runs.start(&id);
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({
            "execution_id": run_id,
            "run_id": run_id,
            "workflow_id": id,
            "status": "queued",
        })),
    )
        .into_response()
}

/// A run's status; each call counts as a poll.
async fn run_status(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match state.runs.poll(&id) {
        None => error(StatusCode::NOT_FOUND, "run not found"),
        Some(run) => {
            let done = run.polls >= POLLS_TO_DONE;
            axum::Json(json!({
                "run_id": id,
                "workflow_id": run.workflow_id,
                "status": if done { "done" } else { "running" },
                "polls": run.polls,
            }))
            .into_response()
        }
    }
}

/// A finished run's result; 409 while it is still running.
async fn run_result(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match state.runs.get(&id) {
        None => error(StatusCode::NOT_FOUND, "run not found"),
        Some(run) if run.polls < POLLS_TO_DONE => error(StatusCode::CONFLICT, "run not done"),
        Some(run) => axum::Json(json!({
            "run_id": id,
            "workflow_id": run.workflow_id,
            "output": "All steps completed.",
        }))
        .into_response(),
    }
}

/// The largest body `GET /api/large/{kib}` sends: 64 MiB.
const MAX_LARGE_KIB: usize = 64 * 1024;

/// A body of `kib` KiB of `x` (at most 64 MiB), for volume tests.
async fn large(Path(kib): Path<usize>) -> Response {
    let body = vec![b'x'; kib.min(MAX_LARGE_KIB) * 1024];
    ([(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// A cookie login: any non-empty credentials get a `sid` session cookie.
async fn session_login(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    if let Some(refused) = refuse_credentials(&body) {
        return refused;
    }
    let token = state.tokens.issue();
    (
        [(header::SET_COOKIE, format!("sid={token}; Path=/; HttpOnly"))],
        axum::Json(json!({ "status": "logged in" })),
    )
        .into_response()
}

/// 200 with the session when the `sid` cookie holds a valid session, else 401.
async fn session_me(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let sid = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == "sid")
        .map(|(_, value)| value.to_owned());
    match sid {
        Some(sid) if state.tokens.is_valid(&sid) => {
            axum::Json(json!({ "session": "valid" })).into_response()
        }
        _ => error(StatusCode::UNAUTHORIZED, "no session"),
    }
}

/// What a request carried: its method, query string, content type, body
/// length and the body's first 256 bytes as text, for payload tests.
async fn echo(req: Request) -> Response {
    let method = req.method().to_string();
    let query = req.uri().query().unwrap_or("").to_owned();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = match axum::body::to_bytes(req.into_body(), 64 << 20).await {
        Ok(b) => b,
        Err(_) => return error(StatusCode::PAYLOAD_TOO_LARGE, "body above 64 MiB"),
    };
    let head = String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned();
    axum::Json(json!({
        "method": method,
        "query": query,
        "content_type": content_type,
        "length": body.len(),
        "body": head,
    }))
    .into_response()
}

/// 302 to `/api/health`, for redirect policies.
async fn redirect() -> Response {
    (StatusCode::FOUND, [(header::LOCATION, "/api/health")]).into_response()
}

#[derive(Deserialize)]
struct ChatRequest {
    message: Option<String>,
}

const CHAT_REPLIES: [&str; 4] = [
    "Here is a summary of what I found.",
    "I have drafted a plan with three steps.",
    "Could you share a little more context?",
    "Done. The workflow has been updated.",
];

/// Simulates a model call: the random delay gives latency distributions a
/// realistic spread, which the load generator's percentiles must reproduce.
async fn chat(body: Bytes) -> Response {
    let req: ChatRequest = match parse_json(&body) {
        Ok(req) => req,
        Err(err) => return bad_json(&err),
    };
    let Some(message) = non_empty(req.message) else {
        return error(StatusCode::BAD_REQUEST, "message is required");
    };
    // The thread-local RNG is not `Send`; draw before awaiting.
    let (delay_ms, reply) = {
        let mut rng = rand::rng();
        (
            rng.random_range(CHAT_LATENCY_MS),
            CHAT_REPLIES[rng.random_range(0..CHAT_REPLIES.len())],
        )
    };
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    axum::Json(json!({
        "reply": format!("{reply} (re: {} chars)", message.chars().count()),
        "latency_ms": latency_ms,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::store::TOKEN_PREFIX;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    struct Reply {
        status: u16,
        body: String,
    }

    impl Reply {
        fn json(&self) -> serde_json::Value {
            serde_json::from_str(&self.body).expect("JSON body")
        }
    }

    /// One raw HTTP/1.1 exchange over a fresh real socket.
    async fn send(
        addr: SocketAddr,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if let Some(token) = token {
            req.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body);
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        let text = String::from_utf8(raw).expect("utf-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("header/body separator");
        assert!(
            !head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "test client does not decode chunked bodies"
        );
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        Reply {
            status,
            body: body.to_owned(),
        }
    }

    async fn start() -> DemoTarget {
        DemoTarget::start(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)))
            .await
            .expect("start demo target")
    }

    async fn login(addr: SocketAddr) -> String {
        let r = send(
            addr,
            "POST",
            "/api/auth/login",
            None,
            Some(r#"{"username":"alice","password":"secret"}"#),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["token_type"], "bearer");
        v["access_token"].as_str().expect("token").to_owned()
    }

    #[tokio::test]
    async fn api_flow_and_served_count() {
        let target = start().await;
        let addr = target.addr();
        assert_ne!(addr.port(), 0);
        assert_eq!(target.url(), format!("http://{addr}"));
        let mut made = 0u64;

        let r = send(addr, "GET", "/api/health", None, None).await;
        made += 1;
        assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));

        let r = send(addr, "GET", "/api/fast", None, None).await;
        made += 1;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));

        let t0 = Instant::now();
        let r = send(addr, "GET", "/api/delay/60", None, None).await;
        made += 1;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        assert!(
            t0.elapsed() >= Duration::from_millis(60),
            "{:?}",
            t0.elapsed()
        );

        let token = login(addr).await;
        made += 1;
        assert!(token.starts_with(TOKEN_PREFIX));

        for bad in [
            r#"{"username":"alice"}"#,
            r#"{"username":"","password":"x"}"#,
            r#"{"username":"alice","password":"#,
            "not json",
        ] {
            let r = send(addr, "POST", "/api/auth/login", None, Some(bad)).await;
            made += 1;
            assert_eq!(r.status, 400, "{bad}: {}", r.body);
        }

        let r = send(addr, "GET", "/api/workflows", None, None).await;
        made += 1;
        assert_eq!(
            (r.status, r.json()),
            (401, json!({"error": "unauthorized"}))
        );
        let r = send(addr, "GET", "/api/workflows", Some("sq_bogus"), None).await;
        made += 1;
        assert_eq!(r.status, 401);
        let r = send(addr, "GET", "/api/nowhere", None, None).await;
        made += 1;
        assert_eq!(r.status, 401);

        let r = send(addr, "GET", "/api/workflows", Some(&token), None).await;
        made += 1;
        assert_eq!(r.status, 200);
        assert!(r.json().as_array().is_some_and(|a| !a.is_empty()));

        let r = send(addr, "GET", "/api/agents", Some(&token), None).await;
        made += 1;
        assert_eq!(r.status, 200);
        assert!(r.json().as_array().is_some_and(|a| !a.is_empty()));

        let r = send(
            addr,
            "POST",
            "/api/workflows",
            Some(&token),
            Some(r#"{"name":"triage","steps":3}"#),
        )
        .await;
        made += 1;
        assert_eq!(r.status, 201, "{}", r.body);
        let created = r.json();
        assert_eq!(created["name"], "triage");
        assert_eq!(created["steps"], 3);
        let id = created["id"].as_str().expect("id").to_owned();
        assert!(uuid::Uuid::parse_str(&id).is_ok());

        let r = send(
            addr,
            "GET",
            &format!("/api/workflows/{id}"),
            Some(&token),
            None,
        )
        .await;
        made += 1;
        assert_eq!((r.status, r.json()), (200, created));

        let r = send(
            addr,
            "POST",
            &format!("/api/workflows/{id}/execute"),
            Some(&token),
            None,
        )
        .await;
        made += 1;
        assert_eq!(r.status, 202);
        let v = r.json();
        assert_eq!(
            (v["workflow_id"].as_str(), v["status"].as_str()),
            (Some(id.as_str()), Some("queued"))
        );

        let started = Instant::now();
        let r = send(
            addr,
            "POST",
            "/api/chat",
            Some(&token),
            Some(r#"{"message":"hi"}"#),
        )
        .await;
        made += 1;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(started.elapsed() >= Duration::from_millis(20));
        let v = r.json();
        assert!(v["reply"].is_string());
        assert!(
            v["latency_ms"]
                .as_u64()
                .is_some_and(|ms| (20..1000).contains(&ms))
        );

        let r = send(addr, "GET", "/nowhere", None, None).await;
        made += 1;
        assert_eq!(r.status, 404);
        let r = send(addr, "DELETE", "/api/health", None, None).await;
        made += 1;
        assert_eq!(r.status, 405);

        assert_eq!(target.served(), made);
        let r = send(addr, "GET", STATS_PATH, None, None).await;
        assert_eq!((r.status, r.json()), (200, json!({"served": made})));
        let r = send(addr, "GET", STATS_PATH, None, None).await;
        assert_eq!(
            r.json(),
            json!({"served": made}),
            "stats route is not counted"
        );
        assert_eq!(target.served(), made);

        target.shutdown().await;
        assert!(TcpStream::connect(addr).await.is_err(), "stopped accepting");
    }

    #[tokio::test]
    async fn shutdown_lets_in_flight_requests_finish() {
        let target = start().await;
        let addr = target.addr();
        let token = login(addr).await;
        let chat = tokio::spawn(async move {
            send(
                addr,
                "POST",
                "/api/chat",
                Some(&token),
                Some(r#"{"message":"slow"}"#),
            )
            .await
        });
        // Let the request reach the handler's sleep.
        tokio::time::sleep(Duration::from_millis(10)).await;
        target.shutdown().await;
        let r = chat.await.expect("chat task");
        assert_eq!(r.status, 200, "{}", r.body);
    }
}
