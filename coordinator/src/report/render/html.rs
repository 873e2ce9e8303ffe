//! `report.html`: one self-contained page (inline CSS and SVG, no scripts, no external resources).

use std::fmt::{self, Write as _};

use super::chart::{Chart, Series, clock};
use super::format::{self as f, count};
use squall_common::report::{LatencyMs, MetricChange, Report, TimelinePoint};

/// Renders the HTML report. Every piece of user-provided text is escaped; the
/// page fetches nothing (no CDN, fonts, images or scripts) and the target URL
/// appears as text only, never as a link.
pub fn html(r: &Report) -> String {
    let mut out = String::with_capacity(32 * 1024);
    write_page(&mut out, r).expect("writing to a String cannot fail");
    out
}

/// Escapes text for HTML element content and quoted attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root{--bg:#f6f7f9;--fg:#1c2330;--muted:#5f6b7a;--card:#fff;--line:#dde2e8;--grid:#e9edf1;
--pass:#1f7a44;--pass-bg:#e3f4ea;--fail:#b42318;--fail-bg:#fdeceb;--warn:#8a5a00;--warn-bg:#fff4d6;
--s1:#2563eb;--s2:#9333ea;--s3:#ea580c;--s4:#dc2626;--s5:#0f766e}
@media (prefers-color-scheme:dark){:root{--bg:#12161c;--fg:#e4e8ee;--muted:#9aa5b4;--card:#1b2129;
--line:#2c3440;--grid:#242b35;--pass:#6fd39a;--pass-bg:#15301f;--fail:#ff8a80;--fail-bg:#3a1a18;
--warn:#f5c86a;--warn-bg:#33290f;--s1:#6ea0ff;--s2:#c08bff;--s3:#ff9a57;--s4:#ff6b6b;--s5:#4fd1c5}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h1 span{color:var(--muted);font-weight:400}
h2{font-size:17px;margin:32px 0 10px}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:12px 0 20px;color:var(--muted)}
dl.meta dt{font-weight:600}dl.meta dd{margin:0;color:var(--fg);overflow-wrap:anywhere}
.banner{border-radius:8px;padding:12px 16px;margin:0 0 12px;font-weight:600}
.banner.pass{background:var(--pass-bg);color:var(--pass)}.banner.fail{background:var(--fail-bg);color:var(--fail)}
.banner.warn{background:var(--warn-bg);color:var(--warn);font-weight:400}
.banner b{font-size:18px;margin-right:8px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:12px;margin:16px 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:22px;font-weight:600;font-variant-numeric:tabular-nums}
.card .s{color:var(--muted);font-size:12px}
.scroll{overflow-x:auto;background:var(--card);border:1px solid var(--line);border-radius:8px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600;white-space:nowrap}
td.n,th.n{text-align:right;white-space:nowrap}
tbody tr:last-child td{border-bottom:0}
tfoot td{font-weight:600;border-top:2px solid var(--line);border-bottom:0}
td.name{overflow-wrap:anywhere;min-width:12em}
.bad{color:var(--fail);font-weight:600}.good{color:var(--pass);font-weight:600}
.tag{display:inline-block;border-radius:4px;padding:0 6px;font-size:12px;font-weight:700}
.tag.pass{background:var(--pass-bg);color:var(--pass)}.tag.fail{background:var(--fail-bg);color:var(--fail)}
.tag.warn{background:var(--warn-bg);color:var(--warn)}
.chips span{display:inline-block;margin:0 10px 0 0;white-space:nowrap}
.note{color:var(--muted);font-size:13px;margin:6px 0}
.charts{display:grid;grid-template-columns:1fr;gap:16px}
figure{margin:0;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 12px}
figcaption{font-weight:600;margin-bottom:4px}
.key{display:inline-block;font-weight:400;color:var(--muted);font-size:13px;margin-left:14px}
.key i{display:inline-block;width:14px;height:3px;border-radius:2px;vertical-align:middle;margin-right:5px}
svg.chart{display:block;width:100%;height:auto}
svg.chart text{fill:var(--muted);font-size:11px}
svg.chart .grid{stroke:var(--grid);stroke-width:1}
svg.chart .axis{stroke:var(--line);stroke-width:1}
svg.chart .series{fill:none;stroke-width:2;stroke-linejoin:round;stroke-linecap:round}
svg.chart .event{stroke:var(--muted);stroke-width:1;stroke-dasharray:3 3}
svg.chart .hit{stroke:transparent;stroke-width:9}
svg.chart .empty{font-size:14px}
.c1{stroke:var(--s1);background:var(--s1);fill:var(--s1)}.c2{stroke:var(--s2);background:var(--s2);fill:var(--s2)}
.c3{stroke:var(--s3);background:var(--s3);fill:var(--s3)}.c4{stroke:var(--s4);background:var(--s4);fill:var(--s4)}
.c5{stroke:var(--s5);background:var(--s5);fill:var(--s5)}
footer{color:var(--muted);font-size:12px;margin:32px 0 8px}
"#;

fn write_page(out: &mut String, r: &Report) -> fmt::Result {
    let scenario = esc(&r.scenario);
    let verdict = f::verdict(r);
    writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">"
    )?;
    writeln!(
        out,
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    )?;
    writeln!(
        out,
        "<title>Squall {verdict}: {scenario} ({})</title>",
        esc(&r.run_id)
    )?;
    writeln!(out, "<style>{STYLE}</style>\n</head>\n<body>\n<main>")?;

    writeln!(
        out,
        "<header>\n<h1>Squall report <span>{scenario}</span></h1>"
    )?;
    let lost = r.workers.iter().filter(|w| w.lost).count();
    let workers = match lost {
        0 => r.workers.len().to_string(),
        n => format!("{} ({n} lost)", r.workers.len()),
    };
    writeln!(out, "<dl class=\"meta\">")?;
    for (k, v) in [
        ("Run id", format!("<code>{}</code>", esc(&r.run_id))),
        ("Target", format!("<code>{}</code>", esc(&r.target))),
        ("Started", esc(&r.started_at)),
        ("Duration", f::duration(r.duration_s)),
        ("Load model", esc(&r.load_model)),
        ("Workers", workers),
    ] {
        writeln!(out, "<dt>{k}</dt><dd>{v}</dd>")?;
    }
    writeln!(out, "</dl>\n</header>")?;

    let class = if r.passed { "pass" } else { "fail" };
    writeln!(
        out,
        "<div class=\"banner {class}\" role=\"status\"><b>{verdict}</b>{}</div>",
        esc(&f::thresholds_outcome(r))
    )?;
    if r.partial {
        writeln!(
            out,
            "<div class=\"banner warn\"><strong>Partial run.</strong> The run was cut short \
             (a signal, or every worker lost); figures cover only the part that completed.</div>"
        )?;
    }

    if let Some(a) = &r.aborted {
        writeln!(
            out,
            "<div class=\"banner warn\"><strong>Aborted at {}s.</strong> Threshold <code>{}</code> \
             failed while the run went on (actual {}), so the run was stopped early.</div>",
            a.t,
            esc(&a.threshold),
            a.actual
        )?;
    }

    write_recommendations(out, r)?;
    write_cards(out, r)?;
    write_charts(out, r)?;
    write_endpoints(out, r)?;
    write_thresholds(out, r)?;
    write_comparison(out, r)?;
    write_workers(out, r)?;
    write_events(out, &r.timeline)?;

    writeln!(
        out,
        "<footer>Generated by Squall from <code>report.json</code> (schema <code>{}</code>).</footer>",
        esc(&r.schema)
    )?;
    writeln!(out, "</main>\n</body>\n</html>")
}

fn write_cards(out: &mut String, r: &Report) -> fmt::Result {
    let t = &r.totals;
    let fail_class = if t.failures > 0 { " bad" } else { "" };
    let cards = [
        ("Requests", count(t.requests), String::new(), ""),
        (
            "Failures",
            count(t.failures),
            format!("{} error rate", f::percent(t.error_rate)),
            fail_class,
        ),
        ("Throughput", f::rps(t.rps), "requests / s".to_owned(), ""),
        ("p50", f::ms(t.latency_ms.p50), "ms".to_owned(), ""),
        ("p95", f::ms(t.latency_ms.p95), "ms".to_owned(), ""),
        ("p99", f::ms(t.latency_ms.p99), "ms".to_owned(), ""),
        ("Max", f::ms(t.latency_ms.max), "ms".to_owned(), ""),
        ("Received", f::bytes(t.bytes_received), String::new(), ""),
    ];
    writeln!(out, "<section class=\"cards\">")?;
    for (k, v, s, class) in cards {
        writeln!(
            out,
            "<div class=\"card\"><div class=\"k\">{k}</div><div class=\"v{class}\">{v}</div><div class=\"s\">{s}</div></div>"
        )?;
    }
    writeln!(out, "</section>")
}

fn write_charts(out: &mut String, r: &Report) -> fmt::Result {
    let tl = &r.timeline;
    let xy =
        |g: fn(&TimelinePoint) -> f64| tl.iter().map(|p| (p.t as f64, g(p))).collect::<Vec<_>>();
    let events: Vec<(f64, String)> = tl
        .iter()
        .filter_map(|p| p.event.as_ref().map(|e| (p.t as f64, e.clone())))
        .collect();
    writeln!(out, "<h2>Over time</h2>\n<section class=\"charts\">")?;
    let mut charts = [
        Chart {
            title: "Throughput and users",
            left_unit: "req/s",
            right_unit: Some("users"),
            series: vec![
                Series {
                    label: "req/s",
                    class: "c1",
                    right: false,
                    points: xy(|p| p.rps),
                },
                Series {
                    label: "users",
                    class: "c5",
                    right: true,
                    points: xy(|p| p.users as f64),
                },
            ],
        },
        Chart {
            title: "Latency percentiles",
            left_unit: "ms",
            right_unit: None,
            series: vec![
                Series {
                    label: "p50",
                    class: "c1",
                    right: false,
                    points: xy(|p| p.p50_ms),
                },
                Series {
                    label: "p95",
                    class: "c2",
                    right: false,
                    points: xy(|p| p.p95_ms),
                },
                Series {
                    label: "p99",
                    class: "c3",
                    right: false,
                    points: xy(|p| p.p99_ms),
                },
            ],
        },
        Chart {
            title: "Failures",
            left_unit: "failures/s",
            right_unit: None,
            series: vec![Series {
                label: "failures",
                class: "c4",
                right: false,
                points: xy(|p| p.failures as f64),
            }],
        },
    ];
    // Sockets held next to users, on the same axis, in runs that count them.
    if tl.iter().any(|p| p.open_connections.is_some()) {
        charts[0].series.push(Series {
            label: "open connections",
            class: "c3",
            right: true,
            points: tl
                .iter()
                .filter_map(|p| p.open_connections.map(|o| (p.t as f64, o as f64)))
                .collect(),
        });
    }
    for chart in &charts {
        write!(out, "<figure><figcaption>{}", esc(chart.title))?;
        for s in &chart.series {
            write!(
                out,
                "<span class=\"key\"><i class=\"{}\"></i>{}</span>",
                s.class,
                esc(s.label)
            )?;
        }
        writeln!(out, "</figcaption>")?;
        out.push_str(&chart.svg(&events));
        writeln!(out, "</figure>")?;
    }
    writeln!(out, "</section>")?;
    if !events.is_empty() {
        writeln!(
            out,
            "<p class=\"note\">Dashed lines mark events (hover for details; listed below).</p>"
        )?;
    }
    Ok(())
}

fn latency_cells(out: &mut String, l: &LatencyMs) -> fmt::Result {
    for v in [l.min, l.mean, l.p50, l.p90, l.p95, l.p99, l.p999, l.max] {
        write!(out, "<td class=\"n\">{}</td>", f::ms(v))?;
    }
    Ok(())
}

const LATENCY_HEADERS: &str = "<th class=\"n\">min</th><th class=\"n\">mean</th><th class=\"n\">p50</th>\
<th class=\"n\">p90</th><th class=\"n\">p95</th><th class=\"n\">p99</th><th class=\"n\">p99.9</th><th class=\"n\">max</th>";

fn write_endpoints(out: &mut String, r: &Report) -> fmt::Result {
    writeln!(out, "<h2>Endpoints</h2>")?;
    writeln!(out, "<p class=\"note\">Latency in milliseconds.</p>")?;
    writeln!(
        out,
        "<div class=\"scroll\"><table>\n<thead><tr><th>Method</th><th>Name</th>\
<th class=\"n\">Requests</th><th class=\"n\">Failures</th><th class=\"n\">Error rate</th><th class=\"n\">req/s</th>\
{LATENCY_HEADERS}<th class=\"n\">Received</th></tr></thead>\n<tbody>"
    )?;
    let row = |out: &mut String,
               method: &str,
               name: &str,
               req,
               fail,
               rate,
               rps,
               l: &LatencyMs,
               bytes| {
        let bad = if fail > 0 { " bad" } else { "" };
        write!(
            out,
            "<tr><td class=\"mono\">{}</td><td class=\"name mono\">{}</td><td class=\"n\">{}</td>\
<td class=\"n{bad}\">{}</td><td class=\"n{bad}\">{}</td><td class=\"n\">{}</td>",
            esc(method),
            esc(name),
            count(req),
            count(fail),
            f::percent(rate),
            f::rps(rps)
        )?;
        latency_cells(out, l)?;
        writeln!(out, "<td class=\"n\">{}</td></tr>", f::bytes(bytes))
    };
    if r.endpoints.is_empty() {
        writeln!(
            out,
            "<tr><td colspan=\"15\" class=\"note\">No requests were recorded.</td></tr>"
        )?;
    }
    for e in &r.endpoints {
        row(
            out,
            &e.method,
            &e.name,
            e.requests,
            e.failures,
            e.error_rate,
            e.rps,
            &e.latency_ms,
            e.bytes_received,
        )?;
    }
    writeln!(out, "</tbody>\n<tfoot>")?;
    let t = &r.totals;
    row(
        out,
        "",
        "TOTAL",
        t.requests,
        t.failures,
        t.error_rate,
        t.rps,
        &t.latency_ms,
        t.bytes_received,
    )?;
    writeln!(out, "</tfoot>\n</table></div>")?;

    // Service time differs from latency only when latency is corrected for
    // coordinated omission (open model, pacing); show it then.
    let differs = r.endpoints.iter().any(|e| e.service_ms != e.latency_ms)
        || r.totals.service_ms != r.totals.latency_ms;
    if differs {
        writeln!(out, "<h2>Service time</h2>")?;
        writeln!(
            out,
            "<p class=\"note\">Latency above is measured from each request's intended start \
(corrected for coordinated omission); service time is the raw time from send to last byte, in milliseconds.</p>"
        )?;
        writeln!(
            out,
            "<div class=\"scroll\"><table>\n<thead><tr><th>Method</th><th>Name</th>{LATENCY_HEADERS}</tr></thead>\n<tbody>"
        )?;
        for e in &r.endpoints {
            write!(
                out,
                "<tr><td class=\"mono\">{}</td><td class=\"name mono\">{}</td>",
                esc(&e.method),
                esc(&e.name)
            )?;
            latency_cells(out, &e.service_ms)?;
            writeln!(out, "</tr>")?;
        }
        writeln!(out, "</tbody>\n<tfoot><tr><td></td><td>TOTAL</td>")?;
        latency_cells(out, &r.totals.service_ms)?;
        writeln!(out, "</tr></tfoot>\n</table></div>")?;
    }

    let any_detail = r
        .endpoints
        .iter()
        .any(|e| !e.status.is_empty() || !e.errors.is_empty());
    if any_detail {
        writeln!(out, "<h2>Status codes and errors</h2>")?;
        writeln!(
            out,
            "<div class=\"scroll\"><table>\n<thead><tr><th>Method</th><th>Name</th><th>Status codes</th><th>Errors</th></tr></thead>\n<tbody>"
        )?;
        for e in r
            .endpoints
            .iter()
            .filter(|e| !e.status.is_empty() || !e.errors.is_empty())
        {
            write!(
                out,
                "<tr><td class=\"mono\">{}</td><td class=\"name mono\">{}</td><td class=\"chips\">",
                esc(&e.method),
                esc(&e.name)
            )?;
            for (code, n) in &e.status {
                let class = if code.starts_with(['4', '5']) {
                    " class=\"bad\""
                } else {
                    ""
                };
                write!(
                    out,
                    "<span{class}><code>{}</code> × {}</span>",
                    esc(code),
                    count(*n)
                )?;
            }
            write!(out, "</td><td class=\"chips\">")?;
            for (kind, n) in &e.errors {
                write!(
                    out,
                    "<span class=\"bad\">{} × {}</span>",
                    esc(kind),
                    count(*n)
                )?;
            }
            // Which checks failed: under the errors, one chip per check name.
            for (check, n) in &e.checks {
                write!(
                    out,
                    "<span class=\"bad\">check <code>{}</code> × {}</span>",
                    esc(check),
                    count(*n)
                )?;
            }
            writeln!(out, "</td></tr>")?;
        }
        writeln!(out, "</tbody>\n</table></div>")?;
    }
    Ok(())
}

fn write_thresholds(out: &mut String, r: &Report) -> fmt::Result {
    writeln!(out, "<h2>Thresholds</h2>")?;
    if r.thresholds.is_empty() {
        return writeln!(out, "<p class=\"note\">No thresholds were defined.</p>");
    }
    writeln!(
        out,
        "<div class=\"scroll\"><table>\n<thead><tr><th>Result</th><th>Level</th><th>Threshold</th><th class=\"n\">Target</th><th class=\"n\">Actual</th><th class=\"n\">Deviation</th></tr></thead>\n<tbody>"
    )?;
    for t in &r.thresholds {
        let word = f::threshold_result(t);
        let class = match word {
            "PASS" => "pass",
            "WARN" => "warn",
            _ => "fail",
        };
        writeln!(
            out,
            "<tr><td><span class=\"tag {class}\">{word}</span></td><td>{}</td><td class=\"mono\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            esc(&t.level),
            esc(&t.expr),
            f::number(t.target),
            f::number(t.actual),
            f::signed_percent(t.deviation)
        )?;
    }
    writeln!(out, "</tbody>\n</table></div>")
}

fn write_comparison(out: &mut String, r: &Report) -> fmt::Result {
    let Some(c) = &r.comparison else {
        return Ok(());
    };
    writeln!(
        out,
        "<h2>Comparison with baseline <code>{}</code></h2>",
        esc(&c.baseline.source)
    )?;
    let rules = &c.rules;
    writeln!(
        out,
        "<p class=\"note\">Baseline run <code>{}</code> of {} ({}). {}. A regression is latency up more than {}% (p95), throughput down more than {}%, or the error rate up more than {} percentage point(s); latencies under {} ms in both runs and endpoints with fewer than {} requests are not judged.</p>",
        esc(&c.baseline.run_id),
        esc(&c.baseline.started_at),
        esc(&c.baseline.scenario),
        match c.regressions {
            0 => "No regression".to_owned(),
            n => format!("<span class=\"bad\">{n} regression(s)</span>"),
        },
        f::number(rules.p95 * 100.0),
        f::number(rules.rps * 100.0),
        f::number(rules.error_rate * 100.0),
        f::number(rules.floor_ms),
        rules.min_requests
    )?;
    writeln!(
        out,
        "<div class=\"scroll\"><table>\n<thead><tr><th>Endpoint</th><th>Metric</th><th class=\"n\">Base</th><th class=\"n\">New</th><th class=\"n\">Change</th><th>Verdict</th></tr></thead>\n<tbody>"
    )?;
    let mut rows = |name: &str, metrics: &[MetricChange]| -> fmt::Result {
        for (i, m) in metrics.iter().enumerate() {
            let verdict = match m.verdict.as_str() {
                "regression" => "<span class=\"tag fail\">REGRESSION</span>".to_owned(),
                "improvement" => "<span class=\"good\">improvement</span>".to_owned(),
                v => esc(v),
            };
            writeln!(
                out,
                "<tr><td class=\"name mono\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{verdict}</td></tr>",
                if i == 0 { esc(name) } else { String::new() },
                esc(&f::metric_label(&m.metric)),
                f::metric_value(&m.metric, m.base),
                f::metric_value(&m.metric, m.new),
                f::change(m)
            )?;
        }
        Ok(())
    };
    rows("TOTAL", &c.total)?;
    for e in &c.endpoints {
        rows(&format!("{} {}", e.method, e.name), &e.metrics)?;
    }
    writeln!(out, "</tbody>\n</table></div>")?;
    for (which, list) in [
        ("Only in the baseline", &c.only_in_baseline),
        ("Only in this run", &c.only_in_new),
    ] {
        if !list.is_empty() {
            let names: Vec<String> = list
                .iter()
                .map(|n| format!("<code>{}</code>", esc(n)))
                .collect();
            writeln!(
                out,
                "<p class=\"note\">{which} (not compared): {}</p>",
                names.join(", ")
            )?;
        }
    }
    Ok(())
}

fn write_recommendations(out: &mut String, r: &Report) -> fmt::Result {
    if let Some(s) = &r.score {
        writeln!(
            out,
            "<p class=\"note\"><strong>Score {}/100</strong>: thresholds {}/40, errors {}/30, regressions {}/20, latency {}/10.</p>",
            s.value,
            f::number(s.thresholds),
            f::number(s.errors),
            f::number(s.regressions),
            f::number(s.latency)
        )?;
    }
    if r.recommendations.is_empty() {
        return Ok(());
    }
    writeln!(out, "<h2>Recommendations</h2>\n<ul>")?;
    for rec in &r.recommendations {
        writeln!(out, "<li>{}</li>", esc(&rec.message))?;
    }
    writeln!(out, "</ul>")
}

fn write_workers(out: &mut String, r: &Report) -> fmt::Result {
    writeln!(out, "<h2>Workers</h2>")?;
    if r.workers.is_empty() {
        return writeln!(out, "<p class=\"note\">No workers reported.</p>");
    }
    writeln!(
        out,
        "<div class=\"scroll\"><table>\n<thead><tr><th>Worker</th><th class=\"n\">Requests</th><th class=\"n\">Peak users</th><th>Users per class</th><th>Status</th></tr></thead>\n<tbody>"
    )?;
    for w in &r.workers {
        let classes = w
            .users_per_class
            .iter()
            .map(|n| count(*n))
            .collect::<Vec<_>>()
            .join(" / ");
        let status = if w.lost {
            "<span class=\"bad\">lost</span>"
        } else {
            "<span class=\"good\">ok</span>"
        };
        writeln!(
            out,
            "<tr><td class=\"mono\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{classes}</td><td>{status}</td></tr>",
            esc(&w.id),
            count(w.requests),
            count(w.peak_users)
        )?;
    }
    writeln!(out, "</tbody>\n</table></div>")
}

fn write_events(out: &mut String, timeline: &[TimelinePoint]) -> fmt::Result {
    let events: Vec<_> = timeline
        .iter()
        .filter_map(|p| p.event.as_deref().map(|e| (p.t, e)))
        .collect();
    if events.is_empty() {
        return Ok(());
    }
    writeln!(out, "<h2>Events</h2>")?;
    writeln!(
        out,
        "<div class=\"scroll\"><table>\n<thead><tr><th class=\"n\">Time</th><th>Event</th></tr></thead>\n<tbody>"
    )?;
    let long = timeline.last().is_some_and(|p| p.t >= 120);
    for (t, e) in events {
        writeln!(
            out,
            "<tr><td class=\"n\">{}</td><td>{}</td></tr>",
            clock(t, long),
            esc(e)
        )?;
    }
    writeln!(out, "</tbody>\n</table></div>")
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;

    /// The page with the target URL (which is shown as text) removed.
    fn without_target(page: &str) -> String {
        page.replace(&esc(fixture::TARGET), "")
    }

    #[test]
    fn has_all_sections_and_charts() {
        let page = html(&fixture::sample());
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.trim_end().ends_with("</html>"));
        assert!(page.contains("<title>Squall FAILED: checkout &lt;flow&gt; (run-7f3a)</title>"));
        assert!(page.contains("banner fail"));
        assert!(page.contains("1 of 2 thresholds failed"));
        assert_eq!(page.matches("<svg").count(), 3);
        assert_eq!(page.matches("</svg>").count(), 3);
        assert_eq!(
            page.matches("<table").count(),
            page.matches("</table>").count()
        );
        assert!(page.contains("<path class=\"series c1\""));
        for want in [
            "/login",
            "TOTAL",
            "p95 &lt; 200ms",
            "worker-b",
            "Events",
            "8,400",
            "unexpected status 500",
        ] {
            assert!(page.contains(want), "missing {want:?}");
        }
        assert!(page.contains("ramp, stage &quot;2&quot;"));
        assert!(page.contains(">PASS</span>") && page.contains(">FAIL</span>"));
        // Service time equals latency in the fixture: no extra table.
        assert!(!page.contains("Service time"));
    }

    #[test]
    fn escapes_user_text() {
        let page = html(&fixture::sample());
        assert!(!page.contains("<script"), "raw script tag in page");
        assert!(page.contains("/search?q=&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!page.contains("checkout <flow>"));
        assert_eq!(esc(r#"a&b<c>"d'"#), "a&amp;b&lt;c&gt;&quot;d&#39;");
    }

    #[test]
    fn is_self_contained() {
        let page = html(&fixture::sample());
        assert!(page.contains(fixture::TARGET), "target shown as text");
        let rest = without_target(&page).to_ascii_lowercase();
        for bad in [
            "http://", "https://", "src=", "href=", "@import", "url(", "<link", "<script", "//cdn",
        ] {
            assert!(!rest.contains(bad), "page references {bad:?}");
        }
    }

    #[test]
    fn empty_timeline_and_partial_run() {
        let page = html(&fixture::empty());
        assert_eq!(page.matches("<svg").count(), 3);
        assert_eq!(page.matches("No timeline data").count(), 3);
        assert!(!page.contains("<path"));
        assert!(page.contains("Partial run."));
        assert!(page.contains("banner pass"));
        assert!(page.contains("No requests were recorded."));
        assert!(page.contains("No thresholds were defined."));
        assert!(page.contains("No workers reported."));
        assert!(!page.contains("NaN") && !page.contains("inf"));
    }

    #[test]
    fn single_point_timeline_draws_markers() {
        let mut r = fixture::sample();
        r.timeline.truncate(1);
        let page = html(&r);
        assert!(page.contains("<circle class=\"c1\""));
        assert!(!page.contains("NaN"));
    }

    #[test]
    fn open_connections_join_the_users_chart_when_counted() {
        let mut r = fixture::sample();
        let before = html(&r);
        assert!(!before.contains("open connections"));
        for p in &mut r.timeline {
            p.open_connections = Some(p.users);
        }
        let page = html(&r);
        assert!(page.contains("</i>open connections</span>"), "no key");
        // One more line in the c3 colour (the other is the latency chart's p99).
        let c3 = |p: &str| p.matches("<path class=\"series c3\"").count();
        assert_eq!(c3(&page), c3(&before) + 1);
        assert_eq!(page.matches("<svg").count(), 3);
    }

    #[test]
    fn service_time_table_when_corrected() {
        let mut r = fixture::sample();
        r.endpoints[1].service_ms = fixture::latency(20.0);
        assert!(html(&r).contains("Service time"));
    }

    #[test]
    fn long_runs_stay_small() {
        let mut r = fixture::sample();
        // A day-long soak: the charts draw at most `MAX_BUCKETS` points a
        // line, so the page stays about 130 KB (issue 17, item 5).
        r.timeline = (0..86_400)
            .map(|t| TimelinePoint {
                t,
                users: 100,
                rps: 1000.0 + (t % 7) as f64,
                ..Default::default()
            })
            .collect();
        let page = html(&r);
        assert!(page.len() < 400_000, "page is {} bytes", page.len());
        assert!(
            page.contains(">20:00:00<"),
            "hour-long runs use h:mm:ss ticks"
        );
    }
}
