//! What can stop a worker, with what a user needs to act on it.

/// A worker failure; the binary maps it to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid --master `{0}`: expected host:port or http://host:port")]
    MasterAddress(String),
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
    /// Exit codes per DESIGN.md: 2 for bad input or refusal, 3 when the work could not be done.
    pub fn exit_code(&self) -> i32 {
        match self {
            WorkerError::MasterAddress(_) | WorkerError::Refused(_) => 2,
            WorkerError::Unreachable { .. } | WorkerError::Scenario(_) | WorkerError::Engine(_) => {
                3
            }
        }
    }
}
