//! WebSocket flow steps: the keys a user writes (`ws_connect`, `ws_send`, `ws_receive`, `ws_close`), their checks, and the resolved form workers run.
//!
//! A user holds at most one WebSocket. It is opened by a `ws_connect` step and
//! kept across iterations until a `ws_close` step (or the user's end), so a flow
//! that connects only when it has no connection yet, then sends and receives
//! every iteration, keeps one long-lived socket per user.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ScenarioError;
use super::file::{Expect, OneOrMany, RequestDef};
use super::resolve::{Known, Loaded};
use super::spec::CaptureSpec;
use crate::check::ExpectSpec;
use crate::duration;
use crate::template::Template;

/// The handshake's row: one per connection opened (or refused).
pub const WS_METHOD: &str = "WS";
/// A connection's incoming data messages, one per message; the latency is the
/// gap since the previous message on that connection (the handshake for the first).
pub const WS_IN_METHOD: &str = "WSIN";
/// A `ws_send` step's row: one per message sent, the latency is the write.
pub const WS_SEND_METHOD: &str = "WSSEND";
/// A `ws_receive` step's row: one per awaited message, the latency is the round
/// trip from the user's last send on the connection to the matching message.
pub const WS_MESSAGE_METHOD: &str = "WSMSG";

/// Whether a row of this method is a WebSocket row (not an HTTP request, so
/// the report's totals leave it out, like a flow's row).
pub fn is_ws_method(method: &str) -> bool {
    matches!(
        method,
        WS_METHOD | WS_IN_METHOD | WS_SEND_METHOD | WS_MESSAGE_METHOD
    )
}

/// The longest text or binary message a `ws_send` may hold once rendered,
/// and the longest message a worker accepts from a target: bounded like any
/// input, since an endless frame would otherwise cost a worker its memory.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// `ws_connect: /ws/chat`, or with options.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum WsConnectDef {
    Url(String),
    Full(WsConnectFull),
}

/// `ws_connect: { url: /ws/chat, subprotocol: chat, ping: 20s }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WsConnectFull {
    pub url: String,
    #[serde(default)]
    pub subprotocol: Option<String>,
    /// Send a ping this often while the connection is open.
    #[serde(default, with = "duration::human_opt")]
    pub ping: Option<Duration>,
}

/// `ws_send: { text: "..." }`, `{ json: {...} }` or `{ binary: BASE64 }`; a bare string is text.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum WsSendDef {
    Text(String),
    Full(WsSendFull),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WsSendFull {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    #[serde(default)]
    pub binary: Option<String>,
}

/// `ws_receive: { json: { "$.type": reply }, contains: hello }`; `ws_receive: {}` takes the next message.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WsReceiveDef {
    #[serde(default)]
    pub json: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub contains: Option<OneOrMany>,
}

/// A message to send, as the wire carries it: templates still unrendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WsMessage {
    Text(String),
    Json(serde_json::Value),
    /// Standard Base64, checked at load time; sent as a binary frame.
    Binary(String),
}

/// One resolved WebSocket step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WsStep {
    Connect {
        /// The rows (`name`, `WS`) and (`name`, `WSIN`).
        name: String,
        /// A path from the host's root (templates allowed).
        path: String,
        headers: Vec<(String, String)>,
        /// Inherited headers, left out while their variables are missing.
        #[serde(default)]
        optional_headers: Vec<String>,
        #[serde(default)]
        subprotocol: Option<String>,
        #[serde(default, with = "duration::human_opt")]
        ping: Option<Duration>,
        #[serde(default, with = "duration::human_opt")]
        timeout: Option<Duration>,
    },
    Send {
        name: String,
        message: WsMessage,
        #[serde(default, with = "duration::human_opt")]
        timeout: Option<Duration>,
    },
    Receive {
        name: String,
        /// The conditions a message must meet (`json`, `body_contains`).
        until: ExpectSpec,
        #[serde(default, with = "duration::human_opt")]
        timeout: Option<Duration>,
        capture: Vec<(String, CaptureSpec)>,
    },
    Close,
}

impl WsStep {
    /// The report rows this step records into.
    pub fn endpoints(&self) -> Vec<(String, String)> {
        match self {
            WsStep::Connect { name, .. } => vec![
                (name.clone(), WS_METHOD.to_owned()),
                (name.clone(), WS_IN_METHOD.to_owned()),
            ],
            WsStep::Send { name, .. } => vec![(name.clone(), WS_SEND_METHOD.to_owned())],
            WsStep::Receive { name, .. } => vec![(name.clone(), WS_MESSAGE_METHOD.to_owned())],
            WsStep::Close => Vec::new(),
        }
    }
}

/// Which WebSocket key a step uses, if any.
fn ws_key(r: &RequestDef) -> Option<&'static str> {
    if r.ws_connect.is_some() {
        Some("ws_connect")
    } else if r.ws_send.is_some() {
        Some("ws_send")
    } else if r.ws_receive.is_some() {
        Some("ws_receive")
    } else if r.ws_close.is_some() {
        Some("ws_close")
    } else {
        None
    }
}

/// Whether a step is a WebSocket step.
pub(super) fn is_ws_step(r: &RequestDef) -> bool {
    ws_key(r).is_some()
}

impl Loaded {
    /// Refuses WebSocket keys outside flow steps (`on_start`, plain tasks).
    pub(super) fn refuse_ws_keys(&self, at: &str, r: &RequestDef) -> Result<(), ScenarioError> {
        match ws_key(r).or(r.sse.map(|_| "sse")) {
            Some(key) => Err(self.invalid(
                at,
                format!("`{key}` is a flow step: put it in the steps of a `flow:` task"),
            )),
            None => Ok(()),
        }
    }

    /// Checks how a class uses its WebSocket, where the file shows it: a
    /// send, receive or close with no `ws_connect` anywhere in the class, a
    /// send or receive after a `ws_close` of the same flow with no
    /// `ws_connect` between, and a connection that is opened but never used.
    pub(super) fn check_ws_class(
        &self,
        at: &str,
        tasks: &[RequestDef],
    ) -> Result<(), ScenarioError> {
        let flows = || {
            tasks
                .iter()
                .enumerate()
                .filter_map(|(i, t)| t.flow.as_ref().map(|f| (i, f)))
        };
        let steps = || flows().flat_map(|(i, f)| f.iter().enumerate().map(move |(j, s)| (i, j, s)));
        let connects = steps().any(|(_, _, s)| s.ws_connect.is_some());
        let used = steps().any(|(_, _, s)| s.ws_send.is_some() || s.ws_receive.is_some());
        for (i, j, s) in steps() {
            let path = format!("{at}.tasks[{i}].flow[{j}]");
            if !connects && (s.ws_send.is_some() || s.ws_receive.is_some() || s.ws_close.is_some())
            {
                let key = ws_key(s).unwrap_or("ws_send");
                return Err(self.located(
                    &path,
                    key,
                    format!(
                        "`{key}` uses a WebSocket this user never opens: add a `ws_connect` step before it"
                    ),
                ));
            }
            if s.ws_connect.is_some() && !used {
                return Err(self.located(
                    &path,
                    "ws_connect",
                    "this WebSocket is opened but nothing ever sends or receives on it: add a `ws_send` or `ws_receive` step",
                ));
            }
        }
        for (i, flow) in flows() {
            let mut closed_at: Option<usize> = None;
            for (j, s) in flow.iter().enumerate() {
                if s.ws_connect.is_some() {
                    closed_at = None;
                } else if s.ws_close.is_some() {
                    closed_at = Some(j);
                } else if let (Some(c), Some(key)) = (closed_at, ws_key(s)) {
                    return Err(self.located(
                        format!("{at}.tasks[{i}].flow[{j}]"),
                        key,
                        format!(
                            "`{key}` comes after the `ws_close` of step {c} with no `ws_connect` between: the socket is closed here"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// One WebSocket flow step, resolved; `strict` gains its captures.
    pub(super) fn resolve_ws_step(
        &self,
        at: &str,
        step: &RequestDef,
        inherited: &BTreeMap<String, String>,
        known: &Known<'_>,
    ) -> Result<WsStep, ScenarioError> {
        let key = ws_key(step).unwrap_or("ws_close");
        let given = [
            step.ws_connect.is_some(),
            step.ws_send.is_some(),
            step.ws_receive.is_some(),
            step.ws_close.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 || step.methods().next().is_some() {
            return Err(self.invalid(
                at,
                "a step is one of: a request (get, post, ...), `ws_connect`, `ws_send`, `ws_receive`, `ws_close`",
            ));
        }
        let http_only = step.json.is_some()
            || step.body.is_some()
            || step.expect.is_some()
            || step.poll.is_some()
            || !step.query.is_empty()
            || !step.form.is_empty()
            || step.body_size.is_some()
            || step.body_file.is_some()
            || step.redirects.is_some()
            || step.sse.is_some();
        if http_only {
            return Err(self.invalid(
                at,
                format!(
                    "`{key}` takes `name`, `headers` (ws_connect), `capture` (ws_receive), `timeout` and `think`; `json`, `body`, `expect`, `poll`, `query`, `form` and `redirects` belong to requests"
                ),
            ));
        }
        if key != "ws_connect" && !step.headers.is_empty() {
            return Err(self.invalid(
                format!("{at}.headers"),
                "headers are sent with the handshake: put them on the `ws_connect` step",
            ));
        }
        if key != "ws_receive" && !step.capture.is_empty() {
            return Err(self.invalid(
                format!("{at}.capture"),
                "captures take their value from a received message: put them on a `ws_receive` step",
            ));
        }
        let timeout = match step.timeout {
            Some(d) if d.is_zero() => {
                return Err(self.invalid(format!("{at}.timeout"), "must be above 0"));
            }
            t => t,
        };
        let template = |what: &str, text: &str| -> Result<(), ScenarioError> {
            let t = Template::compile(text)
                .map_err(|e| self.located(format!("{at}.{what}"), text, e.to_string()))?;
            self.check_vars(&format!("{at}.{what}"), &t, known, false)
        };
        if let Some(def) = &step.ws_connect {
            let (url, subprotocol, ping) = match def {
                WsConnectDef::Url(u) => (u.clone(), None, None),
                WsConnectDef::Full(f) => (f.url.clone(), f.subprotocol.clone(), f.ping),
            };
            // `ws://host/x` and `wss://host/x` name the host's own socket: only the path is kept.
            let path = match url.split_once("://") {
                Some((scheme, rest)) if scheme == "ws" || scheme == "wss" => {
                    format!("/{}", rest.split_once('/').map_or("", |(_, p)| p))
                }
                Some(_) => {
                    return Err(self.located(
                        format!("{at}.ws_connect"),
                        &url,
                        format!(
                            "`{url}`: expected a path (`/ws/chat`) or a `ws://` / `wss://` URL"
                        ),
                    ));
                }
                None => url.clone(),
            };
            if !path.starts_with('/') && !path.starts_with("{{") {
                return Err(self.located(
                    format!("{at}.ws_connect"),
                    &url,
                    format!("path `{url}` must start with `/` (the host comes from `host:`)"),
                ));
            }
            template("ws_connect", &path)?;
            if let Some(p) = &subprotocol
                && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_graphic() && b != b','))
            {
                return Err(self.located(
                    format!("{at}.ws_connect.subprotocol"),
                    p,
                    format!("`{p}` is not a subprotocol name (one token, no spaces or commas)"),
                ));
            }
            if ping.is_some_and(|d| d < Duration::from_millis(100)) {
                return Err(
                    self.invalid(format!("{at}.ws_connect.ping"), "pings at most every 100ms")
                );
            }
            for text in step.headers.values() {
                template("headers", text)?;
            }
            let mut optional = Vec::new();
            for (name, text) in inherited {
                if step.headers.contains_key(name) {
                    continue;
                }
                let t = Template::compile(text).map_err(|e| {
                    self.located(format!("{at}.headers.{name}"), text, e.to_string())
                })?;
                self.check_vars(&format!("{at}.headers.{name}"), &t, known, true)?;
                optional.push(name.clone());
            }
            let mut headers = inherited.clone();
            headers.extend(step.headers.clone());
            return Ok(WsStep::Connect {
                name: step.name.clone().unwrap_or_else(|| url.clone()),
                path,
                headers: headers.into_iter().collect(),
                optional_headers: optional,
                subprotocol,
                ping,
                timeout,
            });
        }
        if let Some(def) = &step.ws_send {
            let message = match def {
                WsSendDef::Text(t) => WsMessage::Text(t.clone()),
                WsSendDef::Full(f) => match (&f.text, &f.json, &f.binary) {
                    (Some(t), None, None) => WsMessage::Text(t.clone()),
                    (None, Some(j), None) => WsMessage::Json(j.clone()),
                    (None, None, Some(b)) => WsMessage::Binary(b.clone()),
                    _ => {
                        return Err(self.invalid(
                            format!("{at}.ws_send"),
                            "give one of `text`, `json`, `binary` (Base64)",
                        ));
                    }
                },
            };
            match &message {
                WsMessage::Text(t) => template("ws_send.text", t)?,
                WsMessage::Json(j) => {
                    let t = Template::compile_json(j)
                        .map_err(|e| self.invalid(format!("{at}.ws_send.json"), e.to_string()))?;
                    self.check_vars(&format!("{at}.ws_send.json"), &t, known, false)?;
                }
                WsMessage::Binary(b) => {
                    use base64::Engine as _;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b)
                        .map_err(|e| {
                            self.located(
                                format!("{at}.ws_send.binary"),
                                b,
                                format!("not standard Base64: {e}"),
                            )
                        })?;
                    if bytes.len() > MAX_MESSAGE_BYTES {
                        return Err(self
                            .invalid(format!("{at}.ws_send.binary"), "a message is at most 1MiB"));
                    }
                }
            }
            return Ok(WsStep::Send {
                name: step.name.clone().unwrap_or_else(|| "ws send".to_owned()),
                message,
                timeout,
            });
        }
        if let Some(def) = &step.ws_receive {
            let until = self.resolve_expect(
                &format!("{at}.ws_receive"),
                &Expect {
                    json: def.json.clone(),
                    body_contains: def.contains.clone(),
                    ..Expect::default()
                },
            )?;
            self.check_captures(at, &step.capture)?;
            return Ok(WsStep::Receive {
                name: step.name.clone().unwrap_or_else(|| "ws receive".to_owned()),
                until,
                timeout,
                capture: step.capture.clone().into_iter().collect(),
            });
        }
        if step.ws_close == Some(false) {
            return Err(self.invalid(
                format!("{at}.ws_close"),
                "write `ws_close: true` (or leave the step out)",
            ));
        }
        Ok(WsStep::Close)
    }
}

impl Loaded {
    /// A step's `sse:`: only on a `get:` without a poll, checks of the body or captures;
    /// the GET asks for `text/event-stream` unless it sets `Accept` itself.
    pub(super) fn resolve_sse(
        &self,
        at: &str,
        step: &RequestDef,
        request: Option<&mut super::spec::RequestSpec>,
    ) -> Result<Option<super::sse::SseSpec>, ScenarioError> {
        let Some(sse) = step.sse else {
            return Ok(None);
        };
        let Some(request) = request.filter(|r| r.method == "GET") else {
            return Err(self.invalid(
                format!("{at}.sse"),
                "`sse` reads the response of a `get:` step",
            ));
        };
        if step.poll.is_some() || !step.capture.is_empty() || step.expect.is_some() {
            return Err(self.invalid(
                format!("{at}.sse"),
                "an event stream takes no `poll`, `capture` or `expect` (a status other than 200 fails it)",
            ));
        }
        if request.host.is_some() {
            return Err(self.invalid(
                format!("{at}.sse"),
                "an event stream goes to the run's own `host`; `host:` and absolute URLs are not supported on `sse` steps",
            ));
        }
        if sse.events == 0 || sse.events > super::sse::MAX_EVENTS {
            return Err(self.invalid(
                format!("{at}.sse.events"),
                format!("must be from 1 to {}", super::sse::MAX_EVENTS),
            ));
        }
        if !request
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
        {
            request
                .headers
                .push(("Accept".into(), "text/event-stream".into()));
        }
        Ok(Some(sse))
    }

    /// A `ws_receive`'s captures: variable names, JSON paths and patterns.
    fn check_captures(
        &self,
        at: &str,
        capture: &BTreeMap<String, CaptureSpec>,
    ) -> Result<(), ScenarioError> {
        for (var, c) in capture {
            let cat = format!("{at}.capture.{var}");
            if !crate::template::is_name(var) || crate::template::BUILT_INS.contains(&var.as_str())
            {
                return Err(self.located(
                    &cat,
                    var,
                    format!("`{var}` is not a variable name a capture may set"),
                ));
            }
            self.check_capture_source(&cat, var, c, true)?;
        }
        Ok(())
    }
}
