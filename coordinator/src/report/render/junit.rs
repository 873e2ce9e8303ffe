//! `--junit FILE`: JUnit XML for CI test tabs, one test suite per scenario with one test case per threshold and per compared metric.

use std::fmt::{self, Write as _};

use super::format as f;
use squall_common::report::{MetricChange, Report};

/// Renders the reports of one command (several with `--all`) as one JUnit document.
pub fn junit(reports: &[&Report]) -> String {
    let mut out = String::with_capacity(4096);
    write_junit(&mut out, reports).expect("writing to a String cannot fail");
    out
}

/// Text made safe inside XML attributes and elements: the five special
/// characters escaped, characters XML 1.0 forbids replaced by a space.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// One test case: its name, and a failure or skip reason if it has one.
struct Case {
    class: String,
    name: String,
    failure: Option<(String, &'static str)>,
    skipped: Option<String>,
    output: Option<String>,
}

fn cases(r: &Report) -> Vec<Case> {
    let scenario = format!("squall.{}", r.scenario);
    let mut out = Vec::new();
    for t in &r.thresholds {
        let figures = format!(
            "actual {} (target {}, deviation {})",
            f::number(t.actual),
            f::number(t.target),
            f::signed_percent(t.deviation)
        );
        out.push(Case {
            class: format!("{scenario}.thresholds"),
            name: t.expr.clone(),
            failure: t.fails_run().then(|| (figures.clone(), "threshold")),
            skipped: None,
            output: (!t.passed && !t.fails_run())
                .then(|| format!("warning level crossed: {figures}")),
        });
    }
    if let Some(c) = &r.comparison {
        let mut add = |endpoint: &str, metrics: &[MetricChange]| {
            for m in metrics {
                let figures = format!(
                    "{} {}: {} -> {} ({}) against baseline {}",
                    endpoint,
                    f::metric_label(&m.metric),
                    f::metric_value(&m.metric, m.base),
                    f::metric_value(&m.metric, m.new),
                    f::change(m),
                    c.baseline.source
                );
                out.push(Case {
                    class: format!("{scenario}.regressions"),
                    name: format!("{endpoint} {}", m.metric),
                    failure: (m.verdict == "regression").then(|| (figures.clone(), "regression")),
                    skipped: (m.verdict == "noise").then(|| {
                        "below the noise floor (too few requests, or both latencies under the floor)"
                            .to_owned()
                    }),
                    output: Some(figures),
                });
            }
        };
        add("TOTAL", &c.total);
        for e in &c.endpoints {
            add(&format!("{} {}", e.method, e.name), &e.metrics);
        }
    }
    out
}

fn write_junit(out: &mut String, reports: &[&Report]) -> fmt::Result {
    let suites: Vec<(&Report, Vec<Case>)> = reports.iter().map(|r| (*r, cases(r))).collect();
    let count = |pred: &dyn Fn(&Case) -> bool| {
        suites
            .iter()
            .flat_map(|(_, c)| c)
            .filter(|c| pred(c))
            .count()
    };
    writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        out,
        r#"<testsuites name="squall" tests="{}" failures="{}" skipped="{}">"#,
        count(&|_| true),
        count(&|c| c.failure.is_some()),
        count(&|c| c.skipped.is_some())
    )?;
    for (r, cases) in &suites {
        writeln!(
            out,
            r#"  <testsuite name="squall.{}" tests="{}" failures="{}" errors="0" skipped="{}" time="{:.3}" timestamp="{}">"#,
            xml(&r.scenario),
            cases.len(),
            cases.iter().filter(|c| c.failure.is_some()).count(),
            cases.iter().filter(|c| c.skipped.is_some()).count(),
            f::finite(r.duration_s),
            xml(&r.started_at)
        )?;
        for c in cases {
            write!(
                out,
                r#"    <testcase classname="{}" name="{}" time="0">"#,
                xml(&c.class),
                xml(&c.name)
            )?;
            if let Some((message, kind)) = &c.failure {
                write!(
                    out,
                    r#"<failure message="{}" type="{kind}">{}</failure>"#,
                    xml(message),
                    xml(message)
                )?;
            }
            if let Some(reason) = &c.skipped {
                write!(out, r#"<skipped message="{}"/>"#, xml(reason))?;
            }
            if let Some(text) = &c.output {
                write!(out, "<system-out>{}</system-out>", xml(text))?;
            }
            writeln!(out, "</testcase>")?;
        }
        writeln!(out, "  </testsuite>")?;
    }
    writeln!(out, "</testsuites>")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::render::fixture;

    #[test]
    fn one_case_per_threshold_and_failures_marked() {
        let r = fixture::sample();
        let x = junit(&[&r]);
        assert!(
            x.contains(r#"<testsuites name="squall" tests="2" failures="1" skipped="0">"#),
            "{x}"
        );
        assert!(
            x.contains(r#"name="p95 &lt; 200ms" time="0"></testcase>"#),
            "{x}"
        );
        assert!(x.contains(r#"name="error_rate &lt; 0.1%" time="0"><failure message="actual 0.003763 (target 0.001, deviation +276.3%)" type="threshold">"#), "{x}");
    }

    #[test]
    fn one_suite_per_scenario_and_a_crossed_warning_passes_with_its_figures() {
        let a = fixture::sample();
        let mut b = fixture::sample();
        b.scenario = "second".into();
        b.thresholds[1].level = "warning".into();
        let x = junit(&[&a, &b]);
        assert_eq!(x.matches("<testsuite ").count(), 2, "{x}");
        assert!(
            x.contains(r#"<testsuites name="squall" tests="4" failures="1" skipped="0">"#),
            "{x}"
        );
        assert!(
            x.contains(r#"<testsuite name="squall.second" tests="2" failures="0""#),
            "{x}"
        );
        assert!(
            x.contains("<system-out>warning level crossed: actual 0.003763"),
            "{x}"
        );
    }

    #[test]
    fn comparison_rows_are_cases_and_text_is_escaped() {
        let mut r = fixture::sample();
        r.scenario = "a\"b<c>\u{1b}".into();
        let mut base = fixture::sample();
        base.totals.latency_ms.p95 /= 2.0;
        r.comparison = Some(crate::report::compare::compare(
            &base,
            &r,
            &Default::default(),
        ));
        let x = junit(&[&r]);
        assert!(
            x.contains(r#"<testsuite name="squall.a&quot;b&lt;c&gt; ""#),
            "{x}"
        );
        assert!(x.contains(r#"name="TOTAL p95" time="0"><failure"#), "{x}");
        assert!(x.contains("&lt;script&gt;"), "{x}");
        // 2 thresholds + 6 metrics for the totals and for each of 4 endpoints.
        assert!(x.contains(r#"tests="32" failures="2""#), "{x}");
    }
}
