//! The Squall worker: the link that attaches it to a coordinator, the load engine that runs what the coordinator assigns, and the HTTP client its users drive.

mod args;
pub mod cli;
mod engine;
mod error;
mod http;
mod link;

pub use args::Args;
pub use engine::{PhaseOutcome, Realtime, run_phase};
pub use error::WorkerError;
pub use link::{AgentConfig, ClientTls, run};
