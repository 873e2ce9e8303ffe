//! Feeders: CSV and JSON data files read on the coordinator, their limits, and the rows as they travel to every worker.
//!
//! A feeder's rows go inside the `RunSpec` of every `Start`, so a worker needs
//! no access to the coordinator's files; the limits below keep that message
//! under the gRPC cap.

use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The most feeder data one run carries, counted as the JSON the rows travel
/// as (all feeders together). With a 4 MiB `body_file` (5.3 MiB in Base64)
/// and the rest of the scenario it stays under the 16 MiB gRPC message cap.
pub const MAX_FEEDER_BYTES: usize = 8 << 20;

/// The most rows all of a run's feeders hold together.
pub const MAX_FEEDER_ROWS: usize = 1_000_000;

/// How a feeder hands out its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedMode {
    /// Each row used once across the whole cluster.
    #[default]
    Unique,
    /// A random row per draw.
    Random,
    /// Rows in order, from the first again after the last.
    Cycle,
}

/// What a `unique` feeder does when its rows run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exhausted {
    /// The user that finds no row does not start.
    #[default]
    StopUser,
    /// Go on from this worker's first row again.
    Cycle,
}

/// One feeder as it travels: its columns and every row's cells as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeederSpec {
    pub name: String,
    pub mode: FeedMode,
    #[serde(default)]
    pub on_exhausted: Exhausted,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl FeederSpec {
    /// The rows this worker may hand out: all of them, or for `unique` its
    /// contiguous slice of a largest-remainder split by worker index.
    pub fn slice(&self, worker_index: u32, worker_count: u32) -> Range<usize> {
        if self.mode != FeedMode::Unique {
            return 0..self.rows.len();
        }
        let count = worker_count.max(1) as usize;
        let index = (worker_index as usize).min(count - 1);
        let parts = crate::partition::largest_remainder(self.rows.len() as u64, &vec![1; count]);
        let start: u64 = parts[..index].iter().sum();
        let start = usize::try_from(start).unwrap_or(usize::MAX);
        let len = usize::try_from(parts[index]).unwrap_or(0);
        start..start.saturating_add(len).min(self.rows.len())
    }
}

/// Why a data file could not be used; the Display names the file (and line).
#[derive(Debug, thiserror::Error)]
pub enum FeederError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("`{path}` holds {size} bytes, above the limit of 8MiB for feeder data")]
    TooLarge { path: String, size: u64 },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: String,
        line: u64,
        message: String,
    },
    #[error("`{path}` has no rows")]
    Empty { path: String },
    #[error("`{path}`: unknown file type, expected a `.csv` or `.json` file")]
    Kind { path: String },
}

/// Reads a `.csv` (header line first) or `.json` (an array of flat objects) file.
pub fn read(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>), FeederError> {
    let shown = path.display().to_string();
    let size = std::fs::metadata(path)
        .map_err(|source| FeederError::Read {
            path: shown.clone(),
            source,
        })?
        .len();
    if size > MAX_FEEDER_BYTES as u64 {
        return Err(FeederError::TooLarge { path: shown, size });
    }
    let text = std::fs::read_to_string(path).map_err(|source| FeederError::Read {
        path: shown.clone(),
        source,
    })?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let (columns, rows) = match ext.as_deref() {
        Some("csv") => parse_csv(&shown, &text)?,
        Some("json") => parse_json(&shown, &text)?,
        _ => return Err(FeederError::Kind { path: shown }),
    };
    if rows.is_empty() {
        return Err(FeederError::Empty { path: shown });
    }
    Ok((columns, rows))
}

/// CSV with a header line; every record must have the header's width.
pub fn parse_csv(path: &str, text: &str) -> Result<(Vec<String>, Vec<Vec<String>>), FeederError> {
    let parse = |line: u64, message: String| FeederError::Parse {
        path: path.to_owned(),
        line,
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| parse(csv_line(&e), e.to_string()))?
        .iter()
        .map(|c| c.trim().to_owned())
        .collect();
    check_columns(&columns).map_err(|m| parse(1, m))?;
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| parse(csv_line(&e), e.to_string()))?;
        if rows.len() >= MAX_FEEDER_ROWS {
            return Err(parse(
                record.position().map_or(0, |p| p.line()),
                format!("more than {MAX_FEEDER_ROWS} rows"),
            ));
        }
        rows.push(record.iter().map(str::to_owned).collect());
    }
    Ok((columns, rows))
}

fn csv_line(e: &csv::Error) -> u64 {
    e.position().map_or(1, |p| p.line())
}

/// A JSON array of flat objects; strings, numbers and booleans become text.
/// Columns are the first object's keys; every object must have the same keys.
pub fn parse_json(path: &str, text: &str) -> Result<(Vec<String>, Vec<Vec<String>>), FeederError> {
    let parse = |line: u64, message: String| FeederError::Parse {
        path: path.to_owned(),
        line,
        message,
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| parse(e.line() as u64, e.to_string()))?;
    let serde_json::Value::Array(items) = value else {
        return Err(parse(1, "expected an array of objects".into()));
    };
    if items.len() > MAX_FEEDER_ROWS {
        return Err(parse(1, format!("more than {MAX_FEEDER_ROWS} rows")));
    }
    let mut columns: Vec<String> = Vec::new();
    let mut rows = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let serde_json::Value::Object(map) = item else {
            return Err(parse(1, format!("item {i} is not an object")));
        };
        if i == 0 {
            columns = map.keys().cloned().collect();
            check_columns(&columns).map_err(|m| parse(1, m))?;
        }
        let mut row = Vec::with_capacity(columns.len());
        for c in &columns {
            let cell = match map.get(c) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                Some(serde_json::Value::Bool(b)) => b.to_string(),
                Some(serde_json::Value::Null) => String::new(),
                Some(_) => {
                    return Err(parse(
                        1,
                        format!(
                            "item {i}, key `{c}`: expected a string, number, boolean or null, not an array or object"
                        ),
                    ));
                }
                None => return Err(parse(1, format!("item {i} has no key `{c}`"))),
            };
            row.push(cell);
        }
        if map.len() != columns.len() {
            return Err(parse(
                1,
                format!(
                    "item {i} has keys the first item does not have (columns: {})",
                    columns.join(", ")
                ),
            ));
        }
        rows.push(row);
    }
    Ok((columns, rows))
}

/// Column names are used as `{{ row.NAME }}`: identifiers, unique.
fn check_columns(columns: &[String]) -> Result<(), String> {
    if columns.is_empty() {
        return Err("no columns".into());
    }
    for (i, c) in columns.iter().enumerate() {
        if !crate::template::is_name(c) {
            return Err(format!(
                "column `{c}` is not a name usable as `{{{{ row.{c} }}}}`: use letters, digits, `_` and `-`, starting with a letter or `_`"
            ));
        }
        if columns[..i].contains(c) {
            return Err(format!("column `{c}` appears twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feeder(mode: FeedMode, n: usize) -> FeederSpec {
        FeederSpec {
            name: "f".into(),
            mode,
            on_exhausted: Exhausted::StopUser,
            columns: vec!["id".into()],
            rows: (0..n).map(|i| vec![i.to_string()]).collect(),
        }
    }

    #[test]
    fn csv_reads_header_and_rows_and_names_the_bad_line() {
        let (cols, rows) = parse_csv("a.csv", "user,pass\nu1,p1\n\"u,2\",p2\n").expect("parses");
        assert_eq!(cols, ["user", "pass"]);
        assert_eq!(rows, [["u1", "p1"], ["u,2", "p2"]]);
        let err = parse_csv("a.csv", "user,pass\nu1,p1\nu2\n").expect_err("short row");
        assert!(err.to_string().starts_with("a.csv:3: "), "{err}");
        let err = parse_csv("a.csv", "user,user\nu1,p1\n").expect_err("twice");
        assert!(err.to_string().contains("appears twice"), "{err}");
        let err = parse_csv("a.csv", "us er\nx\n").expect_err("not a name");
        assert!(err.to_string().starts_with("a.csv:1: "), "{err}");
    }

    #[test]
    fn json_reads_flat_objects_as_text() {
        let (cols, rows) = parse_json(
            "a.json",
            r#"[{"id": 1, "name": "x", "ok": true}, {"id": 2.5, "name": "y", "ok": false}]"#,
        )
        .expect("parses");
        assert_eq!(cols, ["id", "name", "ok"]);
        assert_eq!(rows, [["1", "x", "true"], ["2.5", "y", "false"]]);
        let err = parse_json("a.json", "[\n{\"id\": 1},\n{\"id\": }\n]").expect_err("syntax");
        assert!(err.to_string().starts_with("a.json:3: "), "{err}");
        for bad in [
            r#"{"id": 1}"#,
            r#"[{"id": [1]}]"#,
            r#"[{"id": 1}, {"other": 2}]"#,
            r#"[{"id": 1}, {"id": 2, "more": 3}]"#,
            r#"[1]"#,
        ] {
            assert!(parse_json("a.json", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unique_rows_are_split_in_contiguous_slices_that_cover_every_row_once() {
        for (rows, workers) in [(10, 3), (2, 3), (0, 2), (7, 1), (1_000, 7)] {
            let f = feeder(FeedMode::Unique, rows);
            let slices: Vec<Range<usize>> = (0..workers).map(|i| f.slice(i, workers)).collect();
            let mut next = 0;
            for s in &slices {
                assert_eq!(s.start, next, "{rows} rows over {workers}");
                next = s.end;
                assert!(s.len() <= rows / workers as usize + 1);
            }
            assert_eq!(next, rows);
        }
        assert_eq!(feeder(FeedMode::Unique, 10).slice(0, 3), 0..4);
        // Other modes share every row; an index out of range never panics.
        assert_eq!(feeder(FeedMode::Cycle, 10).slice(2, 3), 0..10);
        assert_eq!(feeder(FeedMode::Unique, 10).slice(9, 3), 7..10);
        assert_eq!(feeder(FeedMode::Unique, 10).slice(0, 0), 0..10);
    }
}
