//! `timeline.csv`: one row per second of the run, for spreadsheets and plotting tools.

use std::fmt::Write as _;

use squall_common::report::Report;

/// The CSV header; columns match `TimelinePoint`'s fields.
const HEADER: &str = "t,users,requests,failures,rps,p50_ms,p95_ms,p99_ms,event";

/// Renders the timeline as CSV (RFC 4180 quoting, `\n` line ends), header first.
pub fn timeline_csv(r: &Report) -> String {
    let mut out = String::with_capacity(64 * (r.timeline.len() + 1));
    out.push_str(HEADER);
    out.push('\n');
    for p in &r.timeline {
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            p.t,
            p.users,
            p.requests,
            p.failures,
            num(p.rps),
            num(p.p50_ms),
            num(p.p95_ms),
            num(p.p99_ms),
            p.event.as_deref().map(field).unwrap_or_default(),
        )
        .expect("writing to a String cannot fail");
    }
    out
}

/// A float in its shortest exact form (`12.5`, `0`); empty when not finite.
fn num(v: f64) -> String {
    if v.is_finite() {
        v.to_string()
    } else {
        String::new()
    }
}

/// A text field, quoted (with quotes doubled) when it holds a comma, quote or line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;

    #[test]
    fn one_row_per_point_after_the_header() {
        let r = fixture::sample();
        let csv = timeline_csv(&r);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1 + r.timeline.len());
        assert_eq!(lines[0], HEADER);
        assert_eq!(lines[1], "0,10,800,0,800,12,40,90,stage 1");
        assert_eq!(lines[3], "2,30,820,0,820,14,44,100,");
        assert!(csv.ends_with('\n'));
    }

    #[test]
    fn quotes_events_per_rfc_4180() {
        let csv = timeline_csv(&fixture::sample());
        let row = csv.lines().nth(6).expect("row for t=5");
        assert_eq!(row, r#"5,60,850,0,850,17,50,115,"ramp, stage ""2""""#);
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        assert_eq!(num(f64::NAN), "");
        assert_eq!(num(0.25), "0.25");
    }

    #[test]
    fn empty_timeline_is_just_the_header() {
        assert_eq!(timeline_csv(&fixture::empty()), format!("{HEADER}\n"));
    }
}
