//! PLACEHOLDER — replaced by the report renderers (see brief).
use crate::report::Report;
pub fn summary_text(r: &Report) -> String { format!("{} requests\n", r.totals.requests) }
pub fn timeline_csv(r: &Report) -> String { format!("t\n{}\n", r.timeline.len()) }
pub fn html(r: &Report) -> String { format!("<html>{}</html>", r.run_id) }
