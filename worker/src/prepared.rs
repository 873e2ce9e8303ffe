//! A run's scenario compiled once into ready-to-send requests: static parts pre-built, templates pre-parsed.

use bytes::Bytes;
use http::header::{HOST, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::Full;
use rand::Rng;
use squall_common::capture::JsonPath;
use squall_common::scenario::{Body, RequestSpec, Wait};
use squall_common::template::{RenderError, Template, Vars};
use squall_common::{EndpointKey, RunSpec};

use crate::error::WorkerError;

/// Text that is either known before the run or rendered per request.
#[derive(Debug, Clone)]
enum Part<T> {
    Static(T),
    Dynamic(Template),
}

#[derive(Debug)]
pub struct PreparedRequest {
    pub endpoint: usize,
    method: Method,
    uri: Part<Uri>,
    /// Name, value, and whether an undefined variable drops the header instead of failing.
    headers: Vec<(HeaderName, Part<HeaderValue>, bool)>,
    body: Option<Part<Bytes>>,
    pub spec: RequestSpec,
    pub captures: Vec<(String, JsonPath)>,
}

#[derive(Debug)]
pub struct PreparedClass {
    pub wait: Option<Wait>,
    pub on_start: Vec<PreparedRequest>,
    pub tasks: Vec<PreparedRequest>,
    /// Running sums of task weights, for picking a task with one random draw.
    cumulative: Vec<u64>,
}

impl PreparedClass {
    pub fn pick<R: Rng>(&self, rng: &mut R) -> &PreparedRequest {
        let total = self.cumulative.last().copied().unwrap_or(0);
        let x = rng.random_range(0..total.max(1));
        let i = self.cumulative.partition_point(|&c| c <= x);
        &self.tasks[i.min(self.tasks.len() - 1)]
    }
}

#[derive(Debug)]
pub struct PreparedRun {
    pub spec: RunSpec,
    pub classes: Vec<PreparedClass>,
    pub endpoints: Vec<EndpointKey>,
    host: HeaderValue,
    /// Path prefix of the host URL (`http://h/v1` → `/v1`), prepended to every path.
    base_path: String,
    /// `host:port` to resolve and connect to.
    pub authority: String,
}

impl PreparedRun {
    pub fn new(spec: RunSpec) -> Result<Self, WorkerError> {
        let bad = |what: String| WorkerError::Scenario(what);
        let url: Uri = spec
            .host
            .parse()
            .map_err(|e| bad(format!("host `{}`: {e}", spec.host)))?;
        let auth = url
            .authority()
            .ok_or_else(|| bad(format!("host `{}` has no authority", spec.host)))?;
        let authority = if auth.port().is_some() {
            auth.as_str().to_owned()
        } else {
            format!("{}:80", auth.host())
        };
        let host =
            HeaderValue::from_str(auth.as_str()).map_err(|e| bad(format!("host header: {e}")))?;
        let base_path = url.path().trim_end_matches('/').to_owned();
        let endpoints: Vec<EndpointKey> = spec
            .endpoints()
            .into_iter()
            .map(|(name, method)| EndpointKey { name, method })
            .collect();
        let mut classes = Vec::new();
        for c in &spec.classes {
            let prep = |r: &RequestSpec| prepare(r, &endpoints, &base_path);
            let on_start = c.on_start.iter().map(prep).collect::<Result<Vec<_>, _>>()?;
            let tasks = c
                .tasks
                .iter()
                .map(|t| prep(&t.request))
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
                on_start,
                tasks,
                cumulative,
            });
        }
        Ok(PreparedRun {
            spec,
            classes,
            endpoints,
            host,
            base_path,
            authority,
        })
    }

    /// Builds the hyper request for one send; static parts are cheap clones.
    pub fn build<R: Rng>(
        &self,
        req: &PreparedRequest,
        vars: &Vars<'_>,
        rng: &mut R,
        scratch: &mut String,
    ) -> Result<Request<Full<Bytes>>, RenderError> {
        let uri = match &req.uri {
            Part::Static(u) => u.clone(),
            Part::Dynamic(t) => {
                scratch.clear();
                scratch.push_str(&self.base_path);
                t.render(vars, rng, scratch)?;
                Uri::try_from(scratch.as_str())
                    .map_err(|_| RenderError::Invalid(format!("valid path (got `{scratch}`)")))?
            }
        };
        let mut builder = Request::builder().method(req.method.clone()).uri(uri);
        let headers = builder.headers_mut();
        if let Some(h) = headers {
            h.insert(HOST, self.host.clone());
            for (name, value, optional) in &req.headers {
                let v = match value {
                    Part::Static(v) => v.clone(),
                    Part::Dynamic(t) => {
                        scratch.clear();
                        match t.render(vars, rng, scratch) {
                            Ok(()) => {}
                            Err(RenderError::Undefined(_)) if *optional => continue,
                            Err(e) => return Err(e),
                        }
                        HeaderValue::from_str(scratch).map_err(|_| {
                            RenderError::Invalid(format!("valid header value for {name}"))
                        })?
                    }
                };
                h.append(name.clone(), v);
            }
        }
        let body = match &req.body {
            None => Bytes::new(),
            Some(Part::Static(b)) => b.clone(),
            Some(Part::Dynamic(t)) => {
                scratch.clear();
                t.render(vars, rng, scratch)?;
                Bytes::copy_from_slice(scratch.as_bytes())
            }
        };
        builder
            .body(Full::new(body))
            .map_err(|e| RenderError::Invalid(format!("valid request ({e})")))
    }
}

fn prepare(
    r: &RequestSpec,
    endpoints: &[EndpointKey],
    base_path: &str,
) -> Result<PreparedRequest, WorkerError> {
    let bad = |what: String| WorkerError::Scenario(format!("request `{}`: {what}", r.name));
    let endpoint = endpoints
        .iter()
        .position(|e| e.name == r.name && e.method == r.method)
        .ok_or_else(|| bad("not in the endpoint table".into()))?;
    let method = Method::from_bytes(r.method.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let path_t = Template::compile(&r.path).map_err(|e| bad(e.to_string()))?;
    let uri = match path_t.as_static() {
        Some(p) => Part::Static(
            Uri::try_from(format!("{base_path}{p}")).map_err(|e| bad(format!("path: {e}")))?,
        ),
        None => Part::Dynamic(path_t),
    };
    let mut headers = Vec::new();
    for (k, v) in &r.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| bad(format!("{k}: {e}")))?;
        let t = Template::compile(v).map_err(|e| bad(e.to_string()))?;
        let value = match t.as_static() {
            Some(s) => {
                Part::Static(HeaderValue::from_str(s).map_err(|e| bad(format!("{k}: {e}")))?)
            }
            None => Part::Dynamic(t),
        };
        headers.push((name, value, r.optional_headers.contains(k)));
    }
    let body = match &r.body {
        None => None,
        Some(b) => {
            let t = match b {
                Body::Json(v) => Template::compile_json(v),
                Body::Text(s) => Template::compile(s),
            }
            .map_err(|e| bad(e.to_string()))?;
            Some(match t.as_static() {
                Some(s) => Part::Static(Bytes::copy_from_slice(s.as_bytes())),
                None => Part::Dynamic(t),
            })
        }
    };
    let captures = r
        .capture
        .iter()
        .map(|(var, expr)| {
            JsonPath::parse(expr)
                .map(|p| (var.clone(), p))
                .map_err(|e| bad(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PreparedRequest {
        endpoint,
        method,
        uri,
        headers,
        body,
        spec: r.clone(),
        captures,
    })
}
