//! Where finished runs' reports go: one directory per run (report.json, summary.txt, timeline.csv, report.html), the summary on stdout, and index.json when a command runs several scenarios.

use std::path::{Path, PathBuf};

use squall_common::Report;

use super::render;
use crate::error::CoordinatorError;

/// The reports of one command: `--out` itself for a single scenario, or one
/// subdirectory per scenario plus an index.json listing them under `--all`, so
/// a CI job finds every run's verdict in one file.
#[derive(Debug)]
pub struct Output {
    root: PathBuf,
    several: bool,
    runs: Vec<serde_json::Value>,
}

impl Output {
    pub fn new(root: &Path, several: bool) -> Self {
        Output {
            root: root.to_path_buf(),
            several,
            runs: Vec::new(),
        }
    }

    /// Writes a finished run's directory, prints its summary and where it
    /// went, and returns that directory.
    pub fn publish(&mut self, report: &Report) -> Result<PathBuf, CoordinatorError> {
        let dir = if self.several {
            self.root.join(&report.scenario)
        } else {
            self.root.clone()
        };
        write_dir(&dir, report)?;
        println!("{}", render::summary_text(report));
        println!("report written to {}", dir.display());
        self.runs.push(serde_json::json!({
            "scenario": report.scenario,
            "dir": report.scenario,
            "passed": report.passed,
            "requests": report.totals.requests,
        }));
        Ok(dir)
    }

    /// Writes index.json once every scenario has run (only when there were several).
    pub fn finish(self) -> Result<(), CoordinatorError> {
        if !self.several {
            return Ok(());
        }
        let path = self.root.join("index.json");
        let text = serde_json::to_string_pretty(&serde_json::json!({ "runs": self.runs }))
            .map_err(|e| CoordinatorError::Internal(e.to_string()))?;
        std::fs::write(&path, text).map_err(|source| CoordinatorError::Output { path, source })
    }
}

fn write_dir(dir: &Path, report: &Report) -> Result<(), CoordinatorError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CoordinatorError::Output { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| CoordinatorError::Internal(format!("report does not serialise: {e}")))?;
    for (name, content) in [
        ("report.json", json),
        ("summary.txt", render::summary_text(report)),
        ("timeline.csv", render::timeline_csv(report)),
        ("report.html", render::html(report)),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, content).map_err(err(&path))?;
    }
    Ok(())
}
