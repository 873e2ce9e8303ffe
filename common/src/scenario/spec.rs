//! The resolved scenario a run is made of: every default applied, every value checked.
//!
//! A `RunSpec` travels to each worker as JSON inside `Start`; thresholds and
//! stop conditions are held parsed and travel as their text.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::check::ExpectSpec;
use crate::duration;
use crate::rate::Rate;
use crate::threshold::Threshold;
/// Everything a worker needs to run its share of one scenario; sent on the wire as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub scenario: String,
    /// Base URL, validated: `http://` or `https://host[:port]`, no trailing slash.
    pub host: String,
    /// Further named hosts (`hosts:`), validated like `host`; requests name
    /// theirs in `RequestSpec::host`, and redirects may follow onto any of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<(String, String)>,
    /// Certificate checks for an `https://` host.
    #[serde(default)]
    pub tls: TargetTls,
    #[serde(with = "duration::human")]
    pub timeout: Duration,
    #[serde(with = "duration::human")]
    pub graceful_stop: Duration,
    /// The most of a response body a user keeps to capture from; the rest
    /// of such a response fails it as `body_too_large`.
    #[serde(default = "default_max_capture_body")]
    pub max_capture_body: u64,
    /// A cookie jar per user: `Set-Cookie` answers are sent back as `Cookie`.
    #[serde(default = "yes")]
    pub cookies: bool,
    /// Redirects each request follows (0: none, a 3xx is the answer).
    #[serde(default)]
    pub redirects: u32,
    pub load: LoadModel,
    pub classes: Vec<UserClass>,
    /// Checked against the final report; each serialises as its text.
    pub thresholds: Vec<Threshold>,
    #[serde(default)]
    pub iterations: Option<u64>,
    #[serde(default)]
    pub iterations_per_user: Option<u64>,
    /// Checked against every second's figures: the first that holds stops the run.
    #[serde(default)]
    pub stop_when: Vec<Threshold>,
    /// The scenario's regression rule for comparisons with a baseline (the coordinator's alone).
    #[serde(default)]
    pub regression: crate::report::RegressionRules,
    /// The data files the classes draw rows from, read on the coordinator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feeders: Vec<super::feeder::FeederSpec>,
    /// `setup:` steps, run once by the coordinator before any user starts;
    /// workers never run them (the coordinator sends the spec without them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<FlowSpec>,
    /// `teardown:` steps, run once by the coordinator after the load stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teardown: Option<FlowSpec>,
    /// What `setup:` captured: every user starts with these variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_vars: Vec<(String, String)>,
    /// HTTP/2 to the target (HTTP/1.1 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2: Option<super::transport::Http2Spec>,
}

fn yes() -> bool {
    true
}

fn default_max_capture_body() -> u64 {
    super::size::DEFAULT_MAX_CAPTURE_BODY
}

/// Certificate checks as they travel to workers: the CA file's contents, not
/// its path, since a remote worker cannot read the coordinator's files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetTls {
    #[serde(default)]
    pub ca_pem: Option<String>,
    #[serde(default)]
    pub insecure: bool,
}

/// How load is applied over time; its `Display` is the one-line description
/// users see (the run's opening line, `list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "model")]
pub enum LoadModel {
    /// A fixed number of users, started at a spawn rate, for a duration.
    Closed {
        users: u64,
        spawn_rate: f64,
        #[serde(with = "duration::human")]
        duration: Duration,
    },
    /// Ramping user counts: linear from the previous stage's count (0 at first).
    Stages { stages: Vec<UserStage> },
    /// A fixed arrival rate of iterations, served by a pool of at most `max_users`.
    Open {
        rate: Rate,
        max_users: u64,
        #[serde(with = "duration::human")]
        duration: Duration,
    },
    /// Ramping arrival rates: linear from the previous stage's rate (0 at first).
    RampingRate {
        stages: Vec<RateStage>,
        max_users: u64,
    },
}

/// The most users a plan may run at once, or hold in an open model's pool.
/// Workers allocate per planned user (the roster), so a number this size is
/// what keeps a typo or a hostile `Start` from exhausting their memory; it is
/// ten times the largest test the design aims at.
pub const MAX_USERS: u64 = 10_000_000;

/// A load model value beyond Squall's limits: `field` is the scenario key
/// (`duration`, `stages`, `users`, `max_users`), `message` what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct LimitError {
    pub field: &'static str,
    pub message: String,
}

impl LoadModel {
    /// Planned length of the run (without the graceful stop). Stage sums
    /// saturate: a model that passed [`LoadModel::check_limits`] never gets near.
    pub fn duration(&self) -> Duration {
        match self {
            LoadModel::Closed { duration, .. } | LoadModel::Open { duration, .. } => *duration,
            LoadModel::Stages { stages } => stages
                .iter()
                .fold(Duration::ZERO, |sum, s| sum.saturating_add(s.duration)),
            LoadModel::RampingRate { stages, .. } => stages
                .iter()
                .fold(Duration::ZERO, |sum, s| sum.saturating_add(s.duration)),
        }
    }

    /// Checks what every clock and allocation downstream relies on: the plan
    /// lasts at most [`duration::MAX`] in total and runs at most [`MAX_USERS`].
    /// Resolution calls it for the file; the worker again for a `Start`.
    pub fn check_limits(&self) -> Result<(), LimitError> {
        let field = match self {
            LoadModel::Closed { .. } | LoadModel::Open { .. } => "duration",
            LoadModel::Stages { .. } | LoadModel::RampingRate { .. } => "stages",
        };
        let total = self.duration();
        if total > duration::MAX {
            return Err(LimitError {
                field,
                message: format!(
                    "the plan lasts {} in total, longer than the 30-day limit (30d)",
                    duration::format(total)
                ),
            });
        }
        let (field, users) = match self {
            LoadModel::Closed { users, .. } => ("users", *users),
            LoadModel::Stages { .. } => ("stages", self.peak_users()),
            LoadModel::Open { max_users, .. } | LoadModel::RampingRate { max_users, .. } => {
                ("max_users", *max_users)
            }
        };
        if users > MAX_USERS {
            return Err(LimitError {
                field,
                message: format!(
                    "{users} users is above the limit of {MAX_USERS} (split the test over several runs)"
                ),
            });
        }
        if let LoadModel::Closed { spawn_rate, .. } = self
            && !(spawn_rate.is_finite() && *spawn_rate > 0.0)
        {
            return Err(LimitError {
                field: "spawn_rate",
                message: format!("{spawn_rate} is not a number above 0"),
            });
        }
        Ok(())
    }

    pub fn name(&self) -> &'static str {
        match self {
            LoadModel::Closed { .. } => "closed",
            LoadModel::Stages { .. } => "stages",
            LoadModel::Open { .. } => "open",
            LoadModel::RampingRate { .. } => "ramping_rate",
        }
    }
}

impl fmt::Display for LoadModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadModel::Closed {
                users, spawn_rate, ..
            } => write!(f, "{users} users at {spawn_rate}/s"),
            LoadModel::Stages { stages } => write!(
                f,
                "{} user stages up to {} users",
                stages.len(),
                self.peak_users()
            ),
            LoadModel::Open {
                rate, max_users, ..
            } => write!(f, "{rate} arrivals, pool of {max_users} users"),
            LoadModel::RampingRate { stages, max_users } => {
                write!(f, "{} rate stages, pool of {max_users} users", stages.len())
            }
        }
    }
}

/// One stage of ramping users: the count moves linearly from the previous
/// stage's (0 at first) to `users` over `duration`.
///
/// The field names match the file's stage keys, so the wire carries the
/// same JSON object the user wrote, less the key this model does not use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UserStage {
    #[serde(with = "duration::human")]
    pub duration: Duration,
    pub users: u64,
}

/// One stage of a ramping arrival rate: the rate moves linearly from the
/// previous stage's (0 at first) to `rate` over `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateStage {
    #[serde(with = "duration::human")]
    pub duration: Duration,
    pub rate: Rate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserClass {
    pub name: String,
    pub weight: u32,
    pub wait: Option<Wait>,
    /// Variables set once per user before `on_start`, in order (templates
    /// that may use the built-ins and the variables before them).
    #[serde(default)]
    pub vars: Vec<(String, String)>,
    pub on_start: Vec<RequestSpec>,
    pub tasks: Vec<TaskSpec>,
    /// The `RunSpec::feeders` entry each user draws one row from when it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed: Option<String>,
}

impl UserClass {
    /// Every request the class may send: `on_start`, tasks, flow steps.
    pub fn requests(&self) -> impl Iterator<Item = &RequestSpec> {
        self.on_start.iter().chain(self.tasks.iter().flat_map(|t| {
            t.request.iter().chain(
                t.flow
                    .iter()
                    .flat_map(|f| f.steps.iter().filter_map(|s| s.request.as_ref())),
            )
        }))
    }

    /// The same requests, to apply a class-wide setting.
    pub fn requests_mut(&mut self) -> impl Iterator<Item = &mut RequestSpec> {
        self.on_start
            .iter_mut()
            .chain(self.tasks.iter_mut().flat_map(|t| {
                t.request.iter_mut().chain(
                    t.flow
                        .iter_mut()
                        .flat_map(|f| f.steps.iter_mut().filter_map(|s| s.request.as_mut())),
                )
            }))
    }
}

/// One thing a user may pick per iteration: a request, or a flow of steps.
/// Exactly one of `request` and `flow` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowSpec>,
}

/// The method of a flow's own report row: one per flow run, its whole duration.
/// Rows with this method are not requests, so totals leave them out.
pub const FLOW_METHOD: &str = "FLOW";

/// Whether a row of this method counts HTTP requests the target served: not
/// a flow's row, not a WebSocket row; totals, the timeline and `rps` add only these.
pub fn is_request_method(method: &str) -> bool {
    method != FLOW_METHOD && !super::ws::is_ws_method(method) && !super::sse::is_sse_method(method)
}

/// Steps run in order within one iteration; its duration is reported as
/// endpoint (`name`, [`FLOW_METHOD`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowSpec {
    pub name: String,
    pub steps: Vec<StepSpec>,
    /// Go on with the next step after a failed one (by default the flow ends there).
    #[serde(default)]
    pub continue_on_failure: bool,
}

/// One step of a flow: a request (possibly polled), then an optional pause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSpec {
    #[serde(default)]
    pub request: Option<RequestSpec>,
    #[serde(default)]
    pub poll: Option<PollSpec>,
    /// Think time after the step.
    #[serde(default)]
    pub think: Option<Wait>,
    /// A WebSocket step instead of a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws: Option<super::ws::WsStep>,
    /// The step's GET read as an event stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse: Option<super::sse::SseSpec>,
}

/// Repeat a request until `until` holds, every `every`, at most `max` times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollSpec {
    #[serde(with = "duration::human")]
    pub every: Duration,
    pub max: u32,
    pub until: ExpectSpec,
}

/// Where a capture takes its value from. A plain string is a JSON path
/// (the original form, so older specs read the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CaptureSpec {
    Path(String),
    From(CaptureFrom),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CaptureFrom {
    Json(String),
    /// A response header's value (the first one of that name).
    Header(String),
    /// The first group (or the whole match) of a regular expression over the body.
    Regex(String),
    /// A cookie the response sets (`Set-Cookie: NAME=value`).
    Cookie(String),
}

/// A request with every default applied; templates are still unrendered text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestSpec {
    /// The endpoint name reports group by: the given name or `METHOD path`.
    pub name: String,
    pub method: String,
    pub path: String,
    /// The base URL this request goes to (from `host: NAME` or an absolute
    /// URL), validated like `RunSpec::host`; the run's `host` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub headers: Vec<(String, String)>,
    /// Headers inherited from `defaults` or the user class: sent only once the
    /// variables they use exist, so a class-wide `Authorization: Bearer {{ token }}`
    /// does not break the `on_start` login that captures the token.
    #[serde(default)]
    pub optional_headers: Vec<String>,
    pub body: Option<Body>,
    /// Statuses that count as success; empty means any status below 400.
    /// Single codes only: `expect.status` holds ranges too and wins when set.
    pub expect_status: Vec<u16>,
    /// Every check of `expect:` (statuses and ranges, headers, body, JSON, latency).
    #[serde(default)]
    pub expect: ExpectSpec,
    /// Query parameters appended to the path, percent-encoded (templates allowed).
    #[serde(default)]
    pub query: Vec<(String, String)>,
    /// Redirects this request follows (the run's `redirects` when absent).
    #[serde(default)]
    pub redirects: Option<u32>,
    /// This request's own timeout (the run's `timeout` when absent).
    #[serde(default, with = "duration::human_opt")]
    pub timeout: Option<Duration>,
    pub capture: Vec<(String, CaptureSpec)>,
    /// A new connection for this request, closed after it (`connection: close`);
    /// None until the class and `defaults` are applied, then false for keep-alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    Json(serde_json::Value),
    Text(String),
    /// `application/x-www-form-urlencoded` pairs (templates allowed).
    Form(Vec<(String, String)>),
    /// A generated body of this many bytes, built on the worker.
    Generated(u64),
    /// A file's bytes, read on the coordinator, as standard Base64.
    File(String),
}

/// The largest `body_size:`: built once per worker, sent as often as asked.
pub const MAX_GENERATED_BODY: u64 = 64 << 20;

/// The largest `body_file:`: it travels inside the `Start` message, which is
/// at most 16 MiB, beside the rest of the scenario.
pub const MAX_BODY_FILE: u64 = 4 << 20;

/// The most a `RunSpec` may take as JSON: it travels inside `Start`, whose
/// gRPC message is capped at 16 MiB; the rest of `Start` (run id, share,
/// seed) takes bytes, not megabytes, so 1 MiB is left for it.
pub const MAX_SPEC_BYTES: usize = 15 << 20;

impl RequestSpec {
    /// Whether `status` counts as a success for this request.
    pub fn status_ok(&self, status: u16) -> bool {
        if !self.expect.status.is_empty() {
            self.expect.status_ok(status)
        } else if self.expect_status.is_empty() {
            status < 400
        } else {
            self.expect_status.contains(&status)
        }
    }
}

impl RunSpec {
    /// Every endpoint (name, method) the run can hit, in a stable order, deduplicated.
    pub fn endpoints(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for class in &self.classes {
            let mut add = |key: (String, String)| {
                if !out.contains(&key) {
                    out.push(key);
                }
            };
            for r in &class.on_start {
                add((r.name.clone(), r.method.clone()));
            }
            for t in &class.tasks {
                if let Some(r) = &t.request {
                    add((r.name.clone(), r.method.clone()));
                }
                if let Some(f) = &t.flow {
                    for s in &f.steps {
                        if let Some(r) = &s.request {
                            add((r.name.clone(), r.method.clone()));
                            if s.sse.is_some() {
                                for key in super::sse::SseSpec::endpoints(&r.name) {
                                    add(key);
                                }
                            }
                        }
                        for key in s.ws.iter().flat_map(super::ws::WsStep::endpoints) {
                            add(key);
                        }
                    }
                    add((f.name.clone(), FLOW_METHOD.to_owned()));
                }
            }
        }
        out
    }

    pub fn class_weights(&self) -> Vec<u64> {
        self.classes.iter().map(|c| u64::from(c.weight)).collect()
    }
}

/// Think time between a user's iterations.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Wait {
    /// The same pause after every iteration.
    Constant(#[serde(with = "duration::human")] Duration),
    /// A uniformly random pause in `[min, max]`.
    Between(
        #[serde(with = "duration::human")] Duration,
        #[serde(with = "duration::human")] Duration,
    ),
    /// Each iteration starts this long after the previous one started.
    Pacing(#[serde(with = "duration::human")] Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_stages_travel_as_written() {
        let json = r#"{"model":"stages","stages":[{"duration":"10s","users":5,"rate":null}]}"#;
        let load: LoadModel = serde_json::from_str(json).expect("the former wire form reads");
        assert_eq!(
            load,
            LoadModel::Stages {
                stages: vec![UserStage {
                    duration: Duration::from_secs(10),
                    users: 5
                }]
            }
        );
        let t: Vec<Threshold> =
            serde_json::from_str(r#"["p99 < 200ms", "checkout: error_rate < 1%, abort"]"#)
                .expect("parses");
        assert!(t[1].abort);
        assert_eq!(
            serde_json::to_string(&t).expect("serialises"),
            r#"["p99 < 200ms","checkout: error_rate < 1%, abort"]"#
        );
        let err = serde_json::from_str::<Vec<Threshold>>(r#"["p75 < 1s"]"#).expect_err("refused");
        assert!(err.to_string().contains("unknown metric"), "{err}");
    }

    #[test]
    fn stage_sums_saturate_and_are_checked() {
        let long = UserStage {
            duration: duration::MAX,
            users: 1,
        };
        let many = LoadModel::Stages {
            stages: vec![long; 4],
        };
        assert_eq!(many.duration(), duration::MAX * 4);
        let err = many.check_limits().expect_err("120 days");
        assert_eq!(err.field, "stages");
        assert!(err.to_string().contains("30-day limit"), "{err}");
        // Beyond what a Duration holds: saturates instead of panicking.
        let huge = UserStage {
            duration: Duration::MAX,
            users: 1,
        };
        let overflow = LoadModel::Stages {
            stages: vec![huge; 2],
        };
        assert_eq!(overflow.duration(), Duration::MAX);
        assert!(overflow.check_limits().is_err());
        let crowd = LoadModel::Open {
            rate: Rate { per_second: 1.0 },
            max_users: MAX_USERS + 1,
            duration: Duration::from_secs(1),
        };
        assert_eq!(crowd.check_limits().map_err(|e| e.field), Err("max_users"));
    }

    #[test]
    fn one_description_per_load_model() {
        let rate = Rate { per_second: 50.0 };
        let d = Duration::from_secs(10);
        let cases = [
            (
                LoadModel::Closed {
                    users: 10,
                    spawn_rate: 2.5,
                    duration: d,
                },
                "10 users at 2.5/s",
            ),
            (
                LoadModel::Stages {
                    stages: vec![
                        UserStage {
                            duration: d,
                            users: 40,
                        },
                        UserStage {
                            duration: d,
                            users: 0,
                        },
                    ],
                },
                "2 user stages up to 40 users",
            ),
            (
                LoadModel::Open {
                    rate,
                    max_users: 100,
                    duration: d,
                },
                "50/s arrivals, pool of 100 users",
            ),
            (
                LoadModel::RampingRate {
                    stages: vec![RateStage { duration: d, rate }],
                    max_users: 7,
                },
                "1 rate stages, pool of 7 users",
            ),
        ];
        for (load, text) in cases {
            assert_eq!(load.to_string(), text);
        }
    }
}
