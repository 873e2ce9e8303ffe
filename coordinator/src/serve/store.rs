//! Runs and baselines on disk under `--data`: `runs/ID/` holds `run.json` (what the run list shows)
//! beside the report files, `baselines/NAME.json` a copy of a run's report.json. Everything is
//! listed again after a restart; a run the server died in is listed as `abandoned`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use squall_common::Report;

use crate::report::write_quietly;

/// The files of a run a client may fetch, and their content types.
pub const RUN_FILES: [(&str, &str); 4] = [
    ("report.json", "application/json"),
    ("report.html", "text/html; charset=utf-8"),
    ("timeline.csv", "text/csv; charset=utf-8"),
    ("summary.txt", "text/plain; charset=utf-8"),
];

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    /// Finished with a report (see `passed`).
    Done,
    /// Could not complete (no workers, every worker lost); see `error`.
    Failed,
    /// The server stopped while it ran: no report.
    Abandoned,
}

/// One run as the run list shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunRecord {
    pub run_id: String,
    pub scenario: String,
    pub target: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub state: RunState,
    /// Thresholds held (only once done).
    #[serde(default)]
    pub passed: Option<bool>,
    /// Stopped early (a stop request, workers lost).
    #[serde(default)]
    pub partial: bool,
    #[serde(default)]
    pub requests: Option<u64>,
    #[serde(default)]
    pub failures: Option<u64>,
    #[serde(default)]
    pub rps: Option<f64>,
    #[serde(default)]
    pub p95_ms: Option<f64>,
    #[serde(default)]
    pub duration_s: Option<f64>,
    #[serde(default)]
    pub error: Option<String>,
}

/// A saved baseline.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BaselineRecord {
    pub name: String,
    pub run_id: String,
    pub scenario: String,
    pub started_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no run {0}")]
    NoRun(String),
    #[error("run {0} has no report (yet)")]
    NoReport(String),
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A run id as the controller makes them: 12 lowercase hex digits. Anything
/// else (`..`, slashes, encoded tricks) never reaches the file system.
pub fn valid_run_id(id: &str) -> bool {
    id.len() == 12
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A baseline name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with a dot.
pub fn valid_baseline_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[derive(Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating) the data directory; runs left `running` by a server that died are marked abandoned.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for sub in ["runs", "baselines"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).map_err(io(&p))?;
        }
        let store = Store {
            root: root.to_path_buf(),
        };
        for mut r in store.list()? {
            if r.state == RunState::Running {
                r.state = RunState::Abandoned;
                r.error = Some("the server stopped while this run went on".into());
                store.put(&r)?;
            }
        }
        Ok(store)
    }

    fn run_dir(&self, id: &str) -> PathBuf {
        self.root.join("runs").join(id)
    }

    /// Writes `run.json` (through a temporary file, so a reader never sees half of one).
    pub fn put(&self, r: &RunRecord) -> Result<(), StoreError> {
        if !valid_run_id(&r.run_id) {
            return Err(StoreError::Invalid(format!("bad run id {}", r.run_id)));
        }
        let dir = self.run_dir(&r.run_id);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let json = serde_json::to_vec_pretty(r).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let tmp = dir.join(".run.json.tmp");
        std::fs::write(&tmp, json).map_err(io(&tmp))?;
        let path = dir.join("run.json");
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// The run's report files, then its record as done.
    pub fn finish(&self, mut r: RunRecord, report: &Report) -> Result<RunRecord, StoreError> {
        let dir = self.run_dir(&r.run_id);
        write_quietly(&dir, report).map_err(io(&dir))?;
        r.state = RunState::Done;
        r.passed = Some(report.passed);
        r.partial = report.partial;
        r.requests = Some(report.totals.requests);
        r.failures = Some(report.totals.failures);
        r.rps = Some(report.totals.rps);
        r.p95_ms = Some(report.totals.latency_ms.p95);
        r.duration_s = Some(report.duration_s);
        self.put(&r)?;
        Ok(r)
    }

    pub fn get(&self, id: &str) -> Option<RunRecord> {
        if !valid_run_id(id) {
            return None;
        }
        let bytes = std::fs::read(self.run_dir(id).join("run.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every run, newest first; directories that are not runs are skipped.
    pub fn list(&self) -> Result<Vec<RunRecord>, StoreError> {
        let dir = self.root.join("runs");
        let mut runs: Vec<RunRecord> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().and_then(|id| self.get(id)))
            .collect();
        runs.sort_by(|a, b| {
            b.started_at
                .cmp(&a.started_at)
                .then(b.run_id.cmp(&a.run_id))
        });
        Ok(runs)
    }

    /// One of [`RUN_FILES`] of a run, with its content type.
    pub fn file(&self, id: &str, name: &str) -> Result<(&'static str, Vec<u8>), StoreError> {
        let Some((_, ctype)) = RUN_FILES.iter().find(|(n, _)| *n == name) else {
            return Err(StoreError::Invalid(format!("no such report file {name}")));
        };
        if self.get(id).is_none() {
            return Err(StoreError::NoRun(id.to_owned()));
        }
        std::fs::read(self.run_dir(id).join(name))
            .map(|b| (*ctype, b))
            .map_err(|_| StoreError::NoReport(id.to_owned()))
    }

    /// A copy of the run's report.json as `baselines/NAME.json` (replacing an older one).
    pub fn save_baseline(&self, id: &str, name: &str) -> Result<BaselineRecord, StoreError> {
        if !valid_baseline_name(name) {
            return Err(StoreError::Invalid(format!(
                "baseline name `{}` must be 1 to 64 of A-Z a-z 0-9 . _ - and not start with a dot",
                name.chars().take(80).collect::<String>()
            )));
        }
        let (_, bytes) = self.file(id, "report.json")?;
        let dir = self.root.join("baselines");
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, &bytes).map_err(io(&tmp))?;
        let path = dir.join(format!("{name}.json"));
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        baseline_record(name, &bytes)
            .ok_or_else(|| StoreError::Invalid(format!("run {id}'s report.json is unreadable")))
    }

    /// Every saved baseline, by name.
    pub fn baselines(&self) -> Result<Vec<BaselineRecord>, StoreError> {
        let dir = self.root.join("baselines");
        let mut out: Vec<BaselineRecord> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let file = e.file_name().to_str()?.to_owned();
                let name = file.strip_suffix(".json")?;
                if !valid_baseline_name(name) {
                    return None;
                }
                baseline_record(name, &std::fs::read(e.path()).ok()?)
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A baseline's report.json.
    pub fn baseline(&self, name: &str) -> Option<Vec<u8>> {
        if !valid_baseline_name(name) {
            return None;
        }
        std::fs::read(self.root.join("baselines").join(format!("{name}.json"))).ok()
    }
}

fn baseline_record(name: &str, bytes: &[u8]) -> Option<BaselineRecord> {
    #[derive(Deserialize)]
    struct Head {
        run_id: String,
        scenario: String,
        started_at: String,
    }
    let h: Head = serde_json::from_slice(bytes).ok()?;
    Some(BaselineRecord {
        name: name.to_owned(),
        run_id: h.run_id,
        scenario: h.scenario,
        started_at: h.started_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_real_ids_and_names_pass() {
        assert!(valid_run_id("0123456789ab"));
        for bad in [
            "",
            "..",
            "../../etc/pa",
            "0123456789AB",
            "0123456789abc",
            "0123456789a/",
        ] {
            assert!(!valid_run_id(bad), "{bad}");
        }
        assert!(valid_baseline_name("main-2024.01_a"));
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(!valid_baseline_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_run_left_running_is_abandoned_on_open() {
        let dir = std::env::temp_dir().join(format!("squall-store-{}", rand::random::<u64>()));
        let store = Store::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        let r = RunRecord {
            run_id: "00000000000a".into(),
            scenario: "s".into(),
            target: "http://127.0.0.1:1".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            state: RunState::Running,
            passed: None,
            partial: false,
            requests: None,
            failures: None,
            rps: None,
            p95_ms: None,
            duration_s: None,
            error: None,
        };
        store.put(&r).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(dir.join("runs").join("not-a-run")).ok();
        let again = Store::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        let runs = again.list().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].state, RunState::Abandoned);
        assert!(matches!(
            again.file("00000000000a", "report.json"),
            Err(StoreError::NoReport(_))
        ));
        assert!(matches!(
            again.file("00000000000a", "../run.json"),
            Err(StoreError::Invalid(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
