//! Squall's shared domain: scenarios, partitioning, statistics, reports and thresholds.

pub mod capture;
pub mod duration;
pub mod partition;
pub mod plan;
pub mod protocol;
pub mod rate;
pub mod render;
pub mod report;
pub mod scenario;
pub mod snapshot;
pub mod template;
pub mod threshold;

pub use partition::Share;
pub use report::Report;
pub use scenario::{LoadModel, RunSpec};
pub use snapshot::{EndpointKey, EndpointStats, Snapshot};
