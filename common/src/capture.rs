//! The JSON path subset used by `capture:` to pull values out of response bodies.

/// The forms a path may take, for error messages.
const EXPECTED_PATH: &str = "a path such as `$`, `$.a.b`, `$.a[0].b`, `$.a[-1]` or `$['a key']`";

/// Why a capture path was rejected; each message names what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonPathError {
    #[error("capture path `{0}` must start with `$`: expected {EXPECTED_PATH}")]
    MissingRoot(String),
    #[error("capture path `{path}` is not supported at `{at}`: expected {EXPECTED_PATH}")]
    Unsupported { path: String, at: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    /// Negative indexes count from the end (`-1` is the last element).
    Index(i64),
}

/// A parsed capture path; parsed once at validation so a typo fails before any traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath(Vec<Step>);

impl JsonPath {
    pub fn parse(expr: &str) -> Result<Self, JsonPathError> {
        let path = expr.trim();
        let Some(mut rest) = path.strip_prefix('$') else {
            return Err(JsonPathError::MissingRoot(expr.to_owned()));
        };
        let unsupported = |at: &str| JsonPathError::Unsupported {
            path: path.to_owned(),
            at: at.to_owned(),
        };
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                let key = &after[..end];
                if key.is_empty() || key == "*" || key.contains([']', '\'', '"', ' ']) {
                    return Err(unsupported(rest));
                }
                steps.push(Step::Key(key.to_owned()));
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let (step, len) = parse_bracket(after).ok_or_else(|| unsupported(rest))?;
                steps.push(step);
                rest = &after[len..];
            } else {
                return Err(unsupported(rest));
            }
        }
        Ok(JsonPath(steps))
    }

    /// The value the path points at, if any (`null` included).
    pub fn select<'v>(&self, v: &'v serde_json::Value) -> Option<&'v serde_json::Value> {
        use serde_json::Value;
        let mut cur = v;
        for step in &self.0 {
            cur = match (step, cur) {
                (Step::Key(k), Value::Object(map)) => map.get(k)?,
                (Step::Index(i), Value::Array(items)) => {
                    let idx = if *i < 0 {
                        items
                            .len()
                            .checked_sub(usize::try_from(i.unsigned_abs()).ok()?)?
                    } else {
                        usize::try_from(*i).ok()?
                    };
                    items.get(idx)?
                }
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Strings come back unquoted, numbers and booleans as their text,
    /// objects and arrays as compact JSON; a missing value or null is None.
    pub fn extract(&self, v: &serde_json::Value) -> Option<String> {
        use serde_json::Value;
        match self.select(v)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

/// Parses what follows a `[`: an integer or a quoted key, then `]`.
/// Returns the step and how many bytes it used (including the `]`).
fn parse_bracket(s: &str) -> Option<(Step, usize)> {
    let first = s.chars().next()?;
    if first == '\'' || first == '"' {
        let mut key = String::new();
        let mut chars = s.char_indices().skip(1);
        while let Some((_, c)) = chars.next() {
            match c {
                '\\' => key.push(chars.next()?.1),
                c if c == first => {
                    let (close, _) = chars.next()?;
                    return (s[close..].starts_with(']')).then(|| (Step::Key(key), close + 1));
                }
                c => key.push(c),
            }
        }
        return None;
    }
    let close = s.find(']')?;
    let index = s[..close].trim().parse().ok()?;
    Some((Step::Index(index), close + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn get(path: &str, v: &serde_json::Value) -> Option<String> {
        JsonPath::parse(path).expect(path).extract(v)
    }

    #[test]
    fn extracts_scalars_as_text() {
        let v = json!({"access_token": "abc", "n": 12, "f": 1.5, "ok": true, "nothing": null});
        assert_eq!(get("$.access_token", &v).as_deref(), Some("abc"));
        assert_eq!(get("$.n", &v).as_deref(), Some("12"));
        assert_eq!(get("$.f", &v).as_deref(), Some("1.5"));
        assert_eq!(get("$.ok", &v).as_deref(), Some("true"));
        assert_eq!(get("$.nothing", &v), None);
        assert_eq!(get("$.missing", &v), None);
    }

    #[test]
    fn extracts_containers_as_compact_json() {
        let v = json!({"a": {"b": [1, {"c": "d"}]}});
        assert_eq!(get("$.a", &v).as_deref(), Some(r#"{"b":[1,{"c":"d"}]}"#));
        assert_eq!(
            get("$", &v).as_deref(),
            Some(r#"{"a":{"b":[1,{"c":"d"}]}}"#)
        );
        assert_eq!(get(" $ ", &json!("root")).as_deref(), Some("root"));
    }

    #[test]
    fn nested_keys_and_indexes() {
        let v = json!({"data": {"items": [{"id": "first"}, {"id": "mid"}, {"id": "last"}]}});
        assert_eq!(get("$.data.items[0].id", &v).as_deref(), Some("first"));
        assert_eq!(get("$.data.items[2].id", &v).as_deref(), Some("last"));
        assert_eq!(get("$.data.items[-1].id", &v).as_deref(), Some("last"));
        assert_eq!(get("$.data.items[-3].id", &v).as_deref(), Some("first"));
        assert_eq!(get("$.data.items[-4].id", &v), None);
        assert_eq!(get("$.data.items[3].id", &v), None);
        assert_eq!(get("$[0]", &json!(["x"])).as_deref(), Some("x"));
        // A key on an array or an index on an object finds nothing.
        assert_eq!(get("$.data.items.id", &v), None);
        assert_eq!(get("$.data[0]", &v), None);
    }

    #[test]
    fn bracketed_keys() {
        let v = json!({"a key": {"it's": 1, "x.y": [true]}});
        assert_eq!(
            get("$['a key']", &v).as_deref(),
            Some(r#"{"it's":1,"x.y":[true]}"#)
        );
        assert_eq!(get(r#"$["a key"]['it\'s']"#, &v).as_deref(), Some("1"));
        assert_eq!(get("$['a key']['x.y'][0]", &v).as_deref(), Some("true"));
    }

    #[test]
    fn rejects_unsupported_paths() {
        for bad in [
            "access_token",
            "",
            ".a",
            "$.",
            "$..a",
            "$.a.*",
            "$.a[*]",
            "$[",
            "$[1",
            "$['a'",
            "$['a'x]",
            "$[a]",
            "$.a[1.5]",
            "$a",
            "$.a b",
            "$.a[0]x",
        ] {
            let err = JsonPath::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("expected a path such as"), "{bad}: {err}");
        }
        let err = JsonPath::parse("token").expect_err("no root").to_string();
        assert!(err.contains("must start with `$`"), "{err}");
        let err = JsonPath::parse("$.a[*]").expect_err("wildcard").to_string();
        assert!(err.contains("at `[*]`"), "{err}");
    }
}
