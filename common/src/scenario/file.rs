//! The scenario file as the user writes it: every section and key, parsed strictly from YAML.
//!
//! Unknown keys and wrong types are refused here with the line and column;
//! whether the values make sense together is [`super::resolve`]'s question.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ScenarioError;
use super::feeder::{Exhausted, FeedMode};
use super::size::ByteSize;
use super::spec::{CaptureSpec, Wait};
use crate::duration;
use crate::rate::Rate;

/// A scenario file as written by the user.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Base URL of the system under test; `--host` overrides it.
    #[serde(default)]
    pub host: Option<String>,
    /// Further named hosts a request picks with `host: NAME`; `--host` leaves them be.
    #[serde(default, with = "ordered")]
    pub hosts: Vec<(String, String)>,
    #[serde(default)]
    pub defaults: Defaults,
    /// How an `https://` host's certificate is checked.
    #[serde(default)]
    pub tls: Option<TlsDef>,
    /// Named load shapes, in file order; each name is a directory name under
    /// `--out` with `--all`, so [`scenario_name`] checks it as one.
    #[serde(
        deserialize_with = "ordered::deserialize_scenarios",
        serialize_with = "ordered::serialize"
    )]
    pub scenarios: Vec<(String, ScenarioDef)>,
    /// Named user behaviours, in file order.
    #[serde(with = "ordered")]
    pub user_classes: Vec<(String, UserClassDef)>,
    /// Named data files a user class draws rows from (`feed: NAME`).
    #[serde(default, with = "ordered")]
    pub feeders: Vec<(String, FeederDef)>,
    /// Steps run once per test before any user starts (flow-step shape);
    /// what they capture is a variable of every user.
    #[serde(default)]
    pub setup: Vec<RequestDef>,
    /// Steps run once per test after the load stopped, however it stopped.
    #[serde(default)]
    pub teardown: Vec<RequestDef>,
}

/// `accounts: { file: data/accounts.csv, mode: unique, on_exhausted: stop_user }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeederDef {
    /// A `.csv` (header line first) or `.json` file, relative to the scenario file.
    pub file: String,
    #[serde(default)]
    pub mode: FeedMode,
    /// `unique` feeders only: `stop_user` (default) or `cycle`.
    #[serde(default)]
    pub on_exhausted: Option<Exhausted>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default, with = "duration::human_opt")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The most of a response body kept for `capture:` (16MiB when absent).
    #[serde(default)]
    pub max_capture_body: Option<ByteSize>,
    /// A cookie jar per user, like a browser session (on when absent).
    #[serde(default)]
    pub cookies: Option<bool>,
    /// Redirects a request follows (none when absent).
    #[serde(default)]
    pub redirects: Option<u32>,
    /// `close`: a new connection for every request (keep-alive when absent).
    #[serde(default)]
    pub connection: Option<super::transport::ConnectionDef>,
    /// HTTP/2 to the target: connections per worker and streams on each.
    #[serde(default)]
    pub http2: Option<super::transport::Http2Def>,
}

/// One named scenario: a load shape plus its thresholds.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioDef {
    #[serde(default)]
    pub host: Option<String>,
    /// Named hosts for this scenario, each replacing the top level's of that name.
    #[serde(default, with = "ordered")]
    pub hosts: Vec<(String, String)>,
    #[serde(default)]
    pub users: Option<u64>,
    #[serde(default)]
    pub spawn_rate: Option<f64>,
    #[serde(default, with = "duration::human_opt")]
    pub duration: Option<Duration>,
    #[serde(default)]
    pub stages: Option<Vec<StageDef>>,
    #[serde(default)]
    pub arrival_rate: Option<Rate>,
    #[serde(default)]
    pub max_users: Option<u64>,
    #[serde(default)]
    pub thresholds: Vec<String>,
    /// Restricts the scenario to these user classes (all when absent).
    #[serde(default)]
    pub user_classes: Option<Vec<String>>,
    /// How long in-flight requests may take to finish when the run stops.
    #[serde(default, with = "duration::human_opt")]
    pub graceful_stop: Option<Duration>,
    /// Iterations for the whole cluster; the run ends early once they are done.
    #[serde(default)]
    pub iterations: Option<u64>,
    /// Iterations each user runs before it retires.
    #[serde(default)]
    pub iterations_per_user: Option<u64>,
    /// Stop conditions checked every second (threshold syntax, e.g. `error_rate > 5%`):
    /// the run stops and the report records where the target broke.
    #[serde(default)]
    pub stop_when: Vec<String>,
    /// When a comparison with a baseline counts as a regression (`--regression` syntax, e.g. `p95=10%, rps=15%`).
    #[serde(default)]
    pub regression: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StageDef {
    #[serde(with = "duration::human")]
    pub duration: Duration,
    #[serde(default)]
    pub users: Option<u64>,
    #[serde(default)]
    pub rate: Option<Rate>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserClassDef {
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default, with = "serde_yaml_ng::with::singleton_map")]
    pub wait: Option<Wait>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Variables evaluated once per user, in order, before `on_start`.
    #[serde(default, with = "ordered")]
    pub vars: Vec<(String, String)>,
    #[serde(default)]
    pub on_start: Vec<RequestDef>,
    pub tasks: Vec<RequestDef>,
    /// The feeder each user of this class draws one row from when it starts.
    #[serde(default)]
    pub feed: Option<String>,
    /// `close`: this class's requests each use a new connection.
    #[serde(default)]
    pub connection: Option<super::transport::ConnectionDef>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequestDef {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub weight: Option<u32>,
    /// The named host (from `hosts:`) this request goes to, instead of `host:`.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub get: Option<String>,
    #[serde(default)]
    pub post: Option<String>,
    #[serde(default)]
    pub put: Option<String>,
    #[serde(default)]
    pub patch: Option<String>,
    #[serde(default)]
    pub delete: Option<String>,
    #[serde(default)]
    pub head: Option<String>,
    #[serde(default)]
    pub options: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub expect: Option<Expect>,
    /// Variables to capture: `{ token: "$.access_token" }` (a JSON path), or
    /// `{ json: PATH }`, `{ header: NAME }`, `{ regex: PATTERN }`, `{ cookie: NAME }`.
    #[serde(default)]
    pub capture: BTreeMap<String, CaptureSpec>,
    /// A task made of steps run in order in one iteration.
    #[serde(default)]
    pub flow: Option<Vec<RequestDef>>,
    /// Flow tasks: go on after a failed step instead of ending the flow there.
    #[serde(default)]
    pub continue_on_failure: Option<bool>,
    /// Flow steps: repeat the request until a condition holds.
    #[serde(default)]
    pub poll: Option<PollDef>,
    /// Flow steps: a pause after the step (`1s`, `{ constant: 1s }`, `{ between: [1s, 3s] }`).
    #[serde(default)]
    pub think: Option<ThinkDef>,
    /// Query parameters, percent-encoded and appended to the path.
    #[serde(default, with = "ordered")]
    pub query: Vec<(String, String)>,
    /// A form body (`application/x-www-form-urlencoded`).
    #[serde(default, with = "ordered")]
    pub form: Vec<(String, String)>,
    /// A generated body of this size (`64KiB`).
    #[serde(default)]
    pub body_size: Option<ByteSize>,
    /// A file sent as the body, relative to the scenario file.
    #[serde(default)]
    pub body_file: Option<String>,
    /// Redirects this request follows, instead of `defaults.redirects`.
    #[serde(default)]
    pub redirects: Option<u32>,
    /// This request's timeout, instead of `defaults.timeout`.
    #[serde(default, with = "duration::human_opt")]
    pub timeout: Option<Duration>,
    /// `close`: this request uses a new connection, instead of the class's
    /// or `defaults.connection`.
    #[serde(default)]
    pub connection: Option<super::transport::ConnectionDef>,
    /// Flow steps: open the user's WebSocket (see [`super::ws`]).
    #[serde(default)]
    pub ws_connect: Option<super::ws::WsConnectDef>,
    /// Flow steps: send one message on the user's WebSocket.
    #[serde(default)]
    pub ws_send: Option<super::ws::WsSendDef>,
    /// Flow steps: wait for a message that matches.
    #[serde(default)]
    pub ws_receive: Option<super::ws::WsReceiveDef>,
    /// Flow steps: close the user's WebSocket.
    #[serde(default)]
    pub ws_close: Option<bool>,
    /// Flow steps: read a `get:`'s response as server-sent events.
    #[serde(default)]
    pub sse: Option<super::sse::SseSpec>,
}

impl RequestDef {
    /// The method keys given (`get:` ... `options:`) with their paths, in the
    /// order the error messages list them: a request names exactly one, any
    /// other step none.
    pub fn methods(&self) -> impl Iterator<Item = (&'static str, &String)> {
        [
            ("GET", &self.get),
            ("POST", &self.post),
            ("PUT", &self.put),
            ("PATCH", &self.patch),
            ("DELETE", &self.delete),
            ("HEAD", &self.head),
            ("OPTIONS", &self.options),
        ]
        .into_iter()
        .filter_map(|(method, path)| path.as_ref().map(|path| (method, path)))
    }
}

/// `poll: { every: 500ms, max: 20, until: { json: { "$.status": done } } }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PollDef {
    #[serde(with = "duration::human")]
    pub every: Duration,
    pub max: u32,
    pub until: Expect,
}

/// A pause: a bare duration, or any `wait` form.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum ThinkDef {
    Fixed(#[serde(with = "duration::human")] Duration),
    Wait(#[serde(with = "serde_yaml_ng::with::singleton_map")] Wait),
}

impl ThinkDef {
    pub fn wait(&self) -> Wait {
        match self {
            ThinkDef::Fixed(d) => Wait::Constant(*d),
            ThinkDef::Wait(w) => *w,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub status: Option<StatusSet>,
    /// Header name to a value it must equal, or `{ equals | contains | exists | matches: ... }`.
    #[serde(default)]
    pub headers: BTreeMap<String, serde_json::Value>,
    /// Text the body must contain (one or a list).
    #[serde(default)]
    pub body_contains: Option<OneOrMany>,
    /// JSON path to a value it must equal, or `{ equals | contains | exists | matches: ... }`.
    #[serde(default)]
    pub json: BTreeMap<String, serde_json::Value>,
    /// The slowest response that still passes.
    #[serde(default, with = "duration::human_opt")]
    pub max_latency: Option<Duration>,
}

/// One string or a list of them.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// One expected status, a class or range (`2xx`, `200-299`), or a list of them.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum StatusSet {
    One(u16),
    Text(String),
    Many(Vec<StatusItem>),
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum StatusItem {
    Code(u16),
    Text(String),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsDef {
    /// A PEM file of extra trusted CA certificates, relative to the scenario file.
    #[serde(default)]
    pub ca: Option<String>,
    /// Accept any server certificate (self-signed staging hosts).
    #[serde(default)]
    pub insecure: bool,
}

impl ScenarioFile {
    /// Parses YAML strictly; a serde error becomes `file:line:column: message`.
    pub fn parse(file: &str, text: &str) -> Result<ScenarioFile, ScenarioError> {
        serde_yaml_ng::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            let mut message = e.to_string();
            // serde_yaml_ng appends " at line L column C"; we already lead with it.
            if let Some(idx) = message.rfind(" at line ") {
                message.truncate(idx);
            }
            message.push_str(&unknown_name_hint(&message));
            let message = untagged_hint(message);
            ScenarioError::Syntax {
                file: file.to_owned(),
                line,
                column,
                message,
            }
        })
    }
}

/// Says what an untagged value (a capture, a status, a think time) may be,
/// instead of serde's "data did not match any variant".
fn untagged_hint(message: String) -> String {
    const WHAT: [(&str, &str); 5] = [
        (
            "CaptureSpec",
            "expected a JSON path such as `$.id`, or one of `{ json: PATH }`, `{ header: NAME }`, `{ regex: PATTERN }`, `{ cookie: NAME }`",
        ),
        (
            "StatusSet",
            "expected a status such as `200`, `2xx` or `200-299`, or a list of them",
        ),
        ("OneOrMany", "expected a string or a list of strings"),
        (
            "ThinkDef",
            "expected a duration such as `1s`, or `{ constant: 1s }`, `{ between: [1s, 3s] }`",
        ),
        (
            "StatusItem",
            "expected a status such as `200`, `2xx` or `200-299`",
        ),
    ];
    for (name, what) in WHAT {
        if message.contains(&format!(
            "did not match any variant of untagged enum {name}"
        )) {
            let lead = message.split("data did not match").next().unwrap_or("");
            return format!("{lead}{what}");
        }
    }
    message
}

/// "Did you mean" for serde's `unknown field `X`, expected one of `a`, `b``
/// (and `unknown variant`): the closest expected name, or nothing.
fn unknown_name_hint(message: &str) -> String {
    for lead in ["unknown field `", "unknown variant `"] {
        let Some(at) = message.find(lead) else {
            continue;
        };
        let rest = &message[at + lead.len()..];
        let Some(end) = rest.find('`') else {
            continue;
        };
        let word = &rest[..end];
        let expected: Vec<&str> = rest[end + 1..].split('`').skip(1).step_by(2).collect();
        return crate::suggest::hint(word, expected);
    }
    String::new()
}

/// Longest scenario name: a file name component may have 255 bytes (NAME_MAX).
pub const MAX_SCENARIO_NAME_BYTES: usize = 255;

/// Checks that a scenario name can be a directory name under `--out` (it is
/// one with `--all`): not empty, no path separator, not `.` or `..` (which
/// would write outside its own directory), no control characters (which
/// would also reach the terminal), not `index.json` (the index beside it),
/// at most [`MAX_SCENARIO_NAME_BYTES`] bytes.
pub fn scenario_name(name: &str) -> Result<(), String> {
    let problem = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_SCENARIO_NAME_BYTES {
        "is longer than 255 bytes"
    } else if name.contains(['/', '\\']) {
        "contains a path separator (`/` or `\\`)"
    } else if name == "." || name == ".." {
        "is `.` or `..`"
    } else if name.chars().any(char::is_control) {
        "contains a control character"
    } else if name == "index.json" {
        "is `index.json`, the name of the index written beside the scenarios' directories"
    } else {
        return Ok(());
    };
    Err(format!(
        "scenario name {:?} {problem}: a scenario name is used as a directory name under --out with --all, so use letters, digits, `-`, `_` or `.`",
        name.chars().take(64).collect::<String>()
    ))
}

/// YAML mappings whose order matters (scenarios, user classes), kept as ordered pairs.
mod ordered {
    use serde::de::{DeserializeOwned, DeserializeSeed, Error, MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serialize, Serializer};
    use std::fmt;
    use std::marker::PhantomData;

    pub fn deserialize<'de, D, V>(d: D) -> Result<Vec<(String, V)>, D::Error>
    where
        D: Deserializer<'de>,
        V: DeserializeOwned,
    {
        d.deserialize_map(Ordered(|_: &str| Ok(()), PhantomData))
    }

    /// [`deserialize`] with every key checked by [`super::scenario_name`] as it
    /// is read, so the error points at the name.
    pub fn deserialize_scenarios<'de, D, V>(d: D) -> Result<Vec<(String, V)>, D::Error>
    where
        D: Deserializer<'de>,
        V: DeserializeOwned,
    {
        d.deserialize_map(Ordered(super::scenario_name, PhantomData))
    }

    /// The visitor: keys in order, duplicates refused, each key checked by `.0`.
    struct Ordered<C, V>(C, PhantomData<V>);

    /// A key checked as it is read, so that its error carries the key's own line and column.
    struct Key<'c, C>(&'c C);

    impl<'de, C: Fn(&str) -> Result<(), String>> DeserializeSeed<'de> for Key<'_, C> {
        type Value = String;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
            // Checked inside the visitor: the parser then tags the error with
            // the key's position rather than the mapping's.
            d.deserialize_string(self)
        }
    }

    impl<'de, C: Fn(&str) -> Result<(), String>> Visitor<'de> for Key<'_, C> {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a name")
        }
        fn visit_str<E: Error>(self, key: &str) -> Result<String, E> {
            (self.0)(key).map_err(E::custom)?;
            Ok(key.to_owned())
        }
    }

    impl<'de, C, V> Visitor<'de> for Ordered<C, V>
    where
        C: Fn(&str) -> Result<(), String>,
        V: DeserializeOwned,
    {
        type Value = Vec<(String, V)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a mapping of names to definitions")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<(String, V)> = Vec::new();
            while let Some(key) = map.next_key_seed(Key(&self.0))? {
                if out.iter().any(|(k, _)| *k == key) {
                    return Err(A::Error::custom(format!("`{key}` is defined twice")));
                }
                let value = map.next_value::<V>()?;
                out.push((key, value));
            }
            Ok(out)
        }
    }

    pub fn serialize<S: Serializer, V: Serialize>(
        v: &[(String, V)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(v.len()))?;
        for (k, val) in v {
            m.serialize_entry(k, val)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_named(name: &str) -> Result<ScenarioFile, ScenarioError> {
        let text = format!(
            "host: http://x\nscenarios:\n  ok: {{ users: 1, duration: 1s }}\n  {name}: {{ users: 1, duration: 1s }}\nuser_classes:\n  u: {{ tasks: [ {{ get: / }} ] }}\n"
        );
        ScenarioFile::parse("f.yaml", &text)
    }

    #[test]
    fn scenario_names_that_are_not_directory_names_are_refused_with_their_line() {
        for (name, why) in [
            ("\"a/b\"", "path separator"),
            ("\"..\\\\up\"", "path separator"),
            ("\"..\"", "`.` or `..`"),
            ("\".\"", "`.` or `..`"),
            ("\"\"", "is empty"),
            ("\"bell\\u0007\"", "control character"),
            ("\"tab\\there\"", "control character"),
            ("index.json", "index.json"),
        ] {
            let err = parse_named(name).expect_err(name).to_string();
            assert!(err.starts_with("f.yaml:4:"), "{name}: {err}");
            assert!(err.contains(why), "{name}: {err}");
            assert!(err.contains("--all"), "{name}: {err}");
        }
        let long = "x".repeat(MAX_SCENARIO_NAME_BYTES + 1);
        assert!(parse_named(&long).is_err());
        for fine in ["smoke", "spike-2", "a.b", "a..b", "v1_api", "ünïcode"] {
            assert!(parse_named(fine).is_ok(), "{fine}");
        }
        // User class names are not directory names: only scenarios are checked.
        let text = "host: http://x\nscenarios:\n  s: { users: 1, duration: 1s }\nuser_classes:\n  \"a/b\": { tasks: [ { get: / } ] }\n";
        assert!(ScenarioFile::parse("f.yaml", text).is_ok());
    }
}
