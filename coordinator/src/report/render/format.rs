//! Number, duration and size formatting shared by the renderers.

use squall_common::report::{MetricChange, Report, ThresholdResult};

/// `v`, or 0 when it is NaN or infinite (reports should never hold those,
/// but a renderer must not print "NaN" or draw off the chart).
pub(super) fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

/// A latency in milliseconds to about the histograms' 3 significant digits:
/// 2 decimals below 10 ms, 1 below 100 ms, then whole milliseconds.
pub(super) fn ms(v: f64) -> String {
    let v = finite(v);
    if v.abs() < 10.0 {
        format!("{v:.2}")
    } else if v.abs() < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// A count with thousands separators: `1234567` -> `1,234,567`.
pub(super) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Requests per second, 2 decimals.
pub(super) fn rps(v: f64) -> String {
    format!("{:.2}", finite(v))
}

/// A fraction as a percentage: `0.0123` -> `1.23%`.
pub(super) fn percent(fraction: f64) -> String {
    format!("{:.2}%", finite(fraction) * 100.0)
}

/// A duration: `42.5s`, `3m 07s`, `1h 02m 03s`.
pub(super) fn duration(seconds: f64) -> String {
    let s = finite(seconds).max(0.0);
    if s < 60.0 {
        return format!("{s:.1}s");
    }
    let total = s.round() as u64;
    let (h, m, sec) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}h {m:02}m {sec:02}s")
    } else {
        format!("{m}m {sec:02}s")
    }
}

/// A byte size in binary units: `512 B`, `1.5 KiB`, `12.3 MiB`.
pub(super) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A free-form measured value (a threshold's actual): whole numbers as such,
/// otherwise 2 decimals, or 4 significant digits below 1; trailing zeros trimmed.
pub(super) fn number(v: f64) -> String {
    let v = finite(v);
    if v == v.trunc() && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let decimals = if v.abs() >= 1.0 {
        2
    } else {
        (3 - v.abs().log10().floor() as i32).clamp(0, 12) as usize
    };
    let s = format!("{v:.decimals$}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// `PASSED` or `FAILED`.
pub(super) fn verdict(r: &Report) -> &'static str {
    if r.passed { "PASSED" } else { "FAILED" }
}

/// A one-line description of the thresholds' outcome.
pub(super) fn thresholds_outcome(r: &Report) -> String {
    let total = r.thresholds.len();
    let failed = r.thresholds.iter().filter(|t| t.fails_run()).count();
    let warned = r
        .thresholds
        .iter()
        .filter(|t| !t.passed && !t.fails_run())
        .count();
    let mut out = match (total, failed, warned) {
        (0, _, _) => "no thresholds defined".to_owned(),
        (1, 0, 0) => "the threshold passed".to_owned(),
        (_, 0, 0) => format!("all {total} thresholds passed"),
        (_, 0, w) => format!("no critical threshold failed, {w} warning(s) crossed"),
        (_, f, 0) => format!("{f} of {total} thresholds failed"),
        (_, f, w) => format!("{f} of {total} thresholds failed, {w} warning(s) crossed"),
    };
    if let Some(c) = &r.comparison {
        match c.regressions {
            0 => out.push_str("; no regression against the baseline"),
            n => out.push_str(&format!("; {n} regression(s) against the baseline")),
        }
    }
    out
}

/// PASS, FAIL, or WARN for a crossed warning level.
pub(super) fn threshold_result(t: &ThresholdResult) -> &'static str {
    match (t.passed, t.fails_run()) {
        (true, _) => "PASS",
        (false, true) => "FAIL",
        (false, false) => "WARN",
    }
}

/// A signed relative figure as a percentage (`+30.0%`); `-` when there is none.
pub(super) fn signed_percent(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{:+.1}%", v * 100.0),
        _ => "-".to_owned(),
    }
}

/// A compared metric's value in its unit (ms, req/s or a percentage).
pub(super) fn metric_value(metric: &str, v: f64) -> String {
    match metric {
        "error_rate" => percent(v),
        "rps" => rps(v),
        _ => ms(v),
    }
}

/// A compared metric's change: relative for latencies and rps, in points for the error rate.
pub(super) fn change(m: &MetricChange) -> String {
    if m.metric == "error_rate" {
        format!("{:+.2} pt", finite(m.change) * 100.0)
    } else {
        signed_percent(Some(m.change))
    }
}

/// A compared metric's name with its unit, for table rows.
pub(super) fn metric_label(metric: &str) -> String {
    match metric {
        "error_rate" => "error rate".to_owned(),
        "rps" => "req/s".to_owned(),
        m => format!("{m} ms"),
    }
}

/// Status codes summed over all endpoints, in code order.
pub(super) fn status_totals(r: &Report) -> std::collections::BTreeMap<&str, u64> {
    let mut all = std::collections::BTreeMap::new();
    for e in &r.endpoints {
        for (code, n) in &e.status {
            *all.entry(code.as_str()).or_insert(0) += n;
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(ms(1.2345), "1.23");
        assert_eq!(ms(12.345), "12.3");
        assert_eq!(ms(123.45), "123");
        assert_eq!(ms(12_345.6), "12346");
        assert_eq!(ms(f64::NAN), "0.00");
        assert_eq!(percent(0.0123), "1.23%");
        assert_eq!(duration(42.46), "42.5s");
        assert_eq!(duration(187.0), "3m 07s");
        assert_eq!(duration(3723.0), "1h 02m 03s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(number(200.0), "200");
        assert_eq!(number(123.456), "123.46");
        assert_eq!(number(0.001234), "0.001234");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(f64::INFINITY), "0");
    }
}
