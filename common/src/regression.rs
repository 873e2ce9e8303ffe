//! The regression rule's text form (`10%`, `p95=10%, rps=5%, error_rate=0.5%`): one grammar for `--regression` and a scenario's `regression:` key.

use crate::report::RegressionRules;

const EXPECTED: &str = "`10%` (every latency metric and rps) or a comma-separated list of \
     `METRIC=VALUE` with METRIC one of latency (p50, p95, p99 and mean), p50, p95, p99, mean, \
     rps, error_rate, floor_ms, min_requests; VALUE a percentage such as `10%` or a fraction \
     such as `0.1` (error_rate: points, `1%` = one point; floor_ms: milliseconds; \
     min_requests: a count)";

/// Why a regression rule was refused; the message says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegressionError {
    #[error("bad regression rule `{0}`: expected {EXPECTED}")]
    Bad(String),
}

impl RegressionRules {
    /// Applies `text` over the current limits (later items win), so a
    /// scenario's rule and then `--regression` can be layered on the defaults.
    pub fn apply(&mut self, text: &str) -> Result<(), RegressionError> {
        let bad = || RegressionError::Bad(text.trim().to_owned());
        if text.trim().is_empty() {
            return Err(bad());
        }
        for item in text.split(',') {
            let item = item.trim();
            let (metric, value) = match item.split_once(['=', ':']) {
                Some((m, v)) => (m.trim().to_ascii_lowercase(), v.trim()),
                None => ("all".to_owned(), item),
            };
            match metric.as_str() {
                "min_requests" => {
                    self.min_requests = value.parse().map_err(|_| bad())?;
                }
                "floor_ms" => {
                    let v = value.strip_suffix("ms").unwrap_or(value).trim();
                    self.floor_ms = non_negative(v).ok_or_else(bad)?;
                }
                _ => {
                    let v = fraction(value).ok_or_else(bad)?;
                    match metric.as_str() {
                        "all" => {
                            (self.p50, self.p95, self.p99, self.mean, self.rps) = (v, v, v, v, v);
                        }
                        "latency" => (self.p50, self.p95, self.p99, self.mean) = (v, v, v, v),
                        "p50" | "med" => self.p50 = v,
                        "p95" => self.p95 = v,
                        "p99" => self.p99 = v,
                        "mean" | "avg" => self.mean = v,
                        "rps" => self.rps = v,
                        "error_rate" => self.error_rate = v,
                        _ => return Err(bad()),
                    }
                }
            }
        }
        Ok(())
    }

    /// Parses `text` over the defaults.
    pub fn parse(text: &str) -> Result<RegressionRules, RegressionError> {
        let mut rules = RegressionRules::default();
        rules.apply(text)?;
        Ok(rules)
    }
}

/// `10%` → 0.1, `0.1` → 0.1; negative or non-finite values are refused.
fn fraction(s: &str) -> Option<f64> {
    match s.strip_suffix('%') {
        Some(p) => non_negative(p.trim()).map(|v| v / 100.0),
        None => non_negative(s),
    }
}

fn non_negative(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_percentage_sets_latency_and_throughput() {
        let r = RegressionRules::parse("10%").expect("parses");
        assert_eq!(
            (r.p50, r.p95, r.p99, r.mean, r.rps),
            (0.1, 0.1, 0.1, 0.1, 0.1)
        );
        assert_eq!(r.error_rate, 0.01, "error rate keeps its default");
    }

    #[test]
    fn per_metric_items_layer_over_the_defaults() {
        let mut r = RegressionRules::default();
        r.apply("p95=10%, rps: 0.05, error_rate=0.5%")
            .expect("parses");
        assert_eq!(r.p95, 0.1);
        assert_eq!(r.p99, 0.2);
        assert_eq!(r.rps, 0.05);
        assert_eq!(r.error_rate, 0.005);
        r.apply("latency=30%, floor_ms=2ms, min_requests=10")
            .expect("parses");
        assert_eq!((r.p50, r.mean, r.rps), (0.3, 0.3, 0.05));
        assert_eq!((r.floor_ms, r.min_requests), (2.0, 10));
    }

    #[test]
    fn a_scenario_carries_its_rule_and_a_bad_one_is_refused_with_its_key() {
        let file = |rule: &str| {
            format!(
                "host: http://127.0.0.1:1\nscenarios:\n  s: {{ users: 1, duration: 1s, regression: \"{rule}\" }}\nuser_classes:\n  u: {{ tasks: [ {{ get: /a }} ] }}\n"
            )
        };
        let spec = crate::scenario::Loaded::from_str("t.yaml", &file("p95=10%, rps=5%"))
            .and_then(|l| l.resolve("s", &Default::default(), false))
            .expect("valid");
        assert_eq!((spec.regression.p95, spec.regression.rps), (0.1, 0.05));
        assert_eq!(spec.regression.p99, 0.2);
        let err = crate::scenario::Loaded::from_str("t.yaml", &file("p95=lots"))
            .and_then(|l| l.resolve("s", &Default::default(), false))
            .expect_err("bad rule")
            .to_string();
        assert!(
            err.contains("scenarios.s.regression") && err.contains("p95=lots"),
            "{err}"
        );
    }

    #[test]
    fn bad_rules_say_what_is_expected() {
        for bad in [
            "",
            "ten",
            "-5%",
            "p75=10%",
            "p95=",
            "min_requests=1.5",
            "10%,",
        ] {
            let msg = RegressionRules::parse(bad).expect_err(bad).to_string();
            assert!(msg.contains("expected `10%`"), "{bad}: {msg}");
        }
    }
}
