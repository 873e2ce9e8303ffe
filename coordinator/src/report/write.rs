//! Where finished runs' reports go: one directory per run (report.json, summary.txt, summary.md, timeline.csv, report.html), the summary on stdout, and index.json when a command runs several scenarios.
//!
//! A report is never lost to a bad `--out` or a full disk: [`Output::check`]
//! refuses an unusable `--out` before any traffic, the summary is printed
//! before anything is written, the files are written to a staging directory
//! and renamed into place only once all of them are complete (so a failure
//! leaves an older run's files as they were, never a truncated report.json
//! beside them), and when that still fails the report goes to a fallback
//! directory under the system temp dir, and the error says where.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use squall_common::Report;

use super::render;
use crate::error::CoordinatorError;

/// The staging directory's name inside the directory being written: inside
/// rather than beside it, so that the renames stay on one file system even
/// when `--out` is a mount point (a Docker volume, a Kubernetes emptyDir),
/// where renaming the directory itself would fail.
const STAGING_PREFIX: &str = ".squall-writing-";

/// One run in index.json.
#[derive(Debug, Serialize)]
struct IndexEntry {
    scenario: String,
    /// The report directory, relative to `--out`; absolute when the report
    /// went to the fallback directory; absent when there is no report.
    #[serde(skip_serializing_if = "Option::is_none")]
    dir: Option<String>,
    passed: bool,
    requests: u64,
    /// Why the scenario could not complete, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// index.json.
#[derive(Debug, Serialize)]
struct Index<'a> {
    runs: &'a [IndexEntry],
    /// Scenarios not run because the command was interrupted, in file order.
    not_run: &'a [String],
}

/// The reports of one command: `--out` itself for a single scenario, or one
/// subdirectory per scenario plus an index.json listing them under `--all`, so
/// a CI job finds every run's verdict in one file.
#[derive(Debug)]
pub struct Output {
    root: PathBuf,
    several: bool,
    runs: Vec<IndexEntry>,
    /// Where a report goes when `--out` cannot take it (a fresh directory under it).
    fallback_base: PathBuf,
    /// The fallback directory, once one was needed: every later report of
    /// this command that fails goes there too.
    fallback: Option<PathBuf>,
    /// `--junit FILE`, and the reports it will cover (written by `finish`).
    junit: Option<(PathBuf, Vec<Report>)>,
}

impl Output {
    pub fn new(root: &Path, several: bool) -> Self {
        Output {
            root: root.to_path_buf(),
            several,
            runs: Vec::new(),
            fallback_base: std::env::temp_dir(),
            fallback: None,
            junit: None,
        }
    }

    /// Also writes a JUnit file covering every published report, at `finish`.
    pub fn with_junit(mut self, path: Option<PathBuf>) -> Self {
        self.junit = path.map(|p| (p, Vec::new()));
        self
    }

    /// Checks before any traffic that `--junit FILE` can be written: its
    /// directory is created and a probe written beside it.
    pub fn check_junit(path: &Path) -> Result<(), CoordinatorError> {
        let unusable = |source| CoordinatorError::FileUnusable {
            flag: "--junit",
            path: path.to_path_buf(),
            source,
        };
        if path.is_dir() {
            return Err(unusable(std::io::Error::other("it is a directory")));
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(unusable)?;
        let staging = Staging::create(dir).map_err(unusable)?;
        let probe = staging.write("probe", b"squall checks that --junit can be written here\n");
        staging.discard();
        probe.map_err(unusable)
    }

    /// Checks before any traffic that reports can be written under `root`
    /// (and in each of `scenarios`' directories when there are several):
    /// creates the directories and a staging directory in each, then removes
    /// the staging directories. Fails with the path that cannot be used.
    pub fn check(root: &Path, scenarios: &[&str]) -> Result<(), CoordinatorError> {
        let mut dirs = vec![root.to_path_buf()];
        if scenarios.len() > 1 {
            dirs.extend(scenarios.iter().map(|s| root.join(s)));
        }
        for dir in dirs {
            let unusable = |path: &Path| {
                let path = path.to_path_buf();
                move |source| CoordinatorError::OutUnusable { path, source }
            };
            std::fs::create_dir_all(&dir).map_err(unusable(&dir))?;
            let staging = Staging::create(&dir).map_err(unusable(&dir))?;
            staging
                .write("probe", b"squall checks that reports can be written here\n")
                .map_err(unusable(&dir))?;
            staging.discard();
        }
        Ok(())
    }

    /// Where a run's report goes under `--out`.
    fn dir_of(&self, root: &Path, scenario: &str) -> PathBuf {
        if self.several {
            root.join(scenario)
        } else {
            root.to_path_buf()
        }
    }

    /// Prints a finished run's summary, then writes its directory and says
    /// where it went. If `--out` cannot take it, writes it to the fallback
    /// directory instead and returns an error that names both.
    pub fn publish(&mut self, report: &Report) -> Result<PathBuf, CoordinatorError> {
        let summary = render::summary_text(report);
        println!("{summary}");
        let wanted = self.dir_of(&self.root, &report.scenario);
        let mut entry = IndexEntry {
            scenario: report.scenario.clone(),
            dir: Some(report.scenario.clone()),
            passed: report.passed,
            requests: report.totals.requests,
            error: None,
        };
        if let Some((_, reports)) = &mut self.junit {
            reports.push(report.clone());
        }
        let result = match write_dir(&wanted, report, &summary) {
            Ok(()) => {
                println!("report written to {}", wanted.display());
                Ok(wanted)
            }
            Err(reason) => {
                eprintln!(
                    "error: cannot write the report to {}: {reason}",
                    wanted.display()
                );
                let moved = self.write_fallback(report, &summary);
                let err = match moved {
                    Ok(fallback) => {
                        println!("report written to {} instead", fallback.display());
                        entry.dir = Some(fallback.display().to_string());
                        CoordinatorError::ReportMoved {
                            wanted,
                            reason,
                            fallback,
                        }
                    }
                    Err((fallback, fallback_reason)) => {
                        entry.dir = None;
                        CoordinatorError::ReportLost {
                            wanted,
                            reason,
                            fallback,
                            fallback_reason,
                        }
                    }
                };
                entry.error = Some(err.to_string());
                Err(err)
            }
        };
        self.runs.push(entry);
        result
    }

    /// Writes the report under the fallback directory, creating that once.
    fn write_fallback(
        &mut self,
        report: &Report,
        summary: &str,
    ) -> Result<PathBuf, (PathBuf, std::io::Error)> {
        let base = match &self.fallback {
            Some(dir) => dir.clone(),
            None => {
                let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
                let dir = self
                    .fallback_base
                    .join(format!("squall-report-{stamp}-{}", std::process::id()));
                self.fallback = Some(dir.clone());
                dir
            }
        };
        let dir = self.dir_of(&base, &report.scenario);
        match write_dir(&dir, report, summary) {
            Ok(()) => Ok(dir),
            Err(e) => {
                // Leave no empty directories behind in the temp dir.
                let _ = std::fs::remove_dir(&dir);
                let _ = std::fs::remove_dir(&base);
                Err((dir, e))
            }
        }
    }

    /// Records a scenario that ended without a report of its own (no workers
    /// were left to run it), or adds why a published one could not complete.
    pub fn record_failure(&mut self, scenario: &str, error: &CoordinatorError) {
        if let Some(entry) = self.runs.iter_mut().find(|r| r.scenario == scenario) {
            entry.error.get_or_insert_with(|| error.to_string());
            return;
        }
        self.runs.push(IndexEntry {
            scenario: scenario.to_owned(),
            dir: None,
            passed: false,
            requests: 0,
            error: Some(error.to_string()),
        });
    }

    /// Writes index.json once the scenarios have run (only when there were
    /// several), listing the runs and those left out by an interrupt.
    pub fn finish(mut self, not_run: &[String]) -> Result<(), CoordinatorError> {
        if let Some((path, reports)) = self.junit.take() {
            let all: Vec<&Report> = reports.iter().collect();
            write_file(&path, &render::junit(&all))?;
            println!("JUnit results written to {}", path.display());
        }
        if !self.several {
            return Ok(());
        }
        let text = serde_json::to_string_pretty(&Index {
            runs: &self.runs,
            not_run,
        })
        .map_err(|e| CoordinatorError::Internal(format!("index.json does not serialise: {e}")))?;
        let files = [("index.json", text.as_str())];
        let wanted = self.root.clone();
        let Err(reason) = write_files(&wanted, &files) else {
            return Ok(());
        };
        eprintln!(
            "error: cannot write index.json to {}: {reason}",
            wanted.display()
        );
        let fallback = match self.fallback.take() {
            Some(dir) => dir,
            None => self.fallback_base.join(format!(
                "squall-report-{}-{}",
                time::OffsetDateTime::now_utc().unix_timestamp(),
                std::process::id()
            )),
        };
        match write_files(&fallback, &files) {
            Ok(()) => {
                println!("index.json written to {} instead", fallback.display());
                Err(CoordinatorError::ReportMoved {
                    wanted: wanted.join("index.json"),
                    reason,
                    fallback: fallback.join("index.json"),
                })
            }
            Err(fallback_reason) => Err(CoordinatorError::ReportLost {
                wanted: wanted.join("index.json"),
                reason,
                fallback,
                fallback_reason,
            }),
        }
    }
}

/// A run's files into `dir` without printing anything (serve mode keeps each run this way).
pub fn write_quietly(dir: &Path, report: &Report) -> std::io::Result<()> {
    write_dir(dir, report, &render::summary_text(report))
}

/// A run's five files into `dir`, as a whole or not at all.
fn write_dir(dir: &Path, report: &Report, summary: &str) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    // report.json last: whoever finds the new report.json finds the new rest.
    write_files(
        dir,
        &[
            ("summary.txt", summary),
            ("summary.md", &render::summary_md(report)),
            ("timeline.csv", &render::timeline_csv(report)),
            ("report.html", &render::html(report)),
            ("report.json", &json),
        ],
    )
}

/// Writes a report's directory for `report`, `merge` and `compare --out`:
/// the same files as a run, as a whole or not at all; no fallback, since
/// nothing is lost (the inputs are still there).
pub fn write_report(dir: &Path, report: &Report) -> Result<(), CoordinatorError> {
    write_dir(dir, report, &render::summary_text(report)).map_err(|source| {
        CoordinatorError::WriteFailed {
            path: dir.to_path_buf(),
            source,
        }
    })
}

/// One file, written whole beside its place and renamed into it.
pub fn write_file(path: &Path, content: &str) -> Result<(), CoordinatorError> {
    let failed = |source| CoordinatorError::WriteFailed {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| failed(std::io::Error::other("not a file name")))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    write_files(dir, &[(name, content)]).map_err(failed)
}

/// Writes every file to a staging directory inside `dir`, each synced to
/// disk, and only then renames them into `dir` in order. A failure before
/// the renames leaves `dir` as it was.
fn write_files(dir: &Path, files: &[(&str, &str)]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let staging = Staging::create(dir)?;
    for (name, content) in files {
        if let Err(e) = staging.write(name, content.as_bytes()) {
            staging.discard();
            return Err(e);
        }
    }
    let renamed = files
        .iter()
        .try_for_each(|(name, _)| std::fs::rename(staging.path.join(name), dir.join(name)));
    staging.discard();
    renamed
}

/// A directory the files are written to before they are renamed into place.
struct Staging {
    path: PathBuf,
}

impl Staging {
    fn create(dir: &Path) -> std::io::Result<Staging> {
        let path = dir.join(format!("{STAGING_PREFIX}{}", std::process::id()));
        // Left over by an earlier process with the same id that died writing.
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir(&path)?;
        Ok(Staging { path })
    }

    /// Writes and syncs one file: a full disk shows here, not after the rename.
    fn write(&self, name: &str, content: &[u8]) -> std::io::Result<()> {
        let mut file = std::fs::File::create(self.path.join(name))?;
        file.write_all(content)?;
        file.sync_all()
    }

    /// Removes the staging directory and whatever is left in it.
    fn discard(self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_common::report::{LatencyMs, SCHEMA, Totals};

    fn report(scenario: &str, requests: u64) -> Report {
        Report {
            schema: SCHEMA.into(),
            run_id: "r1".into(),
            scenario: scenario.into(),
            target: "http://127.0.0.1:1".into(),
            load_model: "closed".into(),
            started_at: "2025-01-01T00:00:00Z".into(),
            duration_s: 1.0,
            partial: false,
            workers: vec![],
            totals: Totals {
                requests,
                failures: 0,
                error_rate: 0.0,
                rps: requests as f64,
                latency_ms: LatencyMs::default(),
                service_ms: LatencyMs::default(),
                ttfb_ms: LatencyMs::default(),
                bytes_received: 0,
                dropped_iterations: 0,
                schedule_lag_ms: None,
                generator_lag_ms: None,
            },
            endpoints: vec![],
            timeline: vec![],
            thresholds: vec![],
            broke_at: None,
            comparison: None,
            score: None,
            recommendations: Vec::new(),
            aborted: None,
            phases: Vec::new(),
            passed: true,
        }
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "squall-write-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("test dir");
        dir
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn an_older_runs_files_are_replaced_and_no_staging_is_left() {
        let root = tempdir();
        for name in ["report.json", "summary.txt", "timeline.csv", "report.html"] {
            std::fs::write(root.join(name), "old").expect("old file");
        }
        let mut out = Output::new(&root, false);
        let dir = out.publish(&report("s", 7)).expect("written");
        assert_eq!(dir, root);
        for name in [
            "report.json",
            "summary.txt",
            "summary.md",
            "timeline.csv",
            "report.html",
        ] {
            assert_ne!(read(&root.join(name)), "old", "{name}");
        }
        let json: serde_json::Value =
            serde_json::from_str(&read(&root.join("report.json"))).expect("json");
        assert_eq!(json["totals"]["requests"], 7);
        let left: Vec<_> = std::fs::read_dir(&root)
            .expect("list")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(STAGING_PREFIX))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_report_that_cannot_be_written_goes_to_the_fallback_and_says_where() {
        let root = tempdir();
        let file = root.join("plain-file");
        std::fs::write(&file, "not a directory").expect("file");
        let mut out = Output::new(&file.join("out"), false);
        out.fallback_base = root.join("fallback");
        let err = out
            .publish(&report("s", 3))
            .expect_err("cannot write under a file");
        let CoordinatorError::ReportMoved {
            wanted, fallback, ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(*wanted, file.join("out"));
        assert!(fallback.starts_with(root.join("fallback")), "{err}");
        let json: serde_json::Value =
            serde_json::from_str(&read(&fallback.join("report.json"))).expect("json");
        assert_eq!(json["totals"]["requests"], 3);
        let msg = err.to_string();
        assert!(msg.contains(&fallback.display().to_string()), "{msg}");
        assert_eq!(err.exit_code().code(), 3);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn an_unusable_out_is_refused_with_its_path() {
        let root = tempdir();
        let file = root.join("plain-file");
        std::fs::write(&file, "x").expect("file");
        let err = Output::check(&file.join("out"), &["a"]).expect_err("under a file");
        assert_eq!(err.exit_code().code(), 2);
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );
        // --all: a scenario's directory that is a file is refused too.
        let out = root.join("out");
        std::fs::create_dir_all(&out).expect("out");
        std::fs::write(out.join("b"), "x").expect("file b");
        let err = Output::check(&out, &["a", "b"]).expect_err("b is a file");
        assert!(
            err.to_string()
                .contains(&out.join("b").display().to_string()),
            "{err}"
        );
        assert!(Output::check(&out, &["a", "c"]).is_ok());
        let left: Vec<_> = std::fs::read_dir(out.join("a"))
            .expect("list")
            .filter_map(|e| e.ok())
            .collect();
        assert!(left.is_empty(), "the check leaves nothing behind: {left:?}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn the_index_lists_failures_and_what_was_not_run() {
        let root = tempdir();
        let mut out = Output::new(&root, true);
        out.publish(&report("a", 5)).expect("a");
        out.record_failure(
            "b",
            &CoordinatorError::NoWorkers {
                wanted: 1,
                attached: 0,
                waited: std::time::Duration::ZERO,
            },
        );
        out.finish(&["c".to_owned()]).expect("index");
        let index: serde_json::Value =
            serde_json::from_str(&read(&root.join("index.json"))).expect("json");
        assert_eq!(index["runs"][0]["dir"], "a");
        assert_eq!(index["runs"][0]["requests"], 5);
        assert!(index["runs"][0].get("error").is_none());
        assert_eq!(index["runs"][1]["scenario"], "b");
        assert_eq!(index["runs"][1]["passed"], false);
        assert!(
            index["runs"][1]["error"]
                .as_str()
                .is_some_and(|e| e.contains("workers"))
        );
        assert_eq!(index["not_run"][0], "c");
        assert!(root.join("a").join("report.json").exists());
        let _ = std::fs::remove_dir_all(&root);
    }
}
