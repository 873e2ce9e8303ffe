//! Verdicts for CI: a saved baseline, regressions against it in every output, `compare`, JUnit and summary.md, `report` and `merge`, and bad baselines refused before any traffic.

use std::path::{Path, PathBuf};
use std::time::Duration;

use quick_xml::events::Event;
use squall_tests::{CountingTarget, Proc, TestRun, coordinator, read_report, write_file};

const DEADLINE: Duration = Duration::from_secs(60);

/// A closed model without waits against `/api/delay/{ms}` of the demo target:
/// every request takes the delay, so throughput follows it too. Delays of
/// 100 ms and more keep the machine's own scheduling jitter (a few ms on a
/// busy test machine) small against the changes measured.
fn delayed(ms: u32) -> String {
    format!(
        "scenarios:\n  api: {{ users: 20, spawn_rate: 200, duration: 2s, thresholds: [\"p95 < 2s\"] }}\nuser_classes:\n  u: {{ tasks: [ {{ name: delayed, get: /api/delay/{ms} }} ] }}\n"
    )
}

fn utf8(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// The demo target on a free loopback port, and its URL.
async fn demo_target(dir: &Path) -> (Proc, String) {
    let mut target = coordinator(&["target", "--bind", "127.0.0.1:0"], dir);
    let url = target
        .announced("demo target listening on", Duration::from_secs(30))
        .await;
    (target, url)
}

/// Runs `yaml` against `host` into `out` with `extra` flags; returns the exit code and the output.
async fn run(
    dir: &Path,
    name: &str,
    yaml: &str,
    host: &str,
    extra: &[&str],
) -> (i32, String, PathBuf) {
    let file = write_file(dir, &format!("{name}.yaml"), yaml);
    let out = dir.join(name);
    let mut args = vec![
        "-f",
        utf8(&file),
        "--host",
        host,
        "--out",
        utf8(&out),
        "--headless",
    ];
    args.extend_from_slice(extra);
    let mut c = coordinator(&args, dir);
    let code = c.exit_code(DEADLINE).await;
    (code, c.output(), out)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses a JUnit file with a real XML parser: (test cases, failures, names of the failed cases).
fn junit(path: &Path) -> (usize, usize, Vec<String>) {
    let text = read(path);
    let mut reader = quick_xml::Reader::from_str(&text);
    let (mut cases, mut failures, mut failed) = (0, 0, Vec::new());
    let mut current = String::new();
    let mut root = None;
    loop {
        match reader.read_event() {
            Err(e) => panic!("{} is not well-formed XML: {e}\n{text}", path.display()),
            Ok(Event::Eof) => break,
            Ok(Event::Start(e) | Event::Empty(e)) => {
                let tag = e.name().0.to_owned();
                root.get_or_insert_with(|| tag.clone());
                if tag == "testcase" {
                    cases += 1;
                    current = e
                        .try_get_attribute("name")
                        .ok()
                        .flatten()
                        .and_then(|a| {
                            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                .ok()
                                .map(|v| v.into_owned())
                        })
                        .unwrap_or_default();
                }
                if tag == "failure" {
                    failures += 1;
                    failed.push(current.clone());
                }
            }
            Ok(_) => {}
        }
    }
    assert_eq!(root.as_deref(), Some("testsuites"), "{text}");
    (cases, failures, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slower_target_regresses_against_a_saved_baseline_in_every_output() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (_target, url) = demo_target(dir).await;
    let baselines = dir.join("baselines");
    let b = utf8(&baselines);

    // The baseline: 100 ms per request, saved by name.
    let (code, said, base_out) = run(
        dir,
        "base",
        &delayed(100),
        &url,
        &["--save-baseline", "main", "--baselines-dir", b],
    )
    .await;
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("baseline saved to"), "{said}");
    let saved: serde_json::Value =
        serde_json::from_str(&read(&baselines.join("main.json"))).expect("the baseline is JSON");
    assert_eq!(saved["run_id"], read_report(&base_out)["run_id"]);

    // 30 % slower: a regression, by name, with exit 1 and the comparison everywhere.
    let junit_path = dir.join("ci").join("junit.xml");
    let (code, said, slow_out) = run(
        dir,
        "slow",
        &delayed(130),
        &url,
        &[
            "--baseline",
            "main",
            "--baselines-dir",
            b,
            "--junit",
            utf8(&junit_path),
        ],
    )
    .await;
    assert_eq!(code, 1, "a regression fails the run: {said}");
    let report = read_report(&slow_out);
    assert_eq!(report["passed"], false);
    let c = &report["comparison"];
    assert_eq!(c["regressed"], true, "{c}");
    assert_eq!(c["baseline"]["source"], "main");
    assert_eq!(c["baseline"]["run_id"], read_report(&base_out)["run_id"]);
    let p50 = c["total"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["metric"] == "p50"))
        .expect("total p50");
    assert_eq!(p50["verdict"], "regression", "{p50}");
    let change = p50["change"].as_f64().expect("change");
    assert!((0.2..0.45).contains(&change), "p50 change {change}");
    let endpoint = &c["endpoints"][0];
    assert_eq!(endpoint["name"], "delayed");
    assert!(
        endpoint["metrics"].as_array().is_some_and(|m| m
            .iter()
            .any(|m| m["metric"] == "mean" && m["verdict"] == "regression")),
        "{endpoint}"
    );
    assert!(report["score"]["regressions"].as_f64().expect("score") < 20.0);
    let summary = read(&slow_out.join("summary.txt"));
    assert!(
        summary.contains("Comparison with baseline main"),
        "{summary}"
    );
    assert!(summary.contains("REGRESSION"), "{summary}");
    assert!(
        said.contains("Comparison with baseline main"),
        "printed too: {said}"
    );
    let md = read(&slow_out.join("summary.md"));
    assert!(md.contains("### Comparison with baseline main"), "{md}");
    assert!(
        md.contains("| TOTAL | p50 ms |") && md.contains("**REGRESSION**"),
        "{md}"
    );
    let html = read(&slow_out.join("report.html"));
    assert!(
        html.contains("Comparison with baseline <code>main</code>"),
        "{html}"
    );
    assert!(html.contains("REGRESSION"));
    let (cases, failures, failed) = junit(&junit_path);
    // One threshold, six metrics for the totals and six for the endpoint.
    assert_eq!(cases, 13, "{}", read(&junit_path));
    assert!(
        failures >= 2 && failed.contains(&"TOTAL p50".to_owned()),
        "{failed:?}"
    );
    assert!(
        !failed.contains(&"p95 < 2s".to_owned()),
        "the threshold passed: {failed:?}"
    );

    // 10 % slower: not a regression. The median, mean and throughput are
    // judged by the default 20 % rule; the tail gets room, since on a shared
    // test machine the p95 and p99 of a few hundred requests move by more
    // than 10 % on their own.
    let (code, said, _) = run(
        dir,
        "slight",
        &delayed(110),
        &url,
        &[
            "--baseline",
            "main",
            "--baselines-dir",
            b,
            "--regression",
            "p95=50%, p99=100%",
        ],
    )
    .await;
    assert_eq!(code, 0, "10 % is within the 20 % rule: {said}");
    assert!(said.contains("no regression"), "{said}");

    // `compare` on the two files: the same verdicts, exit 1, and --out/--junit.
    let cmp_out = dir.join("cmp");
    let cmp_junit = dir.join("cmp.xml");
    let mut cmp = coordinator(
        &[
            "compare",
            utf8(&slow_out.join("report.json")),
            utf8(&base_out.join("report.json")),
            "--out",
            utf8(&cmp_out),
            "--junit",
            utf8(&cmp_junit),
        ],
        dir,
    );
    assert_eq!(cmp.exit_code(DEADLINE).await, 1, "{}", cmp.output());
    assert!(cmp.stdout().contains("REGRESSION"), "{}", cmp.output());
    assert_eq!(read_report(&cmp_out)["comparison"]["regressed"], true);
    assert!(junit(&cmp_junit).1 >= 2);
    // The other way round the slower run is the baseline: an improvement, exit 0.
    let mut back = coordinator(
        &[
            "compare",
            utf8(&base_out.join("report.json")),
            utf8(&slow_out.join("report.json")),
        ],
        dir,
    );
    assert_eq!(back.exit_code(DEADLINE).await, 0, "{}", back.output());
    assert!(back.stdout().contains("improvement"), "{}", back.output());
    // A bad rule is invalid input.
    let mut bad = coordinator(
        &[
            "compare",
            utf8(&base_out.join("report.json")),
            "main",
            "--baselines-dir",
            b,
            "--regression",
            "p75=10%",
        ],
        dir,
    );
    assert_eq!(bad.exit_code(DEADLINE).await, 2, "{}", bad.output());
    assert!(bad.stderr().contains("--regression"), "{}", bad.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_baseline_is_refused_before_any_traffic() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(
        "scenarios:\n  s: { users: 2, spawn_rate: 10, duration: 1s }\nuser_classes:\n  u: { tasks: [ { get: /ok } ] }\n",
    );
    let garbage = write_file(
        run.dir(),
        "garbage.json",
        "{\n  \"schema\": \"squall.report/v1\",\n  \"run_id\": 7\n}\n",
    );
    let dir = run.path("baselines");
    let cases: [(&[&str], &str); 5] = [
        (&["--baseline", "nope"], "nope.json"),
        (
            &["--baseline", "missing/report.json"],
            "missing/report.json",
        ),
        (&["--baseline", utf8(&garbage)], "line 3 column"),
        (&["--save-baseline", "../escape"], "--save-baseline"),
        (&["--regression", "fast"], "--regression"),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["--baselines-dir", utf8(&dir), "--local-workers", "1"];
        args.extend_from_slice(flags);
        let mut c = run.headless(&target.url(), &args);
        assert_eq!(c.exit_code(DEADLINE).await, 2, "{flags:?}: {}", c.output());
        assert!(c.stderr().contains(expected), "{flags:?}: {}", c.output());
    }
    assert_eq!(target.total(), 0, "the target saw traffic");
    assert!(!run.out.join("report.json").exists());
}

/// Nearest-rank percentile, the definition HDR histograms use.
fn exact(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

fn samples(path: &Path) -> Vec<u64> {
    read(path)
        .lines()
        .map(|line| {
            line.split('\t')
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("bad sample line {line:?}"))
                .max(1)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_reports_add_up_and_have_the_percentiles_of_both_runs_samples() {
    let target = CountingTarget::start().await;
    let mut run = TestRun::new(
        "scenarios:\n  j: { users: 8, spawn_rate: 100, duration: 2s, thresholds: [\"p99 < 5s\"] }\nuser_classes:\n  u: { tasks: [ { name: jitter, get: /jitter } ] }\n",
    );
    let mut all = Vec::new();
    let mut outs = Vec::new();
    for name in ["a", "b"] {
        run.out = run.path(name);
        let file = run.path(&format!("{name}.samples"));
        let mut c = run.coordinator(1, &target.url(), &[]).await;
        let _w = run.worker(&format!("w-{name}"), &["--samples-file", utf8(&file)]);
        assert_eq!(c.exit_code(DEADLINE).await, 0, "{}", c.output());
        all.extend(samples(&file));
        outs.push(run.out.clone());
    }
    let merged = run.path("merged");
    let mut m = coordinator(
        &[
            "merge",
            utf8(&outs[0].join("report.json")),
            utf8(&outs[1].join("report.json")),
            "--out",
            utf8(&merged),
        ],
        run.dir(),
    );
    assert_eq!(m.exit_code(DEADLINE).await, 0, "{}", m.output());
    let (a, b, report) = (
        read_report(&outs[0]),
        read_report(&outs[1]),
        read_report(&merged),
    );
    let total = |r: &serde_json::Value| r["totals"]["requests"].as_u64().expect("requests");
    assert_eq!(total(&report), total(&a) + total(&b));
    assert_eq!(total(&report), all.len() as u64, "one sample per request");
    assert_eq!(report["endpoints"][0]["requests"], total(&report));
    assert_eq!(report["workers"].as_array().map(Vec::len), Some(2));
    assert_eq!(report["thresholds"][0]["expr"], "p99 < 5s");
    all.sort_unstable();
    for lat in [
        &report["totals"]["latency_ms"],
        &report["endpoints"][0]["latency_ms"],
    ] {
        for (field, q) in [
            ("p50", 0.5),
            ("p90", 0.9),
            ("p95", 0.95),
            ("p99", 0.99),
            ("max", 1.0),
        ] {
            let want = exact(&all, q) as f64;
            let got = lat[field].as_f64().expect("percentile") * 1000.0;
            // 3 significant digits: never below the exact value, at most 0.1 % above.
            assert!(
                got + 0.5 >= want && got <= want * 1.001 + 1.0,
                "{field}: merged {got}µs vs exact {want}µs"
            );
        }
    }
    for name in ["summary.txt", "summary.md", "timeline.csv", "report.html"] {
        assert!(merged.join(name).exists(), "{name}");
    }

    // `report` renders the merged JSON again, the same figures.
    let again = run.path("again");
    let mut r = coordinator(
        &[
            "report",
            utf8(&merged.join("report.json")),
            "--out",
            utf8(&again),
        ],
        run.dir(),
    );
    assert_eq!(r.exit_code(DEADLINE).await, 0, "{}", r.output());
    assert_eq!(read_report(&again)["totals"], report["totals"]);
    assert_eq!(
        read(&again.join("summary.txt")),
        read(&merged.join("summary.txt"))
    );
    assert!(read(&again.join("report.html")).contains("<svg"));

    // Reports of another scenario are not merged.
    let mut other: serde_json::Value = read_report(&outs[1]);
    other["scenario"] = "other".into();
    let other_path = write_file(run.dir(), "other.json", &other.to_string());
    let mut refused = coordinator(
        &[
            "merge",
            utf8(&outs[0].join("report.json")),
            utf8(&other_path),
            "--out",
            utf8(&run.path("never")),
        ],
        run.dir(),
    );
    assert_eq!(refused.exit_code(DEADLINE).await, 2, "{}", refused.output());
    assert!(
        refused.stderr().contains("different scenarios"),
        "{}",
        refused.output()
    );
    assert!(!run.path("never").exists());
}

/// A target with a fixed capacity: at most 4 requests are served at once,
/// each for 20 ms, so it saturates at 200 requests/s and further users only
/// queue. Returns its URL; it stops with the test's runtime.
async fn saturating_target() -> String {
    use std::sync::Arc;

    let permits = Arc::new(tokio::sync::Semaphore::new(4));
    let app = axum::Router::new().route(
        "/busy",
        axum::routing::get(move || {
            let permits = permits.clone();
            async move {
                let Ok(_permit) = permits.acquire().await else {
                    return "closed";
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the saturating target");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturating_target_gets_the_knee_and_rising_latency_recommendations() {
    let url = saturating_target().await;
    // 4 more users every second up to 32: throughput stops near 200/s at
    // about 10 users, and from there latency grows with the queue.
    let run = TestRun::new(
        "scenarios:\n  ramp: { stages: [ { duration: 8s, users: 32 }, { duration: 2s, users: 32 } ] }\nuser_classes:\n  u: { wait: { constant: 20ms }, tasks: [ { name: busy, get: /busy } ] }\n",
    );
    let (_, report) = run.local_ok(1, &url, DEADLINE).await;
    let recs = report["recommendations"]
        .as_array()
        .expect("recommendations");
    let find = |kind: &str| {
        recs.iter()
            .find(|r| r["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {recs:?}\ntimeline: {}", report["timeline"]))
    };
    let knee = find("throughput_knee");
    let at = knee["figures"]["users_at_knee"].as_f64().expect("users");
    assert!((8.0..=20.0).contains(&at), "{knee}");
    let peak = knee["figures"]["rps_peak"].as_f64().expect("peak");
    assert!((150.0..=205.0).contains(&peak), "{knee}");
    let rising = find("latency_rises_with_users");
    assert!(
        rising["figures"]["p95_ms_high"].as_f64().expect("high") > 60.0,
        "{rising}"
    );
    let summary = read(&run.out.join("summary.txt"));
    assert!(
        summary.contains("Recommendations") && summary.contains("throughput stopped growing"),
        "{summary}"
    );
    assert!(read(&run.out.join("report.html")).contains("<h2>Recommendations</h2>"));
}

/// Opens `page` in headless Chromium (Debian's `chromium`) with every host
/// name unresolvable and a network log; returns (exit ok, console lines,
/// requests the page itself started, screenshot bytes).
async fn chromium(dir: &Path, page: &Path, label: &str) -> (bool, Vec<String>, usize, Vec<u8>) {
    let shot = dir.join(format!("{label}.png"));
    let netlog = dir.join(format!("{label}.netlog"));
    let profile = dir.join(format!("{label}-profile"));
    let output = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--window-size=1200,3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--log-net-log={}", netlog.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(DEADLINE, output)
        .await
        .expect("chromium finished in time")
        .expect("chromium runs (Debian package `chromium`, installed by .ci/run)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let console = stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    // Requests a file:// page starts carry its opaque origin, "null";
    // Chromium's own background requests have none.
    let by_page = std::fs::read_to_string(&netlog)
        .map(|log| log.matches("\"initiator\":\"null\"").count())
        .unwrap_or(0);
    let png = std::fs::read(&shot).unwrap_or_default();
    (output.status.success(), console, by_page, png)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_with_a_comparison_opens_in_chromium_offline_and_quietly() {
    let target = CountingTarget::start().await;
    let mut run = TestRun::new(
        "scenarios:\n  s: { users: 4, spawn_rate: 40, duration: 1s, thresholds: [\"p95 < 1s\", \"p50 < 1us, warn\"] }\nuser_classes:\n  u: { tasks: [ { name: \"jitter <b>\", get: /jitter } ] }\n",
    );
    let mut outs = Vec::new();
    for name in ["base", "new"] {
        run.out = run.path(name);
        let mut c = run.local(1, &target.url());
        assert_eq!(c.exit_code(DEADLINE).await, 0, "{}", c.output());
        outs.push(run.out.clone());
    }
    let cmp = run.path("cmp");
    let mut c = coordinator(
        &[
            "compare",
            utf8(&outs[1].join("report.json")),
            utf8(&outs[0].join("report.json")),
            "--regression",
            "1000%",
            "--out",
            utf8(&cmp),
        ],
        run.dir(),
    );
    assert_eq!(c.exit_code(DEADLINE).await, 0, "{}", c.output());
    let page = cmp.join("report.html");
    let html = read(&page);
    assert!(html.contains("Comparison with baseline"), "{html}");
    assert!(html.contains("jitter &lt;b&gt;") && !html.contains("jitter <b>"));

    // The detector itself: a page that fetches an image and logs an error is caught.
    let control = write_file(
        run.dir(),
        "control.html",
        "<html><body><img src=\"http://example.invalid/x.png\"><script>console.error('boom')</script></body></html>",
    );
    let (_, console, by_page, _) = chromium(run.dir(), &control, "control").await;
    assert!(!console.is_empty(), "the console error was not seen");
    assert!(by_page > 0, "the image request was not seen");

    let (ok, console, by_page, png) = chromium(run.dir(), &page, "report").await;
    assert!(ok, "chromium failed on the report");
    assert!(console.is_empty(), "console messages: {console:?}");
    assert_eq!(by_page, 0, "the report made network requests");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "no screenshot ({} bytes)",
        png.len()
    );
}
