//! k6-style pass/fail thresholds (`p99 < 200ms`, `error_rate < 1%`): parsing, and the check of one value against one.
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::report::LatencyMs;

const EXPECTED_FORM: &str = "`[ENDPOINT: ]METRIC OP VALUE[, abort [after DURATION]][, warn]`, e.g. `p95 < 200ms`, \
     `error_rate < 1%`, `rps > 100` or `list workflows: p99 <= 1.5s`";
const EXPECTED_METRIC: &str = "min, mean (or avg), p50 (or med), p90, p95, p99, p999, max, \
     p(N) for those percentiles, error_rate, rps, requests or failures";
const EXPECTED_OP: &str = "one of `<`, `<=`, `>`, `>=`, `==`";
const EXPECTED_DURATION: &str =
    "a duration such as `200ms`, `1.5s` or `500us` (a bare number is ms)";
const EXPECTED_FRACTION: &str =
    "a fraction from 0 to 1 such as `0.01`, or a percentage such as `1%`";
const EXPECTED_RATE: &str = "a non-negative rate in requests per second such as `100` or `100/s`";
const EXPECTED_COUNT: &str = "a non-negative count such as `1000`";

/// Why a threshold was rejected; each message lists the forms that are accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    #[error("empty threshold: expected {EXPECTED_FORM}")]
    Empty,
    #[error("threshold `{0}` has an empty endpoint name before `:`: expected {EXPECTED_FORM}")]
    EmptyEndpoint(String),
    #[error(
        "threshold `{expr}` has no comparison: expected {EXPECTED_OP} between the metric and the value, as in {EXPECTED_FORM}"
    )]
    MissingOperator { expr: String },
    #[error("unknown metric `{metric}` in threshold `{expr}`: expected {EXPECTED_METRIC}")]
    UnknownMetric { metric: String, expr: String },
    #[error(
        "bad abort flag `{flag}` in threshold `{expr}`: expected `abort` or `abort after DURATION` (e.g. `abort after 10s`)"
    )]
    BadAbort { flag: String, expr: String },
    #[error("bad value `{value}` in threshold `{expr}`: expected {expected}")]
    BadValue {
        value: String,
        expr: String,
        expected: &'static str,
    },
}

/// Latency summaries the report carries (in `latency_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyStat {
    Min,
    Mean,
    P50,
    P90,
    P95,
    P99,
    P999,
    Max,
}

impl LatencyStat {
    pub fn of(self, l: &LatencyMs) -> f64 {
        match self {
            LatencyStat::Min => l.min,
            LatencyStat::Mean => l.mean,
            LatencyStat::P50 => l.p50,
            LatencyStat::P90 => l.p90,
            LatencyStat::P95 => l.p95,
            LatencyStat::P99 => l.p99,
            LatencyStat::P999 => l.p999,
            LatencyStat::Max => l.max,
        }
    }
}

/// What a threshold measures; each has one natural unit so `actual` needs no label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Milliseconds.
    Latency(LatencyStat),
    /// A fraction (0.01 = 1%).
    ErrorRate,
    /// Requests per second.
    Rps,
    Requests,
    Failures,
    /// The share of requests that passed their checks (not failed as `check`), a fraction.
    Checks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

impl Op {
    fn holds(self, actual: f64, limit: f64) -> bool {
        match self {
            Op::Lt => actual < limit,
            Op::Le => actual <= limit,
            Op::Gt => actual > limit,
            Op::Ge => actual >= limit,
            Op::Eq => actual == limit,
        }
    }
}

/// A parsed threshold; the parts are public so a live run can check `abort`
/// thresholds against interim numbers with [`Threshold::check`].
///
/// It serialises as its text (`expr`) and deserialising parses it again, so a
/// run spec holds thresholds parsed once and still sends workers the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub expr: String,
    /// Endpoint name (matched against `endpoints[].name`); None means the totals.
    pub endpoint: Option<String>,
    pub metric: Metric,
    pub op: Op,
    /// The limit, in the metric's natural unit (ms, fraction, per second, count).
    pub value: f64,
    /// Stop the run as soon as this threshold fails.
    pub abort: bool,
    /// A warning level (`, warn` last): reported when crossed, never fails the run.
    pub warn: bool,
    /// With `abort`: how long into the run before it is judged live (`abort after 10s`), so a warm-up does not abort.
    pub abort_after: Duration,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

impl Serialize for Threshold {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.expr)
    }
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Threshold::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Threshold {
    pub fn parse(expr: &str) -> Result<Self, ThresholdError> {
        let full = expr.trim();
        if full.is_empty() {
            return Err(ThresholdError::Empty);
        }
        let text = full;
        let (full, warn) = match full.rsplit_once(',') {
            Some((body, flag)) if flag.trim().eq_ignore_ascii_case("warn") => (body.trim(), true),
            _ => (full, false),
        };
        let (body, abort, abort_after) = match full.rsplit_once(',') {
            Some((body, flag)) => match abort_flag(flag) {
                Some(Ok(after)) => (body.trim(), true, after),
                Some(Err(())) => {
                    return Err(ThresholdError::BadAbort {
                        flag: flag.trim().to_owned(),
                        expr: text.to_owned(),
                    });
                }
                None => (full, false, Duration::ZERO),
            },
            None => (full, false, Duration::ZERO),
        };
        let (endpoint, cond) = match body.rsplit_once(": ") {
            Some((name, cond)) => {
                let name = name.trim();
                if name.is_empty() {
                    return Err(ThresholdError::EmptyEndpoint(full.to_owned()));
                }
                (Some(name.to_owned()), cond.trim())
            }
            None => (None, body),
        };
        let missing_op = || ThresholdError::MissingOperator {
            expr: full.to_owned(),
        };
        let at = cond.find(['<', '>', '=']).ok_or_else(missing_op)?;
        let (metric, rest) = cond.split_at(at);
        let (op, value) = if let Some(v) = rest.strip_prefix("<=") {
            (Op::Le, v)
        } else if let Some(v) = rest.strip_prefix(">=") {
            (Op::Ge, v)
        } else if let Some(v) = rest.strip_prefix("==") {
            (Op::Eq, v)
        } else if let Some(v) = rest.strip_prefix('<') {
            (Op::Lt, v)
        } else if let Some(v) = rest.strip_prefix('>') {
            (Op::Gt, v)
        } else {
            return Err(missing_op());
        };
        let metric_text = metric.trim();
        if metric_text.is_empty() {
            return Err(missing_op());
        }
        let metric = parse_metric(metric_text).ok_or_else(|| ThresholdError::UnknownMetric {
            metric: metric_text.to_owned(),
            expr: full.to_owned(),
        })?;
        let value_text = value.trim();
        let value =
            parse_value(metric, value_text).map_err(|expected| ThresholdError::BadValue {
                value: value_text.to_owned(),
                expr: full.to_owned(),
                expected,
            })?;
        Ok(Threshold {
            expr: text.to_owned(),
            endpoint,
            metric,
            op,
            value,
            abort,
            warn,
            abort_after,
        })
    }

    /// Whether `actual` (in the metric's natural unit) satisfies the threshold.
    pub fn check(&self, actual: f64) -> bool {
        actual.is_finite() && self.op.holds(actual, self.value)
    }
}

/// The text after a threshold's last comma: `None` when it is no abort flag
/// at all, else the delay of `abort` (zero), `abort_on_fail` (k6's name, the
/// same) or `abort after DURATION`, or `Err` for a malformed one.
fn abort_flag(flag: &str) -> Option<Result<Duration, ()>> {
    let lower = flag.trim().to_ascii_lowercase();
    let rest = lower
        .strip_prefix("abort_on_fail")
        .or_else(|| lower.strip_prefix("abort"))?;
    let rest = rest.trim();
    if rest.is_empty() {
        return Some(Ok(Duration::ZERO));
    }
    Some(
        rest.strip_prefix("after")
            .filter(|d| d.starts_with(char::is_whitespace))
            .ok_or(())
            .and_then(|d| crate::duration::parse(d).map_err(|_| ())),
    )
}

fn parse_metric(text: &str) -> Option<Metric> {
    let lower = text.to_ascii_lowercase();
    let name: String = lower.chars().filter(|c| !c.is_whitespace()).collect();
    let stat = match name.as_str() {
        "min" => LatencyStat::Min,
        "mean" | "avg" => LatencyStat::Mean,
        "med" | "p50" | "p(50)" => LatencyStat::P50,
        "p90" | "p(90)" => LatencyStat::P90,
        "p95" | "p(95)" => LatencyStat::P95,
        "p99" | "p(99)" => LatencyStat::P99,
        "p999" | "p(99.9)" => LatencyStat::P999,
        "max" => LatencyStat::Max,
        "error_rate" => return Some(Metric::ErrorRate),
        "rps" => return Some(Metric::Rps),
        "requests" => return Some(Metric::Requests),
        "failures" => return Some(Metric::Failures),
        "checks" => return Some(Metric::Checks),
        _ => return None,
    };
    Some(Metric::Latency(stat))
}

/// A finite, non-negative number; NaN and infinities parse as f64 but mean nothing here.
fn number(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
}

/// Converts the value to the metric's natural unit, or says what was expected.
fn parse_value(metric: Metric, text: &str) -> Result<f64, &'static str> {
    match metric {
        Metric::Latency(_) => {
            let (num, scale) = if let Some(n) = text.strip_suffix("ms") {
                (n, 1.0)
            } else if let Some(n) = text.strip_suffix("us").or_else(|| text.strip_suffix("µs")) {
                (n, 0.001)
            } else if let Some(n) = text.strip_suffix('s') {
                (n, 1000.0)
            } else {
                (text, 1.0)
            };
            number(num).map(|v| v * scale).ok_or(EXPECTED_DURATION)
        }
        Metric::ErrorRate | Metric::Checks => {
            let v = match text.strip_suffix('%') {
                Some(pct) => number(pct).map(|v| v / 100.0),
                None => number(text),
            };
            v.filter(|v| *v <= 1.0).ok_or(EXPECTED_FRACTION)
        }
        Metric::Rps => number(text.strip_suffix("/s").unwrap_or(text)).ok_or(EXPECTED_RATE),
        Metric::Requests | Metric::Failures => number(text)
            .filter(|v| v.fract() == 0.0)
            .ok_or(EXPECTED_COUNT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_flag() {
        let t = Threshold::parse("p99 < 200ms, abort").expect("parses");
        assert!(t.abort);
        assert_eq!(
            (t.metric, t.op, t.value),
            (Metric::Latency(LatencyStat::P99), Op::Lt, 200.0)
        );
        assert_eq!(t.expr, "p99 < 200ms, abort");
        let t = Threshold::parse("list workflows: error_rate < 5% ,ABORT").expect("parses");
        assert!(t.abort);
        assert_eq!(t.endpoint.as_deref(), Some("list workflows"));
        assert!((t.value - 0.05).abs() < 1e-12);
        assert!(!Threshold::parse("p99 < 200ms").expect("parses").abort);
        assert_eq!(t.abort_after, Duration::ZERO);
    }

    #[test]
    fn abort_delay() {
        let t = Threshold::parse("p95 < 10ms, abort after 10s").expect("parses");
        assert!(t.abort);
        assert_eq!(t.abort_after, Duration::from_secs(10));
        assert_eq!(t.value, 10.0);
        assert_eq!(t.expr, "p95 < 10ms, abort after 10s");
        let t = Threshold::parse("rps > 5, Abort After 1m30s").expect("parses");
        assert_eq!(t.abort_after, Duration::from_secs(90));
        let t = Threshold::parse("error_rate < 1%, abort_on_fail").expect("parses");
        assert!(t.abort && t.abort_after.is_zero());
        for bad in [
            "p95 < 10ms, abort after",
            "p95 < 10ms, abort after soon",
            "p95 < 10ms, abort later",
            "p95 < 10ms, aborting",
            "p95 < 10ms, abort after10s",
        ] {
            let err = Threshold::parse(bad).expect_err(bad);
            assert!(
                matches!(err, ThresholdError::BadAbort { .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("abort after DURATION"), "{err}");
        }
    }

    #[test]
    fn warn_flag_marks_a_warning_level() {
        let t = Threshold::parse("checkout: p95 < 200ms, warn").expect("parses");
        assert!(t.warn && !t.abort);
        assert_eq!(t.endpoint.as_deref(), Some("checkout"));
        assert_eq!(t.value, 200.0);
        assert_eq!(t.expr, "checkout: p95 < 200ms, warn");
        let t = Threshold::parse("p99 < 1s, abort, WARN").expect("parses");
        assert!(t.warn && t.abort);
        assert!(!Threshold::parse("p99 < 1s").expect("parses").warn);
    }

    #[test]
    fn value_units() {
        let v = |e: &str| Threshold::parse(e).expect(e).value;
        assert_eq!(v("p99 < 250us"), 0.25);
        assert_eq!(v("p99 < 250µs"), 0.25);
        assert_eq!(v("p99 < 2s"), 2000.0);
        assert_eq!(v("p99 < 2 s"), 2000.0);
        assert_eq!(v("p99 < 7"), 7.0);
        assert_eq!(v("error_rate < 0.1%"), 0.001);
        assert_eq!(v("error_rate < 1"), 1.0);
    }

    #[test]
    fn errors_name_what_was_expected() {
        let err = |e: &str| Threshold::parse(e).expect_err(e);
        assert_eq!(err("  "), ThresholdError::Empty);
        assert!(matches!(
            err(": p95 < 1s"),
            ThresholdError::EmptyEndpoint(_)
        ));
        for e in [
            "p95 200ms",
            "p95 = 200ms",
            "p95 != 200ms",
            "< 200ms",
            "p95 => 1",
        ] {
            let msg = err(e).to_string();
            assert!(msg.contains("`<`, `<=`"), "{e}: {msg}");
        }
        for e in ["p75 < 1s", "latency < 1s", "p(97) < 1s", "bogus: x < 1"] {
            let msg = err(e).to_string();
            assert!(msg.starts_with("unknown metric"), "{e}: {msg}");
            assert!(
                msg.contains("error_rate, rps, requests or failures"),
                "{e}: {msg}"
            );
        }
        let cases = [
            ("p95 < fast", "a duration such as"),
            ("p95 < 1m", "a duration such as"),
            ("p95 < -1ms", "a duration such as"),
            ("p95 < NaN", "a duration such as"),
            ("p95 <", "a duration such as"),
            ("error_rate < 5", "a fraction from 0 to 1"),
            ("error_rate < lots%", "a fraction from 0 to 1"),
            ("rps > inf", "requests per second"),
            ("requests > 1.5", "a non-negative count"),
            ("failures == 0, later", "a non-negative count"),
        ];
        for (e, want) in cases {
            let msg = err(e).to_string();
            assert!(msg.starts_with("bad value"), "{e}: {msg}");
            assert!(msg.contains(want), "{e}: {msg}");
        }
    }
}
