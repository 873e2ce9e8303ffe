//! Human-readable renderings of a finished run's `Report`: terminal summary, timeline CSV and a self-contained HTML page.

mod chart;
mod format;
mod html;
mod summary;
mod timeline;

pub use html::html;
pub use summary::summary_text;
pub use timeline::timeline_csv;

#[cfg(test)]
mod fixture;
