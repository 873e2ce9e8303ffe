//! Bad input is refused with a clear message and the right exit code, before any traffic.

use std::time::Duration;

use squall_tests::{
    CountingTarget, ReservedPort, TestRun, coordinator, wait_until, worker, write_file,
};

const GOOD: &str = "scenarios:\n  s: { users: 2, duration: 1s }\nuser_classes:\n  u: { tasks: [ { get: /ok } ] }\n";

/// Runs the coordinator on `yaml` against the target; returns (exit code, stderr).
/// `--host` defaults to the target's URL unless `extra` gives one.
async fn run_file(yaml: &str, extra: &[&str]) -> (i32, String, CountingTarget) {
    let target = CountingTarget::start().await;
    let run = TestRun::named("bad.yaml", yaml);
    let url = target.url();
    let mut args = vec!["--headless"];
    if !extra.contains(&"--host") {
        args.extend(["--host", url.as_str()]);
    }
    args.extend_from_slice(extra);
    let mut c = run.command(&args);
    let code = c.exit_code(Duration::from_secs(30)).await;
    (code, c.stderr(), target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_yaml_is_located() {
    let yaml = "scenarios:\n  s: { users: 2, duration: 1s }\n  t: [ {\nuser_classes: {}\n";
    let (code, err, target) = run_file(yaml, &[]).await;
    assert_eq!(code, 2, "{err}");
    // file:line:column: message
    let located = err.split("bad.yaml:").nth(1).unwrap_or("");
    let mut parts = located.splitn(3, ':');
    let line = parts.next().and_then(|l| l.parse::<u32>().ok());
    let column = parts.next().and_then(|c| c.parse::<u32>().ok());
    assert!(
        line.is_some() && column.is_some(),
        "no line:column in {err}"
    );
    assert!(line >= Some(3), "{err}");
    assert_eq!(target.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_is_located_and_named() {
    let yaml = "scenarios:\n  s: { users: 2, duration: 1s }\nuser_classes:\n  u:\n    taskz: [ { get: /ok } ]\n";
    let (code, err, target) = run_file(yaml, &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.yaml:5:5"), "{err}");
    assert!(err.contains("unknown field `taskz`"), "{err}");
    assert!(err.contains("expected one of"), "{err}");
    assert_eq!(target.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_and_urls_are_refused() {
    let (code, err, target) = run_file(GOOD, &["--host", "localhost:8080"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("localhost:8080"), "{err}");
    assert_eq!(target.total(), 0);

    let (code, err, _) = run_file(&GOOD.replace("1s", "1 fortnight"), &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.yaml:2:") && err.contains("invalid duration"),
        "{err}"
    );

    let (code, err, _) = run_file(&GOOD.replace("get: /ok", "get: ok"), &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("must start with `/`"), "{err}");

    let (code, err, _) = run_file(GOOD, &["--threshold", "p99 <<< 3"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("thresholds"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_refused_on_both_sides_and_sends_nothing() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(GOOD);
    let mut c = run
        .coordinator(
            1,
            &target.url(),
            &["--token", "right-token", "--wait-timeout", "4s"],
        )
        .await;
    let mut w = worker(
        &["--master", &run.master(), "--token", "wrong-token"],
        run.dir(),
    );
    let wcode = w.exit_code(Duration::from_secs(30)).await;
    assert_eq!(wcode, 2, "{}", w.output());
    assert!(
        w.stderr().contains("refused") && w.stderr().contains("token"),
        "{}",
        w.output()
    );
    let ccode = c.exit_code(Duration::from_secs(30)).await;
    assert_eq!(ccode, 3, "{}", c.output());
    assert!(
        c.stderr().contains("token"),
        "coordinator should log the refusal: {}",
        c.output()
    );
    assert!(c.stderr().contains("timed out"), "{}", c.output());
    assert_eq!(target.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_coordinator_is_retried_then_given_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Nobody answers on a reserved port, for as long as the test holds it.
    let port = ReservedPort::loopback();
    let master = port.addr();
    let mut w = worker(&["--master", &master, "--give-up-after", "2s"], tmp.path());
    assert!(
        wait_until(Duration::from_secs(10), || w.stderr().contains("retrying")).await,
        "{}",
        w.output()
    );
    let code = w.exit_code(Duration::from_secs(30)).await;
    assert_eq!(code, 3, "{}", w.output());
    assert!(
        w.stderr()
            .contains(&format!("no coordinator answered at http://{master}")),
        "{}",
        w.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_workers_time_out_with_exit_3() {
    let run = TestRun::new(GOOD);
    let mut c = run.start_coordinator(2, "http://127.0.0.1:9", &["--wait-timeout", "2s"]);
    assert_eq!(
        c.exit_code(Duration::from_secs(30)).await,
        3,
        "{}",
        c.output()
    );
    assert!(c.stderr().contains("0 of 2 attached"), "{}", c.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_and_list() {
    let two = format!("host: http://127.0.0.1:1\n{}", GOOD.replace("scenarios:\n", "scenarios:\n  other: { users: 5, spawn_rate: 1, duration: 2m, thresholds: [\"p95 < 1s\"] }\n"));
    let run = TestRun::named("two.yaml", &two);
    let f = run.file.to_str().expect("utf8");
    let mut v = coordinator(&["validate", f], run.dir());
    assert_eq!(
        v.exit_code(Duration::from_secs(10)).await,
        0,
        "{}",
        v.output()
    );
    assert!(
        v.stdout().contains("OK") && v.stdout().contains("2 scenario"),
        "{}",
        v.output()
    );
    let mut l = coordinator(&["list", f], run.dir());
    assert_eq!(
        l.exit_code(Duration::from_secs(10)).await,
        0,
        "{}",
        l.output()
    );
    let listing = l.stdout();
    assert!(
        listing.contains("other") && listing.contains("5 users") && listing.contains("p95 < 1s"),
        "{listing}"
    );
    // Several scenarios and no choice: a usage error naming them.
    let mut r = run.command(&[]);
    assert_eq!(
        r.exit_code(Duration::from_secs(10)).await,
        2,
        "{}",
        r.output()
    );
    assert!(r.stderr().contains("--scenario"), "{}", r.output());
    let bad = write_file(run.dir(), "bad.yaml", "scenarios: [\n");
    let mut b = coordinator(&["validate", bad.to_str().expect("utf8")], run.dir());
    assert_eq!(
        b.exit_code(Duration::from_secs(10)).await,
        2,
        "{}",
        b.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_past_the_cap_are_located_by_validate() {
    // 1e20 s once panicked in validation; 1e19 s passed it and panicked later
    // in `Instant + Duration`; two 20-day stages sum past the 30-day cap.
    let stages = "scenarios:\n  s:\n    stages:\n      - { duration: 20d, users: 2 }\n      - { duration: 20d, users: 0 }\nuser_classes:\n  u: { tasks: [ { get: /ok } ] }\n";
    for (yaml, located) in [
        (
            GOOD.replace("duration: 1s", "duration: 1e20"),
            "bad.yaml:2:",
        ),
        (
            GOOD.replace("duration: 1s", "duration: 10000000000000000000"),
            "bad.yaml:2:",
        ),
        (stages.to_owned(), "bad.yaml: scenarios.s.stages:"),
    ] {
        let run = TestRun::named("bad.yaml", &yaml);
        let f = run.file.to_str().expect("utf8");
        let mut v = coordinator(&["validate", f], run.dir());
        let code = v.exit_code(Duration::from_secs(10)).await;
        assert_eq!(code, 2, "{yaml}\n{}", v.output());
        assert!(v.stderr().contains(located), "{yaml}\n{}", v.output());
        assert!(v.stderr().contains("30-day limit"), "{}", v.output());
        assert!(!v.stderr().contains("panicked"), "{}", v.output());
    }
}
