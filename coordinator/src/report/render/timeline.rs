//! `timeline.csv`: one row per second of the run, for spreadsheets and plotting tools.

use std::fmt::Write as _;

use squall_common::report::Report;

/// The CSV header; columns match `TimelinePoint`'s fields.
const HEADER: &str = "t,users,requests,failures,rps,p50_ms,p95_ms,p99_ms,event";
/// The last column, when the run had WebSocket or SSE steps: appended, so
/// the columns of a run without them stay as they were.
const OPEN_COLUMN: &str = ",open_connections";

/// Renders the timeline as CSV (RFC 4180 quoting, `\n` line ends), header first.
pub fn timeline_csv(r: &Report) -> String {
    let open = r.timeline.iter().any(|p| p.open_connections.is_some());
    let mut out = String::with_capacity(64 * (r.timeline.len() + 1));
    out.push_str(HEADER);
    if open {
        out.push_str(OPEN_COLUMN);
    }
    out.push('\n');
    for p in &r.timeline {
        write!(
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
        if open {
            // A second no worker reported has no count: an empty field.
            out.push(',');
            if let Some(n) = p.open_connections {
                write!(out, "{n}").expect("writing to a String cannot fail");
            }
        }
        out.push('\n');
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
    fn open_connections_column_only_when_counted() {
        let mut r = fixture::sample();
        assert!(!timeline_csv(&r).contains("open_connections"));
        r.timeline[1].open_connections = Some(5000);
        let csv = timeline_csv(&r);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], format!("{HEADER}{OPEN_COLUMN}"));
        assert_eq!(lines[1], "0,10,800,0,800,12,40,90,stage 1,");
        assert!(lines[2].ends_with(",5000"), "{}", lines[2]);
    }

    #[test]
    fn empty_timeline_is_just_the_header() {
        assert_eq!(timeline_csv(&fixture::empty()), format!("{HEADER}\n"));
    }
}
