//! `setup:` and `teardown:` run once by one user of the engine itself, so they send with the users' TLS, cookie, timeout and redirect settings.
//!
//! The coordinator calls [`run_phase`] in its own process: remote workers
//! need no extra protocol, and what setup captured travels to them inside
//! the `RunSpec` (`shared_vars`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use squall_common::scenario::{FlowSpec, TaskSpec, UserClass};
use squall_common::snapshot::EndpointKey;
use squall_common::{EndpointStats, RunSpec};
use tokio::sync::{oneshot, watch};

use super::prepared::{PreparedRun, PreparedTask};
use super::recorder::Recorder;
use super::user::{ThreadCtx, new_user, run_flow};
use crate::error::WorkerError;

/// How a phase went: its requests per endpoint (the phase's own row, method
/// `FLOW`, last), what its user held at the end, and why it failed, if it did.
#[derive(Debug)]
pub struct PhaseOutcome {
    pub endpoints: Vec<(EndpointKey, EndpointStats)>,
    /// Every variable of the phase's user at the end: the shared ones it was
    /// given and what its steps captured.
    pub captured: Vec<(String, String)>,
    /// `None` when every step succeeded.
    pub failure: Option<String>,
    pub elapsed: Duration,
}

/// Runs `flow` once as one user (user id 0, worker index 0) that starts
/// with `shared` as its variables, on a thread of its own (users are
/// single-threaded). `stop` ends it between steps or during a pause; a
/// request in flight ends within its timeout.
pub async fn run_phase(
    spec: &RunSpec,
    flow: &FlowSpec,
    shared: &[(String, String)],
    stop: watch::Receiver<bool>,
) -> Result<PhaseOutcome, WorkerError> {
    let spec = RunSpec {
        classes: vec![UserClass {
            name: flow.name.clone(),
            weight: 1,
            wait: None,
            vars: Vec::new(),
            on_start: Vec::new(),
            tasks: vec![TaskSpec {
                weight: 1,
                request: None,
                flow: Some(flow.clone()),
            }],
            feed: None,
        }],
        feeders: Vec::new(),
        setup: None,
        teardown: None,
        shared_vars: shared.to_vec(),
        ..spec.clone()
    };
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("squall-{}", flow.name))
        .spawn(move || {
            let out = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| WorkerError::Scenario(format!("cannot start a runtime: {e}")))
                .and_then(|rt| tokio::task::LocalSet::new().block_on(&rt, on_thread(spec, stop)));
            let _ = tx.send(out);
        })
        .map_err(|e| WorkerError::Scenario(format!("cannot start a thread: {e}")))?;
    rx.await
        .map_err(|_| WorkerError::Scenario("the phase's thread ended without an answer".into()))?
}

async fn on_thread(
    spec: RunSpec,
    stop: watch::Receiver<bool>,
) -> Result<PhaseOutcome, WorkerError> {
    let run = Arc::new(PreparedRun::placed(spec, 0, 1)?);
    let Some(PreparedTask::Flow(flow)) = run.classes.first().and_then(|c| c.tasks.first()) else {
        return Err(WorkerError::Scenario("a phase needs its steps".into()));
    };
    let started = Instant::now();
    let addr = match tokio::net::lookup_host(&run.authority).await {
        Ok(mut addrs) => addrs.next(),
        Err(_) => None,
    };
    let Some(addr) = addr else {
        return Ok(PhaseOutcome {
            endpoints: Vec::new(),
            captured: Vec::new(),
            failure: Some(format!("cannot resolve the target {}", run.authority)),
            elapsed: started.elapsed(),
        });
    };
    let ctx = ThreadCtx {
        run: run.clone(),
        addr,
        recorder: Rc::new(RefCell::new(Recorder::new(run.endpoints.len(), None))),
        stop: stop.clone(),
        active: Arc::new(AtomicU64::new(0)),
        worker_index: 0,
        seed: rand::random(),
        budget: Arc::new(AtomicU64::new(u64::MAX)),
        completions: Arc::new(super::trial::Completions::new(1)),
        dropped: Cell::new(0),
        read_buf: crate::http::connection::read_buffer(),
        may_spin: false,
    };
    let mut user = new_user(&ctx, 0);
    for (name, value) in &run.spec.shared_vars {
        user.captured.insert(name.clone(), value.clone());
    }
    let mut stop = stop;
    let stopped = run_flow(&ctx, &mut user, flow, None, &mut stop).await;
    let stats = ctx.recorder.borrow_mut().take().stats;
    let endpoints: Vec<(EndpointKey, EndpointStats)> =
        run.endpoints.iter().cloned().zip(stats).collect();
    let failure = if stopped {
        Some("interrupted".to_owned())
    } else {
        first_failure(&endpoints)
    };
    let mut captured: Vec<(String, String)> = user.captured.into_iter().collect();
    captured.sort();
    Ok(PhaseOutcome {
        endpoints,
        captured,
        failure,
        elapsed: started.elapsed(),
    })
}

/// The first step (in step order) that failed, with its error kinds and statuses.
fn first_failure(endpoints: &[(EndpointKey, EndpointStats)]) -> Option<String> {
    let (key, s) = endpoints
        .iter()
        .find(|(k, s)| k.method != squall_common::scenario::FLOW_METHOD && s.failures > 0)?;
    let kinds: Vec<&str> = s.errors.keys().map(String::as_str).collect();
    let statuses: Vec<String> = s.status.keys().map(u16::to_string).collect();
    let answer = if statuses.is_empty() {
        "no response".to_owned()
    } else {
        format!("HTTP {}", statuses.join(", "))
    };
    Some(format!(
        "step `{}` ({}) failed: {} ({answer})",
        key.name,
        key.method,
        kinds.join(", ")
    ))
}
