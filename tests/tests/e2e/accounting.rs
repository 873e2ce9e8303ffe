//! Every request sent is counted exactly once, by endpoint and failure kind.

use std::time::Duration;

use squall_tests::{CountingTarget, ReservedPort, TestRun, wait_until};

const SCENARIO: &str = r#"
defaults: { timeout: 300ms }
scenarios:
  mixed: { users: 12, spawn_rate: 50, duration: 3s }
user_classes:
  shopper:
    wait: { constant: 20ms }
    tasks:
      - { name: ok, weight: 4, get: /ok }
      - { name: created, post: /created, json: { a: 1 }, expect: { status: 201 } }
      - { name: wrong status, post: /created, expect: { status: 200 } }
      - { name: fail, get: /fail }
      - { name: slow, get: /slow }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_count_every_request_exactly_once() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(SCENARIO);
    let mut coord = run
        .coordinator(2, &target.url(), &["--wait-timeout", "30s"])
        .await;
    let mut w1 = run.worker("w1", &["--threads", "1"]);
    let mut w2 = run.worker("w2", &["--threads", "1"]);

    let code = coord.exit_code(Duration::from_secs(60)).await;
    assert_eq!(code, 0, "{}", coord.output());
    let report = run.report();
    let totals = &report["totals"];
    let requests = totals["requests"].as_u64().expect("requests");
    assert!(
        requests > 100,
        "too little traffic to mean anything: {requests}"
    );
    // Every request the target received is in the report, and nothing else.
    assert_eq!(requests, target.total(), "{}", coord.output());

    let endpoints = report["endpoints"].as_array().expect("endpoints");
    let sum: u64 = endpoints
        .iter()
        .map(|e| e["requests"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(sum, requests);
    let by_name = |n: &str| {
        endpoints
            .iter()
            .find(|e| e["name"] == n)
            .unwrap_or_else(|| panic!("endpoint {n} missing from {endpoints:?}"))
    };
    assert_eq!(by_name("ok")["requests"].as_u64(), Some(target.path("/ok")));
    assert_eq!(
        by_name("fail")["requests"].as_u64(),
        Some(target.path("/fail"))
    );
    assert_eq!(
        by_name("slow")["requests"].as_u64(),
        Some(target.path("/slow"))
    );
    let created_total = by_name("created")["requests"].as_u64().unwrap_or(0)
        + by_name("wrong status")["requests"].as_u64().unwrap_or(0);
    assert_eq!(created_total, target.path("/created"));

    // Failures by kind: status mismatches and 5xx are `status`, the slow route times out.
    assert_eq!(by_name("ok")["failures"], 0);
    assert_eq!(by_name("created")["failures"], 0);
    let wrong = by_name("wrong status");
    assert_eq!(wrong["failures"], wrong["requests"]);
    assert_eq!(wrong["errors"]["status"], wrong["requests"]);
    let fail = by_name("fail");
    assert_eq!(fail["errors"]["status"], fail["requests"]);
    assert_eq!(fail["status"]["500"], fail["requests"]);
    let slow = by_name("slow");
    assert!(slow["requests"].as_u64().unwrap_or(0) > 0);
    assert_eq!(slow["errors"]["timeout"], slow["requests"]);
    let failures: u64 = endpoints
        .iter()
        .map(|e| e["failures"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(totals["failures"].as_u64(), Some(failures));

    // Both workers took part, and their counts add up.
    let workers = report["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 2);
    let per_worker: u64 = workers
        .iter()
        .map(|w| w["requests"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(per_worker, requests);
    assert!(
        workers
            .iter()
            .all(|w| w["requests"].as_u64().unwrap_or(0) > 0)
    );
    // The timeline accounts for the same requests.
    let timeline: u64 = report["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|p| p["requests"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(timeline, requests);
    for f in ["summary.txt", "timeline.csv", "report.html"] {
        assert!(run.out.join(f).exists(), "{f} missing");
    }

    // No load is left running, and the workers stay up for the next coordinator.
    let served = target.total();
    assert!(
        !wait_until(Duration::from_secs(2), || target.total() != served).await,
        "requests after the run ended"
    );
    assert!(
        w1.is_running() && w2.is_running(),
        "{}\n{}",
        w1.output(),
        w2.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_one_coordinator_after_another() {
    let target = CountingTarget::start().await;
    // The worker dials before any coordinator listens, so the address must be
    // known up front: a reserved port, which both coordinators bind in turn.
    let port = ReservedPort::loopback();
    let mut run = TestRun::new(
        "scenarios:\n  s: { users: 2, duration: 1s }\nuser_classes:\n  u: { wait: { constant: 50ms }, tasks: [ { get: /ok } ] }\n",
    )
    .bind(&port.addr());
    // The worker starts first: nobody answers yet, so it retries with backoff.
    let mut w = run.worker("steady", &[]);
    assert!(
        wait_until(Duration::from_secs(10), || w.stderr().contains("retrying")).await,
        "{}",
        w.output()
    );
    let mut before = 0;
    for round in 0..2 {
        run.out = run.path(&format!("out{round}"));
        let mut c = run.coordinator(1, &target.url(), &[]).await;
        assert_eq!(
            c.exit_code(Duration::from_secs(60)).await,
            0,
            "{}",
            c.output()
        );
        let report = run.report();
        let requests = report["totals"]["requests"].as_u64().unwrap_or(0);
        assert!(requests > 0);
        assert_eq!(requests, target.total() - before);
        before = target.total();
        assert_eq!(report["workers"][0]["id"], "steady");
    }
    assert!(w.is_running(), "{}", w.output());
}
