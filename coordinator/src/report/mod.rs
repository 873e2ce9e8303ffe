//! The run report's one home: built from the aggregator's merged stats, shown live, rendered (summary, timeline CSV, HTML) and written to disk.

mod build;
pub mod compare;
pub mod live;
mod recommend;
mod render;
mod score;
mod verdict;
mod write;

pub use build::{ReportMeta, build};
pub use live::LiveLine;
pub use write::Output;
