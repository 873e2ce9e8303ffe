//! A target that misbehaves cannot exhaust the worker: bodies kept for `capture:` stop at their limit, discarded bodies cost no memory, and userinfo never reaches the wire.

use std::time::Duration;

use squall_tests::{CountingTarget, TestRun};

/// 1 GiB: far more than a worker could keep for every user.
const GIB: u64 = 1 << 30;

/// The most a worker process may have resident at once in this test.
const PEAK_RSS_LIMIT: u64 = 300 << 20;

/// The test's `max_capture_body`. Kept bodies are bounded by users times
/// this limit (20 × 8 MiB here); with the default 16 MiB, 20 users filling
/// their buffers in step could legitimately keep 320 MiB, measured at about
/// 250 MiB, too close to the limit above for a test on a busy machine.
const CAPTURE_LIMIT: u64 = 8 << 20;

/// The peak resident set (VmHWM) of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    squall_tests::peak_rss_bytes(pid)
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status (has the worker exited?)"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_bodies_neither_fill_the_workers_memory_nor_go_uncounted() {
    let target = CountingTarget::start().await;
    // 22 users split 10:1: 20 capture from a 1 GiB body, 2 read one whole
    // and keep nothing. The capturers wait a little between requests so
    // the test moves less data, not less memory: all 20 still fill their
    // buffers at the same time.
    let yaml = format!(
        r#"
defaults: {{ timeout: 60s, max_capture_body: {CAPTURE_LIMIT} }}
scenarios:
  hostile: {{ users: 22, spawn_rate: 100, duration: 3s, graceful_stop: 60s }}
user_classes:
  capturer:
    weight: 10
    wait: {{ constant: 200ms }}
    tasks:
      - {{ name: capture, get: /huge/{GIB}, capture: {{ token: "$.token" }} }}
  reader:
    weight: 1
    tasks:
      - {{ name: discard, get: /huge/{GIB} }}
"#
    );
    let run = TestRun::new(&yaml);
    let mut coord = run
        .coordinator(1, &target.url(), &["--wait-timeout", "30s"])
        .await;
    let w = run.worker("w1", &["--threads", "2"]);
    let pid = w.child.id().expect("worker pid");

    let code = coord.exit_code(Duration::from_secs(120)).await;
    // The worker stays attached-or-reconnecting after the run: read its
    // peak while it is still there.
    let peak = peak_rss(pid);
    assert_eq!(code, 0, "{}\n{}", coord.output(), w.output());
    eprintln!("worker peak RSS: {} MiB", peak >> 20);
    assert!(
        peak < PEAK_RSS_LIMIT,
        "worker peak RSS {} MiB, limit {} MiB",
        peak >> 20,
        PEAK_RSS_LIMIT >> 20
    );

    let report = run.report();
    let endpoints = report["endpoints"].as_array().expect("endpoints");
    let by_name = |n: &str| {
        endpoints
            .iter()
            .find(|e| e["name"] == n)
            .unwrap_or_else(|| panic!("endpoint {n} missing from {endpoints:?}"))
    };
    let capture = by_name("capture");
    let requests = capture["requests"].as_u64().unwrap_or(0);
    assert!(
        requests >= 20,
        "every capturer sent at least once: {capture}"
    );
    assert_eq!(capture["failures"].as_u64(), Some(requests), "{capture}");
    assert_eq!(
        capture["errors"],
        serde_json::json!({ "body_too_large": requests }),
        "{capture}"
    );
    // Each capture stopped reading at its limit: far less than 1 GiB each.
    let kept = capture["bytes_received"].as_u64().unwrap_or(u64::MAX);
    assert!(kept <= requests * CAPTURE_LIMIT, "{capture}");

    // Bodies nobody keeps are read to the end, however large.
    let discard = by_name("discard");
    let read = discard["requests"].as_u64().unwrap_or(0);
    assert!(read >= 2, "{discard}");
    assert_eq!(discard["failures"].as_u64(), Some(0), "{discard}");
    assert_eq!(discard["bytes_received"].as_u64(), Some(read * GIB));
    assert_eq!(target.path(&format!("/huge/{GIB}")), requests + read);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_userinfo_is_refused_before_any_traffic() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(
        "scenarios:\n  s: { users: 1, duration: 1s }\nuser_classes:\n  u: { tasks: [ { get: /ok } ] }\n",
    );
    let host = target.url().replace("http://", "http://user:secret@");
    let mut c = run.local(1, &host);
    let code = c.exit_code(Duration::from_secs(30)).await;
    assert_eq!(code, 2, "{}", c.output());
    assert!(
        c.stderr()
            .contains("must not carry a user name or password"),
        "{}",
        c.output()
    );
    assert_eq!(target.total(), 0);
}
