//! The worker's link to its coordinator: attach and reconnect, one session at a time driving the engine, the outbox that survives reconnects, and the link's TLS.

mod agent;
mod config;
mod cpu;
mod outbox;
mod session;
mod tls;
mod wire;

pub use agent::run;
pub use config::AgentConfig;
pub use tls::ClientTls;
