//! Resolution: one named scenario of a parsed file, with command-line overrides
//! and defaults applied, checked and turned into a [`RunSpec`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::ScenarioError;
use super::feeder::{FeedMode, FeederSpec, MAX_FEEDER_BYTES, MAX_FEEDER_ROWS};
use super::file::{
    Expect, RequestDef, ScenarioDef, ScenarioFile, StageDef, StatusItem, StatusSet, UserClassDef,
};
use super::size::DEFAULT_MAX_CAPTURE_BODY;
use super::spec::{
    Body, CaptureFrom, CaptureSpec, FlowSpec, LoadModel, MAX_BODY_FILE, MAX_GENERATED_BODY,
    MAX_SPEC_BYTES, PollSpec, RateStage, RequestSpec, RunSpec, StepSpec, TargetTls, TaskSpec,
    UserClass, UserStage, Wait,
};
use super::transport::{ConnectionDef, Http2Spec};
use crate::capture::JsonPath;
use crate::check::{COND_KEYS, Cond, ExpectSpec};
use crate::rate::Rate;
use crate::template::{BUILT_INS, Template};
use crate::threshold::Threshold;

pub(super) mod setup;

/// The most redirects one request may follow.
pub const MAX_REDIRECTS: u32 = 20;

/// The most attempts one `poll:` may make.
pub const MAX_POLL_ATTEMPTS: u32 = 10_000;

/// The variables a template may use at one place of a class: `strict` for
/// what is sure to exist there, `all` for what exists somewhere in the class
/// (inherited headers wait for their variables, so they only need `all`).
pub(super) struct Known<'a> {
    pub(super) class: &'a str,
    pub(super) strict: BTreeSet<String>,
    pub(super) all: &'a BTreeSet<String>,
}

/// Values given on the command line that replace the file's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub host: Option<String>,
    pub users: Option<u64>,
    pub spawn_rate: Option<f64>,
    pub duration: Option<Duration>,
    pub arrival_rate: Option<Rate>,
    pub thresholds: Vec<String>,
}

/// A parsed scenario file and where it came from (for error messages).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: String,
    pub def: ScenarioFile,
    /// The file's text, to point at the line of a mistake found after parsing.
    text: String,
    /// Every feeder the file declares, its data read and checked once.
    feeders: Vec<FeederSpec>,
    /// Where `body_file`, feeder files and `tls.ca` are read from (the
    /// scenario file's directory); `None` for a scenario that came over the
    /// network, which may not read the coordinator's files.
    base: Option<PathBuf>,
}

impl Loaded {
    pub fn from_path(path: &Path) -> Result<Self, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            file: file.clone(),
            source,
        })?;
        Self::from_str(&file, &text)
    }

    /// Parses and validates everything that can be checked without overrides.
    pub fn from_str(file: &str, text: &str) -> Result<Self, ScenarioError> {
        Self::from_str_with_env(file, text, &|name| std::env::var(name).ok())
    }

    /// [`Loaded::from_str`] with `env` answering `{{ env("NAME") }}`: the
    /// values are put into the templates here, on the coordinator, so they
    /// travel to the workers with the scenario.
    pub fn from_str_with_env(
        file: &str,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ScenarioError> {
        let base = Path::new(file).parent().unwrap_or(Path::new("")).to_owned();
        Self::load(file, text, env, Some(base))
    }

    /// A scenario posted to serve mode's API: like [`Loaded::from_str`], but
    /// `body_file`, feeder files and `tls.ca` are refused, so that whoever
    /// holds the API token cannot have the coordinator read its own files
    /// and send them to a target of their choosing.
    pub fn posted(file: &str, text: &str) -> Result<Self, ScenarioError> {
        Self::load(file, text, &|name| std::env::var(name).ok(), None)
    }

    fn load(
        file: &str,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        base: Option<PathBuf>,
    ) -> Result<Self, ScenarioError> {
        let mut def = ScenarioFile::parse(file, text)?;
        let mut loaded = Loaded {
            file: file.to_owned(),
            def: def.clone(),
            text: text.to_owned(),
            feeders: Vec::new(),
            base,
        };
        super::env::expand(&mut def, env)
            .map_err(|(path, needle, message)| loaded.located(&path, &needle, message))?;
        loaded.def = def;
        loaded.feeders = loaded.load_feeders()?;
        for (name, _) in &loaded.def.scenarios {
            loaded.resolve(name, &Overrides::default(), true)?;
        }
        if loaded.def.scenarios.is_empty() {
            return Err(loaded.invalid("scenarios", "at least one scenario is required"));
        }
        Ok(loaded)
    }

    /// Reads every declared feeder's file (relative to the scenario file) and
    /// checks the limits on what travels with the run.
    fn load_feeders(&self) -> Result<Vec<FeederSpec>, ScenarioError> {
        let mut out = Vec::new();
        let mut rows = 0usize;
        for (name, def) in &self.def.feeders {
            let at = format!("feeders.{name}");
            if !crate::template::is_name(name) {
                return Err(self.located(
                    &at,
                    name,
                    format!("`{name}` is not a feeder name: use letters, digits, `_` and `-`, starting with a letter or `_`"),
                ));
            }
            if def.on_exhausted.is_some() && def.mode != FeedMode::Unique {
                return Err(self.located(
                    format!("{at}.on_exhausted"),
                    "on_exhausted",
                    "`on_exhausted` applies to `mode: unique` only (`random` and `cycle` never run out)",
                ));
            }
            let path = self.local_file(format!("{at}.file"), &def.file)?;
            let (columns, data) = super::feeder::read(&path)
                .map_err(|e| self.located(format!("{at}.file"), &def.file, e.to_string()))?;
            rows += data.len();
            if rows > MAX_FEEDER_ROWS {
                return Err(self.located(
                    format!("{at}.file"),
                    &def.file,
                    format!("the feeders hold more than {MAX_FEEDER_ROWS} rows in all (rows travel to every worker with the run)"),
                ));
            }
            out.push(FeederSpec {
                name: name.clone(),
                mode: def.mode,
                on_exhausted: def.on_exhausted.unwrap_or_default(),
                columns,
                rows: data,
            });
        }
        let bytes = serde_json::to_vec(&out).map_or(usize::MAX, |v| v.len());
        if bytes > MAX_FEEDER_BYTES {
            return Err(self.located(
                "feeders",
                "feeders:",
                format!("the feeders' rows take {bytes} bytes on the wire, above the limit of 8MiB in all (rows travel to every worker inside the run's Start message)"),
            ));
        }
        Ok(out)
    }

    pub fn scenario_names(&self) -> Vec<&str> {
        self.def.scenarios.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Picks the scenario to run: the named one, or the only one.
    pub fn pick(&self, name: Option<&str>) -> Result<&str, ScenarioError> {
        let available = self.scenario_names().join(", ");
        match name {
            Some(n) => self
                .def
                .scenarios
                .iter()
                .find(|(s, _)| s == n)
                .map(|(s, _)| s.as_str())
                .ok_or_else(|| ScenarioError::UnknownScenario {
                    file: self.file.clone(),
                    name: n.to_owned(),
                    available,
                }),
            None if self.def.scenarios.len() == 1 => Ok(&self.def.scenarios[0].0),
            None => Err(ScenarioError::Ambiguous {
                file: self.file.clone(),
                available,
            }),
        }
    }

    /// The path of a file the scenario names at `at`, relative to the
    /// scenario file; refused for a posted scenario.
    fn local_file(&self, at: String, relative: &str) -> Result<PathBuf, ScenarioError> {
        match &self.base {
            Some(base) => Ok(base.join(relative)),
            None => Err(self.located(
                at,
                relative,
                "a scenario posted over the network cannot read files on the coordinator \
                 (body_file, feeder files, tls.ca): put the scenario and its files in serve's `-f` file",
            )),
        }
    }

    pub(super) fn invalid(
        &self,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> ScenarioError {
        ScenarioError::Invalid {
            file: self.file.clone(),
            path: path.into(),
            message: message.into(),
        }
    }

    /// An error at the first place `needle` appears in the file (after the
    /// line naming the path's user class, when there is one), or by key path
    /// when it cannot be found.
    pub(super) fn located(
        &self,
        path: impl Into<String>,
        needle: &str,
        message: impl Into<String>,
    ) -> ScenarioError {
        let path = path.into();
        let message = message.into();
        let from = path
            .strip_prefix("user_classes.")
            .and_then(|rest| rest.split(['.', '[']).next())
            .and_then(|class| find_key(&self.text, class))
            .or_else(|| setup::section_start(&self.text, &path))
            .unwrap_or(0);
        let found = (!needle.is_empty())
            .then(|| {
                self.text[from..]
                    .find(needle)
                    .map(|i| from + i)
                    .or_else(|| self.text.find(needle))
            })
            .flatten();
        match found {
            Some(at) => {
                let before = &self.text[..at];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                ScenarioError::Located {
                    file: self.file.clone(),
                    line,
                    column,
                    path,
                    message,
                }
            }
            None => self.invalid(path, message),
        }
    }

    /// Resolves one scenario into a `RunSpec`, applying overrides and defaults.
    /// `lenient_host` lets `validate` accept a file whose host comes only from `--host`.
    pub fn resolve(
        &self,
        name: &str,
        overrides: &Overrides,
        lenient_host: bool,
    ) -> Result<RunSpec, ScenarioError> {
        let (_, sc) = self
            .def
            .scenarios
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| ScenarioError::UnknownScenario {
                file: self.file.clone(),
                name: name.to_owned(),
                available: self.scenario_names().join(", "),
            })?;
        let at = format!("scenarios.{name}");

        let host = overrides
            .host
            .clone()
            .or_else(|| sc.host.clone())
            .or_else(|| self.def.host.clone());
        // Without a host yet (a file checked before `--host` is known), HTTP/2's
        // fit with the scheme is checked once it is.
        let host_known = host.is_some();
        let host = match host {
            Some(h) => validate_host(&h).map_err(|m| self.invalid(format!("{at}.host"), m))?,
            None if lenient_host => "http://localhost".to_owned(),
            None => {
                return Err(self.invalid(
                    "host",
                    "no target host: set `host:` in the file or pass --host URL",
                ));
            }
        };

        let hosts = self.resolve_hosts(&at, sc)?;

        let load = self.resolve_load(&at, sc, overrides)?;
        load.check_limits()
            .map_err(|e| self.invalid(format!("{at}.{}", e.field), e.message))?;

        let wanted: Option<&Vec<String>> = sc.user_classes.as_ref();
        if let Some(wanted) = wanted {
            for w in wanted {
                if !self.def.user_classes.iter().any(|(n, _)| n == w) {
                    return Err(self.invalid(
                        format!("{at}.user_classes"),
                        format!("no user class named `{w}`"),
                    ));
                }
            }
        }
        let mut classes = Vec::new();
        for (cname, c) in &self.def.user_classes {
            if wanted.is_some_and(|w| !w.contains(cname)) {
                continue;
            }
            classes.push(self.resolve_class(cname, c)?);
        }
        self.bind_hosts(&at, &hosts, &mut classes)?;
        if classes.is_empty() {
            return Err(self.invalid("user_classes", "at least one user class is required"));
        }
        if classes.iter().all(|c| c.weight == 0) {
            return Err(self.invalid("user_classes", "at least one weight must be above 0"));
        }
        let feeders: Vec<FeederSpec> = self
            .feeders
            .iter()
            .filter(|f| classes.iter().any(|c| c.feed.as_ref() == Some(&f.name)))
            .cloned()
            .collect();

        let thresholds = self.parse_thresholds(
            &format!("{at}.thresholds"),
            sc.thresholds.iter().chain(&overrides.thresholds),
        )?;
        let stop_when = self.parse_thresholds(&format!("{at}.stop_when"), &sc.stop_when)?;
        if let Some(i) = stop_when
            .iter()
            .position(|t| t.metric == crate::threshold::Metric::Checks)
        {
            return Err(self.invalid(
                format!("{at}.stop_when[{i}]"),
                "`checks` is judged over the whole run: use it in `thresholds`, not in `stop_when`",
            ));
        }
        if sc.iterations == Some(0) || sc.iterations_per_user == Some(0) {
            return Err(self.invalid(at, "`iterations` and `iterations_per_user` must be above 0"));
        }
        let tls = self.resolve_tls()?;
        let (setup, teardown) = self.resolve_phases()?;
        let http2 = self.resolve_http2(host_known.then_some(host.as_str()), &classes)?;
        let mut regression = crate::report::RegressionRules::default();
        if let Some(rule) = &sc.regression {
            regression
                .apply(rule)
                .map_err(|e| self.invalid(format!("{at}.regression"), e.to_string()))?;
        }
        let spec = RunSpec {
            setup,
            teardown,
            shared_vars: Vec::new(),
            http2,
            feeders,
            regression,
            tls,
            iterations: sc.iterations,
            iterations_per_user: sc.iterations_per_user,
            stop_when,
            scenario: name.to_owned(),
            host,
            hosts,
            timeout: self.def.defaults.timeout.unwrap_or(Duration::from_secs(10)),
            graceful_stop: sc.graceful_stop.unwrap_or(Duration::from_secs(10)),
            cookies: self.def.defaults.cookies.unwrap_or(true),
            redirects: match self.def.defaults.redirects {
                Some(n) if n > MAX_REDIRECTS => {
                    return Err(self.invalid(
                        "defaults.redirects",
                        format!("at most {MAX_REDIRECTS} redirects"),
                    ));
                }
                n => n.unwrap_or(0),
            },
            max_capture_body: self
                .def
                .defaults
                .max_capture_body
                .map_or(DEFAULT_MAX_CAPTURE_BODY, |s| s.0),
            load,
            classes,
            thresholds,
        };
        let bytes = serde_json::to_vec(&spec).map_or(usize::MAX, |v| v.len());
        if bytes > MAX_SPEC_BYTES {
            return Err(self.invalid(
                at,
                format!("the scenario takes {bytes} bytes as sent to each worker (feeder rows and body files included), above the 15MiB a run's Start message may carry; use smaller data files"),
            ));
        }
        Ok(spec)
    }

    /// Parses each expression, naming the bad one by its place in the list
    /// (command-line thresholds count on after the file's).
    fn parse_thresholds<'a>(
        &self,
        at: &str,
        exprs: impl IntoIterator<Item = &'a String>,
    ) -> Result<Vec<Threshold>, ScenarioError> {
        exprs
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                Threshold::parse(t).map_err(|e| self.invalid(format!("{at}[{i}]"), e.to_string()))
            })
            .collect()
    }

    /// Reads `tls.ca` (relative to the scenario file) so the PEM can travel in the spec.
    fn resolve_tls(&self) -> Result<TargetTls, ScenarioError> {
        let Some(def) = &self.def.tls else {
            return Ok(TargetTls::default());
        };
        let ca_pem = match &def.ca {
            None => None,
            Some(ca) => {
                let path = self.local_file("tls.ca".to_owned(), ca)?;
                let pem = super::ca::read_certificates(&path)
                    .map_err(|e| self.invalid("tls.ca", e.to_string()))?;
                Some(pem)
            }
        };
        Ok(TargetTls {
            ca_pem,
            insecure: def.insecure,
        })
    }

    fn resolve_load(
        &self,
        at: &str,
        sc: &ScenarioDef,
        o: &Overrides,
    ) -> Result<LoadModel, ScenarioError> {
        let duration = o.duration.or(sc.duration);
        let users = o.users.or(sc.users);
        let arrival = o.arrival_rate.or(sc.arrival_rate);
        if let Some(stages) = &sc.stages {
            if users.is_some() || arrival.is_some() || duration.is_some() {
                return Err(self.invalid(
                    at,
                    "`stages` cannot be combined with `users`, `duration` or `arrival_rate`",
                ));
            }
            if stages.is_empty() {
                return Err(self.invalid(format!("{at}.stages"), "needs at least one stage"));
            }
            let by_users: Option<Vec<UserStage>> = stages.iter().map(user_stage).collect();
            let by_rate: Option<Vec<RateStage>> = stages.iter().map(rate_stage).collect();
            if let Some(stages) = by_rate {
                return Ok(LoadModel::RampingRate {
                    stages,
                    max_users: sc.max_users.unwrap_or(1000),
                });
            }
            let stages = by_users.ok_or_else(|| self.invalid(
                    format!("{at}.stages"),
                    "every stage needs `users` (ramping users) or every stage needs `rate` (ramping arrival rate), not a mix",
                ))?;
            if stages.iter().all(|s| s.duration.is_zero()) {
                return Err(self.invalid(format!("{at}.stages"), "the stages last 0s in total"));
            }
            return Ok(LoadModel::Stages { stages });
        }
        let duration = duration.ok_or_else(|| {
            self.invalid(
                at,
                "needs a `duration` (or `stages`); e.g. `duration: 30s` or --duration 30s",
            )
        })?;
        if duration.is_zero() {
            return Err(self.invalid(format!("{at}.duration"), "must be above 0"));
        }
        if let Some(rate) = arrival {
            if users.is_some() {
                return Err(self.invalid(
                    at,
                    "`arrival_rate` (open model) and `users` (closed model) exclude each other; use `max_users` to cap the open model's pool",
                ));
            }
            return Ok(LoadModel::Open {
                rate,
                max_users: sc.max_users.unwrap_or(1000),
                duration,
            });
        }
        let users = users.ok_or_else(|| {
            self.invalid(
                at,
                "needs `users` (closed model), `arrival_rate` (open model) or `stages`",
            )
        })?;
        let spawn_rate = o.spawn_rate.or(sc.spawn_rate).unwrap_or(users as f64);
        if !(spawn_rate.is_finite() && spawn_rate > 0.0) {
            return Err(self.invalid(format!("{at}.spawn_rate"), "must be a number above 0"));
        }
        Ok(LoadModel::Closed {
            users,
            spawn_rate,
            duration,
        })
    }

    fn resolve_class(&self, cname: &str, c: &UserClassDef) -> Result<UserClass, ScenarioError> {
        let at = format!("user_classes.{cname}");
        if c.tasks.is_empty() {
            return Err(self.invalid(format!("{at}.tasks"), "needs at least one task"));
        }
        if let Some(Wait::Between(lo, hi)) = c.wait
            && lo > hi
        {
            return Err(self.invalid(
                format!("{at}.wait.between"),
                "the first bound must not exceed the second",
            ));
        }
        // What the class defines: built-ins, its row's columns, its vars, every capture.
        let mut all: BTreeSet<String> = BUILT_INS.iter().map(|s| (*s).to_owned()).collect();
        all.extend(self.setup_captures());
        if let Some(feed) = &c.feed {
            let Some(f) = self.feeders.iter().find(|f| f.name == *feed) else {
                let names = self.feeders.iter().map(|f| f.name.as_str());
                return Err(self.located(
                    format!("{at}.feed"),
                    &format!("feed: {feed}"),
                    format!(
                        "unknown feeder `{feed}`: declare it under the top-level `feeders:`{}",
                        crate::suggest::hint(feed, names)
                    ),
                ));
            };
            all.extend(f.columns.iter().map(|c| format!("row.{c}")));
        }
        let mut vars = Vec::new();
        for (name, text) in &c.vars {
            let path = format!("{at}.vars.{name}");
            if !valid_var_name(name) {
                return Err(self.located(
                    &path,
                    name,
                    format!("`{name}` is not a variable name: use letters, digits, `_` and `-`, starting with a letter or `_`"),
                ));
            }
            if BUILT_INS.contains(&name.as_str()) {
                return Err(self.located(
                    &path,
                    name,
                    format!("`{name}` is built in and cannot be redefined"),
                ));
            }
            let t =
                Template::compile(text).map_err(|e| self.located(&path, text, e.to_string()))?;
            let known = Known {
                class: cname,
                strict: all.clone(),
                all: &all,
            };
            self.check_vars(&path, &t, &known, false)?;
            all.insert(name.clone());
            vars.push((name.clone(), text.clone()));
        }
        let before_captures = all.clone();
        let captures_of = |r: &RequestDef| -> Vec<String> {
            r.capture
                .keys()
                .cloned()
                .chain(
                    r.flow
                        .iter()
                        .flatten()
                        .flat_map(|s| s.capture.keys().cloned()),
                )
                .collect()
        };
        for r in c.on_start.iter().chain(&c.tasks) {
            all.extend(captures_of(r));
        }
        let mut headers = self.def.defaults.headers.clone();
        headers.extend(c.headers.clone());
        let mut on_start = Vec::new();
        let mut strict = before_captures.clone();
        for (i, r) in c.on_start.iter().enumerate() {
            let path = format!("{at}.on_start[{i}]");
            if r.weight.is_some() {
                return Err(self.invalid(path, "`weight` only applies to tasks"));
            }
            self.refuse_step_keys(&path, r, "on_start requests")?;
            if r.flow.is_some() || r.continue_on_failure.is_some() {
                return Err(self.invalid(path, "`flow` only applies to tasks"));
            }
            let known = Known {
                class: cname,
                strict: strict.clone(),
                all: &all,
            };
            on_start.push(self.resolve_request(&path, r, &headers, &known)?);
            strict.extend(r.capture.keys().cloned());
        }
        let after_start = strict;
        let mut tasks = Vec::new();
        for (i, r) in c.tasks.iter().enumerate() {
            let path = format!("{at}.tasks[{i}]");
            // Another task may have run before this one; this flow's own later steps have not.
            let mut others = after_start.clone();
            for (j, o) in c.tasks.iter().enumerate() {
                if j != i {
                    others.extend(captures_of(o));
                }
            }
            let weight = r.weight.unwrap_or(1);
            let Some(steps) = &r.flow else {
                self.refuse_step_keys(&path, r, "tasks (only flow steps)")?;
                if r.continue_on_failure.is_some() {
                    return Err(
                        self.invalid(path, "`continue_on_failure` only applies to `flow:` tasks")
                    );
                }
                let mut strict = others;
                strict.extend(r.capture.keys().cloned());
                let known = Known {
                    class: cname,
                    strict,
                    all: &all,
                };
                tasks.push(TaskSpec {
                    weight,
                    request: Some(self.resolve_request(&path, r, &headers, &known)?),
                    flow: None,
                });
                continue;
            };
            tasks.push(TaskSpec {
                weight,
                request: None,
                flow: Some(self.resolve_flow(&path, cname, r, steps, &headers, others, &all)?),
            });
        }
        self.check_ws_class(&at, &c.tasks)?;
        if tasks.iter().all(|t| t.weight == 0) {
            return Err(self.invalid(
                format!("{at}.tasks"),
                "at least one task weight must be above 0",
            ));
        }
        let mut class = UserClass {
            name: cname.to_owned(),
            weight: c.weight,
            wait: c.wait,
            vars,
            on_start,
            tasks,
            feed: c.feed.clone(),
        };
        // A request's own `connection:` wins, then the class's, then `defaults`.
        let close = c
            .connection
            .or(self.def.defaults.connection)
            .is_some_and(|m| m == ConnectionDef::Close);
        for r in class.requests_mut() {
            r.close.get_or_insert(close);
        }
        Ok(class)
    }

    /// A `flow:` task: its name, then each step in order (a request, with an
    /// optional poll, and an optional think time after it).
    #[allow(clippy::too_many_arguments)]
    fn resolve_flow(
        &self,
        at: &str,
        cname: &str,
        r: &RequestDef,
        steps: &[RequestDef],
        headers: &BTreeMap<String, String>,
        mut strict: BTreeSet<String>,
        all: &BTreeSet<String>,
    ) -> Result<FlowSpec, ScenarioError> {
        if r.methods().next().is_some()
            || r.json.is_some()
            || r.body.is_some()
            || r.expect.is_some()
            || !r.capture.is_empty()
            || !r.headers.is_empty()
            || r.poll.is_some()
            || r.think.is_some()
        {
            return Err(self.invalid(
                at,
                "a `flow:` task has only `name`, `weight`, `continue_on_failure` and `flow`; put requests, checks and captures in its steps",
            ));
        }
        let name = r.name.clone().ok_or_else(|| {
            self.invalid(
                at,
                "a `flow:` task needs a `name` (its duration is reported under it)",
            )
        })?;
        if steps.is_empty() {
            return Err(self.invalid(format!("{at}.flow"), "needs at least one step"));
        }
        let mut out = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let path = format!("{at}.flow[{i}]");
            if step.weight.is_some() || step.flow.is_some() || step.continue_on_failure.is_some() {
                return Err(self.invalid(
                    path,
                    "a flow step cannot have `weight`, `flow` or `continue_on_failure` (flows do not nest)",
                ));
            }
            let think = match &step.think {
                None => None,
                Some(t) => {
                    let w = t.wait();
                    if let Wait::Between(lo, hi) = w
                        && lo > hi
                    {
                        return Err(self.invalid(
                            format!("{path}.think.between"),
                            "the first bound must not exceed the second",
                        ));
                    }
                    Some(w)
                }
            };
            let has_method = step.methods().next().is_some();
            let mut request = None;
            let mut poll = None;
            if super::ws::is_ws_step(step) {
                strict.extend(step.capture.keys().cloned());
                let known = Known {
                    class: cname,
                    strict: strict.clone(),
                    all,
                };
                let ws = self.resolve_ws_step(&path, step, headers, &known)?;
                out.push(StepSpec {
                    request: None,
                    poll: None,
                    think,
                    ws: Some(ws),
                    sse: None,
                });
                continue;
            }
            if has_method || step.think.is_none() {
                strict.extend(step.capture.keys().cloned());
                let known = Known {
                    class: cname,
                    strict: strict.clone(),
                    all,
                };
                request = Some(self.resolve_request(&path, step, headers, &known)?);
                if let Some(p) = &step.poll {
                    if p.max == 0 || p.max > MAX_POLL_ATTEMPTS {
                        return Err(self.invalid(
                            format!("{path}.poll.max"),
                            format!("must be from 1 to {MAX_POLL_ATTEMPTS} attempts"),
                        ));
                    }
                    poll = Some(PollSpec {
                        every: p.every,
                        max: p.max,
                        until: self.resolve_expect(&format!("{path}.poll.until"), &p.until)?,
                    });
                }
            } else if step.poll.is_some() || !step.capture.is_empty() || step.expect.is_some() {
                return Err(self.invalid(
                    path,
                    "`poll`, `capture` and `expect` need a request in the same step",
                ));
            }
            let sse = self.resolve_sse(&path, step, request.as_mut())?;
            out.push(StepSpec {
                request,
                poll,
                think,
                ws: None,
                sse,
            });
        }
        Ok(FlowSpec {
            name,
            steps: out,
            continue_on_failure: r.continue_on_failure.unwrap_or(false),
        })
    }

    /// Refuses the flow-step keys where they do not apply.
    fn refuse_step_keys(&self, at: &str, r: &RequestDef, here: &str) -> Result<(), ScenarioError> {
        self.refuse_ws_keys(at, r)?;
        if r.poll.is_some() || r.think.is_some() {
            return Err(self.invalid(
                at,
                format!("`poll` and `think` apply to the steps of a `flow:` task, not to {here}"),
            ));
        }
        Ok(())
    }

    /// Checks that every variable a template uses exists at that place.
    pub(super) fn check_vars(
        &self,
        at: &str,
        t: &Template,
        known: &Known<'_>,
        inherited: bool,
    ) -> Result<(), ScenarioError> {
        for var in t.variables() {
            let ok = if inherited {
                known.all.contains(var)
            } else {
                known.strict.contains(var)
            };
            if ok {
                continue;
            }
            let later = known.all.contains(var);
            let why = if let Some(column) = var.strip_prefix("row.") {
                let columns: Vec<&str> = known
                    .all
                    .iter()
                    .filter_map(|v| v.strip_prefix("row."))
                    .collect();
                if columns.is_empty() {
                    format!(
                        "`{var}` needs a feeder row, but user class `{}` has no `feed:` (add `feed: NAME` naming one of the top-level `feeders:`)",
                        known.class
                    )
                } else {
                    format!(
                        "the feeder of user class `{}` has no column `{column}` (columns: {}){}",
                        known.class,
                        columns.join(", "),
                        crate::suggest::hint(column, columns.iter().copied()),
                    )
                }
            } else if later {
                format!(
                    "variable `{var}` is only captured by a later request of {}, so it does not exist yet here",
                    setup::owner(known.class)
                )
            } else {
                format!(
                    "unknown variable `{var}`: it is not built in (user_id, worker_index), not in `vars:` and not captured by any request of {}{}",
                    setup::owner(known.class),
                    crate::suggest::hint(var, known.all.iter().map(String::as_str)),
                )
            };
            return Err(self.located(at, var, why));
        }
        Ok(())
    }

    /// `expect:` as the wire carries it: status ranges, headers, body, JSON, latency.
    pub(super) fn resolve_expect(&self, at: &str, e: &Expect) -> Result<ExpectSpec, ScenarioError> {
        let mut status = Vec::new();
        let items: Vec<StatusItem> = match &e.status {
            None => Vec::new(),
            Some(StatusSet::One(c)) => vec![StatusItem::Code(*c)],
            Some(StatusSet::Text(t)) => vec![StatusItem::Text(t.clone())],
            Some(StatusSet::Many(v)) => v.clone(),
        };
        for item in items {
            let text = match item {
                StatusItem::Code(c) => c.to_string(),
                StatusItem::Text(t) => t,
            };
            let range = crate::check::status_range(&text)
                .map_err(|m| self.located(format!("{at}.status"), &text, m))?;
            status.push(range);
        }
        // A condition's own `name:` (the report's name for it when it fails).
        let mut names = BTreeMap::new();
        let mut name_of = |path: &str, v: &serde_json::Value, default: String| {
            let Some(given) = v.as_object().and_then(|m| m.get("name")) else {
                return Ok(());
            };
            match given.as_str().filter(|n| crate::check::is_check_name(n)) {
                Some(n) => {
                    names.insert(default, n.to_owned());
                    Ok(())
                }
                None => Err(self.invalid(
                    format!("{path}.name"),
                    format!(
                        "expected a check name: text of 1 to {} bytes on one line",
                        crate::check::MAX_CHECK_NAME_LEN
                    ),
                )),
            }
        };
        let cond = |path: String, v: &serde_json::Value| -> Result<Cond, ScenarioError> {
            let serde_json::Value::Object(map) = v else {
                return Ok(Cond::Equals(v.clone()));
            };
            let mut entries = map.iter().filter(|(k, _)| k.as_str() != "name");
            let (Some((k, val)), None) = (entries.next(), entries.next()) else {
                return Err(self.invalid(
                    path,
                    "expected a value to equal, or one of `{ equals: V }`, `{ contains: TEXT }`, `{ exists: true|false }`, `{ matches: REGEX }`",
                ));
            };
            let text = || -> Result<String, ScenarioError> {
                val.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| self.invalid(format!("{path}.{k}"), "expected a string"))
            };
            Ok(match k.as_str() {
                "equals" => Cond::Equals(val.clone()),
                "contains" => Cond::Contains(text()?),
                "matches" => {
                    let p = text()?;
                    crate::check::regex(&p)
                        .map_err(|e| self.located(format!("{path}.matches"), &p, e.to_string()))?;
                    Cond::Matches(p)
                }
                "exists" => Cond::Exists(val.as_bool().ok_or_else(|| {
                    self.invalid(format!("{path}.exists"), "expected true or false")
                })?),
                other => {
                    return Err(self.located(
                        &path,
                        other,
                        format!(
                            "unknown condition `{other}`, expected one of `equals`, `contains`, `exists`, `matches`{}",
                            crate::suggest::hint(other, COND_KEYS)
                        ),
                    ));
                }
            })
        };
        let mut headers = Vec::new();
        for (name, v) in &e.headers {
            if http_token(name).is_none() {
                return Err(self.invalid(
                    format!("{at}.headers"),
                    format!("`{name}` is not a header name"),
                ));
            }
            let c = cond(format!("{at}.headers.{name}"), v)?;
            name_of(
                &format!("{at}.headers.{name}"),
                v,
                crate::check::header_check_name(name, &c),
            )?;
            headers.push((name.clone(), c));
        }
        let mut json = Vec::new();
        for (p, v) in &e.json {
            JsonPath::parse(p)
                .map_err(|err| self.located(format!("{at}.json"), p, err.to_string()))?;
            let c = cond(format!("{at}.json.{p}"), v)?;
            name_of(
                &format!("{at}.json.{p}"),
                v,
                crate::check::json_check_name(p, &c),
            )?;
            json.push((p.clone(), c));
        }
        Ok(ExpectSpec {
            status,
            headers,
            body_contains: e
                .body_contains
                .as_ref()
                .map(|b| b.to_vec())
                .unwrap_or_default(),
            json,
            max_latency_us: e
                .max_latency
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            names,
        })
    }

    fn resolve_request(
        &self,
        at: &str,
        r: &RequestDef,
        inherited: &BTreeMap<String, String>,
        known: &Known<'_>,
    ) -> Result<RequestSpec, ScenarioError> {
        let mut given = r.methods();
        let (method, path) = given.next().ok_or_else(|| {
            self.invalid(
                at,
                "needs a method and path, e.g. `get: /api/health` (one of get, post, put, patch, delete, head, options)",
            )
        })?;
        if given.next().is_some() {
            return Err(self.invalid(
                at,
                "give exactly one of get, post, put, patch, delete, head, options",
            ));
        }
        let (target, path, default_name) = self.request_target(at, r, method, path)?;
        let path = &path;
        // A path that is all template (a captured `Location`) is checked when rendered.
        if !path.starts_with('/') && !path.starts_with("{{") {
            return Err(self.located(
                at,
                path,
                format!("path `{path}` must start with `/` (the host comes from `host:`)"),
            ));
        }
        let bodies = [
            r.json.is_some(),
            r.body.is_some(),
            !r.form.is_empty(),
            r.body_size.is_some(),
            r.body_file.is_some(),
        ];
        if bodies.iter().filter(|b| **b).count() > 1 {
            return Err(self.invalid(
                at,
                "give one body: `json`, `body`, `form`, `body_size` or `body_file`",
            ));
        }
        for (what, pairs) in [("query", &r.query), ("form", &r.form)] {
            let t = Template::compile_pairs(pairs)
                .map_err(|e| self.invalid(format!("{at}.{what}"), e.to_string()))?;
            self.check_vars(&format!("{at}.{what}"), &t, known, false)?;
        }
        for (what, text) in std::iter::once(("path", path.as_str()))
            .chain(r.headers.values().map(|v| ("header", v.as_str())))
            .chain(r.body.iter().map(|b| ("body", b.as_str())))
        {
            let t = Template::compile(text)
                .map_err(|e| self.located(format!("{at}.{what}"), text, e.to_string()))?;
            self.check_vars(&format!("{at}.{what}"), &t, known, false)?;
        }
        for (name, text) in inherited {
            if r.headers.contains_key(name) {
                continue;
            }
            let t = Template::compile(text)
                .map_err(|e| self.located(format!("{at}.headers.{name}"), text, e.to_string()))?;
            self.check_vars(&format!("{at}.headers.{name}"), &t, known, true)?;
        }
        if let Some(json) = &r.json {
            let t = Template::compile_json(json)
                .map_err(|e| self.invalid(format!("{at}.json"), e.to_string()))?;
            self.check_vars(&format!("{at}.json"), &t, known, false)?;
        }
        for (var, c) in &r.capture {
            let cat = format!("{at}.capture.{var}");
            if !valid_var_name(var) {
                return Err(self.located(&cat, var, format!("`{var}` is not a variable name: use letters, digits, `_` and `-`, starting with a letter or `_`")));
            }
            if BUILT_INS.contains(&var.as_str()) {
                return Err(self.located(
                    &cat,
                    var,
                    format!("`{var}` is built in and cannot be captured into"),
                ));
            }
            self.check_capture_source(&cat, var, c, false)?;
        }
        let optional_headers: Vec<String> = inherited
            .keys()
            .filter(|k| !r.headers.contains_key(*k))
            .cloned()
            .collect();
        let mut headers = inherited.clone();
        headers.extend(r.headers.clone());
        let mut content_type = |t: &str| {
            if !headers
                .keys()
                .any(|k| k.eq_ignore_ascii_case("content-type"))
            {
                headers.insert("Content-Type".into(), t.into());
            }
        };
        let body = if let Some(j) = &r.json {
            content_type("application/json");
            Some(Body::Json(j.clone()))
        } else if let Some(b) = &r.body {
            Some(Body::Text(b.clone()))
        } else if !r.form.is_empty() {
            content_type("application/x-www-form-urlencoded");
            Some(Body::Form(r.form.clone()))
        } else if let Some(size) = r.body_size {
            if size.0 > MAX_GENERATED_BODY {
                return Err(self.invalid(
                    format!("{at}.body_size"),
                    format!("{} bytes is above the limit of 64MiB", size.0),
                ));
            }
            content_type("application/octet-stream");
            Some(Body::Generated(size.0))
        } else if let Some(file) = &r.body_file {
            use base64::Engine as _;
            let path = self.local_file(format!("{at}.body_file"), file)?;
            let bytes = std::fs::read(&path).map_err(|e| {
                self.located(
                    format!("{at}.body_file"),
                    file,
                    format!("cannot read `{}`: {e}", path.display()),
                )
            })?;
            if bytes.len() as u64 > MAX_BODY_FILE {
                return Err(self.located(
                    format!("{at}.body_file"),
                    file,
                    format!("`{file}` holds {} bytes, above the limit of 4MiB (it travels to every worker with the scenario); use `body_size` for a generated body up to 64MiB", bytes.len()),
                ));
            }
            content_type("application/octet-stream");
            Some(Body::File(
                base64::engine::general_purpose::STANDARD.encode(bytes),
            ))
        } else {
            None
        };
        let expect = match &r.expect {
            None => ExpectSpec::default(),
            Some(e) => self.resolve_expect(&format!("{at}.expect"), e)?,
        };
        let expect_status = expect
            .status
            .iter()
            .filter(|(lo, hi)| lo == hi)
            .map(|(lo, _)| *lo)
            .collect::<Vec<_>>();
        // Old workers read `expect_status` alone: keep it exact when it can be.
        let expect_status = if expect_status.len() == expect.status.len() {
            expect_status
        } else {
            Vec::new()
        };
        Ok(RequestSpec {
            name: r.name.clone().unwrap_or(default_name),
            method: method.to_owned(),
            path: path.clone(),
            host: target,
            headers: headers.into_iter().collect(),
            optional_headers,
            body,
            expect_status,
            expect,
            query: r.query.clone(),
            redirects: match r.redirects {
                Some(n) if n > MAX_REDIRECTS => {
                    return Err(self.invalid(
                        format!("{at}.redirects"),
                        format!("at most {MAX_REDIRECTS} redirects"),
                    ));
                }
                n => n,
            },
            timeout: match r.timeout {
                Some(d) if d.is_zero() => {
                    return Err(self.invalid(format!("{at}.timeout"), "must be above 0"));
                }
                t => t,
            },
            capture: r.capture.clone().into_iter().collect(),
            close: r.connection.map(|c| c == ConnectionDef::Close),
        })
    }

    /// `defaults.http2`, checked against the host; a request that asks for
    /// its own connection (`connection: close`) cannot share HTTP/2 ones.
    fn resolve_http2(
        &self,
        host: Option<&str>,
        classes: &[UserClass],
    ) -> Result<Option<Http2Spec>, ScenarioError> {
        let Some(def) = &self.def.defaults.http2 else {
            return Ok(None);
        };
        let https = match host {
            Some(h) => h.starts_with("https://"),
            None => !def.prior_knowledge.unwrap_or(false),
        };
        let spec = def.resolve(https).map_err(|e| {
            let needle = if self.text.contains(e.key) {
                e.key
            } else {
                "http2"
            };
            self.located(format!("defaults.http2.{}", e.key), needle, e.message)
        })?;
        let closing = classes
            .iter()
            .flat_map(|c| c.requests())
            .find(|r| r.close == Some(true));
        if let Some(r) = closing {
            return Err(self.located(
                "defaults.http2",
                "close",
                format!(
                    "request `{}` has `connection: close`, which HTTP/2 cannot do: its requests share `http2.connections` connections",
                    r.name
                ),
            ));
        }
        Ok(Some(spec))
    }
}

/// Several hosts per scenario: `hosts:`, `host: NAME` on a request, absolute URLs.
impl Loaded {
    /// The scenario's named hosts: the top level's, each replaced by the
    /// scenario's entry of the same name, then the scenario's new ones.
    fn resolve_hosts(
        &self,
        at: &str,
        sc: &ScenarioDef,
    ) -> Result<Vec<(String, String)>, ScenarioError> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (place, list) in [
            ("hosts".to_owned(), &self.def.hosts),
            (format!("{at}.hosts"), &sc.hosts),
        ] {
            for (name, url) in list {
                if !valid_host_name(name) {
                    return Err(self.located(
                        format!("{place}.{name}"),
                        name,
                        format!("host name `{name}`: use letters, digits, `_` and `-` (it is what `host:` on a request names)"),
                    ));
                }
                let url = validate_host(url)
                    .map_err(|m| self.located(format!("{place}.{name}"), url, m))?;
                match out.iter_mut().find(|(n, _)| n == name) {
                    Some(entry) => entry.1 = url,
                    None => out.push((name.clone(), url)),
                }
            }
        }
        Ok(out)
    }

    /// Where a request goes: `(host URL or host name, path, default endpoint name)`.
    /// An absolute URL is split into its origin and path; templates may only
    /// be in the path, since connections are opened per origin.
    fn request_target(
        &self,
        at: &str,
        r: &RequestDef,
        method: &str,
        path: &str,
    ) -> Result<(Option<String>, String, String), ScenarioError> {
        let scheme_len = ["http://", "https://"]
            .iter()
            .find(|p| path.len() >= p.len() && path[..p.len()].eq_ignore_ascii_case(p))
            .map(|p| p.len());
        if let Some(skip) = scheme_len {
            if let Some(name) = &r.host {
                return Err(self.located(
                    format!("{at}.host"),
                    name,
                    format!("`host: {name}` and the absolute URL `{path}` both say where the request goes: give a path with `host:`, or the URL alone"),
                ));
            }
            let end = path[skip..].find('/').map_or(path.len(), |i| skip + i);
            let (origin, rest) = path.split_at(end);
            if origin.contains("{{") {
                return Err(self.located(
                    at,
                    path,
                    format!("`{path}`: templates are allowed in an absolute URL's path, not in its scheme or host; name the hosts in `hosts:` and pick one with `host:`"),
                ));
            }
            let url = validate_host(origin).map_err(|m| self.located(at, path, m))?;
            let rest = if rest.is_empty() { "/" } else { rest };
            return Ok((Some(url), rest.to_owned(), format!("{method} {path}")));
        }
        match &r.host {
            None => Ok((None, path.to_owned(), format!("{method} {path}"))),
            Some(name) => {
                let known: Vec<&str> = self
                    .def
                    .hosts
                    .iter()
                    .chain(self.def.scenarios.iter().flat_map(|(_, s)| &s.hosts))
                    .map(|(n, _)| n.as_str())
                    .fold(Vec::new(), |mut v, n| {
                        if !v.contains(&n) {
                            v.push(n);
                        }
                        v
                    });
                if !known.contains(&name.as_str()) {
                    let listed = if known.is_empty() {
                        "the file has no `hosts:`".to_owned()
                    } else {
                        format!("`hosts:` names {}", known.join(", "))
                    };
                    return Err(self.located(
                        format!("{at}.host"),
                        &format!("host: {name}"),
                        format!(
                            "unknown host `{name}` ({listed}){}",
                            crate::suggest::hint(name, known.iter().copied())
                        ),
                    ));
                }
                Ok((
                    Some(name.clone()),
                    path.to_owned(),
                    format!("{method} {name}:{path}"),
                ))
            }
        }
    }

    /// Replaces each request's host name with its URL from the scenario's
    /// `hosts` (absolute URLs already hold theirs).
    /// Where a capture reads from: a JSON path or pattern that compiles, a
    /// header or cookie name that is one. `message`: a WebSocket message,
    /// which has no headers or cookies.
    pub(super) fn check_capture_source(
        &self,
        cat: &str,
        var: &str,
        c: &CaptureSpec,
        message: bool,
    ) -> Result<(), ScenarioError> {
        match c {
            CaptureSpec::Path(p) | CaptureSpec::From(CaptureFrom::Json(p)) => {
                JsonPath::parse(p).map_err(|e| self.located(cat, p, e.to_string()))?;
            }
            CaptureSpec::From(CaptureFrom::Regex(p)) => {
                crate::check::regex(p).map_err(|e| self.located(cat, p, e.to_string()))?;
            }
            CaptureSpec::From(CaptureFrom::Header(_) | CaptureFrom::Cookie(_)) if message => {
                return Err(self.located(
                    cat,
                    var,
                    "a message has no headers or cookies: capture with a JSON path or `regex`",
                ));
            }
            CaptureSpec::From(CaptureFrom::Header(h)) => {
                if http_token(h).is_none() {
                    return Err(self.located(cat, h, format!("`{h}` is not a header name")));
                }
            }
            CaptureSpec::From(CaptureFrom::Cookie(n)) => {
                if n.is_empty() || n.contains([';', '=', ' ']) {
                    return Err(self.located(cat, n, format!("`{n}` is not a cookie name")));
                }
            }
        }
        Ok(())
    }

    fn bind_hosts(
        &self,
        at: &str,
        hosts: &[(String, String)],
        classes: &mut [UserClass],
    ) -> Result<(), ScenarioError> {
        for class in classes.iter_mut() {
            let requests = class
                .on_start
                .iter_mut()
                .chain(class.tasks.iter_mut().flat_map(|t| {
                    t.request.iter_mut().chain(
                        t.flow
                            .iter_mut()
                            .flat_map(|f| f.steps.iter_mut().filter_map(|s| s.request.as_mut())),
                    )
                }));
            for r in requests {
                let Some(name) = r.host.as_ref().filter(|h| !h.contains("://")) else {
                    continue;
                };
                let url = hosts
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, u)| u.clone());
                r.host = Some(url.ok_or_else(|| {
                    self.invalid(
                        format!("{at}.hosts"),
                        format!("request `{}` goes to host `{name}`, which this scenario's `hosts:` does not name", r.name),
                    )
                })?);
            }
        }
        Ok(())
    }
}

fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Where `key:` is first written as a mapping key in `text` (byte offset).
fn find_key(text: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key)
            && rest.trim_start().starts_with(':')
        {
            return Some(offset);
        }
        offset += line.len();
    }
    None
}

/// A capture or `vars:` name: what `{{ name }}` can refer to.
fn valid_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Some(name) when `name` is an HTTP token (a valid header name).
fn http_token(name: &str) -> Option<&str> {
    (!name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)))
    .then_some(name)
}

/// A user stage, when the stage gives `users` and no `rate`.
fn user_stage(s: &StageDef) -> Option<UserStage> {
    match (s.users, s.rate) {
        (Some(users), None) => Some(UserStage {
            duration: s.duration,
            users,
        }),
        _ => None,
    }
}

/// A rate stage, when the stage gives `rate` and no `users`.
fn rate_stage(s: &StageDef) -> Option<RateStage> {
    match (s.rate, s.users) {
        (Some(rate), None) => Some(RateStage {
            duration: s.duration,
            rate,
        }),
        _ => None,
    }
}

/// Checks a target base URL and normalises it (no trailing slash).
pub fn validate_host(host: &str) -> Result<String, String> {
    let url = url::Url::parse(host).map_err(|e| {
        format!("`{host}` is not a valid URL ({e}); expected e.g. http://localhost:8080")
    })?;
    match url.scheme() {
        "http" | "https" => {}
        s => {
            return Err(format!(
                "`{host}`: unsupported scheme `{s}`; expected http:// or https://"
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{host}` has no host name"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{host}` must not carry a query or fragment"));
    }
    // Userinfo would otherwise end up in the Host header and in reports.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "`{host}` must not carry a user name or password (`user:pass@`); expected e.g. http://localhost:8080, with credentials set as a header: `defaults: {{ headers: {{ Authorization: ... }} }}`"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
host: http://localhost:8080
defaults: { timeout: 5s, headers: { Accept: application/json } }
scenarios:
  smoke: { users: 10, spawn_rate: 5, duration: 30s, thresholds: ["p99 < 200ms"] }
  open: { arrival_rate: 500/s, max_users: 2000, duration: 5m }
user_classes:
  api_user:
    weight: 3
    wait: { between: [1s, 3s] }
    on_start:
      - name: login
        post: /api/auth/login
        json: { username: "user{{ user_id }}", password: secret }
        expect: { status: 200 }
        capture: { token: "$.access_token" }
    headers: { Authorization: "Bearer {{ token }}" }
    tasks:
      - { name: list workflows, weight: 3, get: /api/workflows }
      - post: /api/workflows
        json: { name: "wf-{{ uuid() }}" }
        expect: { status: [201] }
  browser:
    tasks:
      - get: /api/health
"#;

    #[test]
    fn resolves_a_full_file() {
        let l = Loaded::from_str("t.yaml", GOOD).expect("valid");
        assert_eq!(l.scenario_names(), vec!["smoke", "open"]);
        let spec = l
            .resolve("smoke", &Overrides::default(), false)
            .expect("resolves");
        assert_eq!(spec.host, "http://localhost:8080");
        assert_eq!(spec.timeout, Duration::from_secs(5));
        assert_eq!(
            spec.load,
            LoadModel::Closed {
                users: 10,
                spawn_rate: 5.0,
                duration: Duration::from_secs(30)
            }
        );
        assert_eq!(spec.classes.len(), 2);
        let api = &spec.classes[0];
        assert_eq!(api.weight, 3);
        assert_eq!(api.on_start[0].name, "login");
        assert_eq!(api.on_start[0].expect_status, vec![200]);
        assert!(
            api.on_start[0]
                .headers
                .contains(&("Content-Type".into(), "application/json".into()))
        );
        assert_eq!(api.tasks[0].weight, 3);
        assert_eq!(
            api.tasks[1].request.as_ref().expect("a request").name,
            "POST /api/workflows"
        );
        assert!(
            api.tasks[0]
                .request
                .as_ref()
                .expect("a request")
                .headers
                .contains(&("Authorization".into(), "Bearer {{ token }}".into()))
        );
        assert_eq!(spec.classes[1].weight, 1);
        // JSON round trip, as on the wire.
        let json = serde_json::to_string(&spec).expect("serialises");
        let back: RunSpec = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, spec);
    }

    #[test]
    fn overrides_win() {
        let l = Loaded::from_str("t.yaml", GOOD).expect("valid");
        let o = Overrides {
            host: Some("http://127.0.0.1:9/".into()),
            users: Some(3),
            duration: Some(Duration::from_secs(2)),
            ..Default::default()
        };
        let spec = l.resolve("smoke", &o, false).expect("resolves");
        assert_eq!(spec.host, "http://127.0.0.1:9");
        assert!(matches!(spec.load, LoadModel::Closed { users: 3, .. }));
    }

    #[test]
    fn several_hosts_resolve_and_mistakes_are_located() {
        let text = |task: &str| {
            format!(
                "host: http://a:1\nhosts:\n  auth: http://b:2/\n  api: http://c:3\nscenarios:\n  s: {{ users: 1, duration: 1s, hosts: {{ api: https://d }} }}\nuser_classes:\n  u:\n    tasks:\n      - {task}\n"
            )
        };
        let resolve = |task: &str| {
            Loaded::from_str("t.yaml", &text(task)).and_then(|l| {
                l.resolve(
                    "s",
                    &Overrides {
                        host: Some("http://z:9".into()),
                        ..Default::default()
                    },
                    false,
                )
            })
        };
        let spec = resolve("{ host: api, get: /x }").expect("resolves");
        // `--host` replaces the run's own host only; the scenario's `hosts` wins per name.
        assert_eq!(spec.host, "http://z:9");
        assert_eq!(
            spec.hosts,
            [
                ("auth".to_owned(), "http://b:2".to_owned()),
                ("api".to_owned(), "https://d".to_owned())
            ]
        );
        let r = &spec.classes[0].tasks[0].request.as_ref().expect("request");
        assert_eq!(
            (r.host.as_deref(), r.name.as_str()),
            (Some("https://d"), "GET api:/x")
        );
        let spec = resolve("{ get: \"HTTPS://e:4/p/{{ user_id }}\" }").expect("resolves");
        let r = &spec.classes[0].tasks[0].request.as_ref().expect("request");
        assert_eq!(
            (r.host.as_deref(), r.path.as_str()),
            (Some("https://e:4"), "/p/{{ user_id }}")
        );
        let spec = resolve("{ get: \"http://e:4\" }").expect("resolves");
        assert_eq!(
            spec.classes[0].tasks[0]
                .request
                .as_ref()
                .map(|r| r.path.as_str()),
            Some("/")
        );
        for (task, line, says) in [
            ("{ host: autth, get: /x }", 10, "did you mean `auth`"),
            ("{ host: auth, get: \"http://e/x\" }", 10, "both say where"),
            (
                "{ get: \"http://{{ h }}/x\" }",
                10,
                "not in its scheme or host",
            ),
            ("{ get: \"http://u:p@e/x\" }", 10, "user name or password"),
        ] {
            let err = resolve(task).expect_err(task).to_string();
            assert!(
                err.contains(&format!("t.yaml:{line}:")) && err.contains(says),
                "{task}: {err}"
            );
        }
        let bad = text("{ get: / }").replace("http://b:2/", "ftp://b");
        let err = Loaded::from_str("t.yaml", &bad)
            .and_then(|l| l.resolve("s", &Overrides::default(), false))
            .expect_err("ftp");
        assert!(
            err.to_string().contains("t.yaml:3:") && err.to_string().contains("unsupported scheme"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_has_line_and_column() {
        let text = "host: http://x\nscenarios:\n  s: { users: 1, duration: 1s, userz: 3 }\nuser_classes: {}\n";
        let err = Loaded::from_str("f.yaml", text).expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.starts_with("f.yaml:3:"), "{msg}");
        assert!(msg.contains("unknown field `userz`"), "{msg}");
    }

    #[test]
    fn malformed_yaml_has_location() {
        let text = "host: http://x\nscenarios:\n  s: { users: 1\n";
        let err = Loaded::from_str("f.yaml", text).expect_err("must fail");
        assert!(matches!(err, ScenarioError::Syntax { .. }), "{err}");
    }

    #[test]
    fn bad_duration_is_located() {
        let text = "host: http://x\nscenarios:\n  s: { users: 1, duration: 10x }\nuser_classes:\n  u: { tasks: [ { get: / } ] }\n";
        let err = Loaded::from_str("f.yaml", text).expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.starts_with("f.yaml:3:"), "{msg}");
        assert!(msg.contains("invalid duration"), "{msg}");
    }

    #[test]
    fn durations_past_the_cap_are_located_not_panics() {
        for value in ["1e20", "10000000000000000000", "31d"] {
            let text = format!(
                "host: http://x\nscenarios:\n  s: {{ users: 1, duration: {value} }}\nuser_classes:\n  u: {{ tasks: [ {{ get: / }} ] }}\n"
            );
            let err = Loaded::from_str("f.yaml", &text).expect_err(value);
            let msg = err.to_string();
            assert!(msg.starts_with("f.yaml:3:"), "{msg}");
            assert!(msg.contains("30-day limit"), "{msg}");
        }
        // Each stage within the cap, the sum beyond it: refused by key path.
        let text = "host: http://x\nscenarios:\n  s:\n    stages:\n      - { duration: 20d, users: 5 }\n      - { duration: 20d, users: 0 }\nuser_classes:\n  u: { tasks: [ { get: / } ] }\n";
        let err = Loaded::from_str("f.yaml", text).expect_err("40 days");
        let msg = err.to_string();
        assert!(msg.starts_with("f.yaml: scenarios.s.stages: "), "{msg}");
        assert!(msg.contains("40d") || msg.contains("960h"), "{msg}");
        let text = "host: http://x\nscenarios:\n  s: { users: 20000000, duration: 1s }\nuser_classes:\n  u: { tasks: [ { get: / } ] }\n";
        let err = Loaded::from_str("f.yaml", text).expect_err("too many users");
        assert!(
            err.to_string().starts_with("f.yaml: scenarios.s.users: "),
            "{err}"
        );
    }

    #[test]
    fn tls_ca_sends_certificates_and_never_the_key_beside_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydA==\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN EC PRIVATE KEY-----\nU0VDUkVUS0VZTUFURVJJQUw=\n-----END EC PRIVATE KEY-----\n";
        std::fs::write(dir.path().join("ca.pem"), format!("{cert}{key}")).expect("write ca");
        let scenario = dir.path().join("s.yaml");
        let yaml = "host: https://x\ntls: { ca: ca.pem }\nscenarios:\n  s: { users: 1, duration: 1s }\nuser_classes:\n  u: { tasks: [ { get: / } ] }\n";
        std::fs::write(&scenario, yaml).expect("write scenario");
        let spec = Loaded::from_path(&scenario)
            .and_then(|l| l.resolve("s", &Overrides::default(), false))
            .expect("resolves");
        let wire = serde_json::to_string(&spec).expect("serialises");
        assert_eq!(spec.tls.ca_pem.as_deref(), Some(cert));
        assert!(
            !wire.contains("PRIVATE KEY") && !wire.contains("U0VDUkVU"),
            "{wire}"
        );
        // A key alone is refused, naming the key path and what was expected.
        std::fs::write(dir.path().join("ca.pem"), key).expect("write key");
        let err = Loaded::from_path(&scenario).expect_err("no certificate");
        let msg = err.to_string();
        assert!(
            msg.contains("tls.ca") && msg.contains("holds no PEM certificate"),
            "{msg}"
        );
    }

    #[test]
    fn bad_host_is_refused() {
        let text = "host: localhost:8080\nscenarios:\n  s: { users: 1, duration: 1s }\nuser_classes:\n  u: { tasks: [ { get: / } ] }\n";
        let err = Loaded::from_str("f.yaml", text).expect_err("must fail");
        assert!(err.to_string().contains("host"), "{err}");
        assert!(validate_host("ftp://x").is_err());
        assert_eq!(validate_host("https://a/").expect("valid"), "https://a");
        assert!(validate_host("not a url").is_err());
        assert_eq!(validate_host("http://a:1/").expect("valid"), "http://a:1");
    }

    #[test]
    fn host_with_userinfo_is_refused() {
        for host in ["http://user:pass@a/", "http://user@a:1", "https://:pw@a"] {
            let e = validate_host(host).expect_err(host);
            assert!(e.contains("user name or password"), "{e}");
        }
    }

    #[test]
    fn max_capture_body_defaults_and_is_located_when_bad() {
        let text = |v: &str| {
            format!(
                "host: http://x\ndefaults: {{ {v} }}\nscenarios:\n  s: {{ users: 1, duration: 1s }}\nuser_classes:\n  u: {{ tasks: [ {{ get: / }} ] }}\n"
            )
        };
        let spec = |v: &str| {
            Loaded::from_str("f.yaml", &text(v))
                .and_then(|l| l.resolve("s", &Overrides::default(), false))
        };
        assert_eq!(spec("").expect("valid").max_capture_body, 16 << 20);
        assert_eq!(
            spec("max_capture_body: 64KiB")
                .expect("valid")
                .max_capture_body,
            64 << 10
        );
        assert_eq!(
            spec("max_capture_body: 100")
                .expect("valid")
                .max_capture_body,
            100
        );
        for bad in [
            "max_capture_body: 0",
            "max_capture_body: 16MB",
            "max_capture_body: 2GiB",
        ] {
            let msg = spec(bad).expect_err(bad).to_string();
            assert!(msg.starts_with("f.yaml:2:"), "{msg}");
            assert!(msg.contains("invalid size"), "{msg}");
        }
    }

    #[test]
    fn request_needs_one_method() {
        let text = "host: http://x\nscenarios:\n  s: { users: 1, duration: 1s }\nuser_classes:\n  u: { tasks: [ { name: x } ] }\n";
        let err = Loaded::from_str("f.yaml", text).expect_err("must fail");
        assert!(err.to_string().contains("user_classes.u.tasks[0]"), "{err}");
    }

    #[test]
    fn picks_scenarios() {
        let l = Loaded::from_str("t.yaml", GOOD).expect("valid");
        assert!(matches!(l.pick(None), Err(ScenarioError::Ambiguous { .. })));
        assert_eq!(l.pick(Some("open")).expect("exists"), "open");
        assert!(l.pick(Some("nope")).is_err());
    }

    #[test]
    fn feeders_travel_only_with_the_scenarios_that_use_them_and_within_the_message_cap() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("a.csv"), "user,pin\nu1,1\nu2,2\n").expect("write csv");
        let scenario = dir.path().join("s.yaml");
        let yaml = "host: http://x\nfeeders:\n  a: { file: a.csv, mode: unique, on_exhausted: cycle }\nscenarios:\n  fed: { users: 1, duration: 1s, user_classes: [f] }\n  plain: { users: 1, duration: 1s, user_classes: [p] }\nuser_classes:\n  f: { feed: a, vars: { who: \"{{ row.user }}\" }, tasks: [ { get: \"/u/{{ row.pin }}\" } ] }\n  p: { tasks: [ { get: / } ] }\n";
        std::fs::write(&scenario, yaml).expect("write scenario");
        let loaded = Loaded::from_path(&scenario).expect("loads");
        let fed = loaded
            .resolve("fed", &Overrides::default(), false)
            .expect("resolves");
        assert_eq!(fed.feeders.len(), 1);
        assert_eq!(fed.feeders[0].columns, ["user", "pin"]);
        assert_eq!(fed.feeders[0].on_exhausted, super::super::Exhausted::Cycle);
        assert_eq!(fed.classes[0].feed.as_deref(), Some("a"));
        let plain = loaded
            .resolve("plain", &Overrides::default(), false)
            .expect("resolves");
        assert!(plain.feeders.is_empty());
        // Without feeders the wire form is what it was.
        assert!(
            !serde_json::to_string(&plain)
                .expect("json")
                .contains("feed")
        );

        // 7 MiB of rows fit; with two 4 MiB body files the Start would not.
        let row = "x".repeat(1023) + "\n";
        std::fs::write(
            dir.path().join("big.csv"),
            format!("v\n{}", row.repeat(7 * 1024)),
        )
        .expect("write big");
        std::fs::write(dir.path().join("body.bin"), vec![7u8; 4 << 20]).expect("write body");
        let big = "host: http://x\nfeeders:\n  b: { file: big.csv }\nscenarios:\n  s: { users: 1, duration: 1s }\nuser_classes:\n  u: { feed: b, tasks: [ { post: /a, body_file: body.bin }, { post: /b, body_file: body.bin } ] }\n";
        std::fs::write(&scenario, big).expect("write scenario");
        let err = Loaded::from_path(&scenario)
            .expect_err("over the cap")
            .to_string();
        assert!(err.contains("15MiB a run's Start message"), "{err}");
    }
}
