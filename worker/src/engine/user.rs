//! One virtual user: a tokio task that owns its HTTP/1.1 connection and loops over its class's tasks.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use squall_common::scenario::Wait;
use squall_common::template::Vars;
use tokio::sync::{Notify, watch};

use super::prepared::{PreparedRequest, PreparedRun};
use super::recorder::SharedRecorder;
use crate::http::connection::{self, Body, Connection, ReadBuffer};
use crate::http::{ErrorKind, Outcome};

/// What every user on one engine thread shares.
pub struct ThreadCtx {
    pub run: Arc<PreparedRun>,
    pub addr: SocketAddr,
    pub recorder: SharedRecorder,
    pub stop: watch::Receiver<bool>,
    pub active: Arc<AtomicU64>,
    pub worker_index: u32,
    pub seed: u64,
    /// Iterations this thread may still start (shared `iterations` limit).
    pub budget: Cell<u64>,
    /// Open-model iterations dropped for want of an idle user, since the last flush.
    pub dropped: Cell<u64>,
    /// Every user's responses are read through this one buffer, so an idle
    /// user holds none.
    pub read_buf: ReadBuffer,
}

impl ThreadCtx {
    /// Takes one iteration from the budget; false once it is spent.
    fn take_iteration(&self) -> bool {
        let left = self.budget.get();
        if left == 0 {
            return false;
        }
        if left != u64::MAX {
            self.budget.set(left - 1);
        }
        true
    }
}

/// Lets the engine retire one user between iterations (ramping down).
#[derive(Debug, Default)]
pub struct UserCtl {
    retired: Cell<bool>,
    wake: Notify,
    /// Set by the user when its task ends, so the engine skips it when retiring.
    pub done: Cell<bool>,
}

impl UserCtl {
    pub fn retire(&self) {
        self.retired.set(true);
        self.wake.notify_one();
    }
}

/// An idle open-model user's mailbox: the scheduler drops the next intended start in it.
/// Reused for every iteration, so handing over an iteration allocates nothing.
#[derive(Debug, Default)]
pub struct OpenSlot {
    next: Cell<Option<Instant>>,
    closed: Cell<bool>,
    wake: Notify,
}

impl OpenSlot {
    pub fn deliver(&self, intended: Instant) {
        self.next.set(Some(intended));
        self.wake.notify_one();
    }

    pub fn close(&self) {
        self.closed.set(true);
        self.wake.notify_one();
    }
}

/// Marks the user's control block done when its task ends, however it ends.
struct DoneOnDrop(Rc<UserCtl>);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        self.0.done.set(true);
    }
}

/// A user's mutable state: its connection, captured variables and random stream.
struct UserState {
    user_id: u64,
    conn: Option<Connection>,
    captured: HashMap<String, String>,
    rng: SmallRng,
    /// Rendered template parts and the request they make; both stay
    /// unallocated for a scenario without templates.
    scratch: String,
    wire: Vec<u8>,
}

/// Counts the user as active from the moment it is spawned until its task ends,
/// so a snapshot taken right after a spawn already counts it.
pub struct Active(Arc<AtomicU64>);

impl Active {
    pub fn new(c: &Arc<AtomicU64>) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        Active(c.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Records a request that was cut off by a hard stop, so nothing sent goes uncounted.
struct InFlight<'a> {
    recorder: &'a SharedRecorder,
    endpoint: usize,
    start: Instant,
    armed: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.armed {
            let us = micros(self.start.elapsed());
            self.recorder.borrow_mut().record(
                self.endpoint,
                &Outcome {
                    status: None,
                    error: Some(ErrorKind::Interrupted),
                    latency_us: us,
                    service_us: us,
                    ttfb_us: None,
                    bytes: 0,
                },
            );
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn new_user(ctx: &ThreadCtx, user_id: u64) -> UserState {
    UserState {
        user_id,
        conn: None,
        captured: HashMap::new(),
        rng: SmallRng::seed_from_u64(ctx.seed ^ user_id.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        scratch: String::new(),
        wire: Vec::new(),
    }
}

/// Runs one closed-model user until the thread stops, the engine retires it,
/// or it has used up its iterations: `on_start` once, then weighted tasks with waits.
pub async fn run_user(
    ctx: Rc<ThreadCtx>,
    class: usize,
    user_id: u64,
    ctl: Rc<UserCtl>,
    _active: Active,
) {
    let _done = DoneOnDrop(ctl.clone());
    let Some(class) = ctx.run.classes.get(class) else {
        return;
    };
    let mut stop = ctx.stop.clone();
    let mut user = new_user(&ctx, user_id);
    let ended = |stop: &watch::Receiver<bool>| *stop.borrow() || ctl.retired.get();
    for req in &class.on_start {
        if ended(&stop) {
            return;
        }
        execute(&ctx, &mut user, req, None).await;
    }
    let per_user = ctx.run.spec.iterations_per_user.unwrap_or(u64::MAX);
    let pacing = match class.wait {
        Some(Wait::Pacing(p)) if !p.is_zero() => Some(p),
        _ => None,
    };
    // With pacing, iteration i is due at first + i * pacing; a late start is
    // measured from when it was due (coordinated omission, as wrk2 does).
    let mut due = Instant::now();
    let mut done: u64 = 0;
    while done < per_user {
        if ended(&stop) || !ctx.take_iteration() {
            return;
        }
        let req = class.pick(&mut user.rng);
        execute(&ctx, &mut user, req, pacing.map(|_| due)).await;
        done += 1;
        let pause_until = match (class.wait, pacing) {
            (_, Some(p)) => {
                due += p;
                Some(due)
            }
            (None, None) | (Some(Wait::Pacing(_)), None) => None,
            (Some(Wait::Constant(d)), None) => Some(Instant::now() + d),
            (Some(Wait::Between(lo, hi)), None) => {
                let span = micros(hi.saturating_sub(lo));
                let jitter = rand::Rng::random_range(&mut user.rng, 0..=span);
                Some(Instant::now() + lo + Duration::from_micros(jitter))
            }
        };
        match pause_until {
            Some(t) if t > Instant::now() => {
                tokio::select! {
                    _ = tokio::time::sleep_until(t.into()) => {}
                    _ = stop.wait_for(|s| *s) => return,
                    _ = ctl.wake.notified() => {}
                }
            }
            // No think time: go straight on. Every request already awaits the
            // connection task, and tokio's cooperative budget forces a yield
            // after 128 ready polls, so one user cannot starve its thread;
            // an explicit yield here cost a scheduler round trip per request.
            _ => {}
        }
    }
}

/// Runs one open-model pool user: `on_start` once, then one weighted task per
/// iteration the scheduler hands it, timed from the iteration's intended start.
pub async fn run_open_user(
    ctx: Rc<ThreadCtx>,
    class: usize,
    user_id: u64,
    first: Instant,
    idle: Rc<RefCell<Vec<Rc<OpenSlot>>>>,
    closed: Rc<Cell<bool>>,
    _active: Active,
) {
    let Some(class) = ctx.run.classes.get(class) else {
        return;
    };
    let mut stop = ctx.stop.clone();
    let mut user = new_user(&ctx, user_id);
    for req in &class.on_start {
        if *stop.borrow() {
            return;
        }
        execute(&ctx, &mut user, req, None).await;
    }
    let slot = Rc::new(OpenSlot::default());
    let mut intended = first;
    let per_user = ctx.run.spec.iterations_per_user.unwrap_or(u64::MAX);
    let mut done: u64 = 0;
    loop {
        if *stop.borrow() {
            return;
        }
        let req = class.pick(&mut user.rng);
        execute(&ctx, &mut user, req, Some(intended)).await;
        done += 1;
        if done >= per_user || closed.get() {
            return;
        }
        idle.borrow_mut().push(slot.clone());
        loop {
            if let Some(next) = slot.next.take() {
                intended = next;
                break;
            }
            if slot.closed.get() {
                return;
            }
            tokio::select! {
                _ = slot.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// Sends one request and records its outcome exactly once.
/// `intended` is when the request was due (open model, pacing): latency is
/// measured from it, service time from the actual send.
async fn execute(
    ctx: &ThreadCtx,
    user: &mut UserState,
    req: &PreparedRequest,
    intended: Option<Instant>,
) {
    let start = Instant::now();
    let since = intended.filter(|i| *i < start).unwrap_or(start);
    if intended.is_some() {
        ctx.recorder.borrow_mut().record_lag(micros(start - since));
    }
    let mut guard = InFlight {
        recorder: &ctx.recorder,
        endpoint: req.endpoint,
        start: since,
        armed: true,
    };
    let vars = Vars {
        user_id: user.user_id,
        worker_index: ctx.worker_index,
        captured: &user.captured,
    };
    let encoded = ctx
        .run
        .encode(req, &vars, &mut user.rng, &mut user.scratch, &mut user.wire);
    let want_body = !req.captures.is_empty();
    let mut body = want_body.then(Vec::new);
    let outcome = match encoded {
        Err(_) => failure(ErrorKind::Template, since, start),
        Ok(request) => {
            // The deadline from the clock reading already taken.
            let sent = tokio::time::timeout_at(
                (start + ctx.run.spec.timeout).into(),
                connection::send(
                    &mut user.conn,
                    ctx.addr,
                    ctx.run.tls.as_ref(),
                    request,
                    req.head_only,
                    &ctx.read_buf,
                    body.as_mut().map(|buf| Body {
                        buf,
                        limit: ctx.run.spec.max_capture_body,
                    }),
                ),
            )
            .await;
            match sent {
                Err(_) => {
                    user.conn = None;
                    failure(ErrorKind::Timeout, since, start)
                }
                Ok(Err(kind)) => failure(kind, since, start),
                Ok(Ok(resp)) => {
                    let error = (!req.spec.status_ok(resp.status)).then_some(ErrorKind::Status);
                    // One clock reading serves both latency and service time.
                    let end = Instant::now();
                    Outcome {
                        status: Some(resp.status),
                        error,
                        latency_us: micros(end - since),
                        service_us: micros(end - start),
                        ttfb_us: Some(micros(resp.first_byte.saturating_duration_since(start))),
                        bytes: resp.bytes,
                    }
                }
            }
        }
    };
    guard.armed = false;
    let mut outcome = outcome;
    // `body` is there only when the request captures from it.
    if let Some(body) = body.filter(|_| outcome.error.is_none())
        && !capture(req, &body, &mut user.captured)
    {
        outcome.error = Some(ErrorKind::Check);
    }
    ctx.recorder.borrow_mut().record(req.endpoint, &outcome);
}

/// Stores the request's captures from a JSON body; false when one is missing.
fn capture(req: &PreparedRequest, body: &[u8], into: &mut HashMap<String, String>) -> bool {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let mut all = true;
    for (var, path) in &req.captures {
        match path.extract(&json) {
            Some(v) => {
                into.insert(var.clone(), v);
            }
            None => all = false,
        }
    }
    all
}

fn failure(kind: ErrorKind, since: Instant, start: Instant) -> Outcome {
    let end = Instant::now();
    Outcome {
        status: None,
        error: Some(kind),
        latency_us: micros(end - since),
        service_us: micros(end - start),
        ttfb_us: None,
        bytes: 0,
    }
}
