//! Shared helpers for Squall's cross-process tests: find the built binaries, start processes and a counting target, wait with deadlines.

mod netns;
mod process;
mod run;
mod target;
mod wait;

pub use netns::NetHost;
pub use process::{Proc, bin, coordinator, worker};
pub use run::{TestRun, has_event, sample_count, worker_entry};
pub use target::CountingTarget;
pub use wait::{free_port, wait_until};

/// Writes `text` to `name` in `dir` and returns the path.
pub fn write_file(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}

/// Reads a report.json.
pub fn read_report(dir: &std::path::Path) -> serde_json::Value {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("report.json is JSON")
}
