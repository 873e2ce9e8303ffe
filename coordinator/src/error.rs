//! Why a coordinator command failed, and the exit code each failure maps to.

use std::path::PathBuf;
use std::time::Duration;

use squall_common::scenario::ScenarioError;
use squall_worker::cli::Exit;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("{0}")]
    Usage(String),
    #[error("TLS file {}: {reason}", path.display())]
    TlsFile { path: PathBuf, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(
        "timed out after {waited:?} waiting for workers: {attached} of {wanted} attached (start them with `worker --master HOST:PORT`)"
    )]
    NoWorkers {
        wanted: usize,
        attached: usize,
        waited: Duration,
    },
    #[error("every worker was lost; the run could not complete (partial report in {out})")]
    AllWorkersLost { out: PathBuf },
    #[error(
        "--out {}: reports cannot be written there ({source}); choose a directory this user can create and write to (nothing was sent)",
        path.display()
    )]
    OutUnusable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot write the report to {} ({reason}); it was written to {} instead",
        wanted.display(),
        fallback.display()
    )]
    ReportMoved {
        wanted: PathBuf,
        reason: std::io::Error,
        fallback: PathBuf,
    },
    #[error(
        "cannot write the report to {} ({reason}) nor to {} ({fallback_reason}); only the summary above is left",
        wanted.display(),
        fallback.display()
    )]
    ReportLost {
        wanted: PathBuf,
        reason: std::io::Error,
        fallback: PathBuf,
        fallback_reason: std::io::Error,
    },
    #[error(
        "interrupted: scenario(s) not run: {}; the reports of those that ran and index.json are written",
        not_run.join(", ")
    )]
    Interrupted { not_run: Vec<String> },
    #[error("interrupted while waiting for workers; nothing was run")]
    InterruptedWaiting,
    #[error(
        "{} of {total} scenarios could not complete (see index.json):\n  {}",
        failed.len(),
        failed.join("\n  ")
    )]
    ScenariosIncomplete {
        /// `scenario: why`, one per scenario that could not complete.
        failed: Vec<String>,
        total: usize,
    },
    #[error("report file {}: {reason}", path.display())]
    ReportFile { path: PathBuf, reason: String },
    #[error(
        "{flag} {}: cannot be written there ({source}); nothing was sent",
        path.display()
    )]
    FileUnusable {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    WriteFailed {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot merge: {0}")]
    Merge(String),
    #[error("cannot start the demo target: {0}")]
    Target(std::io::Error),
    #[error("setup failed, so no load was sent: {reason}")]
    SetupFailed { reason: String },
    #[error("internal error: {0}")]
    Internal(String),
    #[error("probe failed: {0}")]
    Probe(String),
}

impl CoordinatorError {
    /// Invalid input or usage (2), or the run could not complete (3).
    pub fn exit_code(&self) -> Exit {
        match self {
            CoordinatorError::Scenario(_)
            | CoordinatorError::Usage(_)
            | CoordinatorError::TlsFile { .. }
            | CoordinatorError::OutUnusable { .. }
            | CoordinatorError::ReportFile { .. }
            | CoordinatorError::FileUnusable { .. }
            | CoordinatorError::Merge(_) => Exit::InvalidInput,
            CoordinatorError::Bind { .. }
            | CoordinatorError::NoWorkers { .. }
            | CoordinatorError::AllWorkersLost { .. }
            | CoordinatorError::ReportMoved { .. }
            | CoordinatorError::ReportLost { .. }
            | CoordinatorError::Interrupted { .. }
            | CoordinatorError::InterruptedWaiting
            | CoordinatorError::ScenariosIncomplete { .. }
            | CoordinatorError::WriteFailed { .. }
            | CoordinatorError::Target(_)
            | CoordinatorError::Internal(_)
            | CoordinatorError::SetupFailed { .. }
            | CoordinatorError::Probe(_) => Exit::Incomplete,
        }
    }
}

impl From<squall_proto::link::PemError> for CoordinatorError {
    fn from(e: squall_proto::link::PemError) -> Self {
        CoordinatorError::TlsFile {
            path: e.path,
            reason: e.reason,
        }
    }
}
