//! Writes a finished run's report directory: report.json, summary.txt, timeline.csv, report.html.

use std::path::Path;

use squall_common::{Report, render};

use crate::error::CoordinatorError;

pub fn write_report(dir: &Path, report: &Report) -> Result<(), CoordinatorError> {
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
