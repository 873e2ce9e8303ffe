//! Merged percentiles equal those computed from every raw sample, within HDR precision.

use std::time::Duration;

use squall_tests::{CountingTarget, TestRun};

/// Nearest-rank percentile, the definition HDR histograms use.
fn exact(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_percentiles_match_raw_samples() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(
        "scenarios:\n  j: { users: 16, spawn_rate: 100, duration: 3s }\nuser_classes:\n  u: { tasks: [ { get: /jitter } ] }\n",
    );
    let s1 = run.path("w1.samples");
    let s2 = run.path("w2.samples");
    let mut c = run.coordinator(2, &target.url(), &[]).await;
    let _w1 = run.worker("w1", &["--samples-file", s1.to_str().expect("utf8")]);
    let _w2 = run.worker("w2", &["--samples-file", s2.to_str().expect("utf8")]);
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    let report = run.report();

    let mut samples: Vec<u64> = Vec::new();
    for f in [&s1, &s2] {
        let text = std::fs::read_to_string(f).expect("samples file");
        for line in text.lines() {
            let us = line
                .split('\t')
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("bad sample line {line:?}"));
            samples.push(us.max(1));
        }
    }
    samples.sort_unstable();
    let requests = report["totals"]["requests"].as_u64().expect("requests");
    assert_eq!(
        samples.len() as u64,
        requests,
        "one sample per counted request"
    );
    assert!(requests > 500, "too few samples: {requests}");

    let lat = &report["totals"]["latency_ms"];
    for (field, q) in [
        ("p50", 0.5),
        ("p90", 0.9),
        ("p95", 0.95),
        ("p99", 0.99),
        ("p999", 0.999),
    ] {
        let want_us = exact(&samples, q) as f64;
        let got_us = lat[field].as_f64().expect("percentile") * 1000.0;
        // HDR with 3 significant digits reports the top of the sample's bucket:
        // never below the exact value, and at most 0.1% above it.
        assert!(
            got_us + 0.5 >= want_us && got_us <= want_us * 1.001 + 1.0,
            "{field}: merged {got_us}µs vs exact {want_us}µs"
        );
    }
    let max_us = *samples.last().expect("samples") as f64;
    let got_max = lat["max"].as_f64().expect("max") * 1000.0;
    assert!(
        got_max + 0.5 >= max_us && got_max <= max_us * 1.001 + 1.0,
        "max {got_max} vs {max_us}"
    );
    let min_us = samples[0] as f64;
    let got_min = lat["min"].as_f64().expect("min") * 1000.0;
    assert!(
        got_min <= min_us + 0.5 && got_min >= min_us * 0.999 - 1.0,
        "min {got_min} vs {min_us}"
    );
}
