//! One virtual user: a tokio task that owns its HTTP/1.1 connection and loops over its class's tasks.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use squall_common::check::Observed;
use squall_common::scenario::Wait;
use squall_common::template::Vars;
use tokio::sync::{Notify, watch};

use super::arrivals::{Arrivals, MAX_START_LAG, Take};
use super::prepared::{
    Capture, PreparedClass, PreparedFlow, PreparedRequest, PreparedRun, PreparedTask, Until,
};
use super::recorder::SharedRecorder;
use crate::http::connection::{self, Body, Connection, Keep, ReadBuffer};
use crate::http::h2::Seat;
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
    /// Iterations this worker may still start (its share of the `iterations`
    /// limit), shared by its engine threads so that a thread without users
    /// holds none back (`u64::MAX`: no limit).
    pub budget: Arc<AtomicU64>,
    /// The worker's open-model completions, which judge each step of its
    /// threads' pools (`trial::Trials`).
    pub completions: Arc<super::trial::Completions>,
    /// Open-model iterations dropped (more than `MAX_START_LAG` late, waiting for a user), since the last flush.
    pub dropped: Cell<u64>,
    /// Every user's responses are read through this one buffer, so an idle
    /// user holds none.
    pub read_buf: ReadBuffer,
    /// Whether this thread may busy-poll while busy (`spin::allowed`).
    pub may_spin: bool,
}

impl ThreadCtx {
    /// Takes one iteration from the budget; false once it is spent. One
    /// atomic operation per iteration (none without a limit), never per request.
    pub(crate) fn take_iteration(&self) -> bool {
        if self.budget.load(Ordering::Relaxed) == u64::MAX {
            return true;
        }
        self.budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .is_ok()
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

/// One engine thread's open-model pool: the arrivals waiting for a user,
/// the idle users, and how many users are still starting (for the growth
/// rule, `grow_by`).
pub struct OpenPool {
    pub arrivals: RefCell<Arrivals>,
    pub idle: RefCell<Vec<Rc<OpenSlot>>>,
    /// Users started and not yet through their first iteration (most of
    /// them connecting).
    pub starting: Cell<u64>,
    /// A moving mean of how long an iteration takes from its actual start,
    /// in seconds (the pool's growth ceiling: rate x this).
    pub service_s: Cell<f64>,
    /// Iterations completed by the pool's users (a step of its growth is
    /// judged by the rate of these: `trial::Trials`).
    pub done: Cell<u64>,
    /// Users asked to leave after their current iteration: a step that
    /// bought too little, undone.
    pub leave: Cell<u64>,
    /// Users that left when asked.
    pub left: Cell<u64>,
    /// When the schedule planned its current or next wake-up (`see`).
    wake_at: Cell<Instant>,
    /// The schedule sleeps its long gap (every user was busy) and wants to
    /// hear of the first user to go idle (`rewake`).
    busy_sleep: Cell<bool>,
    /// Wakes the schedule from its long gap.
    pub rewake: Notify,
}

impl OpenPool {
    pub fn new(arrivals: Arrivals) -> OpenPool {
        OpenPool {
            arrivals: RefCell::new(arrivals),
            idle: RefCell::new(Vec::new()),
            starting: Cell::new(0),
            service_s: Cell::new(0.0),
            done: Cell::new(0),
            leave: Cell::new(0),
            left: Cell::new(0),
            wake_at: Cell::new(Instant::now()),
            busy_sleep: Cell::new(false),
            rewake: Notify::new(),
        }
    }

    /// Folds one iteration's time (from its actual start) into `service_s`:
    /// each counts for 1/64, so a stall of one response moves it little.
    fn observe(&self, took: Duration) {
        let s = self.service_s.get();
        self.done.set(self.done.get() + 1);
        let t = took.as_secs_f64();
        self.service_s
            .set(if s == 0.0 { t } else { s + (t - s) / 64.0 });
    }

    /// Takes the next due arrival for a user asking at `now`.
    pub fn take(&self, ctx: &ThreadCtx, now: Instant) -> Take {
        // An arrival a user takes has mostly been seen by the schedule
        // already: look at the idle users only for one that has not.
        self.arrivals.borrow_mut().take(
            now,
            || ctx.take_iteration(),
            &ctx.dropped,
            |at| self.generator_lag(ctx, now, at, self.lateness_from()),
        )
    }

    /// Takes every arrival due by `now` in hand (`Arrivals::see`): those no
    /// user is free for wait for one.
    pub fn see(&self, ctx: &ThreadCtx, now: Instant) {
        let from = self.lateness_from();
        self.arrivals
            .borrow_mut()
            .see(now, |at| self.generator_lag(ctx, now, at, from));
    }

    /// The schedule's next wake-up, planned for `at`; `busy`: the long gap
    /// of a pool with every user busy, cut short by the first to go idle.
    pub fn plan_wake(&self, at: Instant, busy: bool) {
        self.wake_at.set(at);
        self.busy_sleep.set(busy);
    }

    /// A user with nothing due waits for the schedule to hand it the next
    /// arrival. If the schedule is sleeping its long gap (it slept when
    /// every user was busy), it is woken to sleep until that arrival
    /// instead: otherwise an arrival due meanwhile would wait up to the
    /// whole gap beside an idle user. That wait was up to 1 ms of generator
    /// lag on arrivals just after the pool's busy spells (`generator_lag_ms`
    /// p99 1.05-1.16 ms at 30,000-50,000/s, docs/benchmarks.md).
    fn go_idle(&self, slot: Rc<OpenSlot>) {
        self.idle.borrow_mut().push(slot);
        if self.busy_sleep.replace(false) {
            self.rewake.notify_one();
        }
    }

    /// Since when an arrival due now can count as late through the
    /// generator's fault: with a user idle, since it was due (the schedule
    /// batches wake-ups, or its thread was busy or stalled); with every user
    /// busy, only since the schedule's planned wake-up, since it sleeps then
    /// (up to `BUSY_WAKE_GAP`) and a user that finishes takes the arrival
    /// itself: till then the arrival waits for a user, which is the
    /// target's latency at the pool's size, not the generator's lateness.
    fn lateness_from(&self) -> Option<Instant> {
        self.idle.borrow().is_empty().then(|| self.wake_at.get())
    }

    /// Records an arrival planned for `at` taken in hand at `now`.
    fn generator_lag(&self, ctx: &ThreadCtx, now: Instant, at: Instant, from: Option<Instant>) {
        let since = from.map_or(at, |f| f.max(at));
        ctx.recorder
            .borrow_mut()
            .record_generator_lag(micros(now.saturating_duration_since(since)));
    }

    /// Counts a new user as starting until its first iteration ends (or its task does).
    pub fn join(self: &Rc<Self>) -> PoolMember {
        self.starting.set(self.starting.get() + 1);
        PoolMember {
            pool: self.clone(),
            starting: true,
        }
    }
}

/// A user's place in its `OpenPool`'s `starting` count, however its task ends.
pub struct PoolMember {
    pool: Rc<OpenPool>,
    starting: bool,
}

impl PoolMember {
    fn started(&mut self) {
        if std::mem::take(&mut self.starting) {
            let s = &self.pool.starting;
            s.set(s.get().saturating_sub(1));
        }
    }
}

impl Drop for PoolMember {
    fn drop(&mut self) {
        self.started();
    }
}

/// Marks the user's control block done when its task ends, however it ends.
struct DoneOnDrop(Rc<UserCtl>);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        self.0.done.set(true);
    }
}

/// What a user keeps per host it talks to: a keep-alive connection, opened
/// when first needed, and a cookie jar, so a cookie one host sets is never
/// sent to another.
#[derive(Debug, Default)]
struct HostState {
    conn: Option<Connection>,
    /// The user's HTTP/2 connection, when the run has a pool (`H2Pool`).
    seat: Seat,
    /// The cookie jar (name, value) and the `Cookie` value it makes; both
    /// empty (and unallocated) until a response sets a cookie.
    jar: Vec<(String, String)>,
    cookie_line: String,
}

/// The state of host `target`: `home` for the run's own host, so a
/// single-host scenario costs no lookup or allocation; the others grow
/// `away` when first used (`away[i]` is target `i + 1`).
fn host_state<'a>(
    home: &'a mut HostState,
    away: &'a mut Vec<HostState>,
    target: usize,
) -> &'a mut HostState {
    match target.checked_sub(1) {
        None => home,
        Some(i) => {
            if away.len() <= i {
                away.resize_with(i + 1, HostState::default);
            }
            &mut away[i]
        }
    }
}

/// A user's mutable state: its connections, captured variables and random stream.
pub(super) struct UserState {
    user_id: u64,
    home: HostState,
    away: Vec<HostState>,
    pub(super) captured: HashMap<String, String>,
    rng: SmallRng,
    /// The `sequence()` counter.
    sequence: Cell<u64>,
    /// Rendered template parts and the request they make; both stay
    /// unallocated for a scenario without templates.
    scratch: String,
    wire: Vec<u8>,
    /// The user's WebSocket, kept across iterations until a `ws_close`.
    socket: Option<super::ws::Socket>,
    /// The timer that bounds each of the user's requests.
    deadline: Deadline,
}

/// One timer per user, moved to each request's deadline: `Sleep::reset` to a
/// later deadline is one atomic update of an entry already in tokio's timer
/// wheel (the wheel finds the new time when the old one comes), where a
/// `timeout_at` per request registered a new entry in the wheel on its first
/// poll and took it out again when dropped. Measured with callgrind in
/// scenario D (HTTP/2, `ci` build): the timer took about 1,500 instructions
/// of each request's 57,000 on the engine thread.
#[derive(Default)]
pub(super) struct Deadline(Option<Pin<Box<tokio::time::Sleep>>>);

/// The request's deadline passed before it finished.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct TimedOut;

impl Deadline {
    /// Runs `fut` until `at`: the future's output, or `TimedOut` when the
    /// deadline comes first. The future is polled first, as `timeout_at` does.
    pub(super) async fn within<F: Future>(
        &mut self,
        at: Instant,
        fut: F,
    ) -> Result<F::Output, TimedOut> {
        let at = tokio::time::Instant::from_std(at);
        let sleep = match &mut self.0 {
            Some(sleep) => {
                sleep.as_mut().reset(at);
                sleep
            }
            None => self.0.insert(Box::pin(tokio::time::sleep_until(at))),
        };
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            sleep.as_mut().poll(cx).map(|()| Err(TimedOut))
        })
        .await
    }
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

pub(super) fn new_user(ctx: &ThreadCtx, user_id: u64) -> UserState {
    UserState {
        user_id,
        home: HostState::default(),
        away: Vec::new(),
        captured: HashMap::new(),
        rng: SmallRng::seed_from_u64(ctx.seed ^ user_id.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        sequence: Cell::new(0),
        scratch: String::new(),
        wire: Vec::new(),
        socket: None,
        deadline: Deadline::default(),
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
    if !set_vars(&ctx, &mut user, class) {
        return;
    }
    let ended = |stop: &watch::Receiver<bool>| *stop.borrow() || ctl.retired.get();
    for req in &class.on_start {
        if ended(&stop) {
            return;
        }
        execute(&ctx, &mut user, req, None, None).await;
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
        let task = class.pick(&mut user.rng);
        if run_task(&ctx, &mut user, task, pacing.map(|_| due), &mut stop).await {
            return;
        }
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
/// arrival, timed from the arrival's planned start. Between iterations it
/// takes the next waiting arrival itself, and only when none is due waits
/// idle for the scheduler to hand it one.
pub async fn run_open_user(
    ctx: Rc<ThreadCtx>,
    class: usize,
    user_id: u64,
    first: Instant,
    mut member: PoolMember,
    _active: Active,
) {
    let pool = member.pool.clone();
    let Some(class) = ctx.run.classes.get(class) else {
        return;
    };
    let mut stop = ctx.stop.clone();
    let mut user = new_user(&ctx, user_id);
    if !set_vars(&ctx, &mut user, class) {
        return;
    }
    for req in &class.on_start {
        if *stop.borrow() {
            return;
        }
        execute(&ctx, &mut user, req, None, None).await;
    }
    let slot = Rc::new(OpenSlot::default());
    let mut intended = first;
    let per_user = ctx.run.spec.iterations_per_user.unwrap_or(u64::MAX);
    let mut done: u64 = 0;
    loop {
        if *stop.borrow() {
            return;
        }
        let task = class.pick(&mut user.rng);
        let began = Instant::now();
        if run_task(&ctx, &mut user, task, Some(intended), &mut stop).await {
            return;
        }
        pool.observe(began.elapsed());
        member.started();
        done += 1;
        if done >= per_user {
            return;
        }
        if pool.leave.get() > 0 {
            pool.leave.set(pool.leave.get() - 1);
            pool.left.set(pool.left.get() + 1);
            return;
        }
        intended = loop {
            match pool.take(&ctx, Instant::now()) {
                Take::Start(at) => break at,
                Take::End => return,
                Take::Wait(_) => {}
            }
            if slot.closed.get() {
                return;
            }
            pool.go_idle(slot.clone());
            let next = loop {
                if let Some(next) = slot.next.take() {
                    break next;
                }
                if slot.closed.get() {
                    return;
                }
                tokio::select! {
                    _ = slot.wake.notified() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            };
            if next.elapsed() <= MAX_START_LAG {
                break next;
            }
            // Woken too late to start it on time (the thread is behind
            // its schedule): drop the arrival and ask again.
            ctx.dropped.set(ctx.dropped.get() + 1);
        };
    }
}

/// Draws the class's feeder row, then sets its `vars:` for a new user, in
/// order; false when the class's `unique` rows ran out and the user must not start.
fn set_vars(ctx: &ThreadCtx, user: &mut UserState, class: &PreparedClass) -> bool {
    // What `setup:` captured, first: the user's own row, vars and captures
    // of the same name replace it. Once per user, never per request.
    for (name, value) in &ctx.run.spec.shared_vars {
        user.captured.insert(name.clone(), value.clone());
    }
    if let Some(feed) = class.feed.and_then(|f| ctx.run.feeds.get(f)) {
        let Some(row) = feed.draw(&mut user.rng) else {
            return false;
        };
        for (key, value) in feed.keys.iter().zip(row) {
            user.captured.insert(key.clone(), value.clone());
        }
    }
    for (name, t) in &class.vars {
        let mut out = String::new();
        let vars = Vars {
            user_id: user.user_id,
            worker_index: ctx.worker_index,
            captured: &user.captured,
            sequence: Some(&user.sequence),
        };
        // Validated at load time; a var that still cannot render is left unset,
        // and the requests using it fail visibly as `template`.
        if t.render(&vars, &mut user.rng, &mut out).is_ok() {
            user.captured.insert(name.clone(), out);
        }
    }
    true
}

/// Runs one iteration's task; true when the run stopped during it.
async fn run_task(
    ctx: &ThreadCtx,
    user: &mut UserState,
    task: &PreparedTask,
    intended: Option<Instant>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    match task {
        PreparedTask::Request(req) => {
            execute(ctx, user, req, intended, None).await;
            false
        }
        // Boxed: a flow's future holds its WebSocket and SSE steps (connect,
        // TLS and WebSocket handshakes) and is far larger than a request's;
        // inline, it made `run_task`'s future 6,032 bytes (1,648 boxed),
        // which every iteration builds and moves: memcpy of it was 2.1% of
        // scenario D's instructions, 1,185 a request (374 boxed; callgrind,
        // `ci` build). One allocation per flow instead.
        PreparedTask::Flow(flow) => Box::pin(run_flow(ctx, user, flow, intended, stop)).await,
    }
}

/// Sleeps until `t` unless the run stops first (then true).
async fn pause(t: Instant, stop: &mut watch::Receiver<bool>) -> bool {
    if t <= Instant::now() {
        return *stop.borrow();
    }
    tokio::select! {
        _ = tokio::time::sleep_until(t.into()) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

/// Runs a flow's steps in order and records the flow's own row (its whole
/// duration, failed with the first failing step's kind); true when the run
/// stopped during it, in which case the row is not recorded.
pub(super) async fn run_flow(
    ctx: &ThreadCtx,
    user: &mut UserState,
    flow: &PreparedFlow,
    intended: Option<Instant>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let start = Instant::now();
    let since = intended.filter(|i| *i < start).unwrap_or(start);
    if intended.is_some() {
        ctx.recorder.borrow_mut().record_lag(micros(start - since));
    }
    let mut error = None;
    let mut stopped = false;
    'steps: for step in &flow.steps {
        if let Some(ws) = &step.ws {
            let parts = super::ws::UserParts {
                user_id: user.user_id,
                captured: &mut user.captured,
                rng: &mut user.rng,
                sequence: &user.sequence,
                scratch: &mut user.scratch,
                socket: &mut user.socket,
            };
            if let Some(kind) = super::ws::run_step(ctx, parts, ws).await {
                error.get_or_insert(kind);
                if !flow.continue_on_failure {
                    break;
                }
            }
        }
        if let Some(req) = &step.request {
            let failed = match (&step.sse, &step.poll) {
                (Some(sse), _) => {
                    let vars = Vars {
                        user_id: user.user_id,
                        worker_index: ctx.worker_index,
                        captured: &user.captured,
                        sequence: Some(&user.sequence),
                    };
                    let bytes = ctx.run.encode(
                        req,
                        &vars,
                        &mut user.rng,
                        &mut user.scratch,
                        &mut user.wire,
                        &user.home.cookie_line,
                    );
                    super::sse::run(ctx, req, sse, bytes).await
                }
                (None, None) => execute(ctx, user, req, None, None).await.0,
                (None, Some(poll)) => {
                    let mut attempt = 1;
                    loop {
                        let last = attempt >= poll.max;
                        let (kind, met) =
                            execute(ctx, user, req, None, Some((&poll.until, last))).await;
                        if met {
                            break None;
                        }
                        if last {
                            break Some(kind.unwrap_or(ErrorKind::PollLimit));
                        }
                        attempt += 1;
                        if pause(Instant::now() + poll.every, stop).await {
                            stopped = true;
                            break 'steps;
                        }
                    }
                }
            };
            if let Some(kind) = failed {
                error.get_or_insert(kind);
                if !flow.continue_on_failure {
                    break;
                }
            }
        }
        if *stop.borrow() {
            stopped = true;
            break;
        }
        if let Some(w) = step.think {
            let until = match w {
                Wait::Constant(d) | Wait::Pacing(d) => Instant::now() + d,
                Wait::Between(lo, hi) => {
                    let span = micros(hi.saturating_sub(lo));
                    let jitter = rand::Rng::random_range(&mut user.rng, 0..=span);
                    Instant::now() + lo + Duration::from_micros(jitter)
                }
            };
            if pause(until, stop).await {
                stopped = true;
                break;
            }
        }
    }
    if stopped {
        // Cut short by the end of the run, not by the target: every request
        // it sent is recorded, but the flow's row only counts whole flows.
        return true;
    }
    let end = Instant::now();
    ctx.recorder.borrow_mut().record(
        flow.endpoint,
        &Outcome {
            status: None,
            error,
            latency_us: micros(end - since),
            service_us: micros(end - start),
            ttfb_us: None,
            bytes: 0,
        },
    );
    stopped
}

/// Sends one request and records its outcome exactly once.
/// `intended` is when the request was due (open model, pacing): latency is
/// measured from it, service time from the actual send. `until` is a poll's
/// stop condition (and whether this is its last attempt, which then fails
/// as `poll_limit` when the condition does not hold). Returns the error kind,
/// if the request failed, and whether `until` held.
async fn execute(
    ctx: &ThreadCtx,
    user: &mut UserState,
    req: &PreparedRequest,
    intended: Option<Instant>,
    until: Option<(&Until, bool)>,
) -> (Option<ErrorKind>, bool) {
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
        sequence: Some(&user.sequence),
    };
    let mut target = req.target;
    let encoded = ctx.run.encode(
        req,
        &vars,
        &mut user.rng,
        &mut user.scratch,
        &mut user.wire,
        &host_state(&mut user.home, &mut user.away, target).cookie_line,
    );
    let until_checks = until.map(|(u, _)| &u.checks);
    let want_body = req.needs_body || until_checks.is_some_and(|c| c.needs_body());
    let redirects = req.spec.redirects.unwrap_or(ctx.run.spec.redirects);
    let keep_headers =
        req.keep_headers || redirects > 0 || until_checks.is_some_and(|c| c.needs_headers());
    let mut body = want_body.then(Vec::new);
    let mut headers = Vec::new();
    let timeout = req.spec.timeout.unwrap_or(ctx.run.spec.timeout);
    // A followed redirect's request (GET Location), built only when one is followed.
    let mut hop_wire: Vec<u8> = Vec::new();
    let mut hops = 0u32;
    let (mut start, mut since) = (start, since);
    let close = req.spec.close == Some(true);
    let outcome = match encoded {
        Err(_) => failure(ErrorKind::Template, since, start),
        Ok(first) => {
            let mut request = first;
            loop {
                let Some(addr) = target_addr(ctx, target).await else {
                    break failure(ErrorKind::Connect, since, start);
                };
                let host = host_state(&mut user.home, &mut user.away, target);
                // The deadline from the clock reading already taken.
                let body = body.as_mut().map(|buf| Body {
                    buf,
                    limit: ctx.run.spec.max_capture_body,
                });
                let keep = Keep {
                    headers: keep_headers,
                    cookies: ctx.run.spec.cookies,
                };
                let head_only = req.head_only && hops == 0;
                if close {
                    // `connection: close`: a fresh connection (and handshake) every time.
                    host.conn = None;
                }
                let (conn, seat) = (&mut host.conn, &mut host.seat);
                let tls = ctx.run.targets[target].tls.as_ref();
                // HTTP/2 serves the run's own host (target 0) only.
                let pool = ctx.run.h2.as_ref().filter(|_| target == 0);
                let sent = user
                    .deadline
                    .within(start + timeout, async {
                        match pool {
                            // Boxed: the HTTP/2 pool's future was 8,280 bytes (with
                            // hyper's client) and, inline, every HTTP/1.1 request
                            // moved that much into its timeout (memcpy was 10% of
                            // the engine's CPU in scenario E keep-alive); a box per
                            // HTTP/2 request is small beside the h2 crate's own
                            // allocations per stream.
                            Some(pool) => {
                                let prebuilt = req.h2_for(request);
                                Box::pin(
                                    pool.send(seat, addr, prebuilt, request, head_only, body, keep),
                                )
                                .await
                            }
                            None => {
                                connection::send(
                                    conn,
                                    addr,
                                    tls,
                                    request,
                                    head_only,
                                    &ctx.read_buf,
                                    body,
                                    keep,
                                )
                                .await
                            }
                        }
                    })
                    .await;
                if close {
                    host.conn = None;
                }
                let resp = match sent {
                    Err(_) => {
                        host.conn = None;
                        break failure(ErrorKind::Timeout, since, start);
                    }
                    Ok(Err(kind)) => break failure(kind, since, start),
                    Ok(Ok(resp)) => resp,
                };
                if !resp.set_cookies.is_empty() {
                    store_cookies(&mut host.jar, &mut host.cookie_line, &resp.set_cookies);
                }
                // One clock reading serves both latency and service time.
                let end = Instant::now();
                let outcome = Outcome {
                    status: Some(resp.status),
                    error: None,
                    latency_us: micros(end - since),
                    service_us: micros(end - start),
                    ttfb_us: Some(micros(resp.first_byte.saturating_duration_since(start))),
                    bytes: resp.bytes,
                };
                let next = (hops < redirects && is_redirect(resp.status))
                    .then(|| ctx.run.redirect_target(target, &resp.headers))
                    .flatten();
                match next {
                    Some((to, path)) => {
                        // Each hop is a request the target served: recorded
                        // on this endpoint as it went, unjudged.
                        ctx.recorder.borrow_mut().record(req.endpoint, &outcome);
                        target = to;
                        let jar = &host_state(&mut user.home, &mut user.away, to).cookie_line;
                        ctx.run.encode_get(to, &path, jar, &mut hop_wire);
                        request = &hop_wire;
                        hops += 1;
                        start = Instant::now();
                        since = start;
                        guard.start = start;
                    }
                    None => {
                        headers = resp.headers;
                        break Outcome {
                            error: (!req.spec.status_ok(resp.status)).then_some(ErrorKind::Status),
                            ..outcome
                        };
                    }
                }
            }
        }
    };
    guard.armed = false;
    let mut outcome = outcome;
    let mut met = false;
    // The check a failed response is counted under in the report.
    let mut failed_check: Option<&str> = None;
    if outcome.error == Some(ErrorKind::Status) {
        failed_check = req.status_check.as_deref();
    }
    if let Some(status) = outcome.status {
        // The body is parsed once, for checks, captures and the poll condition.
        let body = body.as_deref().unwrap_or_default();
        let needs_json = req.needs_json || until_checks.is_some_and(|c| c.needs_json());
        let json = needs_json
            .then(|| serde_json::from_slice::<serde_json::Value>(body).ok())
            .flatten();
        let observed = Observed {
            headers: &headers,
            body,
            json: json.as_ref(),
            latency_us: outcome.latency_us,
        };
        if outcome.error.is_none() {
            let failed = match req.checks.first_failure(&observed) {
                Some(i) => Some(req.checks.name(i)),
                None => capture(req, &observed, &mut user.captured)
                    .map(|i| req.capture_checks[i].as_str()),
            };
            if failed.is_some() {
                outcome.error = Some(ErrorKind::Check);
                failed_check = failed;
            }
        }
        if let Some((u, last)) = until {
            met = u.spec.status_ok(status) && u.checks.passes(&observed);
            if !met && last && outcome.error.is_none() {
                outcome.error = Some(ErrorKind::PollLimit);
            }
        }
    }
    let mut recorder = ctx.recorder.borrow_mut();
    recorder.record(req.endpoint, &outcome);
    if let Some(name) = failed_check {
        recorder.record_check(req.endpoint, name);
    }
    (outcome.error, met)
}

/// The address of host `target`: the run's own was resolved when it started;
/// another is resolved by its first use on this worker and kept (None when
/// it resolves to nothing, which fails the request as `connect`).
async fn target_addr(ctx: &ThreadCtx, target: usize) -> Option<SocketAddr> {
    if target == 0 {
        return Some(ctx.addr);
    }
    let t = ctx.run.targets.get(target)?;
    if let Some(a) = t.addr.get() {
        return Some(*a);
    }
    let found = tokio::net::lookup_host(t.authority.as_str())
        .await
        .ok()?
        .next()?;
    Some(*t.addr.get_or_init(|| found))
}

/// Statuses whose `Location` a redirect policy follows.
fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// The most cookies a user keeps, and the longest one: a target sets them,
/// so they are bounded like any input.
const MAX_COOKIES: usize = 50;
const MAX_COOKIE_BYTES: usize = 4096;

/// Puts a response's `Set-Cookie` values into the user's jar (a cookie with
/// `Max-Age=0` or an empty value is removed) and rebuilds its `Cookie` value.
/// Each host has its own jar (see `HostState`); within one, domains and
/// paths are not tracked.
fn store_cookies(jar: &mut Vec<(String, String)>, line_out: &mut String, set: &[String]) {
    for line in set {
        let mut parts = line.split(';');
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        let valid = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
        };
        if name.is_empty()
            || !valid(name)
            || !valid(value)
            || name.len() + value.len() > MAX_COOKIE_BYTES
        {
            continue;
        }
        let expired = value.is_empty()
            || parts.any(|a| {
                a.trim().split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("max-age") && v.trim().starts_with(['0', '-'])
                })
            });
        jar.retain(|(n, _)| n != name);
        if !expired && jar.len() < MAX_COOKIES {
            jar.push((name.to_owned(), value.to_owned()));
        }
    }
    line_out.clear();
    for (i, (n, v)) in jar.iter().enumerate() {
        if i > 0 {
            line_out.push_str("; ");
        }
        line_out.push_str(n);
        line_out.push('=');
        line_out.push_str(v);
    }
}

/// Stores the request's captures; the index of the first that found
/// nothing, if one did.
fn capture(
    req: &PreparedRequest,
    o: &Observed<'_>,
    into: &mut HashMap<String, String>,
) -> Option<usize> {
    let mut missing = None;
    for (i, (var, c)) in req.captures.iter().enumerate() {
        let value = match c {
            Capture::Json(path) => o.json.and_then(|j| path.extract(j)),
            Capture::Header(name) => o
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone()),
            Capture::Regex(re) => {
                let text = String::from_utf8_lossy(o.body);
                re.captures(&text)
                    .and_then(|m| m.get(1).or_else(|| m.get(0)).map(|g| g.as_str().to_owned()))
            }
            Capture::Cookie(name) => o
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
                .find_map(|(_, v)| {
                    let pair = v.split(';').next()?;
                    let (n, value) = pair.split_once('=')?;
                    (n.trim() == name).then(|| value.trim().to_owned())
                }),
        };
        match value {
            Some(v) => {
                into.insert(var.clone(), v);
            }
            None => {
                missing.get_or_insert(i);
            }
        }
    }
    missing
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jar_keeps_replaces_and_expires_cookies_within_bounds() {
        let (mut jar, mut line) = (Vec::new(), String::new());
        store_cookies(
            &mut jar,
            &mut line,
            &["sid=1; Path=/; HttpOnly".into(), "theme=dark".into()],
        );
        assert_eq!(line, "sid=1; theme=dark");
        store_cookies(
            &mut jar,
            &mut line,
            &["sid=2".into(), "theme=; Max-Age=0".into()],
        );
        assert_eq!(line, "sid=2");
        store_cookies(
            &mut jar,
            &mut line,
            &["sid=3; Max-Age=0".into(), "bad name=x".into()],
        );
        assert_eq!(line, "");
        let many: Vec<String> = (0..100).map(|i| format!("c{i}=v")).collect();
        store_cookies(&mut jar, &mut line, &many);
        assert_eq!(jar.len(), MAX_COOKIES);
        let huge = format!("big={}", "x".repeat(MAX_COOKIE_BYTES));
        store_cookies(&mut jar, &mut line, &[huge]);
        assert!(jar.iter().all(|(n, _)| n != "big"));
    }

    /// The most bytes `run_task`'s future may take: every iteration builds
    /// it and moves it into the user's own future (a memcpy of its whole
    /// size, twice, per request).
    const RUN_TASK_FUTURE_MAX: usize = 2048;

    #[test]
    fn run_task_future_stays_small() {
        use squall_common::scenario::{Loaded, Overrides};
        let yaml = "host: http://127.0.0.1:9\nscenarios:\n  s: { users: 1, duration: 1s }\n\
                    user_classes:\n  u:\n    tasks:\n      - { name: a, get: /a }\n";
        let loaded = Loaded::from_str("t.yaml", yaml).expect("scenario");
        let spec = loaded
            .resolve("s", &Overrides::default(), false)
            .expect("resolves");
        let run = Arc::new(PreparedRun::new(spec).expect("prepares"));
        let (_tx, stop) = watch::channel(false);
        let ctx = ThreadCtx {
            run: run.clone(),
            addr: SocketAddr::from(([127, 0, 0, 1], 9)),
            recorder: Rc::new(RefCell::new(super::super::recorder::Recorder::new(
                run.endpoints.len(),
                None,
            ))),
            stop: stop.clone(),
            active: Arc::new(AtomicU64::new(0)),
            worker_index: 0,
            seed: 0,
            budget: Arc::new(AtomicU64::new(u64::MAX)),
            completions: Arc::new(super::super::trial::Completions::new(1)),
            dropped: Cell::new(0),
            read_buf: crate::http::connection::read_buffer(),
            may_spin: false,
        };
        let mut user = new_user(&ctx, 0);
        let mut stop = stop;
        let task = &run.classes[0].tasks[0];
        let fut = run_task(&ctx, &mut user, task, None, &mut stop);
        let size = std::mem::size_of_val(&fut);
        assert!(
            size <= RUN_TASK_FUTURE_MAX,
            "run_task's future is {size} bytes"
        );
    }

    #[test]
    fn one_deadline_times_out_and_serves_later_requests_earlier_or_later() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut d = Deadline::default();
            let far = || Instant::now() + Duration::from_secs(30);
            assert_eq!(d.within(far(), async { 1 }).await, Ok(1));
            // A pending request ends at its deadline (an earlier one than the
            // timer's entry holds: the entry moves back).
            let begun = Instant::now();
            let near = begun + Duration::from_millis(20);
            let never = std::future::pending::<()>();
            assert_eq!(d.within(near, never).await, Err(TimedOut));
            assert!(begun.elapsed() >= Duration::from_millis(20));
            assert!(begun.elapsed() < Duration::from_secs(10));
            // After it fired, the same timer bounds the next request.
            assert_eq!(d.within(far(), async { 2 }).await, Ok(2));
            // Moved later and later, it still fires at the last deadline.
            assert_eq!(d.within(far(), async { 3 }).await, Ok(3));
            let begun = Instant::now();
            let near = begun + Duration::from_millis(20);
            let never = std::future::pending::<()>();
            assert_eq!(d.within(near, never).await, Err(TimedOut));
            assert!(begun.elapsed() < Duration::from_secs(10));
            // A request done by its deadline is not failed by it later.
            let soon = Instant::now() + Duration::from_millis(5);
            assert_eq!(d.within(soon, async { 4 }).await, Ok(4));
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert_eq!(d.within(far(), async { 5 }).await, Ok(5));
        });
    }
}
