//! The domain coordinator and worker share: the scenario model (with its templates, captures, durations and rates), the plan and its partition, the protocol in domain terms, snapshot encoding, the report schema and threshold parsing.

pub mod capture;
pub mod check;
pub mod duration;
pub mod partition;
pub mod plan;
pub mod protocol;
pub mod rate;
pub mod regression;
pub mod report;
pub mod scenario;
pub mod snapshot;
pub mod suggest;
pub mod template;
pub mod threshold;

pub use partition::Share;
pub use report::Report;
pub use scenario::{LoadModel, RunSpec};
pub use snapshot::{EndpointKey, EndpointStats, Snapshot};
