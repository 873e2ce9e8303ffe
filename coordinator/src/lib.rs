//! The Squall coordinator: gRPC membership, run control, aggregation, reports and the demo target.

mod aggregator;
mod args;
mod ceiling;
mod cluster;
mod command;
mod config;
mod controller;
pub mod demo;
mod error;
mod interrupt;
mod listener;
mod local;
mod metrics;
mod probe;
mod report;
mod serve;
mod service;
mod setup;
pub mod terminal;
mod tls;
mod worker_text;

pub use args::Args;
pub use command::{Verdict, run};
pub use config::{Config, RunConfig, Workers};
pub use error::CoordinatorError;
