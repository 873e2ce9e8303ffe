//! Faults: workers killed or joining mid-run, the coordinator killed or frozen.

use std::time::{Duration, Instant};

use squall_tests::{
    CountingTarget, coordinator, free_port, read_report, wait_until, worker, write_file,
};

const STEADY: &str = "scenarios:\n  steady: { users: 40, spawn_rate: 200, duration: 8s }\nuser_classes:\n  u: { wait: { constant: 50ms }, tasks: [ { get: /ok } ] }\n";

fn signal(pid: Option<u32>, sig: &str) {
    let pid = pid.expect("process is running").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill {sig} {pid} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_users_move_to_the_survivor_and_its_requests_all_count() {
    let target = CountingTarget::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = write_file(tmp.path(), "steady.yaml", STEADY);
    let bind = format!("127.0.0.1:{}", free_port());
    let out = tmp.path().join("out");
    let samples = tmp.path().join("survivor.samples");
    let mut c = coordinator(
        &[
            "-f",
            file.to_str().expect("utf8"),
            "--workers",
            "2",
            "--bind",
            &bind,
            "--host",
            &target.url(),
            "--out",
            out.to_str().expect("utf8"),
            "--headless",
        ],
        tmp.path(),
    );
    let _survivor = worker(
        &[
            "--master",
            &bind,
            "--id",
            "survivor",
            "--samples-file",
            samples.to_str().expect("utf8"),
        ],
        tmp.path(),
    );
    let victim = worker(&["--master", &bind, "--id", "victim"], tmp.path());
    assert!(
        wait_until(Duration::from_secs(20), || target.total() > 500).await,
        "no traffic"
    );
    signal(victim.child.id(), "-KILL");
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );

    let report = read_report(&out);
    let workers = report["workers"].as_array().expect("workers");
    let get = |id: &str| {
        workers
            .iter()
            .find(|w| w["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing"))
    };
    assert_eq!(get("victim")["lost"], true);
    assert_eq!(get("survivor")["lost"], false);
    assert_eq!(
        get("survivor")["peak_users"],
        40,
        "the survivor took over every user"
    );
    let timeline = report["timeline"].as_array().expect("timeline");
    assert!(
        timeline.iter().any(|p| p["event"]
            .as_str()
            .is_some_and(|e| e.contains("victim lost"))),
        "{timeline:?}"
    );
    let last_full = &timeline[timeline.len() - 2];
    assert_eq!(last_full["users"], 40, "{last_full}");
    // Every request the survivor made is in the report.
    let made = std::fs::read_to_string(&samples)
        .expect("samples")
        .lines()
        .count() as u64;
    assert_eq!(get("survivor")["requests"].as_u64(), Some(made));
    assert!(report["totals"]["requests"].as_u64().unwrap_or(0) <= target.total());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_joining_mid_run_gets_a_share() {
    let target = CountingTarget::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = write_file(tmp.path(), "steady.yaml", STEADY);
    let bind = format!("127.0.0.1:{}", free_port());
    let out = tmp.path().join("out");
    let mut c = coordinator(
        &[
            "-f",
            file.to_str().expect("utf8"),
            "--workers",
            "1",
            "--bind",
            &bind,
            "--host",
            &target.url(),
            "--out",
            out.to_str().expect("utf8"),
            "--headless",
        ],
        tmp.path(),
    );
    let _first = worker(&["--master", &bind, "--id", "first"], tmp.path());
    assert!(
        wait_until(Duration::from_secs(20), || target.total() > 300).await,
        "no traffic"
    );
    let _late = worker(&["--master", &bind, "--id", "late"], tmp.path());
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    let report = read_report(&out);
    let workers = report["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 2, "{workers:?}");
    let late = workers
        .iter()
        .find(|w| w["id"] == "late")
        .expect("late worker in the report");
    assert!(late["requests"].as_u64().unwrap_or(0) > 0, "{late}");
    assert_eq!(late["peak_users"], 20, "half of the 40 users");
    let timeline = report["timeline"].as_array().expect("timeline");
    assert!(timeline.iter().any(|p| {
        p["event"]
            .as_str()
            .is_some_and(|e| e.contains("late joined"))
    }));
    // The total stays at the plan's 40 users after the rebalance.
    assert_eq!(timeline[timeline.len() - 2]["users"], 40);
    assert_eq!(report["totals"]["requests"].as_u64(), Some(target.total()));
}

/// After the coordinator dies or freezes, no load may run past the heartbeat timeout (5 s) + 2 s.
async fn load_stops_after_coordinator(sig: &str) {
    let target = CountingTarget::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = write_file(
        tmp.path(),
        "long.yaml",
        "scenarios:\n  long: { users: 10, spawn_rate: 100, duration: 60s }\nuser_classes:\n  u: { wait: { constant: 20ms }, tasks: [ { get: /ok } ] }\n",
    );
    let bind = format!("127.0.0.1:{}", free_port());
    let c = coordinator(
        &[
            "-f",
            file.to_str().expect("utf8"),
            "--workers",
            "1",
            "--bind",
            &bind,
            "--host",
            &target.url(),
            "--headless",
        ],
        tmp.path(),
    );
    let mut w = worker(&["--master", &bind, "--id", "orphan"], tmp.path());
    assert!(
        wait_until(Duration::from_secs(20), || target.total() > 200).await,
        "no traffic"
    );
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
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = write_file(
        tmp.path(),
        "long.yaml",
        "scenarios:\n  long: { users: 10, spawn_rate: 100, duration: 60s }\nuser_classes:\n  u: { wait: { constant: 20ms }, tasks: [ { get: /ok } ] }\n",
    );
    let out = tmp.path().join("out");
    let mut c = coordinator(
        &[
            "-f",
            file.to_str().expect("utf8"),
            "--local-workers",
            "2",
            "--host",
            &target.url(),
            "--out",
            out.to_str().expect("utf8"),
            "--headless",
        ],
        tmp.path(),
    );
    assert!(
        wait_until(Duration::from_secs(20), || target.total() > 200).await,
        "no traffic"
    );
    signal(c.child.id(), "-TERM");
    let code = c.exit_code(Duration::from_secs(20)).await;
    assert_eq!(code, 0, "{}", c.output());
    let report = read_report(&out);
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
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = write_file(tmp.path(), "steady.yaml", STEADY);
    let bind = format!("127.0.0.1:{}", free_port());
    let out = tmp.path().join("out");
    let leaver_samples = tmp.path().join("leaver.samples");
    let mut c = coordinator(
        &[
            "-f",
            file.to_str().expect("utf8"),
            "--workers",
            "2",
            "--bind",
            &bind,
            "--host",
            &target.url(),
            "--out",
            out.to_str().expect("utf8"),
            "--headless",
        ],
        tmp.path(),
    );
    let _stayer = worker(&["--master", &bind, "--id", "stayer"], tmp.path());
    let mut leaver = worker(
        &[
            "--master",
            &bind,
            "--id",
            "leaver",
            "--samples-file",
            leaver_samples.to_str().expect("utf8"),
        ],
        tmp.path(),
    );
    assert!(
        wait_until(Duration::from_secs(20), || target.total() > 500).await,
        "no traffic"
    );
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
    let report = read_report(&out);
    let workers = report["workers"].as_array().expect("workers");
    let get = |id: &str| {
        workers
            .iter()
            .find(|w| w["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing"))
    };
    let made = std::fs::read_to_string(&leaver_samples)
        .expect("samples")
        .lines()
        .count() as u64;
    assert_eq!(
        get("leaver")["requests"].as_u64(),
        Some(made),
        "the leaver's last snapshot arrived"
    );
    assert_eq!(get("stayer")["peak_users"], 40);
    // Nothing was lost at all: the target saw exactly what the report counts.
    assert_eq!(report["totals"]["requests"].as_u64(), Some(target.total()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_rebalance_a_lost_workers_share_is_not_moved() {
    let target = CountingTarget::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = write_file(tmp.path(), "steady.yaml", STEADY);
    let bind = format!("127.0.0.1:{}", free_port());
    let out = tmp.path().join("out");
    let mut c = coordinator(
        &[
            "-f",
            file.to_str().expect("utf8"),
            "--workers",
            "2",
            "--bind",
            &bind,
            "--host",
            &target.url(),
            "--out",
            out.to_str().expect("utf8"),
            "--headless",
            "--no-rebalance",
        ],
        tmp.path(),
    );
    let _stayer = worker(&["--master", &bind, "--id", "stayer"], tmp.path());
    let victim = worker(&["--master", &bind, "--id", "victim"], tmp.path());
    assert!(
        wait_until(Duration::from_secs(20), || target.total() > 500).await,
        "no traffic"
    );
    signal(victim.child.id(), "-KILL");
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    let report = read_report(&out);
    let workers = report["workers"].as_array().expect("workers");
    let stayer = workers
        .iter()
        .find(|w| w["id"] == "stayer")
        .expect("stayer");
    assert_eq!(stayer["peak_users"], 20, "the share stayed where it was");
    let timeline = report["timeline"].as_array().expect("timeline");
    assert!(timeline.iter().any(|p| {
        p["event"]
            .as_str()
            .is_some_and(|e| e.contains("victim lost") && !e.contains("moved"))
    }));
}
