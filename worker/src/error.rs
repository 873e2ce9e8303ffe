//! What can stop a worker, with what a user needs to act on it.

use squall_proto::link::PemError;

use crate::cli::Exit;

/// A worker failure; the binary maps it to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid --master `{0}`: expected host:port, http://host:port or https://host:port")]
    MasterAddress(String),
    #[error("{0}")]
    Usage(String),
    #[error("TLS file {}: {reason}", path.display())]
    TlsFile {
        path: std::path::PathBuf,
        reason: String,
    },
    /// A TLS handshake failure: a configuration mismatch that retrying cannot fix.
    #[error("TLS handshake with the coordinator at {master} failed: {reason}")]
    Tls { master: String, reason: String },
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
    #[error("gave up: no coordinator answered at {master} within {waited:?}")]
    Unreachable {
        master: String,
        waited: std::time::Duration,
    },
    #[error("cannot run the scenario: {0}")]
    Scenario(String),
    #[error("cannot start the engine: {0}")]
    Engine(#[from] std::io::Error),
}

impl WorkerError {
    /// Bad input or a refusal is invalid input (2); anything else means the work could not be done (3).
    pub fn exit_code(&self) -> Exit {
        match self {
            WorkerError::MasterAddress(_)
            | WorkerError::Usage(_)
            | WorkerError::TlsFile { .. }
            | WorkerError::Tls { .. }
            | WorkerError::Refused(_) => Exit::InvalidInput,
            WorkerError::Unreachable { .. } | WorkerError::Scenario(_) | WorkerError::Engine(_) => {
                Exit::Incomplete
            }
        }
    }
}

impl From<PemError> for WorkerError {
    fn from(e: PemError) -> Self {
        WorkerError::TlsFile {
            path: e.path,
            reason: e.reason,
        }
    }
}
