//! The run report's one home: built from the aggregator's merged stats, shown live, rendered (summary, timeline CSV, HTML) and written to disk.

mod build;
pub mod live;
mod render;
mod verdict;
mod write;

pub use build::{ReportMeta, build};
pub use live::{LiveLine, LiveSender, LiveView, Phase};
pub use write::{Output, write_quietly};
