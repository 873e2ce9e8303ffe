//! Faults: workers killed or joining mid-run, the coordinator killed or frozen.

use std::time::{Duration, Instant};

use squall_tests::{CountingTarget, TestRun, has_event, sample_count, wait_until, worker_entry};

const STEADY: &str = "scenarios:\n  steady: { users: 40, spawn_rate: 200, duration: 8s }\nuser_classes:\n  u: { wait: { constant: 50ms }, tasks: [ { get: /ok } ] }\n";
const LONG: &str = "scenarios:\n  long: { users: 10, spawn_rate: 100, duration: 60s }\nuser_classes:\n  u: { wait: { constant: 20ms }, tasks: [ { get: /ok } ] }\n";

fn signal(pid: Option<u32>, sig: &str) {
    let pid = pid.expect("process is running").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill {sig} {pid} failed");
}

/// Waits until the target has served more than `n` requests.
async fn traffic(target: &CountingTarget, n: u64) {
    assert!(
        wait_until(Duration::from_secs(20), || target.total() > n).await,
        "no traffic"
    );
}

/// Users in the last full second of the timeline (the final one is the stop's remainder).
fn users_at_the_end(report: &serde_json::Value) -> &serde_json::Value {
    let timeline = report["timeline"].as_array().expect("timeline");
    &timeline[timeline.len() - 2]["users"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_users_move_to_the_survivor_and_its_requests_all_count() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(STEADY);
    let samples = run.path("survivor.samples");
    let mut c = run.coordinator(2, &target.url(), &[]).await;
    let _survivor = run.worker(
        "survivor",
        &["--samples-file", samples.to_str().expect("utf8")],
    );
    let victim = run.worker("victim", &[]);
    traffic(&target, 500).await;
    signal(victim.child.id(), "-KILL");
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );

    let report = run.report();
    assert_eq!(worker_entry(&report, "victim")["lost"], true);
    assert_eq!(worker_entry(&report, "survivor")["lost"], false);
    assert_eq!(
        worker_entry(&report, "survivor")["peak_users"],
        40,
        "the survivor took over every user"
    );
    assert!(has_event(&report, "victim lost"), "{}", report["timeline"]);
    assert_eq!(users_at_the_end(&report), 40, "{}", report["timeline"]);
    // Every request the survivor made is in the report.
    assert_eq!(
        worker_entry(&report, "survivor")["requests"].as_u64(),
        Some(sample_count(&samples))
    );
    assert!(report["totals"]["requests"].as_u64().unwrap_or(0) <= target.total());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_joining_mid_run_gets_a_share() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(STEADY);
    let mut c = run.coordinator(1, &target.url(), &[]).await;
    let _first = run.worker("first", &[]);
    traffic(&target, 300).await;
    let _late = run.worker("late", &[]);
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    let report = run.report();
    let workers = report["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 2, "{workers:?}");
    let late = worker_entry(&report, "late");
    assert!(late["requests"].as_u64().unwrap_or(0) > 0, "{late}");
    assert_eq!(late["peak_users"], 20, "half of the 40 users");
    assert!(has_event(&report, "late joined"));
    // The total stays at the plan's 40 users after the rebalance.
    assert_eq!(users_at_the_end(&report), 40);
    assert_eq!(report["totals"]["requests"].as_u64(), Some(target.total()));
}

/// After the coordinator dies or freezes, no load may run past the heartbeat timeout (5 s) + 2 s.
async fn load_stops_after_coordinator(sig: &str) {
    let target = CountingTarget::start().await;
    let run = TestRun::new(LONG);
    let c = run.coordinator(1, &target.url(), &[]).await;
    let mut w = run.worker("orphan", &[]);
    traffic(&target, 200).await;
    let hit = Instant::now();
    signal(c.child.id(), sig);
    tokio::time::sleep_until((hit + Duration::from_secs(7)).into()).await;
    let settled = target.total();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        target.total(),
        settled,
        "load still running {:?} after the coordinator was hit",
        hit.elapsed()
    );
    assert!(
        w.is_running(),
        "the worker keeps reconnecting: {}",
        w.output()
    );
    if sig == "-STOP" {
        signal(c.child.id(), "-KILL");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_coordinator_stops_all_load() {
    load_stops_after_coordinator("-KILL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_coordinator_stops_all_load_within_the_heartbeat_timeout() {
    load_stops_after_coordinator("-STOP").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_coordinator_stops_the_run_and_still_writes_a_partial_report() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(LONG);
    let mut c = run.local(2, &target.url());
    traffic(&target, 200).await;
    signal(c.child.id(), "-TERM");
    let code = c.exit_code(Duration::from_secs(20)).await;
    assert_eq!(code, 0, "{}", c.output());
    let report = run.report();
    assert_eq!(report["partial"], true);
    assert_eq!(
        report["totals"]["requests"].as_u64(),
        Some(target.total()),
        "nothing sent goes uncounted"
    );
    assert!(report["duration_s"].as_f64().unwrap_or(60.0) < 30.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_a_worker_delivers_its_data_and_hands_its_share_over_at_once() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(STEADY);
    let leaver_samples = run.path("leaver.samples");
    let mut c = run.coordinator(2, &target.url(), &[]).await;
    let _stayer = run.worker("stayer", &[]);
    let mut leaver = run.worker(
        "leaver",
        &["--samples-file", leaver_samples.to_str().expect("utf8")],
    );
    traffic(&target, 500).await;
    signal(leaver.child.id(), "-TERM");
    assert_eq!(
        leaver.exit_code(Duration::from_secs(15)).await,
        0,
        "{}",
        leaver.output()
    );
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    let report = run.report();
    assert_eq!(
        worker_entry(&report, "leaver")["requests"].as_u64(),
        Some(sample_count(&leaver_samples)),
        "the leaver's last snapshot arrived"
    );
    assert_eq!(worker_entry(&report, "stayer")["peak_users"], 40);
    // Nothing was lost at all: the target saw exactly what the report counts.
    assert_eq!(report["totals"]["requests"].as_u64(), Some(target.total()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_rebalance_a_lost_workers_share_is_not_moved() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(STEADY);
    let mut c = run.coordinator(2, &target.url(), &["--no-rebalance"]).await;
    let _stayer = run.worker("stayer", &[]);
    let victim = run.worker("victim", &[]);
    traffic(&target, 500).await;
    signal(victim.child.id(), "-KILL");
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    let report = run.report();
    assert_eq!(
        worker_entry(&report, "stayer")["peak_users"],
        20,
        "the share stayed where it was"
    );
    assert!(
        report["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .any(|p| p["event"]
                .as_str()
                .is_some_and(|e| e.contains("victim lost") && !e.contains("moved")))
    );
}
