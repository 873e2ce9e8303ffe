//! `summary.md`: the run's verdict as GitHub-flavoured Markdown, for CI job summaries (`$GITHUB_STEP_SUMMARY`) and merge-request comments.

use std::fmt::{self, Write as _};

use super::format as f;
use squall_common::report::{MetricChange, Report};

/// Renders the Markdown summary: verdict and score, totals, thresholds,
/// the comparison with a baseline, endpoints and recommendations.
pub fn summary_md(r: &Report) -> String {
    let mut out = String::with_capacity(4096);
    write_md(&mut out, r).expect("writing to a String cannot fail");
    out
}

/// Text from the report made inert in Markdown: no line breaks, table pipes,
/// HTML tags, emphasis or links.
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            c if c.is_control() => out.push(' '),
            '|' | '\\' | '`' | '*' | '_' | '[' | ']' | '#' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
    out
}

fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) -> fmt::Result {
    writeln!(out, "| {} |", header.join(" | "))?;
    writeln!(
        out,
        "|{}",
        header
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
            .collect::<String>()
    )?;
    for row in rows {
        writeln!(out, "| {} |", row.join(" | "))?;
    }
    Ok(())
}

fn write_md(out: &mut String, r: &Report) -> fmt::Result {
    let verdict = f::verdict(r);
    let icon = if r.passed { "✅" } else { "❌" };
    writeln!(out, "## {icon} Squall run {verdict}: {}", md(&r.scenario))?;
    writeln!(out)?;
    let mut facts = vec![
        format!("**Result:** {verdict} ({})", md(&f::thresholds_outcome(r))),
        format!("**Target:** {}", md(&r.target)),
        format!("**Duration:** {}", f::duration(r.duration_s)),
        format!("**Run:** {}", md(&r.run_id)),
    ];
    if let Some(s) = &r.score {
        facts.insert(1, format!("**Score:** {}/100", s.value));
    }
    if r.partial {
        facts.push("**Partial:** the run was cut short".to_owned());
    }
    writeln!(out, "{}", facts.join(" · "))?;
    writeln!(out)?;
    for (what, level_failed) in [("Failed", true), ("Warnings crossed", false)] {
        let names: Vec<String> = r
            .thresholds
            .iter()
            .filter(|t| !t.passed && t.fails_run() == level_failed)
            .map(|t| md(&t.expr))
            .collect();
        if !names.is_empty() {
            writeln!(out, "**{what}:** {}", names.join("; "))?;
            writeln!(out)?;
        }
    }
    let t = &r.totals;
    table(
        out,
        &[
            "requests",
            "failures",
            "error rate",
            "req/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
        ],
        &[vec![
            f::count(t.requests),
            f::count(t.failures),
            f::percent(t.error_rate),
            f::rps(t.rps),
            f::ms(t.latency_ms.p50),
            f::ms(t.latency_ms.p95),
            f::ms(t.latency_ms.p99),
            f::ms(t.latency_ms.max),
        ]],
    )?;

    if !r.thresholds.is_empty() {
        writeln!(out)?;
        writeln!(out, "### Thresholds")?;
        writeln!(out)?;
        let rows: Vec<Vec<String>> = r
            .thresholds
            .iter()
            .map(|th| {
                vec![
                    f::threshold_result(th).to_owned(),
                    md(&th.level),
                    md(&th.expr),
                    f::number(th.target),
                    f::number(th.actual),
                    f::signed_percent(th.deviation),
                ]
            })
            .collect();
        table(
            out,
            &[
                "result",
                "level",
                "threshold",
                "target",
                "actual",
                "deviation",
            ],
            &rows,
        )?;
    }

    if let Some(c) = &r.comparison {
        writeln!(out)?;
        writeln!(
            out,
            "### Comparison with baseline {} ({})",
            md(&c.baseline.source),
            match c.regressions {
                0 => "no regression".to_owned(),
                n => format!("**{n} regression(s)**"),
            }
        )?;
        writeln!(out)?;
        let mut rows = Vec::new();
        let mut add = |name: String, metrics: &[MetricChange]| {
            for m in metrics {
                rows.push(vec![
                    name.clone(),
                    f::metric_label(&m.metric),
                    f::metric_value(&m.metric, m.base),
                    f::metric_value(&m.metric, m.new),
                    f::change(m),
                    if m.verdict == "regression" {
                        "**REGRESSION**".to_owned()
                    } else {
                        md(&m.verdict)
                    },
                ]);
            }
        };
        add("TOTAL".to_owned(), &c.total);
        for e in &c.endpoints {
            add(md(&format!("{} {}", e.method, e.name)), &e.metrics);
        }
        table(
            out,
            &["endpoint", "metric", "base", "new", "change", "verdict"],
            &rows,
        )?;
        for (which, list) in [
            ("only in the baseline", &c.only_in_baseline),
            ("only in this run", &c.only_in_new),
        ] {
            if !list.is_empty() {
                let names: Vec<String> = list.iter().map(|n| md(n)).collect();
                writeln!(out)?;
                writeln!(out, "Not compared, {which}: {}", names.join(", "))?;
            }
        }
    }

    if !r.endpoints.is_empty() {
        writeln!(out)?;
        writeln!(out, "### Endpoints")?;
        writeln!(out)?;
        let rows: Vec<Vec<String>> = r
            .endpoints
            .iter()
            .map(|e| {
                vec![
                    md(&format!("{} {}", e.method, e.name)),
                    f::count(e.requests),
                    f::count(e.failures),
                    f::rps(e.rps),
                    f::ms(e.latency_ms.p50),
                    f::ms(e.latency_ms.p95),
                    f::ms(e.latency_ms.p99),
                ]
            })
            .collect();
        table(
            out,
            &[
                "endpoint", "requests", "failures", "req/s", "p50 ms", "p95 ms", "p99 ms",
            ],
            &rows,
        )?;
    }

    if !r.recommendations.is_empty() {
        writeln!(out)?;
        writeln!(out, "### Recommendations")?;
        writeln!(out)?;
        for rec in &r.recommendations {
            writeln!(out, "- {}", md(&rec.message))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::render::fixture;

    #[test]
    fn tables_have_one_cell_per_column_and_names_are_inert() {
        let s = summary_md(&fixture::sample());
        assert!(s.starts_with("## ❌ Squall run FAILED"), "{s}");
        assert!(
            s.contains("| FAIL | critical | error\\_rate &lt; 0.1% | 0.001 | 0.003763 | +276.3% |"),
            "{s}"
        );
        assert!(s.contains("&lt;script&gt;"), "{s}");
        assert!(!s.contains("<script>"));
        let mut previous: Option<usize> = None;
        for line in s.lines() {
            if !line.starts_with('|') {
                previous = None;
                continue;
            }
            let cells = line.replace("\\|", "").matches('|').count();
            assert_eq!(*previous.get_or_insert(cells), cells, "{line}");
        }
    }

    #[test]
    fn comparison_section_marks_regressions() {
        let mut r = fixture::sample();
        let mut base = fixture::sample();
        base.totals.latency_ms.p95 /= 2.0;
        r.comparison = Some(crate::report::compare::compare(
            &base,
            &r,
            &Default::default(),
        ));
        let s = summary_md(&r);
        assert!(s.contains("### Comparison with baseline"), "{s}");
        assert!(
            s.contains("| TOTAL | p95 ms | 15.4 | 30.8 | +100.0% | **REGRESSION** |"),
            "{s}"
        );
    }
}
