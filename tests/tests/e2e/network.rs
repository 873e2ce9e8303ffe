//! Workers on another host (a network namespace) whose link is cut for less, and for more, than the heartbeat timeout.

use std::time::Duration;

use squall_tests::{
    CountingTarget, NetHost, bin, coordinator, free_port, read_report, wait_until, worker,
    write_file,
};

const LONG: &str = "scenarios:\n  net: { users: 10, spawn_rate: 100, duration: 16s }\nuser_classes:\n  u: { wait: { constant: 50ms }, tasks: [ { get: /ok } ] }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_shorter_than_the_timeout_loses_nothing_and_counts_nothing_twice() {
    let host = NetHost::create(1);
    let target = CountingTarget::start_on(&format!("{}:0", host.host_ip)).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = write_file(tmp.path(), "net.yaml", LONG);
    let bind = format!("{}:{}", host.host_ip, free_port());
    let out = tmp.path().join("out");
    let mut c = coordinator(
        &[
            "-f",
            file.to_str().expect("utf8"),
            "--workers",
            "1",
            "--bind",
            &bind,
            "--token",
            "t0k3n",
            "--host",
            &target.url(),
            "--out",
            out.to_str().expect("utf8"),
            "--headless",
        ],
        tmp.path(),
    );
    let remote = host.spawn(
        "remote-worker",
        &bin("worker"),
        &["--master", &bind, "--token", "t0k3n", "--id", "remote"],
        tmp.path(),
    );
    assert!(
        wait_until(Duration::from_secs(20), || target.total() > 200).await,
        "no traffic: {}",
        remote.output()
    );
    host.cut();
    let during = target.total();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(target.total() <= during + 10, "traffic crossed a cut link");
    host.restore();
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}\n{}",
        c.output(),
        remote.output()
    );
    let report = read_report(&out);
    assert_eq!(report["workers"][0]["lost"], false, "{}", c.output());
    assert_eq!(
        report["totals"]["requests"].as_u64(),
        Some(target.total()),
        "every request once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_longer_than_the_timeout_stops_the_remote_load_moves_it_and_loses_no_data() {
    let host = NetHost::create(2);
    let target = CountingTarget::start_on(&format!("{}:0", host.host_ip)).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    // Long enough for the remote worker to reconnect after the cut and resend.
    let file = write_file(tmp.path(), "net.yaml", &LONG.replace("16s", "26s"));
    let samples = tmp.path().join("remote.samples");
    let port = free_port();
    let bind = format!("{}:{port}", host.host_ip);
    let out = tmp.path().join("out");
    let mut c = coordinator(
        &[
            "-f",
            file.to_str().expect("utf8"),
            "--workers",
            "2",
            "--bind",
            &bind,
            "--token",
            "t0k3n",
            "--host",
            &target.url(),
            "--out",
            out.to_str().expect("utf8"),
            "--headless",
        ],
        tmp.path(),
    );
    let remote = host.spawn(
        "remote-worker",
        &bin("worker"),
        &[
            "--master",
            &bind,
            "--token",
            "t0k3n",
            "--id",
            "remote",
            "--samples-file",
            samples.to_str().expect("utf8"),
        ],
        tmp.path(),
    );
    let _local = worker(
        &["--master", &bind, "--token", "t0k3n", "--id", "local"],
        tmp.path(),
    );
    assert!(
        wait_until(Duration::from_secs(20), || target.total() > 200).await,
        "no traffic: {}",
        remote.output()
    );
    host.cut();
    // The remote worker hears nothing for the 5 s timeout and stops its load.
    assert!(
        wait_until(Duration::from_secs(9), || remote
            .stderr()
            .contains("load stopped"))
        .await,
        "{}",
        remote.output()
    );
    host.restore();
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}\n{}",
        c.output(),
        remote.output()
    );
    let report = read_report(&out);
    let workers = report["workers"].as_array().expect("workers");
    let get = |id: &str| {
        workers
            .iter()
            .find(|w| w["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing"))
    };
    assert_eq!(get("remote")["lost"], true);
    assert!(get("remote")["requests"].as_u64().unwrap_or(0) > 0);
    assert_eq!(
        get("local")["peak_users"],
        10,
        "the local worker took over the remote share"
    );
    // The remote worker's snapshots from before and during the cut were resent
    // after it reconnected: every request it made is in the report.
    let made = std::fs::read_to_string(&samples)
        .expect("samples")
        .lines()
        .count() as u64;
    assert_eq!(
        get("remote")["requests"].as_u64(),
        Some(made),
        "{}",
        remote.output()
    );
    assert!(remote.stderr().contains("resending"), "{}", remote.output());
    // After the link comes back the remote worker attaches again.
    assert!(
        wait_until(Duration::from_secs(15), || remote
            .stderr()
            .matches("attached to coordinator")
            .count()
            >= 2)
        .await
            || c.stderr().contains("remote attached mid-run"),
        "{}",
        remote.output()
    );
}
