//! `coordinator serve`: a standing cluster that workers stay attached to between runs, driven over
//! HTTP (REST API, live dashboard, Prometheus `/metrics`), one run at a time, each kept under `--data`.

mod api;
pub mod auth;
mod dashboard;
mod openapi;
mod sse;
mod store;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use squall_common::RunSpec;
use tokio::sync::{Notify, mpsc, watch};

use crate::cluster::{Cluster, MemberView};
use crate::config::ServeConfig;
use crate::controller::{self, RunOptions};
use crate::error::CoordinatorError;
use crate::interrupt::Interrupts;
use crate::metrics::{MetricsSource, Verdicts};
use crate::report::{LiveSender, LiveView};
use crate::{Verdict, worker_text};
use api::ApiError;
use store::{RunRecord, RunState, Store};

/// Largest request body the API reads; larger ones get 413 before they are read whole.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The run going on now.
#[derive(Debug)]
struct Current {
    record: RunRecord,
    stop: Arc<Notify>,
}

/// A run the API accepted, for the manager to start.
struct Job {
    spec: RunSpec,
    record: RunRecord,
    stop: Arc<Notify>,
}

/// What the HTTP handlers share.
pub struct App {
    store: Store,
    loaded: Option<squall_common::scenario::Loaded>,
    live: watch::Receiver<Option<Arc<LiveView>>>,
    members: watch::Receiver<Vec<MemberView>>,
    current: Mutex<Option<Current>>,
    jobs: mpsc::Sender<Job>,
    metrics: MetricsSource,
}

impl App {
    /// Takes the run if none is going on and workers are attached (409 and 503 otherwise).
    fn begin(&self, spec: RunSpec) -> Result<RunRecord, ApiError> {
        let mut current = self
            .current
            .lock()
            .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "state poisoned"))?;
        if let Some(c) = current.as_ref() {
            return Err(ApiError {
                running: Some(c.record.run_id.clone()),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "run {} is going on; one run at a time (stop it with POST /api/runs/{}/stop)",
                        c.record.run_id, c.record.run_id
                    ),
                )
            });
        }
        if self.members.borrow().is_empty() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no worker is attached: start workers with `worker --master HOST:PORT`",
            ));
        }
        let record = RunRecord {
            run_id: controller::new_run_id(),
            scenario: spec.scenario.clone(),
            target: spec.host.clone(),
            started_at: now(),
            state: RunState::Running,
            passed: None,
            partial: false,
            requests: None,
            failures: None,
            rps: None,
            p95_ms: None,
            duration_s: None,
            error: None,
        };
        self.store.put(&record)?;
        let stop = Arc::new(Notify::new());
        self.jobs
            .try_send(Job {
                spec,
                record: record.clone(),
                stop: stop.clone(),
            })
            .map_err(|_| {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping")
            })?;
        *current = Some(Current {
            record: record.clone(),
            stop,
        });
        Ok(record)
    }

    /// Asks run `id` to stop, if it is the one going on.
    fn stop(&self, id: &str) -> Option<RunRecord> {
        let current = self.current.lock().ok()?;
        let c = current.as_ref().filter(|c| c.record.run_id == id)?;
        c.stop.notify_one();
        Some(c.record.clone())
    }

    fn finished(&self) {
        if let Ok(mut c) = self.current.lock() {
            *c = None;
        }
    }
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The HTTP routes: the dashboard page and the OpenAPI document are open, everything else needs the token.
fn router(app: Arc<App>, token: Option<String>) -> Router {
    let protected = Router::new()
        .route("/api/workers", get(api::workers))
        .route("/api/runs", get(api::runs).post(api::start))
        .route("/api/runs/{id}", get(api::status))
        .route("/api/runs/{id}/stop", post(api::stop))
        .route("/api/runs/{id}/baseline", post(api::save_baseline))
        .route("/api/runs/{id}/compare/{base}", get(api::compare))
        .route("/api/runs/{id}/{file}", get(api::file))
        .route("/api/baselines", get(api::baselines))
        .route("/api/baselines/{name}", get(api::baseline))
        .route("/api/live", get(api::live))
        .route("/api/events", get(sse::events))
        .route("/metrics", get(api::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::new(token),
            auth::require,
        ));
    Router::new()
        .route("/", get(dashboard::page))
        .route("/api/openapi.json", get(openapi::document))
        .merge(protected)
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

/// Runs `coordinator serve` until interrupted: a run going on then stops and keeps its report.
pub async fn serve(cfg: ServeConfig) -> Result<Verdict, CoordinatorError> {
    let mut interrupts = Interrupts::watch();
    let store = Store::open(&cfg.data)
        .map_err(|e| CoordinatorError::Usage(format!("--data {}: {e}", cfg.data.display())))?;
    let mut cluster = Cluster::start(cfg.bind, cfg.token.clone(), cfg.heartbeats).await?;
    let members = cluster.watch_members();
    let http = tokio::net::TcpListener::bind(cfg.http)
        .await
        .map_err(|source| CoordinatorError::Bind {
            addr: cfg.http.to_string(),
            source,
        })?;
    let http_addr = http.local_addr().map_err(|source| CoordinatorError::Bind {
        addr: cfg.http.to_string(),
        source,
    })?;
    let (live_tx, live) = watch::channel(None);
    let verdicts: Verdicts = Arc::default();
    let (jobs_tx, jobs) = mpsc::channel(1);
    let app = Arc::new(App {
        store,
        loaded: cfg.loaded,
        live: live.clone(),
        members: members.clone(),
        current: Mutex::new(None),
        jobs: jobs_tx,
        metrics: MetricsSource {
            live,
            members: Some(members),
            verdicts: verdicts.clone(),
        },
    });
    eprintln!("coordinator listening on {} for workers", cluster.addr());
    eprintln!(
        "serve: dashboard and REST API on http://{http_addr}/ (runs kept in {})",
        cfg.data.display()
    );
    let routes = router(app.clone(), cfg.token);
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(http, routes).await {
            tracing::error!("HTTP server stopped: {e}");
        }
    });
    manage(
        &mut cluster,
        &app,
        jobs,
        &live_tx,
        &verdicts,
        &mut interrupts,
    )
    .await;
    server.abort();
    eprintln!("serve: interrupted; stopped");
    Ok(Verdict::Passed)
}

/// Owns the cluster: keeps membership current between runs and runs each accepted job in turn.
async fn manage(
    cluster: &mut Cluster,
    app: &App,
    mut jobs: mpsc::Receiver<Job>,
    live: &LiveSender,
    verdicts: &Verdicts,
    interrupts: &mut Interrupts,
) {
    while !interrupts.any() {
        tokio::select! {
            job = jobs.recv() => match job {
                Some(job) => run_job(cluster, app, job, live, verdicts).await,
                None => return,
            },
            ev = cluster.next() => if ev.is_none() { return },
            () = interrupts.arrived() => return,
        }
    }
}

/// One run on the attached workers; its report (or why there is none) is kept in the store.
async fn run_job(
    cluster: &mut Cluster,
    app: &App,
    job: Job,
    live: &LiveSender,
    verdicts: &Verdicts,
) {
    let Job {
        spec,
        mut record,
        stop,
    } = job;
    let options = RunOptions {
        headless: true,
        rebalance: true,
        live: Some(live.clone()),
        run_id: Some(record.run_id.clone()),
        stop: Some(stop),
    };
    let outcome = controller::run_scenario(cluster, &spec, options).await;
    let kept = match outcome {
        Ok(result) => {
            if let Ok(mut v) = verdicts.lock() {
                *v = Some((spec.scenario.clone(), result.report.thresholds.clone()));
            }
            if result.all_lost {
                record.error = Some("every worker was lost; the report is partial".into());
            }
            app.store.finish(record.clone(), &result.report).map(|r| {
                eprintln!(
                    "serve: run {} done: {} requests, {}",
                    r.run_id,
                    result.report.totals.requests,
                    if result.report.passed {
                        "passed"
                    } else {
                        "thresholds failed"
                    }
                );
            })
        }
        Err(e) => {
            eprintln!("serve: run {} could not complete: {e}", record.run_id);
            record.state = RunState::Failed;
            record.error = Some(worker_text::clean(&e.to_string()));
            app.store.put(&record)
        }
    };
    if let Err(e) = kept {
        eprintln!("serve: run {}: cannot keep its report: {e}", record.run_id);
        record.state = RunState::Failed;
        record.error = Some(e.to_string());
        let _ = app.store.put(&record);
    }
    app.finished();
}
