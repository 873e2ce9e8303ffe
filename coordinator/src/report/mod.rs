//! The run report's one home: built from the aggregator's merged stats, judged (thresholds, comparison with a baseline, score, recommendations), shown live, rendered (summary, Markdown, timeline CSV, HTML, JUnit), written to disk, and read back to compare, re-render or merge.

pub mod abort;
pub mod baseline;
mod build;
pub mod compare;
pub mod live;
pub mod merge;
mod recommend;
pub mod render;
mod score;
pub mod verdict;
mod write;

pub use build::{ReportMeta, build, latency_ms, phase_endpoint};
pub use live::{LiveLine, LiveSender, LiveView, Phase};
pub use write::{Output, write_file, write_quietly, write_report};
