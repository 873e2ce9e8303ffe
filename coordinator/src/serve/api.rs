//! The REST API's handlers: workers, runs (start, status, stop, list, report files), baselines,
//! the live stream and `/metrics`; each answers untrusted input with a 4xx and a JSON `error`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use squall_common::RunSpec;
use squall_common::rate::Rate;
use squall_common::scenario::{Loaded, Overrides};

use super::App;
use super::store::{BaselineRecord, RunRecord, StoreError, valid_baseline_name, valid_run_id};
use crate::cluster::MemberView;
use crate::report::LiveView;

/// The name posted scenario files go by in error messages (`posted scenario:3:7: ...`).
const POSTED: &str = "posted scenario";

/// A JSON error: `{"error": "..."}` plus, for a conflict, the running run's id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    pub(super) status: StatusCode,
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            running: None,
        }
    }

    fn bad(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error)
    }

    fn not_found(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(&self)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NoRun(_) | StoreError::NoReport(_) => ApiError::not_found(e.to_string()),
            StoreError::Invalid(_) => ApiError::bad(e.to_string()),
            StoreError::Io { .. } => {
                tracing::error!("serve: {e}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

/// What to run: a scenario of the `-f` file by name, or a posted scenario file, with overrides.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// Scenario name (may be left out when the file has only one).
    pub scenario: Option<String>,
    /// A whole scenario file: YAML or JSON text, or the file as a JSON object. Without it, the `-f` file.
    #[schema(value_type = Option<Object>)]
    pub file: Option<serde_json::Value>,
    pub users: Option<u64>,
    pub spawn_rate: Option<f64>,
    /// e.g. `500/s`.
    pub arrival_rate: Option<String>,
    /// e.g. `30s`, `5m`.
    pub duration: Option<String>,
    /// Target base URL, replacing the file's `host`.
    pub host: Option<String>,
    /// Extra thresholds, e.g. `p99 < 200ms`.
    #[serde(default)]
    pub thresholds: Vec<String>,
}

/// Overrides in the query string, for a scenario file posted as YAML.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StartQuery {
    pub scenario: Option<String>,
    pub users: Option<u64>,
    pub spawn_rate: Option<f64>,
    pub arrival_rate: Option<String>,
    pub duration: Option<String>,
    pub host: Option<String>,
    /// One extra threshold.
    pub threshold: Option<String>,
}

/// A run as the API shows it: its record and, while it goes on (or after, until the next), its live view.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunStatus {
    #[serde(flatten)]
    pub run: RunRecord,
    pub live: Option<LiveView>,
}

/// Where to save a run as a baseline.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BaselineRequest {
    /// 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with a dot.
    pub name: String,
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    if valid_run_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "`{}` is not a run id (12 lowercase hex digits)",
            id.chars().take(40).collect::<String>()
        )))
    }
}

/// The attached workers.
#[utoipa::path(get, path = "/api/workers", responses((status = 200, body = [MemberView])))]
pub async fn workers(State(app): State<Arc<App>>) -> Json<Vec<MemberView>> {
    Json(app.members.borrow().clone())
}

/// Runs listed when the query names no `limit`: weeks of serve mode keep
/// thousands of runs on disk, and the run list (the dashboard polls it) should
/// not grow with them.
pub const RUNS_LISTED: usize = 100;
/// The most runs one list may hold.
pub const MAX_RUNS_LISTED: usize = 1000;

/// How many runs `GET /api/runs` lists.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The newest this many runs (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// The newest runs kept under `--data`, newest first: `limit` of them.
#[utoipa::path(get, path = "/api/runs", params(ListQuery),
    responses((status = 200, body = [RunRecord]), (status = 400, body = ApiError)))]
pub async fn runs(
    State(app): State<Arc<App>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<RunRecord>>, ApiError> {
    let query = query.map_err(|e| ApiError::bad(e.body_text()))?.0;
    let limit = query.limit.unwrap_or(RUNS_LISTED);
    if !(1..=MAX_RUNS_LISTED).contains(&limit) {
        return Err(ApiError::bad(format!(
            "limit must be 1 to {MAX_RUNS_LISTED}, not {limit}"
        )));
    }
    let mut runs = app.store.list()?;
    runs.truncate(limit);
    Ok(Json(runs))
}

/// Starts a run. JSON body: a [`StartRequest`]; YAML body (`Content-Type: application/yaml`):
/// a scenario file, with overrides in the query string.
#[utoipa::path(post, path = "/api/runs", request_body = StartRequest, params(StartQuery),
    responses((status = 202, body = RunRecord), (status = 400, body = ApiError),
        (status = 409, description = "a run is going on", body = ApiError),
        (status = 413, description = "body over 1 MiB"), (status = 503, body = ApiError)))]
pub async fn start(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<StartQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<(StatusCode, Json<RunRecord>), ApiError> {
    let query = query.map_err(|e| ApiError::bad(e.body_text()))?.0;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let req = if ctype.contains("yaml") {
        let text = std::str::from_utf8(&body)
            .map_err(|_| ApiError::bad("the scenario file is not UTF-8"))?;
        StartRequest {
            scenario: query.scenario,
            file: Some(serde_json::Value::String(text.to_owned())),
            users: query.users,
            spawn_rate: query.spawn_rate,
            arrival_rate: query.arrival_rate,
            duration: query.duration,
            host: query.host,
            thresholds: query.threshold.into_iter().collect(),
        }
    } else if ctype.starts_with("application/json") {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("request body: {e}")))?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/json (a start request) or application/yaml (a scenario file)",
        ));
    };
    let spec = resolve(&app, req)?;
    let record = app.begin(spec)?;
    Ok((StatusCode::ACCEPTED, Json(record)))
}

/// The scenario the request names, checked with its overrides exactly as the command line checks them.
fn resolve(app: &App, req: StartRequest) -> Result<RunSpec, ApiError> {
    let overrides = Overrides {
        host: req.host,
        users: req.users,
        spawn_rate: req.spawn_rate,
        duration: req
            .duration
            .as_deref()
            .map(|d| {
                squall_common::duration::parse(d)
                    .map_err(|e| ApiError::bad(format!("duration: {e}")))
            })
            .transpose()?,
        arrival_rate: req
            .arrival_rate
            .as_deref()
            .map(|r| Rate::parse(r).map_err(|e| ApiError::bad(format!("arrival_rate: {e}"))))
            .transpose()?,
        thresholds: req.thresholds,
    };
    let posted;
    let loaded = match req.file {
        Some(serde_json::Value::String(text)) => {
            posted = Loaded::posted(POSTED, &text).map_err(|e| ApiError::bad(e.to_string()))?;
            &posted
        }
        Some(v @ serde_json::Value::Object(_)) => {
            let text =
                serde_json::to_string_pretty(&v).map_err(|e| ApiError::bad(e.to_string()))?;
            posted = Loaded::posted(POSTED, &text).map_err(|e| ApiError::bad(e.to_string()))?;
            &posted
        }
        Some(_) => {
            return Err(ApiError::bad(
                "file: expected the scenario file as a string (YAML or JSON) or an object",
            ));
        }
        None => app.loaded.as_ref().ok_or_else(|| {
            ApiError::bad(
                "no scenario file: post one (`file`), or start `coordinator serve -f FILE`",
            )
        })?,
    };
    let name = loaded
        .pick(req.scenario.as_deref())
        .map_err(|e| ApiError::bad(e.to_string()))?;
    loaded
        .resolve(name, &overrides, false)
        .map_err(|e| ApiError::bad(e.to_string()))
}

/// A run's record and live view.
#[utoipa::path(get, path = "/api/runs/{id}", params(("id" = String, Path)),
    responses((status = 200, body = RunStatus), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub async fn status(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<RunStatus>, ApiError> {
    checked_id(&id)?;
    let run = app
        .store
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    let live = app
        .live
        .borrow()
        .as_ref()
        .filter(|v| v.run_id == id)
        .map(|v| (**v).clone());
    Ok(Json(RunStatus { run, live }))
}

/// Asks the running run to stop; it collects the last snapshots and writes its report.
#[utoipa::path(post, path = "/api/runs/{id}/stop", params(("id" = String, Path)),
    responses((status = 202, body = RunRecord), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub async fn stop(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<RunRecord>), ApiError> {
    checked_id(&id)?;
    if let Some(record) = app.stop(&id) {
        return Ok((StatusCode::ACCEPTED, Json(record)));
    }
    match app.store.get(&id) {
        Some(r) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("run {id} is not running (it is {:?})", r.state).to_lowercase(),
        )),
        None => Err(ApiError::not_found(format!("no run {id}"))),
    }
}

/// One of a run's report files: report.json, report.html, timeline.csv, summary.txt.
#[utoipa::path(get, path = "/api/runs/{id}/{file}", params(("id" = String, Path), ("file" = String, Path)),
    responses((status = 200, description = "the file"), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub async fn file(
    State(app): State<Arc<App>>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    checked_id(&id)?;
    let (ctype, bytes) = app.store.file(&id, &name)?;
    Ok(([(header::CONTENT_TYPE, ctype)], bytes).into_response())
}

/// Saves a finished run's report.json as `baselines/NAME.json`.
#[utoipa::path(post, path = "/api/runs/{id}/baseline", params(("id" = String, Path)), request_body = BaselineRequest,
    responses((status = 201, body = BaselineRecord), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub async fn save_baseline(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<BaselineRecord>), ApiError> {
    checked_id(&id)?;
    let req: BaselineRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("request body: {e}")))?;
    let saved = app.store.save_baseline(&id, &req.name)?;
    Ok((StatusCode::CREATED, Json(saved)))
}

/// `?regression=RULE` on a comparison, in the syntax of `--regression`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct CompareQuery {
    /// When a change is a regression (default: latency +20 %, requests/s −20 %, error rate +1 point).
    pub regression: Option<String>,
}

/// A finished run compared with a saved baseline (by name) or with another
/// run (by id): the same comparison as `coordinator compare`, as the
/// `comparison` section of report.json.
#[utoipa::path(get, path = "/api/runs/{id}/compare/{base}",
    params(("id" = String, Path), ("base" = String, Path, description = "a baseline's name or a run id"), CompareQuery),
    responses((status = 200, description = "the comparison (report.json's `comparison`)"),
        (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub async fn compare(
    State(app): State<Arc<App>>,
    Path((id, base)): Path<(String, String)>,
    Query(q): Query<CompareQuery>,
) -> Result<Response, ApiError> {
    checked_id(&id)?;
    let new = run_report(&app, &id)?;
    let (source, base_report) = if valid_run_id(&base) && app.store.get(&base).is_some() {
        (format!("run {base}"), run_report(&app, &base)?)
    } else if valid_baseline_name(&base) {
        let bytes = app
            .store
            .baseline(&base)
            .ok_or_else(|| ApiError::not_found(format!("no baseline or run `{base}`")))?;
        let report = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad(format!("baseline `{base}` is not a report: {e}")))?;
        (base.clone(), report)
    } else {
        return Err(ApiError::bad(
            "the base must be a baseline's name or a run id (letters, digits, `-`, `_`, `.`)",
        ));
    };
    let mut rules = squall_common::report::RegressionRules::default();
    if let Some(text) = &q.regression {
        rules
            .apply(text)
            .map_err(|e| ApiError::bad(format!("regression: {e}")))?;
    }
    let mut comparison = crate::report::compare::compare(&base_report, &new, &rules);
    comparison.baseline.source = source;
    Ok(Json(comparison).into_response())
}

/// A finished run's report, read back from its report.json.
fn run_report(app: &App, id: &str) -> Result<squall_common::Report, ApiError> {
    let (_, bytes) = app.store.file(id, "report.json")?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad(format!("run {id}'s report.json cannot be read: {e}")))
}

/// The saved baselines.
#[utoipa::path(get, path = "/api/baselines", responses((status = 200, body = [BaselineRecord])))]
pub async fn baselines(State(app): State<Arc<App>>) -> Result<Json<Vec<BaselineRecord>>, ApiError> {
    Ok(Json(app.store.baselines()?))
}

/// A baseline's report.json.
#[utoipa::path(get, path = "/api/baselines/{name}", params(("name" = String, Path)),
    responses((status = 200, description = "report.json"), (status = 404, body = ApiError)))]
pub async fn baseline(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let bytes = app
        .store
        .baseline(&name)
        .ok_or_else(|| ApiError::not_found("no such baseline"))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// The current (or last) run's live view, once.
#[utoipa::path(get, path = "/api/live", responses((status = 200, body = Option<LiveView>)))]
pub async fn live(State(app): State<Arc<App>>) -> Json<Option<LiveView>> {
    Json(app.live.borrow().as_ref().map(|v| (**v).clone()))
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "OpenMetrics text")))]
pub async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    crate::metrics::response(&app.metrics, &headers)
}

/// Unknown API paths: JSON, like every other error.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint (see /api/openapi.json)")
}
