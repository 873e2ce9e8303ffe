//! `summary.txt` and the end-of-run terminal output: plain text, aligned columns, about 100 wide.

use std::fmt::{self, Write as _};

use super::format::{self as f, count};
use squall_common::report::{Comparison, EndpointReport, MetricChange, Report};

/// Endpoint names longer than this many characters are cut with an ellipsis.
const NAME_WIDTH: usize = 32;

/// Renders the plain-text summary: header, per-endpoint table, workers,
/// errors, status codes, thresholds and the verdict.
pub fn summary_text(r: &Report) -> String {
    let mut out = String::with_capacity(4096);
    write_summary(&mut out, r).expect("writing to a String cannot fail");
    out
}

fn write_summary(out: &mut String, r: &Report) -> fmt::Result {
    let verdict = f::verdict(r);
    let title = if r.partial {
        format!("Squall run {verdict} (PARTIAL: the run was cut short)")
    } else {
        format!("Squall run {verdict}")
    };
    writeln!(out, "{title}")?;
    writeln!(out, "{}", "=".repeat(title.chars().count()))?;
    let lost = r.workers.iter().filter(|w| w.lost).count();
    let workers = match lost {
        0 => r.workers.len().to_string(),
        n => format!("{} ({n} lost)", r.workers.len()),
    };
    let header = [
        ("scenario", clean(&r.scenario)),
        ("run id", clean(&r.run_id)),
        ("target", clean(&r.target)),
        ("started at", clean(&r.started_at)),
        ("duration", f::duration(r.duration_s)),
        ("load model", clean(&r.load_model)),
        ("workers", workers),
        ("result", format!("{verdict}, {}", f::thresholds_outcome(r))),
    ];
    for (k, v) in header {
        writeln!(out, "  {k:<11} {v}")?;
    }
    if r.partial {
        writeln!(
            out,
            "  {:<11} yes: numbers cover only the completed part of the run",
            "partial"
        )?;
    }
    let t = &r.totals;
    writeln!(out)?;
    writeln!(
        out,
        "Totals: {} requests, {} failures ({}), {} req/s, {} received",
        count(t.requests),
        count(t.failures),
        f::percent(t.error_rate),
        f::rps(t.rps),
        f::bytes(t.bytes_received),
    )?;
    if t.service_ms != t.latency_ms {
        writeln!(
            out,
            "Latency is measured from each request's intended start (coordinated omission corrected); raw service time: p50 {} ms, p99 {} ms",
            t.service_ms.p50, t.service_ms.p99
        )?;
    }
    if let Some(lag) = &t.schedule_lag_ms {
        writeln!(
            out,
            "Schedule lag (how late requests started): p50 {} ms, p99 {} ms, max {} ms",
            lag.p50, lag.p99, lag.max
        )?;
    }
    if let Some(own) = &t.generator_lag_ms {
        writeln!(
            out,
            "  of which the generator's own (arrivals taken in hand late): p50 {} ms, p99 {} ms, max {} ms; the rest waited for a free user (the target's latency at the pool's size)",
            own.p50, own.p99, own.max
        )?;
    }
    if t.dropped_iterations > 0 {
        writeln!(
            out,
            "Dropped iterations: {} (every pool user was busy, or a worker was over 1 s behind: raise max_users or add workers)",
            count(t.dropped_iterations)
        )?;
    }
    if let Some(b) = &r.broke_at {
        writeln!(
            out,
            "Broke at {}s: `{}` (actual {}) with {} users at {} req/s",
            b.t,
            clean(&b.condition),
            b.actual,
            b.users,
            f::rps(b.rps)
        )?;
    }
    if let Some(a) = &r.aborted {
        writeln!(
            out,
            "Aborted at {}s: threshold `{}` failed (actual {}); the run was stopped early",
            a.t,
            clean(&a.threshold),
            a.actual
        )?;
    }

    writeln!(out)?;
    writeln!(out, "Endpoints (latency in ms)")?;
    out.push_str(&endpoint_table(r).render());

    writeln!(out)?;
    if r.workers.is_empty() {
        writeln!(out, "Workers: none reported")?;
    } else {
        writeln!(out, "Workers")?;
        let mut table = Table::new(&[
            ("id", Align::Left),
            ("requests", Align::Right),
            ("peak users", Align::Right),
            ("status", Align::Left),
        ]);
        for w in &r.workers {
            table.row(vec![
                clean(&w.id),
                count(w.requests),
                count(w.peak_users),
                if w.lost { "LOST" } else { "ok" }.to_owned(),
            ]);
        }
        out.push_str(&table.render());
    }

    if !r.phases.is_empty() {
        writeln!(out)?;
        writeln!(out, "Setup and teardown (not in the totals)")?;
        let mut table = Table::new(&[
            ("phase", Align::Left),
            ("method", Align::Left),
            ("name", Align::Left),
            ("requests", Align::Right),
            ("failures", Align::Right),
            ("max ms", Align::Right),
            ("result", Align::Left),
        ]);
        for p in &r.phases {
            for e in &p.endpoints {
                let flow = e.method == squall_common::scenario::FLOW_METHOD;
                let result = match (&p.error, flow) {
                    (Some(why), true) => format!("FAILED: {}", clean(why)),
                    (None, true) => "ok".to_owned(),
                    _ => e
                        .errors
                        .keys()
                        .map(|k| clean(k))
                        .collect::<Vec<_>>()
                        .join(", "),
                };
                let (method, name) = label(e);
                table.row(vec![
                    clean(&p.phase),
                    method,
                    name,
                    count(e.requests),
                    count(e.failures),
                    e.latency_ms.max.to_string(),
                    result,
                ]);
            }
        }
        out.push_str(&table.render());
    }

    if r.endpoints.iter().any(|e| !e.errors.is_empty()) {
        writeln!(out)?;
        writeln!(out, "Errors")?;
        let mut table = Table::new(&[
            ("method", Align::Left),
            ("name", Align::Left),
            ("kind", Align::Left),
            ("count", Align::Right),
        ])
        .without_header();
        for e in &r.endpoints {
            for (i, (kind, n)) in e.errors.iter().enumerate() {
                let (method, name) = if i == 0 { label(e) } else { Default::default() };
                table.row(vec![method, name, clean(kind), count(*n)]);
            }
        }
        out.push_str(&table.render());
    }

    if r.endpoints.iter().any(|e| !e.checks.is_empty()) {
        writeln!(out)?;
        writeln!(out, "Failed checks")?;
        let mut table = Table::new(&[
            ("method", Align::Left),
            ("name", Align::Left),
            ("check", Align::Left),
            ("count", Align::Right),
        ])
        .without_header();
        for e in &r.endpoints {
            for (i, (check, n)) in e.checks.iter().enumerate() {
                let (method, name) = if i == 0 { label(e) } else { Default::default() };
                table.row(vec![method, name, clean(check), count(*n)]);
            }
        }
        out.push_str(&table.render());
    }

    let all = f::status_totals(r);
    if !all.is_empty() {
        writeln!(out)?;
        writeln!(out, "Status codes")?;
        let mut table = Table::new(&[
            ("method", Align::Left),
            ("name", Align::Left),
            ("codes", Align::Left),
        ])
        .without_header();
        let codes = |it: &mut dyn Iterator<Item = (&str, u64)>| {
            it.map(|(code, n)| format!("{}: {}", clean(code), count(n)))
                .collect::<Vec<_>>()
                .join("  ")
        };
        for e in r.endpoints.iter().filter(|e| !e.status.is_empty()) {
            let (method, name) = label(e);
            table.row(vec![
                method,
                name,
                codes(&mut e.status.iter().map(|(k, v)| (k.as_str(), *v))),
            ]);
        }
        table.rule();
        table.row(vec![
            String::new(),
            "all".to_owned(),
            codes(&mut all.into_iter()),
        ]);
        out.push_str(&table.render());
    }

    writeln!(out)?;
    if r.thresholds.is_empty() {
        writeln!(out, "Thresholds: none defined")?;
    } else {
        writeln!(out, "Thresholds")?;
        let mut table = Table::new(&[
            ("result", Align::Left),
            ("level", Align::Left),
            ("threshold", Align::Left),
            ("target", Align::Right),
            ("actual", Align::Right),
            ("deviation", Align::Right),
        ]);
        for th in &r.thresholds {
            table.row(vec![
                f::threshold_result(th).to_owned(),
                clean(&th.level),
                clean(&th.expr),
                f::number(th.target),
                f::number(th.actual),
                f::signed_percent(th.deviation),
            ]);
        }
        out.push_str(&table.render());
    }

    if let Some(c) = &r.comparison {
        writeln!(out)?;
        write_comparison(out, c)?;
    }

    if let Some(score) = &r.score {
        writeln!(out)?;
        writeln!(
            out,
            "Score: {}/100 (thresholds {}/40, errors {}/30, regressions {}/20, latency {}/10)",
            score.value,
            f::number(score.thresholds),
            f::number(score.errors),
            f::number(score.regressions),
            f::number(score.latency)
        )?;
    }

    if !r.recommendations.is_empty() {
        writeln!(out)?;
        writeln!(out, "Recommendations")?;
        for rec in &r.recommendations {
            writeln!(out, "  - {}", clean(&rec.message))?;
        }
    }

    writeln!(out)?;
    for (what, level_failed) in [("Failed", true), ("Warnings crossed", false)] {
        let names: Vec<String> = r
            .thresholds
            .iter()
            .filter(|t| !t.passed && t.fails_run() == level_failed)
            .map(|t| format!("`{}`", clean(&t.expr)))
            .collect();
        if !names.is_empty() {
            writeln!(out, "{what}: {}", names.join(", "))?;
        }
    }
    writeln!(
        out,
        "Result: {verdict} ({}{})",
        f::thresholds_outcome(r),
        if r.partial { "; partial run" } else { "" }
    )
}

/// The comparison with a baseline: every compared metric of the totals and
/// of each endpoint, then the endpoints only one run has. Also what
/// `coordinator compare` prints.
pub fn comparison_text(c: &Comparison) -> String {
    let mut out = String::new();
    write_comparison(&mut out, c).expect("writing to a String cannot fail");
    out
}

fn write_comparison(out: &mut String, c: &Comparison) -> fmt::Result {
    writeln!(
        out,
        "Comparison with baseline {} (run {}, {}): {}",
        clean(&c.baseline.source),
        clean(&c.baseline.run_id),
        clean(&c.baseline.started_at),
        match c.regressions {
            0 => "no regression".to_owned(),
            n => format!("{n} REGRESSION(S)"),
        }
    )?;
    let r = &c.rules;
    writeln!(
        out,
        "  rule: latency p50 +{}%, p95 +{}%, p99 +{}%, mean +{}%; req/s -{}%; error rate +{} pt; not judged below {} ms or {} requests",
        f::number(r.p50 * 100.0),
        f::number(r.p95 * 100.0),
        f::number(r.p99 * 100.0),
        f::number(r.mean * 100.0),
        f::number(r.rps * 100.0),
        f::number(r.error_rate * 100.0),
        f::number(r.floor_ms),
        r.min_requests
    )?;
    let mut table = Table::new(&[
        ("endpoint", Align::Left),
        ("metric", Align::Left),
        ("base", Align::Right),
        ("new", Align::Right),
        ("change", Align::Right),
        ("verdict", Align::Left),
    ]);
    let mut rows = |name: String, metrics: &[MetricChange]| {
        for (i, m) in metrics.iter().enumerate() {
            table.row(vec![
                if i == 0 { name.clone() } else { String::new() },
                f::metric_label(&m.metric),
                f::metric_value(&m.metric, m.base),
                f::metric_value(&m.metric, m.new),
                f::change(m),
                if m.verdict == "regression" {
                    "REGRESSION".to_owned()
                } else {
                    clean(&m.verdict)
                },
            ]);
        }
    };
    rows("TOTAL".to_owned(), &c.total);
    for e in &c.endpoints {
        rows(
            truncate(&clean(&format!("{} {}", e.method, e.name)), NAME_WIDTH),
            &e.metrics,
        );
    }
    out.push_str(&table.render());
    for (which, list) in [
        ("only in the baseline", &c.only_in_baseline),
        ("only in this run", &c.only_in_new),
    ] {
        if !list.is_empty() {
            let names: Vec<String> = list.iter().map(|n| clean(n)).collect();
            writeln!(out, "  not compared, {which}: {}", names.join(", "))?;
        }
    }
    Ok(())
}

/// The per-endpoint latency table with a TOTAL row.
fn endpoint_table(r: &Report) -> Table {
    let mut table = Table::new(&[
        ("method", Align::Left),
        ("name", Align::Left),
        ("requests", Align::Right),
        ("failures", Align::Right),
        ("rps", Align::Right),
        ("min", Align::Right),
        ("mean", Align::Right),
        ("p50", Align::Right),
        ("p90", Align::Right),
        ("p95", Align::Right),
        ("p99", Align::Right),
        ("p99.9", Align::Right),
        ("max", Align::Right),
    ])
    .tight(6..13);
    let row = |method: String,
               name: String,
               req: u64,
               fail: u64,
               rps: f64,
               l: &squall_common::report::LatencyMs| {
        vec![
            method,
            name,
            count(req),
            count(fail),
            f::rps(rps),
            f::ms(l.min),
            f::ms(l.mean),
            f::ms(l.p50),
            f::ms(l.p90),
            f::ms(l.p95),
            f::ms(l.p99),
            f::ms(l.p999),
            f::ms(l.max),
        ]
    };
    for e in &r.endpoints {
        let (method, name) = label(e);
        table.row(row(
            method,
            name,
            e.requests,
            e.failures,
            e.rps,
            &e.latency_ms,
        ));
    }
    table.rule();
    let t = &r.totals;
    table.row(row(
        String::new(),
        "TOTAL".to_owned(),
        t.requests,
        t.failures,
        t.rps,
        &t.latency_ms,
    ));
    table
}

/// An endpoint's method and (cleaned, truncated) name.
fn label(e: &EndpointReport) -> (String, String) {
    (clean(&e.method), truncate(&clean(&e.name), NAME_WIDTH))
}

/// User text made safe for a terminal: control characters (escape sequences,
/// line breaks) become spaces.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `s` cut to at most `max` characters, the last one an ellipsis when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

enum Row {
    Cells(Vec<String>),
    Rule,
}

/// A text table whose column widths fit the widest cell, indented by two
/// spaces, columns two spaces apart, trailing spaces trimmed.
struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    /// Spaces before each column (the first's is the indent).
    gaps: Vec<usize>,
    show_header: bool,
    rows: Vec<Row>,
}

impl Table {
    fn new(columns: &[(&str, Align)]) -> Self {
        Table {
            headers: columns.iter().map(|(h, _)| (*h).to_owned()).collect(),
            align: columns.iter().map(|(_, a)| *a).collect(),
            gaps: vec![2; columns.len()],
            show_header: true,
            rows: Vec::new(),
        }
    }

    /// Separates the given columns from their left neighbours by one space only.
    fn tight(mut self, columns: std::ops::Range<usize>) -> Self {
        for i in columns {
            self.gaps[i] = 1;
        }
        self
    }

    fn without_header(mut self) -> Self {
        self.show_header = false;
        self
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(Row::Cells(cells));
    }

    /// A horizontal rule, unless it would directly follow the header's.
    fn rule(&mut self) {
        if !self.rows.is_empty() {
            self.rows.push(Row::Rule);
        }
    }

    fn render(&self) -> String {
        let mut widths = vec![0; self.headers.len()];
        let header = self.show_header.then_some(&self.headers);
        let cells = self.rows.iter().filter_map(|r| match r {
            Row::Cells(c) => Some(c),
            Row::Rule => None,
        });
        for row in header.into_iter().chain(cells) {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let total = widths.iter().sum::<usize>() + self.gaps.iter().skip(1).sum::<usize>();
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut l = String::new();
            for (((c, w), a), gap) in cells.iter().zip(&widths).zip(&self.align).zip(&self.gaps) {
                l.push_str(&" ".repeat(*gap));
                match a {
                    Align::Left => l.push_str(&format!("{c:<w$}")),
                    Align::Right => l.push_str(&format!("{c:>w$}")),
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        if let Some(h) = header {
            line(h);
            line(&["-".repeat(total)]);
        }
        for row in &self.rows {
            match row {
                Row::Cells(c) => line(c),
                Row::Rule => line(&["-".repeat(total)]),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;

    #[test]
    fn load_model_facts_are_shown_when_present() {
        let mut r = fixture::sample();
        let plain = summary_text(&r);
        assert!(!plain.contains("Broke at") && !plain.contains("Dropped iterations"));
        r.totals.dropped_iterations = 1234;
        r.totals.schedule_lag_ms = Some(squall_common::report::LatencyMs {
            p50: 0.5,
            p99: 12.0,
            max: 40.0,
            ..Default::default()
        });
        r.totals.generator_lag_ms = Some(squall_common::report::LatencyMs {
            p50: 0.04,
            p99: 0.3,
            max: 2.0,
            ..Default::default()
        });
        r.broke_at = Some(squall_common::report::BreakPoint {
            t: 42,
            users: 350,
            rps: 1800.0,
            condition: "error_rate > 5%".into(),
            actual: 0.07,
        });
        let s = summary_text(&r);
        assert!(s.contains("Dropped iterations: 1,234"), "{s}");
        assert!(s.contains("Schedule lag") && s.contains("p99 12 ms"), "{s}");
        assert!(
            s.contains("of which the generator's own") && s.contains("p99 0.3 ms"),
            "{s}"
        );
        assert!(
            s.contains("Broke at 42s: `error_rate > 5%`") && s.contains("350 users"),
            "{s}"
        );
    }

    fn table_lines(s: &str) -> Vec<&str> {
        s.lines()
            .skip_while(|l| !l.starts_with("Endpoints"))
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect()
    }

    #[test]
    fn header_names_the_run_and_verdict() {
        let s = summary_text(&fixture::sample());
        assert!(s.starts_with("Squall run FAILED\n"), "{s}");
        for want in [
            "checkout <flow>",
            "run-7f3a",
            fixture::TARGET,
            "2024-05-01T12:00:00Z",
            "1m 00s",
            "closed",
            "2 (1 lost)",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
        assert!(s.contains("1 of 2 thresholds failed"), "{s}");
        assert!(
            s.trim_end()
                .ends_with("Result: FAILED (1 of 2 thresholds failed)"),
            "{s}"
        );
        assert!(!s.contains("PARTIAL"));
    }

    #[test]
    fn endpoint_table_has_every_endpoint_and_totals_aligned() {
        let r = fixture::sample();
        let s = summary_text(&r);
        let lines = table_lines(&s);
        // header, rule, 4 endpoints, rule, TOTAL
        assert_eq!(lines.len(), 8, "{s}");
        assert!(lines[0].split_whitespace().eq([
            "method", "name", "requests", "failures", "rps", "min", "mean", "p50", "p90", "p95",
            "p99", "p99.9", "max"
        ]));
        assert!(lines[2].split_whitespace().eq([
            "GET", "/", "6,000", "0", "100.00", "2.50", "13.8", "12.5", "22.5", "27.5", "43.8",
            "75.0", "112"
        ]));
        assert!(
            lines[3]
                .split_whitespace()
                .take(3)
                .eq(["POST", "/login", "1,200"])
        );
        let long = truncate(fixture::LONG_NAME, NAME_WIDTH);
        assert_eq!(long.chars().count(), NAME_WIDTH);
        assert!(long.ends_with('…'));
        assert!(lines[4].contains(&long));
        assert!(lines[5].contains("/search?q=<script>alert(1)</scr…"));
        let total = lines[7];
        assert!(
            total.contains("TOTAL") && total.contains("8,400") && total.contains("32"),
            "{total}"
        );
        // Right-aligned last column: every row ends at the same place.
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width), "{s}");
        assert!(width <= 112, "table is {width} wide:\n{s}");
    }

    #[test]
    fn workers_errors_status_and_thresholds() {
        let s = summary_text(&fixture::sample());
        let worker = s
            .lines()
            .find(|l| l.contains("worker-b"))
            .expect("worker line");
        assert!(worker.contains("3,400") && worker.contains("50") && worker.contains("LOST"));
        assert!(
            s.lines()
                .any(|l| l.contains("worker-a") && l.ends_with("ok"))
        );
        assert!(s.contains("unexpected status 500"));
        let timeout = s
            .lines()
            .find(|l| l.contains("timeout"))
            .expect("error line");
        assert!(
            timeout.contains("POST") && timeout.ends_with("10"),
            "{timeout}"
        );
        assert!(
            s.lines()
                .any(|l| l.contains("all") && l.contains("200: 8,378") && l.contains("500: 10")),
            "{s}"
        );
        let pass = s
            .lines()
            .find(|l| l.contains("p95 < 200ms"))
            .expect("threshold");
        assert!(
            pass.trim_start().starts_with("PASS") && pass.contains("200") && pass.contains("30.8"),
            "{pass}"
        );
        let fail = s
            .lines()
            .find(|l| l.contains("error_rate < 0.1%"))
            .expect("threshold");
        assert!(
            fail.trim_start().starts_with("FAIL")
                && fail.contains("0.003763")
                && fail.contains("+276.3%"),
            "{fail}"
        );
    }

    #[test]
    fn the_verdict_names_failed_thresholds_and_crossed_warnings() {
        let mut r = fixture::sample();
        r.thresholds[0].passed = false;
        r.thresholds[0].level = "warning".into();
        let s = summary_text(&r);
        assert!(s.contains("Failed: `error_rate < 0.1%`"), "{s}");
        assert!(s.contains("Warnings crossed: `p95 < 200ms`"), "{s}");
        let warn = s
            .lines()
            .find(|l| l.contains("p95 < 200ms") && l.contains("warning"))
            .expect("warning row");
        assert!(warn.trim_start().starts_with("WARN"), "{warn}");
        assert!(
            s.contains("1 of 2 thresholds failed, 1 warning(s) crossed"),
            "{s}"
        );
    }

    #[test]
    fn empty_partial_run_still_renders() {
        let s = summary_text(&fixture::empty());
        assert!(s.starts_with("Squall run PASSED (PARTIAL"), "{s}");
        assert!(s.contains("Workers: none reported"));
        assert!(s.contains("Thresholds: none defined"));
        assert!(!s.contains("Status codes") && !s.contains("Errors"));
        assert!(table_lines(&s).iter().any(|l| l.contains("TOTAL")));
    }

    #[test]
    fn control_characters_are_neutralised() {
        let mut r = fixture::sample();
        r.endpoints[0].name = "/a\x1b[31m\nb".to_owned();
        let s = summary_text(&r);
        assert!(!s.contains('\x1b'));
        assert!(s.contains("/a [31m b"));
    }
}
