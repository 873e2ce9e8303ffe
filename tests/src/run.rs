//! One cross-process run's fixtures: a scenario file, a report directory and a coordinator port, with the processes that use them.

use std::path::{Path, PathBuf};

use crate::process::{Proc, coordinator, worker};
use crate::wait::free_port;

/// A scenario written to a temp dir, a report dir beside it and a loopback port for the coordinator.
pub struct TestRun {
    dir: tempfile::TempDir,
    pub file: PathBuf,
    pub out: PathBuf,
    pub bind: String,
}

impl TestRun {
    pub fn new(yaml: &str) -> TestRun {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = crate::write_file(dir.path(), "plan.yaml", yaml);
        let out = dir.path().join("out");
        TestRun {
            bind: format!("127.0.0.1:{}", free_port()),
            dir,
            file,
            out,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the run's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The coordinator waiting for `workers` remote workers on this run's port, headless, against `host`.
    pub fn coordinator(&self, workers: usize, host: &str, extra: &[&str]) -> Proc {
        let count = workers.to_string();
        let mut args = vec![
            "-f",
            self.file.to_str().expect("utf8 path"),
            "--workers",
            &count,
            "--bind",
            &self.bind,
            "--host",
            host,
            "--out",
            self.out.to_str().expect("utf8 path"),
            "--headless",
        ];
        args.extend_from_slice(extra);
        coordinator(&args, self.dir())
    }

    /// The coordinator with `workers` in-process local workers, headless, against `host`.
    pub fn local(&self, workers: usize, host: &str) -> Proc {
        let count = workers.to_string();
        let args = [
            "-f",
            self.file.to_str().expect("utf8 path"),
            "--local-workers",
            &count,
            "--host",
            host,
            "--out",
            self.out.to_str().expect("utf8 path"),
            "--headless",
        ];
        coordinator(&args, self.dir())
    }

    /// A worker process named `id` dialling this run's coordinator.
    pub fn worker(&self, id: &str, extra: &[&str]) -> Proc {
        let mut args = vec!["--master", self.bind.as_str(), "--id", id];
        args.extend_from_slice(extra);
        worker(&args, self.dir())
    }

    pub fn report(&self) -> serde_json::Value {
        crate::read_report(&self.out)
    }
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
