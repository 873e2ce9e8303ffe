//! Baselines and report files: a baseline is a run's report.json kept by name under `--baselines-dir`; reading any report.json back (checked, before any traffic) and saving one.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use squall_common::Report;
use squall_common::report::{RegressionRules, SCHEMA};

use super::{compare, verdict};
use crate::error::CoordinatorError;

/// A report.json larger than this is refused before it is read: reports are
/// a few MB even with hundreds of endpoints and hour-long timelines.
const MAX_REPORT_BYTES: u64 = 256 * 1024 * 1024;

/// Where `--baseline NAME|FILE` points: a path when it exists, contains a
/// `/` or ends in `.json`, else `DIR/NAME.json`.
pub fn locate(arg: &str, dir: &Path) -> PathBuf {
    let path = Path::new(arg);
    if path.exists() || arg.contains('/') || arg.ends_with(".json") {
        path.to_path_buf()
    } else {
        dir.join(format!("{arg}.json"))
    }
}

/// `--save-baseline NAME`: a plain name (letters, digits, `.`, `_`, `-`, not
/// starting with `.`), so it is a file name in the baselines directory and
/// nothing else.
pub fn check_name(name: &str) -> Result<(), CoordinatorError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CoordinatorError::Usage(format!(
            "--save-baseline `{name}`: expected a name of letters, digits, `.`, `_` and `-` (at most 100, not starting with `.`); it is saved as NAME.json under --baselines-dir"
        )))
    }
}

/// Reads and checks a report.json (a baseline, or an input of `compare`,
/// `report`, `merge`): a missing, unreadable, oversized or malformed file, or
/// one of another schema, is invalid input naming the file (and the line
/// and column for JSON errors).
pub fn read_report(path: &Path) -> Result<Report, CoordinatorError> {
    let bad = |reason: String| CoordinatorError::ReportFile {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open it: {e}")))?;
    let mut text = String::new();
    file.take(MAX_REPORT_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    if text.len() as u64 > MAX_REPORT_BYTES {
        return Err(bad(format!(
            "larger than {} MiB: not a Squall report.json",
            MAX_REPORT_BYTES / 1024 / 1024
        )));
    }
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "not valid JSON: {e} (expected a Squall report.json)"
        ))
    })?;
    match value.get("schema").and_then(|s| s.as_str()) {
        Some(SCHEMA) => {}
        Some(other) => {
            return Err(bad(format!(
                "schema `{other}` is not supported: expected `{SCHEMA}`"
            )));
        }
        None => {
            return Err(bad(format!(
                "no `schema` field: expected a Squall report.json (schema `{SCHEMA}`)"
            )));
        }
    }
    // Parsed again from the text (not the Value) so errors carry line and column.
    serde_json::from_str(&text).map_err(|e| bad(format!("not a valid `{SCHEMA}` report: {e}")))
}

/// Attaches the comparison of `report` with `base` and decides the verdict
/// again (a regression fails the run).
pub fn attach(report: &mut Report, base: &Report, source: &str, rules: &RegressionRules) {
    let mut c = compare::compare(base, report, rules);
    c.baseline.source = source.to_owned();
    report.comparison = Some(c);
    verdict::conclude(report);
}

/// `--save-baseline`: keeps a run that passed and completed as the
/// baseline at `path`, and says so; a failed or partial run is not a
/// baseline to compare later runs with, so it is not kept (and says why).
pub fn save_if_passed(path: &Path, report: &Report) -> Result<(), CoordinatorError> {
    if !report.passed || report.partial {
        println!(
            "baseline {} not saved: the run {}",
            path.display(),
            if report.partial {
                "was cut short"
            } else {
                "failed"
            }
        );
        return Ok(());
    }
    save(path, report)?;
    println!("baseline saved to {}", path.display());
    Ok(())
}

/// Keeps `report` as the baseline at `path` (written whole, then renamed, so
/// a reader never sees half a baseline).
pub fn save(path: &Path, report: &Report) -> Result<(), CoordinatorError> {
    let failed = |source| CoordinatorError::WriteFailed {
        path: path.to_path_buf(),
        source,
    };
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| CoordinatorError::Internal(format!("report.json does not serialise: {e}")))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(json.as_bytes())?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_are_told_apart() {
        let dir = Path::new(".squall/baselines");
        assert_eq!(locate("main", dir), dir.join("main.json"));
        assert_eq!(locate("v1.2", dir), dir.join("v1.2.json"));
        assert_eq!(locate("old/report.json", dir), Path::new("old/report.json"));
        assert_eq!(locate("base.json", dir), Path::new("base.json"));
        assert!(check_name("release-1.2_rc").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert_eq!(check_name(bad).expect_err(bad).exit_code().code(), 2);
        }
    }

    #[test]
    fn bad_report_files_are_invalid_input_naming_the_file() {
        let dir = std::env::temp_dir().join(format!("squall-baseline-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let cases = [
            ("missing.json", None, "cannot open it"),
            ("garbage.json", Some("{\n  \"schema\": "), "line 2 column"),
            (
                "other.json",
                Some(r#"{"schema": "k6/v1"}"#),
                "schema `k6/v1`",
            ),
            (
                "partial.json",
                Some(r#"{"schema": "squall.report/v1"}"#),
                "missing field",
            ),
        ];
        for (name, content, expected) in cases {
            let path = dir.join(name);
            if let Some(c) = content {
                std::fs::write(&path, c).expect("write");
            }
            let err = read_report(&path).expect_err(name);
            let msg = err.to_string();
            assert_eq!(err.exit_code().code(), 2, "{msg}");
            assert!(msg.contains(name) && msg.contains(expected), "{msg}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_saved_baseline_reads_back() {
        let dir = std::env::temp_dir().join(format!("squall-baseline-save-{}", std::process::id()));
        let path = dir.join("nested").join("main.json");
        let report = crate::report::render::fixture::sample();
        save(&path, &report).expect("saved");
        let back = read_report(&path).expect("reads");
        assert_eq!(back.totals.requests, report.totals.requests);
        assert_eq!(back.thresholds.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
