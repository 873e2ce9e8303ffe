//! PLACEHOLDER — replaced by the JSON path capture (see brief).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct JsonPathError(pub String);

#[derive(Debug, Clone)]
pub struct JsonPath(Vec<String>);

impl JsonPath {
    pub fn parse(expr: &str) -> Result<Self, JsonPathError> {
        Ok(JsonPath(expr.trim_start_matches("$.").split('.').map(String::from).collect()))
    }
    pub fn extract(&self, v: &serde_json::Value) -> Option<String> {
        let mut cur = v;
        for k in &self.0 { cur = cur.get(k)?; }
        Some(match cur { serde_json::Value::String(s) => s.clone(), other => other.to_string() })
    }
}
