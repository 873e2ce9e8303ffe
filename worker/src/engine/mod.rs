//! The load engine: one run's part of the plan followed by users on thread-per-core runtimes, each request recorded on its own thread.

mod alarm;
mod arrivals;
mod feed;
mod growth;
mod phase;
mod plan;
mod prepared;
mod realtime;
mod recorder;
mod run;
mod spin;
mod sse;
mod streams;
mod threads;
mod trial;
mod user;
mod ws;

pub use phase::{PhaseOutcome, run_phase};
pub use realtime::Realtime;
pub use recorder::SampleLog;
pub use run::{RunHandle, RunOutput};
pub use spin::idle_spin;
