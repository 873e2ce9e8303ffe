//! Cross-process tests: the real `coordinator` and `worker` binaries over real gRPC, against real HTTP targets.

mod accounting;
mod bad_input;
mod demo;
mod faults;
mod hostile_target;
mod hostile_worker;
mod https;
mod journeys;
mod load_models;
mod merge;
mod network;
mod partition;
mod reports;
mod scenario_errors;
mod security;
mod wedged;
