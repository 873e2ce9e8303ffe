//! The scenario file as the user writes it: every section and key, parsed strictly from YAML.
//!
//! Unknown keys and wrong types are refused here with the line and column;
//! whether the values make sense together is [`super::resolve`]'s question.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ScenarioError;
use super::size::ByteSize;
use super::spec::Wait;
use crate::duration;
use crate::rate::Rate;

/// A scenario file as written by the user.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Base URL of the system under test; `--host` overrides it.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub defaults: Defaults,
    /// How an `https://` host's certificate is checked.
    #[serde(default)]
    pub tls: Option<TlsDef>,
    /// Named load shapes, in file order.
    #[serde(with = "ordered")]
    pub scenarios: Vec<(String, ScenarioDef)>,
    /// Named user behaviours, in file order.
    #[serde(with = "ordered")]
    pub user_classes: Vec<(String, UserClassDef)>,
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
}

/// One named scenario: a load shape plus its thresholds.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioDef {
    #[serde(default)]
    pub host: Option<String>,
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
    #[serde(default)]
    pub on_start: Vec<RequestDef>,
    pub tasks: Vec<RequestDef>,
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
    /// Variables to capture from a JSON response: `{ token: "$.access_token" }`.
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub status: Option<StatusSet>,
}

/// One expected status or a list of them.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum StatusSet {
    One(u16),
    Many(Vec<u16>),
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
            ScenarioError::Syntax {
                file: file.to_owned(),
                line,
                column,
                message,
            }
        })
    }
}

/// YAML mappings whose order matters (scenarios, user classes), kept as ordered pairs.
mod ordered {
    use serde::de::{DeserializeOwned, Error, MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serialize, Serializer};
    use std::fmt;
    use std::marker::PhantomData;

    pub fn deserialize<'de, D, V>(d: D) -> Result<Vec<(String, V)>, D::Error>
    where
        D: Deserializer<'de>,
        V: DeserializeOwned,
    {
        struct Ordered<V>(PhantomData<V>);
        impl<'de, V: DeserializeOwned> Visitor<'de> for Ordered<V> {
            type Value = Vec<(String, V)>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of names to definitions")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(String, V)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if out.iter().any(|(k, _)| *k == key) {
                        return Err(A::Error::custom(format!("`{key}` is defined twice")));
                    }
                    let value = map.next_value::<V>()?;
                    out.push((key, value));
                }
                Ok(out)
            }
        }
        d.deserialize_map(Ordered(PhantomData))
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
