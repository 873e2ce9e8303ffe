//! A worker lost mid-run (frozen past the heartbeat timeout) that comes back
//! after the other workers are done: the run waits for it, and every request
//! it made is in the report exactly once.

use std::time::Duration;

use squall_tests::{CountingTarget, TestRun, has_event, sample_count, wait_until, worker_entry};

const RUN: &str = "scenarios:\n  run: { users: 10, spawn_rate: 100, duration: 8s }\nuser_classes:\n  u: { wait: { constant: 20ms }, tasks: [ { get: /ok } ] }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_lost_past_the_end_comes_back_and_every_request_counts_once() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(RUN);
    let samples = run.path("frozen.samples");
    let mut c = run.coordinator(2, &target.url(), &[]).await;
    let steady = run.worker("steady", &[]);
    let frozen = run.worker(
        "frozen",
        &["--samples-file", samples.to_str().expect("utf8")],
    );
    assert!(
        wait_until(Duration::from_secs(20), || target.total() > 300).await,
        "no traffic: {}",
        c.output()
    );
    // Frozen mid-second: what it made since its last snapshot is only in its
    // process until it comes back.
    frozen.signal("STOP");
    // The coordinator declares it lost after 5 s of silence; the steady
    // worker finishes the plan while the other is still frozen.
    assert!(
        wait_until(Duration::from_secs(20), || c
            .stderr()
            .contains("worker frozen lost"))
        .await,
        "{}",
        c.output()
    );
    let waiting = wait_until(Duration::from_secs(20), || {
        c.stderr().contains("waiting up to") || !c.is_running()
    })
    .await;
    frozen.signal("CONT");
    assert!(waiting, "{}", c.output());
    assert_eq!(
        c.exit_code(Duration::from_secs(40)).await,
        0,
        "{}\n{}\n{}",
        c.output(),
        frozen.output(),
        steady.output()
    );
    let report = run.report();
    // Every request the target served is in the report, once.
    assert_eq!(
        report["totals"]["requests"].as_u64(),
        Some(target.total()),
        "{}\n{}",
        c.output(),
        frozen.output()
    );
    assert_eq!(
        worker_entry(&report, "frozen")["requests"].as_u64(),
        Some(sample_count(&samples)),
        "{}",
        frozen.output()
    );
    assert_eq!(worker_entry(&report, "frozen")["lost"], true);
    assert!(
        has_event(&report, "frozen is back"),
        "{}",
        report["timeline"]
    );
    assert!(
        has_event(&report, "frozen came back and delivered all its snapshots"),
        "{}",
        report["timeline"]
    );
    assert_eq!(report["partial"], false, "nothing is missing");
}
