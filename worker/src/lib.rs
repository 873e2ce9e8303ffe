//! The Squall worker: an HTTP load engine and the agent that attaches it to a coordinator.

mod agent;
mod connection;
mod engine;
mod error;
mod outbox;
pub mod pem;
mod prepared;
mod recorder;
mod response;
mod run;
pub mod signal;
mod target_tls;
mod user;

pub use agent::{AgentConfig, MAX_MESSAGE_BYTES, run};
pub use error::WorkerError;
