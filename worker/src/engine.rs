//! The load engine: thread-per-core runtimes, each running its share of users and recording locally.
//!
//! Users never migrate between threads and record into their thread's own
//! `Recorder`, so the per-request path has no locks and no cross-thread
//! messages; the agent collects each thread's interval delta once a second.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use squall_common::EndpointStats;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinSet, LocalSet};

use crate::prepared::PreparedRun;
use crate::recorder::{Recorder, SampleLog};
use crate::user::{ThreadCtx, run_user};

enum Cmd {
    Spawn {
        class: usize,
        user_id: u64,
    },
    Flush(oneshot::Sender<Vec<EndpointStats>>),
    Stop {
        graceful: Duration,
        done: oneshot::Sender<()>,
    },
}

struct Thread {
    tx: mpsc::UnboundedSender<Cmd>,
}

/// Settings for one run's engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub threads: usize,
    pub seed: u64,
    pub worker_index: u32,
    pub samples: Option<SampleLog>,
}

pub struct Engine {
    threads: Vec<Thread>,
    active: Arc<AtomicU64>,
    endpoints: usize,
    next: usize,
}

impl Engine {
    pub fn start(
        run: Arc<PreparedRun>,
        addr: SocketAddr,
        active: Arc<AtomicU64>,
        opts: EngineOptions,
    ) -> std::io::Result<Engine> {
        let mut threads = Vec::new();
        for i in 0..opts.threads.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            let run = run.clone();
            let active = active.clone();
            let opts = opts.clone();
            std::thread::Builder::new()
                .name(format!("squall-engine-{i}"))
                .spawn(move || thread_main(rx, run, addr, active, opts))?;
            threads.push(Thread { tx });
        }
        Ok(Engine {
            threads,
            active,
            endpoints: run.endpoints.len(),
            next: 0,
        })
    }

    /// Starts one user on the next thread (round-robin).
    pub fn spawn_user(&mut self, class: usize, user_id: u64) {
        let t = &self.threads[self.next % self.threads.len()];
        self.next += 1;
        let _ = t.tx.send(Cmd::Spawn { class, user_id });
    }

    pub fn active_users(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Collects and merges every thread's stats since the previous flush.
    pub async fn flush(&self) -> Vec<EndpointStats> {
        let mut merged: Vec<EndpointStats> =
            (0..self.endpoints).map(|_| EndpointStats::new()).collect();
        let mut replies = Vec::new();
        for t in &self.threads {
            let (tx, rx) = oneshot::channel();
            if t.tx.send(Cmd::Flush(tx)).is_ok() {
                replies.push(rx);
            }
        }
        for rx in replies {
            if let Ok(stats) = rx.await {
                for (m, s) in merged.iter_mut().zip(stats.iter()) {
                    // Same bounds on both sides: merging cannot fail.
                    let _ = m.merge(s);
                }
            }
        }
        merged
    }

    /// Stops every user: no new requests; in-flight ones get `graceful` to finish,
    /// then are cut off and counted as interrupted.
    pub async fn stop(&self, graceful: Duration) {
        let mut waits = Vec::new();
        for t in &self.threads {
            let (tx, rx) = oneshot::channel();
            if t.tx.send(Cmd::Stop { graceful, done: tx }).is_ok() {
                waits.push(rx);
            }
        }
        for rx in waits {
            let _ = rx.await;
        }
    }
}

fn thread_main(
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    run: Arc<PreparedRun>,
    addr: SocketAddr,
    active: Arc<AtomicU64>,
    opts: EngineOptions,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("engine thread could not start a runtime: {e}");
            return;
        }
    };
    let local = LocalSet::new();
    local.block_on(&rt, async move {
        let (stop_tx, stop_rx) = watch::channel(false);
        let endpoints = run.endpoints.len();
        let ctx = Rc::new(ThreadCtx {
            run,
            addr,
            recorder: Rc::new(RefCell::new(Recorder::new(endpoints, opts.samples))),
            stop: stop_rx,
            active,
            worker_index: opts.worker_index,
            seed: opts.seed,
        });
        let mut users = JoinSet::new();
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Cmd::Spawn { class, user_id } => {
                    if !*stop_tx.borrow() {
                        users.spawn_local(run_user(ctx.clone(), class, user_id));
                    }
                }
                Cmd::Flush(reply) => {
                    let _ = reply.send(ctx.recorder.borrow_mut().take());
                }
                Cmd::Stop { graceful, done } => {
                    let _ = stop_tx.send(true);
                    let drain = async { while users.join_next().await.is_some() {} };
                    if tokio::time::timeout(graceful, drain).await.is_err() {
                        users.abort_all();
                        while users.join_next().await.is_some() {}
                    }
                    let _ = done.send(());
                }
            }
        }
        // The engine was dropped: cut every user off (their guards still record).
        users.abort_all();
        while users.join_next().await.is_some() {}
    });
}
