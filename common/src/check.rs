//! Checks under `expect:`: what a response must look like to count as a success
//! (status sets and ranges, headers, body text, JSON paths, latency), as they
//! travel to workers and as workers evaluate them per response.

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::capture::JsonPath;

/// One condition on a header or a JSON value, as it travels on the wire:
/// `{"equals": ...}`, `{"contains": "..."}`, `{"exists": true}` or `{"matches": "regex"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cond {
    Equals(serde_json::Value),
    Contains(String),
    Exists(bool),
    Matches(String),
}

/// The operator keys a condition may use in the file, for "did you mean".
pub const COND_KEYS: [&str; 4] = ["equals", "contains", "exists", "matches"];

/// The checks of one request, resolved: every range, header, text, path and limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExpectSpec {
    /// Inclusive status ranges (`200` is `(200, 200)`, `2xx` is `(200, 299)`);
    /// empty means any status below 400.
    #[serde(default)]
    pub status: Vec<(u16, u16)>,
    #[serde(default)]
    pub headers: Vec<(String, Cond)>,
    #[serde(default)]
    pub body_contains: Vec<String>,
    #[serde(default)]
    pub json: Vec<(String, Cond)>,
    #[serde(default)]
    pub max_latency_us: Option<u64>,
    /// Names given in the file (`name:` beside a condition), keyed by the
    /// check's default name; reports count failed checks under these.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub names: std::collections::BTreeMap<String, String>,
}

/// The longest check name a report keeps; longer names given in a file are
/// refused, and a longer one from a worker is counted under [`OTHER_CHECKS`].
pub const MAX_CHECK_NAME_LEN: usize = 120;
/// Distinct check names kept per endpoint; further names count under [`OTHER_CHECKS`].
pub const MAX_CHECK_NAMES: usize = 32;
/// Where failed checks past [`MAX_CHECK_NAMES`], or with unprintable names, are counted.
pub const OTHER_CHECKS: &str = "(other checks)";

/// Whether `name` may be shown as a check's name: 1 to [`MAX_CHECK_NAME_LEN`]
/// bytes without control characters (it reaches terminals and HTML).
pub fn is_check_name(name: &str) -> bool {
    (1..=MAX_CHECK_NAME_LEN).contains(&name.len()) && !name.chars().any(char::is_control)
}

impl Cond {
    /// The condition as a report shows it: `== true`, `contains "json"`, `exists`.
    fn describe(&self) -> String {
        match self {
            Cond::Equals(v) => format!("== {v}"),
            Cond::Contains(s) => format!("contains {}", serde_json::Value::from(s.as_str())),
            Cond::Exists(true) => "exists".to_owned(),
            Cond::Exists(false) => "is absent".to_owned(),
            Cond::Matches(p) => format!("matches /{p}/"),
        }
    }
}

/// A header check's default name: `header content-type contains "json"`.
pub fn header_check_name(header: &str, c: &Cond) -> String {
    clip(format!(
        "header {} {}",
        header.to_ascii_lowercase(),
        c.describe()
    ))
}

/// A JSON check's default name: `$.ok == true`.
pub fn json_check_name(path: &str, c: &Cond) -> String {
    clip(format!("{path} {}", c.describe()))
}

/// Cuts a default name to [`MAX_CHECK_NAME_LEN`] bytes, on a character boundary.
fn clip(mut name: String) -> String {
    if name.len() > MAX_CHECK_NAME_LEN {
        let mut end = MAX_CHECK_NAME_LEN - 3;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
        name.push_str("...");
    }
    name.retain(|c| !c.is_control());
    name
}

impl ExpectSpec {
    /// Whether anything beyond the status is checked (the body or headers are then needed).
    pub fn is_status_only(&self) -> bool {
        self.headers.is_empty()
            && self.body_contains.is_empty()
            && self.json.is_empty()
            && self.max_latency_us.is_none()
    }

    /// The status check's name (`status 200`, `status in [200, 300-399]`),
    /// when `expect:` sets statuses.
    pub fn status_name(&self) -> Option<String> {
        let range = |&(lo, hi): &(u16, u16)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        };
        match self.status.as_slice() {
            [] => None,
            [one] => Some(format!("status {}", range(one))),
            many => Some(clip(format!(
                "status in [{}]",
                many.iter().map(range).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    pub fn status_ok(&self, status: u16) -> bool {
        if self.status.is_empty() {
            status < 400
        } else {
            self.status
                .iter()
                .any(|&(lo, hi)| (lo..=hi).contains(&status))
        }
    }
}

/// Why a check could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("{0}")]
    Path(#[from] crate::capture::JsonPathError),
    #[error("invalid regular expression `{pattern}`: {message}")]
    Regex { pattern: String, message: String },
}

/// Compiles a regular expression with a size bound, so a scenario cannot ask
/// a worker for an enormous automaton.
pub fn regex(pattern: &str) -> Result<Regex, CheckError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| CheckError::Regex {
            pattern: pattern.to_owned(),
            message: e.to_string().lines().last().unwrap_or("").trim().to_owned(),
        })
}

#[derive(Debug, Clone)]
enum Compiled {
    Equals(serde_json::Value),
    Contains(String),
    Exists(bool),
    Matches(Regex),
}

impl Compiled {
    fn new(c: &Cond) -> Result<Compiled, CheckError> {
        Ok(match c {
            Cond::Equals(v) => Compiled::Equals(v.clone()),
            Cond::Contains(s) => Compiled::Contains(s.clone()),
            Cond::Exists(b) => Compiled::Exists(*b),
            Cond::Matches(p) => Compiled::Matches(regex(p)?),
        })
    }

    /// Judges a text value (a header, or a JSON value's text); None = absent.
    fn text(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (Compiled::Exists(want), v) => v.is_some() == *want,
            (_, None) => false,
            (Compiled::Equals(e), Some(v)) => match e {
                serde_json::Value::String(s) => s == v,
                other => {
                    let text = other.to_string();
                    text == v
                }
            },
            (Compiled::Contains(s), Some(v)) => v.contains(s.as_str()),
            (Compiled::Matches(r), Some(v)) => r.is_match(v),
        }
    }

    /// Judges a JSON value: `equals` compares JSON values (so `1` equals `1.0`
    /// and `"1"` does not), the others its text.
    fn json(&self, value: Option<&serde_json::Value>) -> bool {
        match (self, value) {
            (Compiled::Exists(want), v) => v.is_some_and(|v| !v.is_null()) == *want,
            (_, None) => false,
            (Compiled::Equals(e), Some(v)) => {
                e == v || (e.is_number() && v.is_number() && e.as_f64() == v.as_f64())
            }
            (c, Some(serde_json::Value::String(s))) => c.text(Some(s)),
            (c, Some(v)) => c.text(Some(&v.to_string())),
        }
    }
}

/// The checks of one request, ready to judge responses.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    headers: Vec<(String, Compiled)>,
    body_contains: Vec<String>,
    json: Vec<(JsonPath, Compiled)>,
    max_latency_us: Option<u64>,
    /// Each check's name, in the order they are judged: latency, headers,
    /// body texts, JSON paths.
    names: Vec<String>,
}

/// What a response showed, for judging it.
#[derive(Debug)]
pub struct Observed<'a> {
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    /// The body parsed as JSON, when it is JSON.
    pub json: Option<&'a serde_json::Value>,
    pub latency_us: u64,
}

impl Checks {
    pub fn compile(spec: &ExpectSpec) -> Result<Checks, CheckError> {
        let headers = spec
            .headers
            .iter()
            .map(|(n, c)| Ok((n.clone(), Compiled::new(c)?)))
            .collect::<Result<_, CheckError>>()?;
        let json = spec
            .json
            .iter()
            .map(|(p, c)| Ok((JsonPath::parse(p)?, Compiled::new(c)?)))
            .collect::<Result<_, CheckError>>()?;
        let named = |default: String| spec.names.get(&default).cloned().unwrap_or(default);
        let names = spec
            .max_latency_us
            .map(|us| {
                format!(
                    "latency <= {}",
                    crate::duration::format(std::time::Duration::from_micros(us))
                )
            })
            .into_iter()
            .chain(spec.headers.iter().map(|(h, c)| header_check_name(h, c)))
            .chain(spec.body_contains.iter().map(|t| {
                clip(format!(
                    "body contains {}",
                    serde_json::Value::from(t.as_str())
                ))
            }))
            .chain(spec.json.iter().map(|(p, c)| json_check_name(p, c)))
            .map(named)
            .collect();
        Ok(Checks {
            headers,
            body_contains: spec.body_contains.clone(),
            json,
            max_latency_us: spec.max_latency_us,
            names,
        })
    }

    /// The name of the check at `index` (as [`Checks::first_failure`] gives it).
    pub fn name(&self, index: usize) -> &str {
        self.names.get(index).map_or(OTHER_CHECKS, String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
            && self.body_contains.is_empty()
            && self.json.is_empty()
            && self.max_latency_us.is_none()
    }

    pub fn needs_body(&self) -> bool {
        !self.body_contains.is_empty() || !self.json.is_empty()
    }

    pub fn needs_json(&self) -> bool {
        !self.json.is_empty()
    }

    pub fn needs_headers(&self) -> bool {
        !self.headers.is_empty()
    }

    /// True when every check holds.
    pub fn passes(&self, o: &Observed<'_>) -> bool {
        self.first_failure(o).is_none()
    }

    /// The index of the first check that does not hold (see [`Checks::name`]),
    /// or None when all do.
    pub fn first_failure(&self, o: &Observed<'_>) -> Option<usize> {
        let mut index = 0;
        if let Some(max) = self.max_latency_us {
            if o.latency_us > max {
                return Some(index);
            }
            index += 1;
        }
        for (name, c) in &self.headers {
            let value = o
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str());
            if !c.text(value) {
                return Some(index);
            }
            index += 1;
        }
        if !self.body_contains.is_empty() {
            let body = String::from_utf8_lossy(o.body);
            for s in &self.body_contains {
                if !body.contains(s.as_str()) {
                    return Some(index);
                }
                index += 1;
            }
        }
        for (path, c) in &self.json {
            let value = o.json.and_then(|j| path.select(j));
            if !c.json(value) {
                return Some(index);
            }
            index += 1;
        }
        None
    }
}

/// Parses a status pattern: `200`, `2xx` (any case) or `200-299`.
pub fn status_range(text: &str) -> Result<(u16, u16), String> {
    let t = text.trim();
    let bad = || {
        format!(
            "`{t}` is not a status: expected a code such as `200`, a class such as `2xx` or a range such as `200-299`"
        )
    };
    let code = |s: &str| -> Result<u16, String> {
        let n: u16 = s.trim().parse().map_err(|_| bad())?;
        if (100..=599).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{n} is not an HTTP status (100-599)"))
        }
    };
    if let Some(class) = t.strip_suffix("xx").or_else(|| t.strip_suffix("XX")) {
        let d: u16 = class.parse().map_err(|_| bad())?;
        if !(1..=5).contains(&d) || class.len() != 1 {
            return Err(bad());
        }
        return Ok((d * 100, d * 100 + 99));
    }
    if let Some((lo, hi)) = t.split_once('-') {
        let (lo, hi) = (code(lo)?, code(hi)?);
        if lo > hi {
            return Err(format!(
                "status range `{t}`: the first code must not exceed the second"
            ));
        }
        return Ok((lo, hi));
    }
    let n = code(t)?;
    Ok((n, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_patterns() {
        assert_eq!(status_range("200"), Ok((200, 200)));
        assert_eq!(status_range("2xx"), Ok((200, 299)));
        assert_eq!(status_range("200-204"), Ok((200, 204)));
        assert!(status_range("7xx").is_err());
        assert!(status_range("2000").is_err());
        assert!(status_range("204-200").is_err());
        assert!(status_range("ok").is_err());
    }

    #[test]
    fn conditions_judge_headers_body_and_json() {
        let spec = ExpectSpec {
            headers: vec![("content-type".into(), Cond::Contains("json".into()))],
            body_contains: vec!["done".into()],
            json: vec![
                ("$.status".into(), Cond::Equals(json!("done"))),
                ("$.n".into(), Cond::Equals(json!(3))),
                ("$.id".into(), Cond::Matches("^wf-[0-9]+$".into())),
                ("$.gone".into(), Cond::Exists(false)),
            ],
            max_latency_us: Some(1000),
            ..Default::default()
        };
        let checks = Checks::compile(&spec).expect("compiles");
        let body = br#"{"status":"done","n":3.0,"id":"wf-12"}"#;
        let value: serde_json::Value = serde_json::from_slice(body).expect("json");
        let headers = vec![("Content-Type".to_owned(), "application/json".to_owned())];
        let mut o = Observed {
            headers: &headers,
            body,
            json: Some(&value),
            latency_us: 999,
        };
        assert!(checks.passes(&o));
        o.latency_us = 1001;
        assert!(!checks.passes(&o));
        o.latency_us = 1;
        let other = json!({"status": "running", "n": 3, "id": "wf-12"});
        o.json = Some(&other);
        assert!(!checks.passes(&o));
        o.json = None;
        assert!(!checks.passes(&o));
    }

    #[test]
    fn failed_checks_are_named_by_default_or_as_given() {
        let mut spec = ExpectSpec {
            status: vec![(200, 200), (300, 399)],
            headers: vec![("Content-Type".into(), Cond::Contains("json".into()))],
            body_contains: vec!["done".into()],
            json: vec![
                ("$.ok".into(), Cond::Equals(json!(true))),
                ("$.id".into(), Cond::Exists(true)),
            ],
            max_latency_us: Some(200_000),
            ..Default::default()
        };
        spec.names.insert("$.id exists".into(), "has an id".into());
        assert_eq!(
            spec.status_name().as_deref(),
            Some("status in [200, 300-399]")
        );
        let checks = Checks::compile(&spec).expect("compiles");
        let value = json!({"ok": false});
        let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        let mut o = Observed {
            headers: &headers,
            body: b"done",
            json: Some(&value),
            latency_us: 300_000,
        };
        let failed = |o: &Observed<'_>| checks.first_failure(o).map(|i| checks.name(i).to_owned());
        assert_eq!(failed(&o).as_deref(), Some("latency <= 200ms"));
        o.latency_us = 1;
        assert_eq!(failed(&o).as_deref(), Some("$.ok == true"));
        let ok = json!({"ok": true});
        o.json = Some(&ok);
        assert_eq!(failed(&o).as_deref(), Some("has an id"));
        o.body = b"";
        assert_eq!(failed(&o).as_deref(), Some("body contains \"done\""));
        o.headers = &[];
        assert_eq!(
            failed(&o).as_deref(),
            Some("header content-type contains \"json\"")
        );
        assert!(is_check_name("$.ok == true") && !is_check_name("a\x1b[2J") && !is_check_name(""));
        assert_eq!(
            json_check_name(&"x".repeat(500), &Cond::Exists(true)).len(),
            MAX_CHECK_NAME_LEN
        );
    }

    #[test]
    fn bad_regex_is_refused() {
        let spec = ExpectSpec {
            json: vec![("$.a".into(), Cond::Matches("(".into()))],
            ..Default::default()
        };
        assert!(Checks::compile(&spec).is_err());
    }
}
