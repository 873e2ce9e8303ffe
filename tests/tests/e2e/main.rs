//! Cross-process tests: the real `coordinator` and `worker` binaries over real gRPC, against real HTTP targets.

mod abort;
mod accounting;
mod bad_input;
mod compose;
mod demo;
mod faults;
mod hostile_target;
mod hostile_worker;
mod hosts;
mod https;
mod journeys;
mod kubernetes;
mod live_view;
mod load_models;
mod merge;
mod network;
mod partition;
mod reports;
mod scenario_errors;
mod security;
mod serve;
mod verdicts;
mod wedged;
mod worker_cpu;
