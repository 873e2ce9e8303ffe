//! The one-command demo and threshold verdicts.

use std::time::Duration;

use squall_tests::{
    CountingTarget, SealedHost, TestRun, bin, coordinator, read_report, write_file,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_end_to_end_and_counts_what_the_target_served() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("report");
    let mut c = coordinator(
        &[
            "demo",
            "--duration",
            "4s",
            "--users",
            "30",
            "--spawn-rate",
            "30",
            "--out",
            out.to_str().expect("utf8"),
        ],
        tmp.path(),
    );
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    let report = read_report(&out);
    assert_eq!(report["schema"], "squall.report/v1");
    assert_eq!(report["scenario"], "demo");
    assert_eq!(report["passed"], true);
    let requests = report["totals"]["requests"].as_u64().expect("requests");
    assert!(requests > 30, "{requests}");
    assert_eq!(report["totals"]["failures"], 0, "{}", c.output());
    let served = format!("demo target served {requests} requests");
    assert!(
        c.stderr().contains(&served),
        "expected `{served}` in {}",
        c.output()
    );
    let names: Vec<&str> = report["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(
        names.contains(&"login") && names.contains(&"chat"),
        "{names:?}"
    );
    let login = report["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == "login"))
        .expect("login");
    assert_eq!(login["requests"], 30, "one login per user");
    assert_eq!(report["workers"].as_array().map(Vec::len), Some(2));
    // Contract fields.
    for k in [
        "run_id",
        "target",
        "started_at",
        "duration_s",
        "timeline",
        "thresholds",
    ] {
        assert!(!report[k].is_null(), "{k} missing");
    }
    for k in ["min", "mean", "p50", "p90", "p95", "p99", "p999", "max"] {
        assert!(
            report["totals"]["latency_ms"][k].is_number(),
            "latency_ms.{k}"
        );
    }
    // Live progress lines were shown.
    assert!(
        c.stderr().contains("rps") && c.stderr().contains("p99"),
        "{}",
        c.output()
    );
    let summary = std::fs::read_to_string(out.join("summary.txt")).expect("summary.txt");
    assert!(
        summary.contains("list workflows") && summary.contains("TOTAL"),
        "{summary}"
    );
    assert!(c.stdout().contains("TOTAL"), "summary printed at the end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_threshold_exits_1_with_the_report_written() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(
        "scenarios:\n  t: { users: 2, duration: 1s, thresholds: [\"error_rate < 1%\"] }\nuser_classes:\n  u: { wait: { constant: 10ms }, tasks: [ { get: /ok } ] }\n",
    );
    let mut c = run.headless(&target.url(), &["--threshold", "p99 < 1us"]);
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        1,
        "{}",
        c.output()
    );
    let report = run.report();
    assert_eq!(report["passed"], false);
    let t = report["thresholds"].as_array().expect("thresholds");
    assert_eq!(t.len(), 2);
    assert_eq!(t[0]["passed"], true);
    assert_eq!(t[1]["expr"], "p99 < 1us");
    assert_eq!(t[1]["passed"], false);
    assert!(t[1]["actual"].as_f64().unwrap_or(0.0) > 0.001);
}

/// The README's distributed quick start, as typed: demo target, coordinator
/// waiting for 2 workers on the default port, 2 worker processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_distributed_quick_start_works_as_typed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // The default port is fixed: a namespace of its own keeps any other run on
    // this machine (another copy of this test included) from meeting it.
    let host = SealedHost::create(1);
    let coordinator =
        |label: &str, args: &[&str]| host.spawn(label, &bin("coordinator"), args, tmp.path());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let smoke = root.join("examples/smoke.yaml");
    let mut target = coordinator("target", &["target", "--bind", "127.0.0.1:0"]);
    let target_url = target
        .announced("demo target listening on", Duration::from_secs(30))
        .await;
    let out = tmp.path().join("report");
    let mut c = coordinator(
        "coordinator",
        &[
            "-f",
            smoke.to_str().expect("utf8"),
            "--workers",
            "2",
            "--host",
            &target_url,
            "--out",
            out.to_str().expect("utf8"),
            "--duration",
            "3s",
        ],
    );
    let worker = |label: &str| {
        host.spawn(
            label,
            &bin("worker"),
            &["--master", "127.0.0.1:5557"],
            tmp.path(),
        )
    };
    let _w1 = worker("w1");
    let _w2 = worker("w2");
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    let report = read_report(&out);
    assert_eq!(report["workers"].as_array().map(Vec::len), Some(2));
    assert_eq!(report["totals"]["failures"], 0, "{}", c.output());
    assert!(report["totals"]["requests"].as_u64().unwrap_or(0) > 10);
    assert!(c.stderr().contains("127.0.0.1:5557"), "{}", c.output());
}

/// Flags from a config file, below the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_come_from_a_config_file_below_the_command_line() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(
        "scenarios:\n  s: { users: 1, duration: 30s }\nuser_classes:\n  u: { wait: { constant: 50ms }, tasks: [ { get: /ok } ] }\n",
    );
    let config = write_file(
        run.dir(),
        "squall.toml",
        &format!(
            "file = \"{}\"\nhost = \"{}\"\nusers = 9\nduration = \"2s\"\nheadless = true\nout = \"{}\"\nthreshold = [\"requests > 1\"]\n",
            run.file.display(),
            target.url(),
            run.out.display()
        ),
    );
    let mut c = coordinator(
        &["--config", config.to_str().expect("utf8"), "--users", "4"],
        run.dir(),
    );
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    let report = run.report();
    assert_eq!(
        report["workers"][0]["peak_users"], 4,
        "the command line wins"
    );
    assert!(
        report["duration_s"].as_f64().unwrap_or(30.0) < 5.0,
        "duration from the file"
    );
    assert_eq!(report["thresholds"][0]["expr"], "requests > 1");
    assert!(
        !c.stderr().contains("rps "),
        "headless from the file: {}",
        c.output()
    );
}
