//! Reports are never lost, and the run's own edges: an unusable `--out`, a full disk, scenarios that fail or are interrupted under `--all`, strangers at a local run's port.

use std::path::Path;
use std::time::Duration;

use squall_tests::{CountingTarget, TestRun, read_report, wait_until, worker, write_file};

const SHORT: &str = "scenarios:\n  s: { users: 2, spawn_rate: 10, duration: 1s }\nuser_classes:\n  u: { wait: { constant: 20ms }, tasks: [ { get: /ok } ] }\n";
const REPORT_FILES: [&str; 4] = ["report.json", "summary.txt", "timeline.csv", "report.html"];

/// Waits until the target has served more than `n` requests.
async fn traffic(target: &CountingTarget, n: u64) {
    assert!(
        wait_until(Duration::from_secs(30), || target.total() > n).await,
        "no traffic"
    );
}

fn index(out: &Path) -> serde_json::Value {
    let path = out.join("index.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("index.json is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_under_a_file_is_refused_before_any_traffic() {
    let target = CountingTarget::start().await;
    let mut run = TestRun::new(SHORT);
    let file = write_file(run.dir(), "plain-file", "not a directory");
    run.out = file.join("report");
    let mut c = run.local(1, &target.url());
    let code = c.exit_code(Duration::from_secs(30)).await;
    assert_eq!(code, 2, "{}", c.output());
    let err = c.stderr();
    assert!(err.contains(&run.out.display().to_string()), "{err}");
    assert!(err.contains("--out"), "{err}");
    assert_eq!(target.total(), 0, "the target saw traffic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_keeps_the_summary_and_leaves_an_older_report_whole() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(SHORT);
    std::fs::create_dir_all(&run.out).expect("out");
    for name in REPORT_FILES {
        write_file(&run.out, name, "older run");
    }
    // 1 KiB: every report file but the smallest exceeds it, and so does the
    // fallback's copy, so the report cannot be written anywhere.
    let mut c = run.local_with_file_size_limit(1, &target.url(), 1);
    let code = c.exit_code(Duration::from_secs(60)).await;
    let said = c.stdout();
    assert_eq!(code, 3, "{said}");
    assert!(target.total() > 0, "the run sent nothing: {said}");
    let summary = said
        .find("Squall run")
        .unwrap_or_else(|| panic!("no summary: {said}"));
    let error = said
        .find("cannot write the report to")
        .unwrap_or_else(|| panic!("no error: {said}"));
    assert!(summary < error, "the summary comes first: {said}");
    assert!(said.contains(&run.out.display().to_string()), "{said}");
    for name in REPORT_FILES {
        let text = std::fs::read_to_string(run.out.join(name)).expect("older file");
        assert_eq!(text, "older run", "{name} was touched: {said}");
    }
    let left: Vec<_> = std::fs::read_dir(&run.out)
        .expect("list out")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        left.len(),
        REPORT_FILES.len(),
        "staging left behind: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_replaces_the_first_runs_files() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(SHORT);
    let (_, report) = run
        .local_ok(1, &target.url(), Duration::from_secs(60))
        .await;
    let first = report["run_id"].clone();
    let (_, report) = run
        .local_ok(1, &target.url(), Duration::from_secs(60))
        .await;
    let second = report["run_id"].clone();
    assert_ne!(first, second);
    let id = second.as_str().expect("run id");
    for name in ["summary.txt", "report.html"] {
        let text = std::fs::read_to_string(run.out.join(name)).expect(name);
        assert!(text.contains(id), "{name} is not the second run's");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_an_all_run_keeps_the_first_report_and_runs_nothing_more() {
    let yaml = "scenarios:\n  first: { users: 4, spawn_rate: 100, duration: 60s }\n  second: { users: 4, spawn_rate: 100, duration: 2s }\nuser_classes:\n  u: { wait: { constant: 20ms }, tasks: [ { get: /ok } ] }\n";
    let target = CountingTarget::start().await;
    let run = TestRun::new(yaml);
    let mut c = run.headless(&target.url(), &["--all", "--local-workers", "1"]);
    traffic(&target, 50).await;
    c.signal("TERM");
    let code = c.exit_code(Duration::from_secs(25)).await;
    assert_eq!(code, 3, "{}", c.output());
    assert!(c.stderr().contains("second"), "{}", c.output());
    let first = read_report(&run.out.join("first"));
    assert_eq!(first["partial"], true);
    assert!(
        !run.out.join("second").join("report.json").exists(),
        "the second scenario ran"
    );
    let index = index(&run.out);
    let runs = index["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{index}");
    assert_eq!(runs[0]["scenario"], "first");
    assert_eq!(index["not_run"], serde_json::json!(["second"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_goes_on_after_a_scenario_loses_every_worker() {
    let yaml = "scenarios:\n  first: { users: 4, spawn_rate: 100, duration: 60s }\n  second: { users: 2, spawn_rate: 100, duration: 1s }\nuser_classes:\n  u: { wait: { constant: 20ms }, tasks: [ { get: /ok } ] }\n";
    let target = CountingTarget::start().await;
    let run = TestRun::new(yaml);
    let mut c = run
        .coordinator(1, &target.url(), &["--all", "--wait-timeout", "60s"])
        .await;
    let mut doomed = run.worker("doomed", &[]);
    traffic(&target, 50).await;
    doomed.signal("KILL");
    let _ = doomed.wait(Duration::from_secs(10)).await;
    let first = run.out.join("first").join("report.json");
    assert!(
        wait_until(Duration::from_secs(30), || first.exists()).await,
        "the first scenario's report never came\n{}",
        c.output()
    );
    let _rescuer = run.worker("rescuer", &[]);
    let code = c.exit_code(Duration::from_secs(60)).await;
    assert_eq!(code, 3, "{}", c.output());
    let second = read_report(&run.out.join("second"));
    assert_eq!(second["passed"], true, "{}", c.output());
    let index = index(&run.out);
    let runs = index["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{index}");
    assert!(
        runs[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("every worker was lost")),
        "{index}"
    );
    assert!(runs[1].get("error").is_none(), "{index}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_run_refuses_a_stranger_at_its_port() {
    let yaml = "scenarios:\n  s: { users: 2, spawn_rate: 10, duration: 6s }\nuser_classes:\n  u: { wait: { constant: 20ms }, tasks: [ { get: /ok } ] }\n";
    let target = CountingTarget::start().await;
    let run = TestRun::new(yaml);
    let mut c = run.local(1, &target.url());
    let addr = c
        .announced("coordinator listening on", Duration::from_secs(30))
        .await;
    let mut stranger = worker(&["--master", &addr, "--id", "stranger"], run.dir());
    let code = stranger.exit_code(Duration::from_secs(20)).await;
    assert_eq!(code, 2, "{}", stranger.output());
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    let report = run.report();
    let ids: Vec<&str> = report["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter_map(|w| w["id"].as_str())
        .collect();
    assert_eq!(ids, ["local-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_name_that_is_no_directory_name_is_refused_with_its_line() {
    let yaml = "scenarios:\n  ok: { users: 1, duration: 1s }\n  \"../escape\": { users: 1, duration: 1s }\nuser_classes:\n  u: { tasks: [ { get: /ok } ] }\n";
    let target = CountingTarget::start().await;
    let run = TestRun::named("names.yaml", yaml);
    let mut c = run.headless(&target.url(), &["--all"]);
    let code = c.exit_code(Duration::from_secs(30)).await;
    assert_eq!(code, 2, "{}", c.output());
    assert!(c.stderr().contains("names.yaml:3:"), "{}", c.output());
    assert!(c.stderr().contains("path separator"), "{}", c.output());
    assert_eq!(target.total(), 0);
    assert!(!run.dir().join("escape").exists());
}
