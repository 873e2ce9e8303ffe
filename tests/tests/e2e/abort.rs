//! Live abort: a threshold marked `abort` fails while the run goes on, the run stops within 2 s, exits 1, and still counts every request.

use std::time::{Duration, Instant};

use squall_tests::{CountingTarget, TestRun, has_event};

/// `/jitter` answers in 0 to 15 ms, so its p95 is about 14 ms: over 10 ms from the first second.
const SCENARIO: &str = r#"
scenarios:
  guarded:
    users: 6
    spawn_rate: 100
    duration: 60s
    thresholds: ["p95 < 10ms, abort after 2s", "error_rate < 50%"]
user_classes:
  u:
    tasks:
      - { name: jitter, get: /jitter }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breached_abort_threshold_stops_the_run_within_two_seconds() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(SCENARIO);
    let started = Instant::now();
    let mut coord = run.local(2, &target.url());
    let code = coord.exit_code(Duration::from_secs(60)).await;
    let wall = started.elapsed();
    assert_eq!(code, 1, "{}", coord.output());
    let report = run.report();

    // Judged from 2 s on; the breach is seen at the first judgement, or the
    // next if the first second's snapshots were not in yet, and stops the
    // run at once: the workers' last window ends within 2 s of the breach
    // (plus the in-flight requests, 15 ms at most).
    let aborted = &report["aborted"];
    assert_eq!(
        aborted["threshold"], "p95 < 10ms, abort after 2s",
        "{report}"
    );
    let t = aborted["t"].as_u64().expect("aborted.t");
    assert!((2..=4).contains(&t), "judged at {t}s: {aborted}");
    let actual = aborted["actual"].as_f64().expect("aborted.actual");
    assert!(actual >= 10.0, "{aborted}");
    let duration = report["duration_s"].as_f64().expect("duration_s");
    eprintln!(
        "aborted at {t}s on p95 {actual} ms; the workers' last window ended at {duration}s; {wall:?} wall clock"
    );
    assert!(
        duration <= t as f64 + 2.0,
        "the workers went on until {duration}s after a breach at {t}s\n{}",
        coord.output()
    );
    assert!(
        wall < Duration::from_secs(30),
        "took {wall:?} of a 60 s plan"
    );
    assert_eq!(report["passed"], false);
    assert!(has_event(&report, "run aborted"), "{}", report["timeline"]);
    let thresholds = report["thresholds"].as_array().expect("thresholds");
    assert_eq!(thresholds[0]["passed"], false, "{thresholds:?}");
    assert_eq!(thresholds[1]["passed"], true, "{thresholds:?}");
    assert!(
        coord
            .stderr()
            .contains("threshold `p95 < 10ms, abort after 2s` failed at"),
        "{}",
        coord.output()
    );

    // Every request the target saw is counted, stopped early or not.
    let requests = report["totals"]["requests"].as_u64().expect("requests");
    assert!(requests > 50, "too little traffic: {requests}");
    assert_eq!(requests, target.total(), "{}", coord.output());
}

/// A threshold that holds, even marked `abort`, lets the run finish: exit 0, no `aborted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_threshold_that_holds_lets_the_run_finish() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(
        r#"
scenarios:
  fine: { users: 2, spawn_rate: 100, duration: 3s, thresholds: ["p95 < 5s, abort", "jitter: error_rate < 1%, abort"] }
user_classes:
  u: { wait: { constant: 20ms }, tasks: [ { name: jitter, get: /jitter } ] }
"#,
    );
    let (_, report) = run
        .local_ok(1, &target.url(), Duration::from_secs(60))
        .await;
    assert!(report.get("aborted").is_none(), "{}", report["aborted"]);
    assert_eq!(report["passed"], true);
    assert!(report["duration_s"].as_f64().expect("duration") >= 2.9);
    assert_eq!(report["totals"]["requests"].as_u64(), Some(target.total()));
}
