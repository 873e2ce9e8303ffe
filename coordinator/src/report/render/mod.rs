//! Human-readable renderings of a finished run's `Report`: terminal summary, timeline CSV and a self-contained HTML page.

mod chart;
mod format;
mod html;
mod junit;
mod markdown;
mod summary;
mod timeline;

pub use html::html;
pub use junit::junit;
pub use markdown::summary_md;
pub use summary::{comparison_text, summary_text};
pub use timeline::timeline_csv;

#[cfg(test)]
pub(crate) mod fixture;
