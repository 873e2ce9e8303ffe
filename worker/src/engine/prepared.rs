//! A run's scenario compiled once into ready-to-send requests: fully static
//! requests encoded to their HTTP/1.1 bytes up front, templates pre-parsed.

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::{Method, Uri};
use rand::{Rng, SeedableRng};
use squall_common::capture::JsonPath;
use squall_common::check::{Checks, ExpectSpec};
use squall_common::scenario::size::ByteSize;
use squall_common::scenario::sse::SSE_METHOD;
use squall_common::scenario::ws::WS_METHOD;
use squall_common::scenario::{
    Body, CaptureFrom, CaptureSpec, FLOW_METHOD, FlowSpec, RequestSpec, Wait,
};
use squall_common::template::{RenderError, Template, Vars};
use squall_common::{EndpointKey, RunSpec};

use super::feed::Feed;
use crate::error::WorkerError;
use crate::http::TargetTlsConnector;
use crate::http::h2::{H2Pool, H2Request};

/// The most distinct hosts one run talks to: each costs every user a
/// connection slot and a cookie jar once used.
pub const MAX_TARGETS: usize = 64;

/// Text that is either known before the run or rendered per request.
#[derive(Debug, Clone)]
enum Part {
    Static(String),
    Dynamic(Template),
}

#[derive(Debug)]
pub struct PreparedRequest {
    pub endpoint: usize,
    /// Which of `PreparedRun::targets` the request goes to (0: the run's `host`).
    pub target: usize,
    /// The whole request on the wire when nothing in it is templated: sent as
    /// is, so a static request costs no formatting at all.
    wire: Option<Box<[u8]>>,
    /// The same static request as an HTTP/2 head and body, when the run
    /// speaks HTTP/2 to its host: built once instead of reading `wire` back
    /// per request.
    h2: Option<H2Request>,
    method: Method,
    /// The path with the host URL's base path already in front.
    path: Part,
    /// Name, value, and whether an undefined variable drops the header instead of failing.
    headers: Vec<(HeaderName, Part, bool)>,
    body: Option<Part>,
    /// A body that is bytes, not text (`body_size`, `body_file`); static.
    raw_body: Option<Box<[u8]>>,
    /// Whether the scenario sets Host, Content-Length or Cookie itself.
    own_host: bool,
    own_length: bool,
    own_cookie: bool,
    /// HEAD responses carry no body whatever their headers say.
    pub head_only: bool,
    pub spec: RequestSpec,
    pub captures: Vec<(String, Capture)>,
    /// The checks of `expect:` beyond the status.
    pub checks: Checks,
    /// The report's names for a failed `expect.status` and for each capture
    /// that found nothing (`capture token`), built once.
    pub status_check: Option<String>,
    pub capture_checks: Vec<String>,
    /// What reading the response must keep: the body (captures, body or
    /// JSON checks), the body parsed as JSON, the header fields. All false
    /// for a plain request, which then keeps nothing.
    pub needs_body: bool,
    pub needs_json: bool,
    pub keep_headers: bool,
}

/// Where one capture takes its value from.
#[derive(Debug)]
pub enum Capture {
    Json(JsonPath),
    Header(String),
    Regex(regex::Regex),
    Cookie(String),
}

/// A poll's stop condition: the status and the checks it must pass.
#[derive(Debug)]
pub struct Until {
    pub spec: ExpectSpec,
    pub checks: Checks,
}

#[derive(Debug)]
pub struct PreparedPoll {
    pub every: std::time::Duration,
    pub max: u32,
    pub until: Until,
}

#[derive(Debug)]
pub struct PreparedStep {
    pub request: Option<PreparedRequest>,
    /// A WebSocket step instead of a request.
    pub ws: Option<super::ws::PreparedWs>,
    /// The request's response read as server-sent events.
    pub sse: Option<super::sse::PreparedSse>,
    pub poll: Option<PreparedPoll>,
    pub think: Option<Wait>,
}

#[derive(Debug)]
pub struct PreparedFlow {
    /// The flow's own row (name, `FLOW`).
    pub endpoint: usize,
    pub steps: Vec<PreparedStep>,
    pub continue_on_failure: bool,
}

/// What one iteration runs. Not boxed: a class has a handful of tasks, and
/// a box would cost a pointer chase on every request of the hot path.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum PreparedTask {
    Request(PreparedRequest),
    Flow(PreparedFlow),
}

#[derive(Debug)]
pub struct PreparedClass {
    pub wait: Option<Wait>,
    /// Set once per user, in order, before `on_start`.
    pub vars: Vec<(String, Template)>,
    pub on_start: Vec<PreparedRequest>,
    pub tasks: Vec<PreparedTask>,
    /// The `PreparedRun::feeds` entry each user draws one row from when it starts.
    pub feed: Option<usize>,
    /// Running sums of task weights, for picking a task with one random draw.
    cumulative: Vec<u64>,
}

impl PreparedClass {
    pub fn pick<R: Rng>(&self, rng: &mut R) -> &PreparedTask {
        let total = self.cumulative.last().copied().unwrap_or(0);
        let x = rng.random_range(0..total.max(1));
        let i = self.cumulative.partition_point(|&c| c <= x);
        &self.tasks[i.min(self.tasks.len() - 1)]
    }
}

/// One host a run's requests go to: its own connections, Host header, TLS
/// name (SNI) and, on each user, its own cookie jar.
#[derive(Debug)]
pub struct Target {
    /// `scheme://authority`, as redirects are matched against it.
    origin: String,
    /// The Host header's value: the host URL's authority.
    host: String,
    /// Path prefix of the host URL (`http://h/v1` → `/v1`), prepended to every path.
    base_path: String,
    /// `host:port` to resolve and connect to.
    pub authority: String,
    /// Set for an `https://` host.
    pub tls: Option<TargetTlsConnector>,
    /// Resolved when the run starts (the run's own host is `ThreadCtx::addr`).
    pub addr: std::sync::OnceLock<std::net::SocketAddr>,
}

impl Target {
    fn new(
        url_text: &str,
        tls_spec: &squall_common::scenario::TargetTls,
    ) -> Result<Self, WorkerError> {
        let bad = |what: String| WorkerError::Scenario(what);
        let url: Uri = url_text
            .parse()
            .map_err(|e| bad(format!("host `{url_text}`: {e}")))?;
        let auth = url
            .authority()
            .ok_or_else(|| bad(format!("host `{url_text}` has no authority")))?;
        // The coordinator refuses these at load time; a Start message is
        // still input, and userinfo must never reach the Host header.
        if auth.as_str().contains('@') {
            return Err(bad(format!(
                "host `{url_text}` carries a user name or password"
            )));
        }
        let https = match url.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(bad(format!(
                    "host `{url_text}`: expected http:// or https://"
                )));
            }
        };
        let authority = if auth.port().is_some() {
            auth.as_str().to_owned()
        } else {
            format!("{}:{}", auth.host(), if https { 443 } else { 80 })
        };
        let tls = if https {
            Some(TargetTlsConnector::new(tls_spec, auth.host())?)
        } else {
            None
        };
        HeaderValue::from_str(auth.as_str()).map_err(|e| bad(format!("host header: {e}")))?;
        Ok(Target {
            origin: format!(
                "{}://{}",
                if https { "https" } else { "http" },
                auth.as_str()
            ),
            host: auth.as_str().to_owned(),
            base_path: url.path().trim_end_matches('/').to_owned(),
            authority,
            tls,
            addr: std::sync::OnceLock::new(),
        })
    }
}

#[derive(Debug)]
pub struct PreparedRun {
    pub spec: RunSpec,
    pub classes: Vec<PreparedClass>,
    pub endpoints: Vec<EndpointKey>,
    /// The hosts requests go to: the run's `host` first, then each named
    /// host and absolute URL's origin, once each.
    pub targets: Vec<Target>,
    /// The run's own host's `host:port` (`targets[0]`), resolved by the run.
    pub authority: String,
    /// This worker's rows of each feeder the classes draw from.
    pub feeds: Vec<Feed>,
    /// The worker's HTTP/2 connections, shared by all its engine threads
    /// (`defaults.http2`); None for HTTP/1.1.
    pub h2: Option<H2Pool>,
    /// WebSocket and SSE connections open now; None when the run has no
    /// such step (its snapshots then carry no count).
    pub open_streams: Option<Arc<super::streams::OpenStreams>>,
}

impl PreparedRun {
    /// A run for a single worker, which holds every `unique` row.
    #[cfg(test)]
    pub fn new(spec: RunSpec) -> Result<Self, WorkerError> {
        Self::placed(spec, 0, 1)
    }

    /// Prepares `spec` for the worker at `worker_index` of `worker_count`
    /// (which of a `unique` feeder's rows are this worker's).
    pub fn placed(
        mut spec: RunSpec,
        worker_index: u32,
        worker_count: u32,
    ) -> Result<Self, WorkerError> {
        let bad = |what: String| WorkerError::Scenario(what);
        ByteSize::bytes(spec.max_capture_body)
            .map_err(|e| bad(format!("max_capture_body {}: {e}", spec.max_capture_body)))?;
        // Each distinct origin once, so two names for one host share its
        // connections and cookies; the run's host is always targets[0].
        let mut targets = vec![Target::new(&spec.host, &spec.tls)?];
        let used = spec.classes.iter().flat_map(|c| {
            c.on_start.iter().chain(c.tasks.iter().flat_map(|t| {
                t.request.iter().chain(
                    t.flow
                        .iter()
                        .flat_map(|f| f.steps.iter().filter_map(|s| s.request.as_ref())),
                )
            }))
        });
        let urls: Vec<&str> = spec
            .hosts
            .iter()
            .map(|(_, u)| u.as_str())
            .chain(used.filter_map(|r| r.host.as_deref()))
            .collect();
        for url in urls {
            let t = Target::new(url, &spec.tls)?;
            if !targets
                .iter()
                .any(|x| x.origin == t.origin && x.base_path == t.base_path)
            {
                if targets.len() >= MAX_TARGETS {
                    return Err(bad(format!("more than {MAX_TARGETS} hosts")));
                }
                targets.push(t);
            }
        }
        let authority = targets[0].authority.clone();
        // HTTP/2 goes to the run's own host only; named hosts and absolute
        // URLs keep HTTP/1.1 (docs/scenarios.md, "HTTP/2").
        let h2 = match spec.http2 {
            None => None,
            Some(h) => {
                let url: Uri = spec
                    .host
                    .parse()
                    .map_err(|e| bad(format!("host `{}`: {e}", spec.host)))?;
                let auth = url
                    .authority()
                    .cloned()
                    .ok_or_else(|| bad(format!("host `{}` has no authority", spec.host)))?;
                let tls = if targets[0].tls.is_some() {
                    Some(TargetTlsConnector::offering(&spec.tls, auth.host(), b"h2")?)
                } else {
                    None
                };
                Some(H2Pool::new(h, tls, auth))
            }
        };
        let endpoints: Vec<EndpointKey> = spec
            .endpoints()
            .into_iter()
            .map(|(name, method)| EndpointKey { name, method })
            .collect();
        // The rows move into the feeds: a worker holds them once.
        let feeds = std::mem::take(&mut spec.feeders)
            .into_iter()
            .map(|f| Feed::new(f, worker_index, worker_count).map_err(bad))
            .collect::<Result<Vec<_>, _>>()?;
        let mut classes = Vec::new();
        for c in &spec.classes {
            let feed = match &c.feed {
                None => None,
                Some(name) => Some(
                    feeds
                        .iter()
                        .position(|f| f.name == *name)
                        .ok_or_else(|| bad(format!("class `{}`: no feeder `{name}`", c.name)))?,
                ),
            };
            let prep = |r: &RequestSpec| prepare(r, &endpoints, &spec.tls, &targets, h2.as_ref());
            let on_start = c.on_start.iter().map(prep).collect::<Result<Vec<_>, _>>()?;
            let mut tasks = Vec::new();
            for t in &c.tasks {
                tasks.push(match (&t.request, &t.flow) {
                    (Some(r), None) => PreparedTask::Request(prep(r)?),
                    (None, Some(f)) => PreparedTask::Flow(prepare_flow(f, &endpoints, &prep)?),
                    _ => {
                        return Err(bad(
                            "a task needs exactly one of `request` and `flow`".into()
                        ));
                    }
                });
            }
            let vars = c
                .vars
                .iter()
                .map(|(name, text)| {
                    Template::compile(text)
                        .map(|t| (name.clone(), t))
                        .map_err(|e| bad(format!("vars.{name}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut sum = 0u64;
            let cumulative = c
                .tasks
                .iter()
                .map(|t| {
                    sum += u64::from(t.weight);
                    sum
                })
                .collect();
            classes.push(PreparedClass {
                wait: c.wait,
                vars,
                on_start,
                tasks,
                feed,
                cumulative,
            });
        }
        let open_streams = endpoints
            .iter()
            .any(|e| e.method == WS_METHOD || e.method == SSE_METHOD)
            .then(Arc::default);
        Ok(PreparedRun {
            spec,
            classes,
            endpoints,
            targets,
            authority,
            feeds,
            h2,
            open_streams,
        })
    }

    /// The request's bytes for one send: the pre-encoded ones when static,
    /// otherwise rendered into `out` (`scratch` holds each rendered part).
    /// `cookie` is the user's cookie jar as a `Cookie` value (empty when
    /// it holds none): added unless the request sets its own `Cookie`.
    pub fn encode<'a, R: Rng>(
        &self,
        req: &'a PreparedRequest,
        vars: &Vars<'_>,
        rng: &mut R,
        scratch: &mut String,
        out: &'a mut Vec<u8>,
        cookie: &str,
    ) -> Result<&'a [u8], RenderError> {
        let with_cookie = !cookie.is_empty() && !req.own_cookie;
        match &req.wire {
            Some(wire) if !with_cookie => return Ok(wire),
            Some(wire) => {
                out.clear();
                out.extend_from_slice(wire);
            }
            None => {
                let t = &self.targets[req.target];
                write_request(req, &t.host, &t.base_path, vars, rng, scratch, out)?;
            }
        }
        if with_cookie {
            // After the request line: the head's end is the first blank line.
            let line_end = out
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(out.len(), |i| i + 2);
            let mut field = Vec::with_capacity(cookie.len() + 10);
            header(&mut field, "cookie", cookie);
            out.splice(line_end..line_end, field);
        }
        Ok(out)
    }
}

impl PreparedRequest {
    /// The prebuilt HTTP/2 form of this request when `sent` is its static
    /// bytes as prepared (not rendered, nor given a cookie, nor a redirect's).
    pub fn h2_for(&self, sent: &[u8]) -> Option<&H2Request> {
        let wire = self.wire.as_deref()?;
        std::ptr::eq(wire, sent)
            .then_some(self.h2.as_ref())
            .flatten()
    }
}

impl PreparedRun {
    /// Where a redirect from a response of host `from` goes: the target and
    /// a request-target on it. A path stays on `from`; an absolute URL is
    /// followed when its scheme and authority are one of the run's hosts
    /// (`host`, `hosts:`, absolute URLs), and not otherwise: the 3xx is then
    /// the final answer.
    pub fn redirect_target(
        &self,
        from: usize,
        headers: &[(String, String)],
    ) -> Option<(usize, String)> {
        let loc = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("location"))
            .map(|(_, v)| v.trim())?;
        let (to, path) = if loc.starts_with('/') && !loc.starts_with("//") {
            (from, loc.to_owned())
        } else {
            let uri: Uri = loc.parse().ok()?;
            let origin = format!("{}://{}", uri.scheme_str()?, uri.authority()?.as_str());
            let to = self
                .targets
                .iter()
                .position(|t| t.origin.eq_ignore_ascii_case(&origin))?;
            let path = uri
                .path_and_query()
                .map_or("/".to_owned(), |p| p.as_str().to_owned());
            (to, path)
        };
        valid_target(&path).then_some((to, path))
    }

    /// The run's own host's Host header value and base path, for a WebSocket handshake.
    pub fn host_and_base(&self) -> (&str, &str) {
        (&self.targets[0].host, &self.targets[0].base_path)
    }

    /// A `GET` of `path` on `target` with its Host header and the user's
    /// cookies for it: the request a followed redirect sends.
    pub fn encode_get(&self, target: usize, path: &str, cookie: &str, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        header(out, "host", &self.targets[target].host);
        if !cookie.is_empty() {
            header(out, "cookie", cookie);
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Writes one request's HTTP/1.1 bytes into `out`, rendering templated parts.
fn write_request<R: Rng>(
    req: &PreparedRequest,
    host: &str,
    base_path: &str,
    vars: &Vars<'_>,
    rng: &mut R,
    scratch: &mut String,
    out: &mut Vec<u8>,
) -> Result<(), RenderError> {
    out.clear();
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    match &req.path {
        Part::Static(p) => out.extend_from_slice(p.as_bytes()),
        Part::Dynamic(t) => {
            scratch.clear();
            scratch.push_str(base_path);
            t.render(vars, rng, scratch)?;
            if !valid_target(scratch) || !scratch[base_path.len()..].starts_with('/') {
                return Err(RenderError::Invalid(format!(
                    "valid path (got `{scratch}`)"
                )));
            }
            out.extend_from_slice(scratch.as_bytes());
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !req.own_host {
        header(out, "host", host);
    }
    for (name, value, optional) in &req.headers {
        match value {
            Part::Static(v) => header(out, name.as_str(), v),
            Part::Dynamic(t) => {
                scratch.clear();
                match t.render(vars, rng, scratch) {
                    Ok(()) => {}
                    Err(RenderError::Undefined(_)) if *optional => continue,
                    Err(e) => return Err(e),
                }
                if HeaderValue::from_str(scratch).is_err() {
                    return Err(RenderError::Invalid(format!(
                        "valid header value for {name}"
                    )));
                }
                header(out, name.as_str(), scratch);
            }
        }
    }
    let body = match (&req.body, &req.raw_body) {
        (_, Some(raw)) => Some(&raw[..]),
        (None, None) => None,
        (Some(Part::Static(b)), None) => Some(b.as_bytes()),
        (Some(Part::Dynamic(t)), None) => {
            scratch.clear();
            t.render(vars, rng, scratch)?;
            Some(scratch.as_bytes())
        }
    };
    finish(out, body, &req.method, req.own_length);
    Ok(())
}

/// A request-target as HTTP/1.1 allows it on the wire: visible ASCII only.
fn valid_target(path: &str) -> bool {
    !path.is_empty() && path.bytes().all(|b| b.is_ascii_graphic())
}

fn header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Ends the head and appends the body. A body always gets its length; so do
/// the methods that expect one, even when empty, as some servers insist.
fn finish(out: &mut Vec<u8>, body: Option<&[u8]>, method: &Method, own_length: bool) {
    let wants_length = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if !own_length && (body.is_some() || wants_length) {
        let len = body.map_or(0, <[u8]>::len);
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
}

fn prepare(
    r: &RequestSpec,
    endpoints: &[EndpointKey],
    tls: &squall_common::scenario::TargetTls,
    targets: &[Target],
    h2: Option<&H2Pool>,
) -> Result<PreparedRequest, WorkerError> {
    let bad = |what: String| WorkerError::Scenario(format!("request `{}`: {what}", r.name));
    let target = match &r.host {
        None => 0,
        Some(url) => {
            let t = Target::new(url, tls)?;
            targets
                .iter()
                .position(|x| x.origin == t.origin && x.base_path == t.base_path)
                .ok_or_else(|| bad(format!("host `{url}` is not among the run's hosts")))?
        }
    };
    let (base_path, host) = (&targets[target].base_path, &targets[target].host);
    let endpoint = endpoints
        .iter()
        .position(|e| e.name == r.name && e.method == r.method)
        .ok_or_else(|| bad("not in the endpoint table".into()))?;
    let method = Method::from_bytes(r.method.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let path_t = Template::compile_url(&r.path, &r.query).map_err(|e| bad(e.to_string()))?;
    let path = match path_t.as_static() {
        Some(p) => {
            let full = format!("{base_path}{p}");
            // The same check as a rendered path, plus what `Uri` knows of paths.
            if !valid_target(&full) || Uri::try_from(full.as_str()).is_err() {
                return Err(bad(format!("path `{full}` is not a valid request target")));
            }
            Part::Static(full)
        }
        None => Part::Dynamic(path_t),
    };
    let mut headers = Vec::new();
    for (k, v) in &r.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| bad(format!("{k}: {e}")))?;
        let t = Template::compile(v).map_err(|e| bad(e.to_string()))?;
        let value = match t.as_static() {
            Some(s) => {
                HeaderValue::from_str(s).map_err(|e| bad(format!("{k}: {e}")))?;
                Part::Static(s.to_owned())
            }
            None => Part::Dynamic(t),
        };
        headers.push((name, value, r.optional_headers.contains(k)));
    }
    let mut raw_body = None;
    let body = match &r.body {
        None => None,
        Some(Body::Generated(n)) => {
            if *n > squall_common::scenario::MAX_GENERATED_BODY {
                return Err(bad(format!("body_size {n} is above 64MiB")));
            }
            let n = usize::try_from(*n).map_err(|e| bad(e.to_string()))?;
            raw_body = Some(vec![b'x'; n].into_boxed_slice());
            None
        }
        Some(Body::File(b64)) => {
            use base64::Engine as _;
            if b64.len() as u64 > squall_common::scenario::MAX_BODY_FILE / 3 * 4 + 4 {
                return Err(bad("body_file is above 4MiB".into()));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| bad(format!("body_file: {e}")))?;
            raw_body = Some(bytes.into_boxed_slice());
            None
        }
        Some(b) => {
            let t = match b {
                Body::Json(v) => Template::compile_json(v),
                Body::Text(s) => Template::compile(s),
                Body::Form(pairs) => Template::compile_pairs(pairs),
                Body::Generated(_) | Body::File(_) => unreachable!("matched above"),
            }
            .map_err(|e| bad(e.to_string()))?;
            Some(match t.as_static() {
                Some(s) => Part::Static(s.to_owned()),
                None => Part::Dynamic(t),
            })
        }
    };
    let captures = r
        .capture
        .iter()
        .map(|(var, c)| {
            let capture = match c {
                CaptureSpec::Path(p) | CaptureSpec::From(CaptureFrom::Json(p)) => {
                    Capture::Json(JsonPath::parse(p).map_err(|e| bad(e.to_string()))?)
                }
                CaptureSpec::From(CaptureFrom::Header(h)) => Capture::Header(h.clone()),
                CaptureSpec::From(CaptureFrom::Regex(p)) => {
                    Capture::Regex(squall_common::check::regex(p).map_err(|e| bad(e.to_string()))?)
                }
                CaptureSpec::From(CaptureFrom::Cookie(n)) => Capture::Cookie(n.clone()),
            };
            Ok((var.clone(), capture))
        })
        .collect::<Result<Vec<_>, WorkerError>>()?;
    let checks = Checks::compile(&r.expect).map_err(|e| bad(e.to_string()))?;
    let needs_json =
        checks.needs_json() || captures.iter().any(|(_, c)| matches!(c, Capture::Json(_)));
    let needs_body = needs_json
        || checks.needs_body()
        || captures.iter().any(|(_, c)| matches!(c, Capture::Regex(_)));
    let keep_headers = checks.needs_headers()
        || captures
            .iter()
            .any(|(_, c)| matches!(c, Capture::Header(_) | Capture::Cookie(_)));
    // `connection: close`: the server is told too, so that it closes its end.
    if r.close == Some(true)
        && !headers
            .iter()
            .any(|(n, _, _)| n == http::header::CONNECTION)
    {
        headers.push((
            http::header::CONNECTION,
            Part::Static("close".to_owned()),
            false,
        ));
    }
    let own = |h: HeaderName| headers.iter().any(|(n, _, _)| *n == h);
    let own_host = own(http::header::HOST);
    let own_length = own(http::header::CONTENT_LENGTH);
    let own_cookie = own(http::header::COOKIE);
    let mut req = PreparedRequest {
        endpoint,
        target,
        wire: None,
        h2: None,
        head_only: method == Method::HEAD,
        method,
        path,
        headers,
        body,
        raw_body,
        own_host,
        own_length,
        own_cookie,
        spec: r.clone(),
        status_check: r.expect.status_name(),
        capture_checks: captures
            .iter()
            .map(|(v, _)| format!("capture {v}"))
            .collect(),
        captures,
        checks,
        needs_body,
        needs_json,
        keep_headers,
    };
    let fixed = matches!(req.path, Part::Static(_))
        && req
            .headers
            .iter()
            .all(|(_, v, _)| matches!(v, Part::Static(_)))
        && !matches!(req.body, Some(Part::Dynamic(_)));
    if fixed {
        // Nothing is rendered, so the variables and random stream go unused.
        let none = std::collections::HashMap::new();
        let vars = Vars {
            user_id: 0,
            worker_index: 0,
            captured: &none,
            sequence: None,
        };
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0);
        let mut out = Vec::new();
        write_request(
            &req,
            host,
            base_path,
            &vars,
            &mut rng,
            &mut String::new(),
            &mut out,
        )
        .map_err(|e| bad(e.to_string()))?;
        // HTTP/2 serves the run's own host (target 0) only.
        req.h2 = h2.filter(|_| target == 0).and_then(|p| p.prebuild(&out));
        req.wire = Some(out.into_boxed_slice());
    }
    Ok(req)
}

/// A flow: its own report row, then each step's request (and poll) compiled.
fn prepare_flow(
    f: &FlowSpec,
    endpoints: &[EndpointKey],
    prep: &dyn Fn(&RequestSpec) -> Result<PreparedRequest, WorkerError>,
) -> Result<PreparedFlow, WorkerError> {
    let bad = |what: String| WorkerError::Scenario(format!("flow `{}`: {what}", f.name));
    let endpoint = endpoints
        .iter()
        .position(|e| e.name == f.name && e.method == FLOW_METHOD)
        .ok_or_else(|| bad("not in the endpoint table".into()))?;
    let mut steps = Vec::new();
    for s in &f.steps {
        let request = s.request.as_ref().map(prep).transpose()?;
        let poll = match &s.poll {
            None => None,
            Some(p) => {
                if request.is_none() || p.max == 0 {
                    return Err(bad("a poll needs a request and at least one attempt".into()));
                }
                Some(PreparedPoll {
                    every: p.every,
                    max: p.max.min(squall_common::scenario::MAX_POLL_ATTEMPTS),
                    until: Until {
                        checks: Checks::compile(&p.until).map_err(|e| bad(e.to_string()))?,
                        spec: p.until.clone(),
                    },
                })
            }
        };
        let ws =
            s.ws.as_ref()
                .map(|w| super::ws::prepare(w, endpoints))
                .transpose()?;
        let sse = match (&s.sse, &s.request) {
            (Some(sse), Some(r)) => Some(super::sse::prepare(sse, &r.name, endpoints)?),
            (Some(_), None) => return Err(bad("`sse` needs a request".into())),
            (None, _) => None,
        };
        steps.push(PreparedStep {
            request,
            ws,
            sse,
            poll,
            think: s.think,
        });
    }
    Ok(PreparedFlow {
        endpoint,
        steps,
        continue_on_failure: f.continue_on_failure,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use squall_common::scenario::{Loaded, Overrides};

    use super::*;

    fn run(yaml: &str) -> PreparedRun {
        let loaded = Loaded::from_str("t.yaml", yaml).expect("scenario");
        let name = loaded.pick(None).expect("one scenario").to_owned();
        let spec = loaded
            .resolve(&name, &Overrides::default(), false)
            .expect("resolves");
        PreparedRun::new(spec).expect("prepares")
    }

    fn encode(
        run: &PreparedRun,
        task: usize,
        captured: &HashMap<String, String>,
    ) -> Result<String, RenderError> {
        let vars = Vars {
            user_id: 7,
            worker_index: 0,
            captured,
            sequence: None,
        };
        let mut out = Vec::new();
        let PreparedTask::Request(req) = &run.classes[0].tasks[task] else {
            panic!("task {task} is a request");
        };
        let bytes = run.encode(
            req,
            &vars,
            &mut SmallRng::seed_from_u64(1),
            &mut String::new(),
            &mut out,
            "",
        )?;
        Ok(String::from_utf8(bytes.to_vec()).expect("ascii"))
    }

    const YAML: &str = r#"
host: http://127.0.0.1:8080/v1
scenarios:
  s: { users: 1, duration: 1s }
user_classes:
  u:
    headers: { Authorization: "Bearer {{ token }}" }
    on_start:
      - { name: login, post: /login, capture: { token: "$.t", name: "$.n" } }
    tasks:
      - { name: fast, get: /fast }
      - { name: item, get: "/items/{{ user_id }}" }
      - { name: make, post: /items, json: { owner: "user{{ user_id }}" } }
      - { name: empty, post: /empty }
      - { name: head, head: /h }
"#;

    #[test]
    fn http2_static_requests_are_prebuilt_and_used_only_for_their_own_bytes() {
        let r = run(r#"
host: http://127.0.0.1:8080/v1
defaults:
  http2: { connections: 1, max_streams: 4, prior_knowledge: true }
scenarios:
  s: { users: 1, duration: 1s }
user_classes:
  u:
    tasks:
      - { name: fast, get: /fast, headers: { X-A: b } }
      - { name: item, get: "/items/{{ user_id }}" }
      - { name: away, get: "http://127.0.0.1:9090/x" }
"#);
        let req = |i: usize| match &r.classes[0].tasks[i] {
            PreparedTask::Request(q) => q,
            PreparedTask::Flow(_) => panic!("task {i} is a request"),
        };
        let vars = Vars {
            user_id: 7,
            worker_index: 0,
            captured: &HashMap::new(),
            sequence: None,
        };
        let mut out = Vec::new();
        let mut send = |q: &PreparedRequest, cookie: &str| {
            let mut rng = SmallRng::seed_from_u64(1);
            let bytes = r
                .encode(q, &vars, &mut rng, &mut String::new(), &mut out, cookie)
                .expect("encodes");
            q.h2_for(bytes).cloned()
        };
        // The static request's own bytes: its prebuilt head.
        let head = send(req(0), "").expect("prebuilt for the static bytes");
        assert_eq!(head.to_string(), "GET http://127.0.0.1:8080/v1/fast");
        // The same request with a cookie spliced in, a rendered one, and one
        // to another host (HTTP/1.1) are not.
        assert!(send(req(0), "a=1").is_none());
        assert!(send(req(1), "").is_none());
        assert!(req(2).h2.is_none());
    }

    #[test]
    fn static_and_templated_requests_encode_to_http11() {
        let r = run(&YAML.replace(r#"headers: { Authorization: "Bearer {{ token }}" }"#, ""));
        let none = HashMap::new();
        let request = |i: usize| match &r.classes[0].tasks[i] {
            PreparedTask::Request(req) => req,
            PreparedTask::Flow(_) => panic!("task {i} is a request"),
        };
        let fast = request(0);
        assert!(
            fast.wire.is_some(),
            "a request without templates is pre-encoded"
        );
        assert_eq!(
            encode(&r, 0, &none).expect("encodes"),
            "GET /v1/fast HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\r\n"
        );
        assert!(request(1).wire.is_none());
        assert_eq!(
            encode(&r, 1, &none).expect("encodes"),
            "GET /v1/items/7 HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\r\n"
        );
        let make = encode(&r, 2, &none).expect("encodes");
        let body = r#"{"owner":"user7"}"#;
        assert!(
            make.starts_with("POST /v1/items HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n"),
            "{make}"
        );
        assert!(
            make.contains("content-type: application/json\r\n"),
            "{make}"
        );
        assert!(
            make.ends_with(&format!("content-length: {}\r\n\r\n{body}", body.len())),
            "{make}"
        );
        assert!(
            encode(&r, 3, &none)
                .expect("encodes")
                .ends_with("content-length: 0\r\n\r\n")
        );
        assert!(request(4).head_only);
    }

    #[test]
    fn optional_headers_are_dropped_until_captured() {
        let r = run(YAML);
        let mut captured = HashMap::new();
        assert_eq!(
            encode(&r, 0, &captured).expect("encodes"),
            "GET /v1/fast HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\r\n"
        );
        captured.insert("token".to_owned(), "abc".to_owned());
        assert_eq!(
            encode(&r, 0, &captured).expect("encodes"),
            "GET /v1/fast HTTP/1.1\r\nhost: 127.0.0.1:8080\r\nauthorization: Bearer abc\r\n\r\n"
        );
        captured.insert("token".to_owned(), "a\r\nX-Evil: 1".to_owned());
        assert!(matches!(
            encode(&r, 0, &captured),
            Err(RenderError::Invalid(_))
        ));
    }

    #[test]
    fn rendered_paths_must_be_request_targets() {
        let r = run(&YAML.replace("/items/{{ user_id }}", "/items/{{ name }}"));
        let mut captured = HashMap::new();
        captured.insert("name".to_owned(), "a b".to_owned());
        assert!(matches!(
            encode(&r, 1, &captured),
            Err(RenderError::Invalid(_))
        ));
        captured.insert("name".to_owned(), "ab".to_owned());
        assert!(
            encode(&r, 1, &captured)
                .expect("encodes")
                .starts_with("GET /v1/items/ab HTTP/1.1\r\n")
        );
    }

    #[test]
    fn a_scenario_host_header_replaces_the_default() {
        let r = run(&YAML.replace(
            r#"headers: { Authorization: "Bearer {{ token }}" }"#,
            "headers: { Host: example.test }",
        ));
        let out = encode(&r, 0, &HashMap::new()).expect("encodes");
        assert_eq!(out, "GET /v1/fast HTTP/1.1\r\nhost: example.test\r\n\r\n");
    }

    #[test]
    fn cookies_are_spliced_after_the_request_line_and_redirects_stay_on_the_host() {
        let r = run(&YAML.replace(r#"headers: { Authorization: "Bearer {{ token }}" }"#, ""));
        let PreparedTask::Request(fast) = &r.classes[0].tasks[0] else {
            panic!("a request");
        };
        let vars = Vars {
            user_id: 1,
            worker_index: 0,
            captured: &HashMap::new(),
            sequence: None,
        };
        let mut out = Vec::new();
        let bytes = r
            .encode(
                fast,
                &vars,
                &mut SmallRng::seed_from_u64(1),
                &mut String::new(),
                &mut out,
                "sid=abc; x=1",
            )
            .expect("encodes");
        assert_eq!(
            String::from_utf8(bytes.to_vec()).expect("ascii"),
            "GET /v1/fast HTTP/1.1\r\ncookie: sid=abc; x=1\r\nhost: 127.0.0.1:8080\r\n\r\n"
        );
        let loc = |v: &str| {
            r.redirect_target(0, &[("Location".to_owned(), v.to_owned())])
                .map(|(_, p)| p)
        };
        assert_eq!(loc("/next?a=1").as_deref(), Some("/next?a=1"));
        assert_eq!(loc("http://127.0.0.1:8080/x").as_deref(), Some("/x"));
        assert_eq!(loc("http://elsewhere:8080/x"), None);
        assert_eq!(loc("https://127.0.0.1:8080/x"), None);
        assert_eq!(loc("//127.0.0.1:8080/x"), None);
        let mut get = Vec::new();
        r.encode_get(0, "/x", "", &mut get);
        assert_eq!(get, b"GET /x HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\r\n");
    }

    /// A `RunSpec` arrives from the coordinator: one carrying userinfo (an
    /// older or rogue coordinator) is refused rather than put into Host.
    #[test]
    fn a_host_with_userinfo_never_reaches_the_host_header() {
        let text = "host: http://127.0.0.1:8080\nscenarios:\n  s: { users: 1, duration: 1s }\nuser_classes:\n  u: { tasks: [ { get: /a } ] }\n";
        let mut spec = Loaded::from_str("t.yaml", text)
            .and_then(|l| l.resolve("s", &Default::default(), false))
            .expect("valid");
        spec.host = "http://user:secret@127.0.0.1:8080".to_owned();
        let err = PreparedRun::new(spec).expect_err("userinfo refused");
        assert!(err.to_string().contains("user name or password"), "{err}");
    }

    #[test]
    fn a_feeder_row_renders_in_paths_headers_and_bodies() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("a.csv"),
            "user,note\nalice,\"say \"\"hi\"\"\"\n",
        )
        .expect("write csv");
        let yaml = "host: http://127.0.0.1:8080\nfeeders:\n  a: { file: a.csv }\nscenarios:\n  s: { users: 1, duration: 1s }\nuser_classes:\n  u:\n    feed: a\n    headers: { X-User: \"{{ row.user }}\" }\n    tasks:\n      - { post: \"/u/{{ row.user }}\", query: { n: \"{{ row.note }}\" }, json: { note: \"{{ row.note }}\" } }\n";
        let file = dir.path().join("t.yaml");
        let loaded = Loaded::from_str(file.to_str().expect("utf8"), yaml).expect("scenario");
        let spec = loaded
            .resolve("s", &Overrides::default(), false)
            .expect("resolves");
        let run = PreparedRun::placed(spec, 0, 1).expect("prepares");
        let feed = &run.feeds[run.classes[0].feed.expect("fed")];
        let row = feed.draw(&mut SmallRng::seed_from_u64(1)).expect("a row");
        let captured: HashMap<String, String> =
            feed.keys.iter().cloned().zip(row.iter().cloned()).collect();
        let wire = encode(&run, 0, &captured).expect("renders");
        // Values go into a path as they are; `query:` percent-encodes them.
        assert!(
            wire.starts_with("POST /u/alice?n=say%20%22hi%22 HTTP/1.1\r\n"),
            "{wire}"
        );
        assert!(wire.contains("x-user: alice\r\n"), "{wire}");
        assert!(wire.ends_with(r#"{"note":"say \"hi\""}"#), "{wire}");
    }

    /// Each request carries its own host's Host header and base path; a
    /// redirect onto another of the run's hosts is followed there, onto a
    /// host the run does not name it is not.
    #[test]
    fn requests_go_to_their_own_hosts_and_redirects_between_them() {
        let yaml = "host: http://127.0.0.1:8080\nhosts:\n  auth: http://127.0.0.1:9090/v2\nscenarios:\n  s: { users: 1, duration: 1s }\nuser_classes:\n  u:\n    tasks:\n      - { get: /a }\n      - { host: auth, post: /login }\n      - { get: \"http://127.0.0.1:7070/x/{{ user_id }}\" }\n";
        let r = run(yaml);
        assert_eq!(r.targets.len(), 3);
        let wire: Vec<String> = (0..3)
            .map(|i| encode(&r, i, &HashMap::new()).expect("encodes"))
            .collect();
        assert_eq!(wire[0], "GET /a HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\r\n");
        assert!(
            wire[1].starts_with("POST /v2/login HTTP/1.1\r\nhost: 127.0.0.1:9090\r\n"),
            "{}",
            wire[1]
        );
        assert_eq!(wire[2], "GET /x/7 HTTP/1.1\r\nhost: 127.0.0.1:7070\r\n\r\n");
        let names: Vec<&str> = r.endpoints.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "GET /a",
                "POST auth:/login",
                "GET http://127.0.0.1:7070/x/{{ user_id }}"
            ]
        );
        let loc = |from: usize, v: &str| {
            r.redirect_target(from, &[("Location".to_owned(), v.to_owned())])
        };
        assert_eq!(loc(1, "/done"), Some((1, "/done".to_owned())));
        assert_eq!(
            loc(0, "http://127.0.0.1:9090/in"),
            Some((1, "/in".to_owned()))
        );
        assert_eq!(loc(1, "http://127.0.0.1:7070/"), Some((2, "/".to_owned())));
        assert_eq!(loc(0, "http://127.0.0.1:6060/"), None);
        let mut get = Vec::new();
        r.encode_get(1, "/in", "sid=1", &mut get);
        assert_eq!(
            get,
            b"GET /in HTTP/1.1\r\nhost: 127.0.0.1:9090\r\ncookie: sid=1\r\n\r\n"
        );
    }
}
