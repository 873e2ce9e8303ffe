//! The demo target: an in-process HTTP API to aim load at (`coordinator target`, `coordinator demo`, tests, benchmarks); "target" everywhere else means the system under test.

mod alarm;
mod chat;
mod runs;
mod server;
mod store;
mod tenants;

pub use server::DemoTarget;
