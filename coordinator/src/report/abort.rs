//! Live abort: thresholds marked `abort` judged every second on the whole cluster's numbers so far, with the final verdict's own evaluation.

use std::time::Duration;

use squall_common::RunSpec;
use squall_common::report::{Aborted, Report};
use squall_common::threshold::Threshold;

use super::build::interim;
use super::verdict;
use crate::aggregator::Aggregator;

/// The first `abort` threshold that fails on the run's numbers so far, at
/// `elapsed` into the run; `None` while all hold or none is due yet.
///
/// A threshold is due once `elapsed` reaches its `abort after` delay, and is
/// judged only once what it measures has data: the totals once any request
/// was counted, an endpoint once that endpoint saw one. Early in a run an
/// endpoint may simply not have been picked yet; the final verdict, not this,
/// fails an endpoint that never saw traffic.
pub fn breach(agg: &Aggregator, spec: &RunSpec, elapsed: Duration) -> Option<Aborted> {
    let due: Vec<&Threshold> = spec
        .thresholds
        .iter()
        .filter(|t| t.abort && elapsed >= t.abort_after)
        .collect();
    if due.is_empty() || agg.totals().0 == 0 {
        return None;
    }
    let report = match interim(agg, spec) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("cannot judge abort thresholds this second: {e}");
            return None;
        }
    };
    due.into_iter()
        .filter(|t| has_data(t, &report))
        .map(|t| verdict::evaluate(t, &report))
        .find(|r| !r.passed)
        .map(|r| Aborted {
            t: elapsed.as_secs(),
            threshold: r.expr,
            actual: r.actual,
        })
}

fn has_data(t: &Threshold, report: &Report) -> bool {
    match &t.endpoint {
        None => report.totals.requests > 0,
        Some(name) => report
            .endpoints
            .iter()
            .any(|e| &e.name == name && e.requests > 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregator::one_endpoint_second;
    use squall_common::scenario::Loaded;

    fn spec(thresholds: &str) -> RunSpec {
        let text = format!(
            "host: http://127.0.0.1:1\nscenarios:\n  s: {{ users: 2, duration: 30s, thresholds: [{thresholds}] }}\nuser_classes:\n  u: {{ tasks: [ {{ name: a, get: /a }}, {{ name: b, get: /b }} ] }}\n"
        );
        Loaded::from_str("t.yaml", &text)
            .and_then(|l| l.resolve("s", &Default::default(), false))
            .expect("valid")
    }

    fn agg(spec: &RunSpec, seconds: u64, requests: u64) -> Aggregator {
        let mut agg = Aggregator::new("r", spec, &[("w1".into(), vec![2])]);
        for seq in 0..seconds {
            // Latencies 1000 + i µs: p95 of 100 requests a second is about 1.095 ms.
            agg.add(
                "w1",
                &one_endpoint_second("r", seq, 2, requests),
                Duration::from_secs(seconds),
            )
            .expect("adds");
        }
        agg
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_failing_abort_threshold_is_found_on_the_numbers_so_far() {
        let spec = spec("\"p95 < 1ms, abort\", \"p95 < 1ms\"");
        let agg = agg(&spec, 2, 100);
        let b = breach(&agg, &spec, secs(2)).expect("breached");
        assert_eq!(b.threshold, "p95 < 1ms, abort");
        assert_eq!(b.t, 2);
        assert!((b.actual - 1.095).abs() < 0.01, "{b:?}");
        // A threshold that holds, or one without `abort`, stops nothing.
        let spec = spec_holding();
        assert_eq!(breach(&agg, &spec, secs(2)), None);
    }

    fn spec_holding() -> RunSpec {
        spec("\"p95 < 2ms, abort\", \"p95 < 1ms\"")
    }

    #[test]
    fn the_delay_holds_judgement_back() {
        let spec = spec("\"requests > 1000, abort after 5s\"");
        let agg = agg(&spec, 3, 100);
        assert_eq!(breach(&agg, &spec, secs(4)), None);
        let b = breach(&agg, &spec, secs(5)).expect("due at 5 s");
        assert_eq!((b.t, b.actual), (5, 300.0));
    }

    #[test]
    fn nothing_is_judged_without_data() {
        // No request yet: even `requests > 0` waits.
        let spec = spec("\"requests > 0, abort\"");
        let empty = Aggregator::new("r", &spec, &[("w1".into(), vec![2])]);
        assert_eq!(breach(&empty, &spec, secs(3)), None);
        // Endpoint `b` has had no traffic yet (only `a` has): not judged; `a` is.
        let spec = spec_endpoints();
        let agg = agg(&spec, 2, 10);
        let b = breach(&agg, &spec, secs(2)).expect("a breached");
        assert_eq!(b.threshold, "a: requests > 100, abort");
    }

    fn spec_endpoints() -> RunSpec {
        spec("\"b: requests > 100, abort\", \"a: requests > 100, abort\"")
    }
}
