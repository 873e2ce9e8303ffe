//! Reading what a run wrote: report.json, its workers and timeline, and a worker's samples file.

use std::path::Path;

/// Reads the report.json in `dir`.
pub fn read_report(dir: &Path) -> serde_json::Value {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("report.json is JSON")
}

/// The entry for worker `id` in a report's `workers[]`.
pub fn worker_entry<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|w| w["id"] == id)
        .unwrap_or_else(|| panic!("worker {id} missing from the report"))
}

/// Lines of a `--samples-file`: one per request the worker made.
pub fn sample_count(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .expect("samples file")
        .lines()
        .count() as u64
}

/// Whether any timeline event mentions `text`.
pub fn has_event(report: &serde_json::Value, text: &str) -> bool {
    report["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .any(|p| p["event"].as_str().is_some_and(|e| e.contains(text)))
}
