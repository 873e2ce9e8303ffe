//! Workers on another host (a network namespace) whose link is cut for less, and for more, than the heartbeat timeout.

use std::time::Duration;

use squall_tests::{CountingTarget, NetHost, TestRun, sample_count, wait_until, worker_entry};

const LONG: &str = "scenarios:\n  net: { users: 10, spawn_rate: 100, duration: 16s }\nuser_classes:\n  u: { wait: { constant: 50ms }, tasks: [ { get: /ok } ] }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_shorter_than_the_timeout_loses_nothing_and_counts_nothing_twice() {
    let host = NetHost::create(1);
    let target = CountingTarget::start_in(&host.hub, &format!("{}:0", host.host_ip)).await;
    // The coordinator runs on the hub and listens on its side of the veth
    // pair, where the remote host can reach it: a fixed address, on any port.
    let run = TestRun::new(LONG)
        .bind(&format!("{}:0", host.host_ip))
        .token("t0k3n")
        .in_namespace(&host.hub);
    let mut c = run.coordinator(1, &target.url(), &[]).await;
    let remote = run.worker_on(&host, "remote", &[]);
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
    let report = run.report();
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
    let target = CountingTarget::start_in(&host.hub, &format!("{}:0", host.host_ip)).await;
    // Long enough for the remote worker to reconnect after the cut and resend.
    let run = TestRun::new(&LONG.replace("16s", "26s"))
        .bind(&format!("{}:0", host.host_ip))
        .token("t0k3n")
        .in_namespace(&host.hub);
    let samples = run.path("remote.samples");
    let mut c = run.coordinator(2, &target.url(), &[]).await;
    let remote = run.worker_on(
        &host,
        "remote",
        &["--samples-file", samples.to_str().expect("utf8")],
    );
    let _local = run.worker("local", &[]);
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
    let report = run.report();
    let get = |id: &str| worker_entry(&report, id);
    assert_eq!(get("remote")["lost"], true);
    assert!(get("remote")["requests"].as_u64().unwrap_or(0) > 0);
    assert_eq!(
        get("local")["peak_users"],
        10,
        "the local worker took over the remote share"
    );
    // The remote worker's snapshots from before and during the cut were resent
    // after it reconnected: every request it made is in the report.
    let made = sample_count(&samples);
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
