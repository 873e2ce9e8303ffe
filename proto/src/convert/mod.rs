//! Conversions between wire (`pb`) and domain (`squall_common::protocol`) messages, one module per type.

mod coordinator_message;
mod share;
mod snapshot;
mod state;
mod worker_message;

pub use coordinator_message::{MAX_WORKERS, PlaceError, decode_coordinator_message};
pub use worker_message::decode_worker_message;

/// A message from the peer that does not make sense; the peer is buggy or incompatible.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("empty {0} message")]
    Empty(&'static str),
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("bad scenario JSON in Start: {0}")]
    Scenario(#[from] serde_json::Error),
    #[error("invalid status code {0}")]
    Status(u32),
    #[error("refused Start for run `{run_id}`: {problem}")]
    Start { run_id: String, problem: PlaceError },
    #[error("refused Adjust for run `{run_id}`: {problem}")]
    Adjust { run_id: String, problem: PlaceError },
}

impl ConvertError {
    /// The run a refused `Start` or `Adjust` was for: the worker reports that run FAILED.
    pub fn run_id(&self) -> Option<&str> {
        match self {
            ConvertError::Start { run_id, .. } | ConvertError::Adjust { run_id, .. } => {
                Some(run_id)
            }
            _ => None,
        }
    }
}
