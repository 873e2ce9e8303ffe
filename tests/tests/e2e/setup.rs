//! `setup:` and `teardown:`: run once per test by the coordinator, however
//! many workers, with their captures in every user's requests, against the
//! real demo target, which counts the tenants they make and use.

use std::time::Duration;

use squall_tests::{Served, TestRun, eventually, worker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::journeys::Demo;

const EXIT_DEADLINE: Duration = Duration::from_secs(90);

/// The demo target's tenant counts (`/__squall/tenants`, not counted as served).
async fn tenants(demo: &Demo) -> serde_json::Value {
    let addr = demo.url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the demo target");
    let req =
        format!("GET /__squall/tenants HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.expect("read");
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).expect("tenants JSON")
}

fn example() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join("examples/setup-teardown.yaml")).expect("example")
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// The requests of a report's phase (its FLOW row left out).
fn phase_requests(report: &serde_json::Value, phase: &str) -> u64 {
    report["phases"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["phase"] == phase))
        .and_then(|p| p["endpoints"].as_array())
        .map(|e| {
            e.iter()
                .filter(|e| e["method"] != "FLOW")
                .map(|e| n(&e["requests"]))
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_runs_once_across_worker_processes_and_every_user_carries_its_capture() {
    let demo = Demo::start().await;
    let run = TestRun::named("setup-teardown.yaml", &example());
    let mut c = run
        .coordinator(2, &demo.url, &["--duration", "3s", "--users", "6"])
        .await;
    let _w1 = run.worker("w1", &[]);
    let _w2 = run.worker("w2", &[]);
    assert_eq!(c.exit_code(EXIT_DEADLINE).await, 0, "{}", c.output());
    let report = run.report();
    let t = tenants(&demo).await;
    assert_eq!(n(&t["created"]), 1, "one tenant for the whole test: {t}");
    assert_eq!(n(&t["deleted"]), 1, "teardown deleted it once: {t}");
    assert_eq!(
        n(&t["unknown"]),
        0,
        "no request without the tenant's id: {t}"
    );
    let items = report["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == "tenant items"))
        .expect("tenant items row");
    assert!(n(&items["requests"]) > 10, "{items}");
    assert_eq!(
        n(&items["requests"]),
        n(&t["hits"]),
        "every user request carried the tenant setup made"
    );
    assert_eq!(n(&report["totals"]["failures"]), 0, "{}", c.output());
    let workers = report["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 2);
    assert!(workers.iter().all(|w| n(&w["requests"]) > 0), "{workers:?}");
    // The phases are rows of their own: the totals are the load alone.
    assert_eq!(phase_requests(&report, "setup"), 2);
    assert_eq!(phase_requests(&report, "teardown"), 1);
    assert_eq!(
        n(&report["totals"]["requests"]) + 3,
        demo.served().await,
        "the target served the load's totals plus the three phase requests"
    );
    let setup = &report["phases"][0];
    assert_eq!(setup["passed"], true, "{setup}");
    assert_eq!(
        setup["captured"],
        serde_json::json!(["admin_token", "tenant_id"])
    );
    let text = serde_json::to_string(&report).expect("report");
    assert!(
        !text.contains("tn-1\""),
        "captured values stay out of the report"
    );
    assert!(c.stderr().contains("setup: 2 request(s)"), "{}", c.output());
    assert!(
        c.stdout()
            .contains("Setup and teardown (not in the totals)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_runs_once_after_an_interrupt() {
    let demo = Demo::start().await;
    let run = TestRun::named("setup-teardown.yaml", &example());
    let mut c = run.headless(
        &demo.url,
        &["--local-workers", "2", "--duration", "60s", "--users", "4"],
    );
    eventually(
        Duration::from_secs(30),
        "users working in the tenant",
        || async { (n(&tenants(&demo).await["hits"]) > 5).then_some(()) },
    )
    .await;
    let t = tenants(&demo).await;
    assert_eq!((n(&t["created"]), n(&t["deleted"])), (1, 0), "{t}");
    c.signal("INT");
    assert_eq!(c.exit_code(EXIT_DEADLINE).await, 0, "{}", c.output());
    let t = tenants(&demo).await;
    assert_eq!((n(&t["created"]), n(&t["deleted"])), (1, 1), "{t}");
    assert_eq!(t["live"], serde_json::json!({}));
    let report = run.report();
    assert_eq!(report["partial"], true);
    assert_eq!(report["phases"][1]["phase"], "teardown");
    assert_eq!(report["phases"][1]["passed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_setup_sends_no_load_exits_3_and_is_cleaned_up() {
    let demo = Demo::start().await;
    let text = example().replace(
        "teardown:",
        "  - { name: seed items, get: \"/api/tenants/{{ tenant_id }}x/items\", headers: { Authorization: \"Bearer {{ admin_token }}\" } }\nteardown:",
    );
    assert!(text.contains("seed items"));
    let run = TestRun::named("setup-teardown.yaml", &text);
    let mut c = run.local(2, &demo.url);
    assert_eq!(c.exit_code(EXIT_DEADLINE).await, 3, "{}", c.output());
    let err = c.stderr();
    assert!(
        err.contains(
            "setup failed, so no load was sent: step `seed items` (GET) failed: status (HTTP 404)"
        ),
        "{err}"
    );
    // Setup's three requests and teardown's delete: no user ever started.
    assert_eq!(demo.served().await, 4, "{}", c.output());
    let t = tenants(&demo).await;
    assert_eq!((n(&t["created"]), n(&t["deleted"])), (1, 1), "{t}");
    assert_eq!(n(&t["hits"]), 0, "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_setup_input_exits_2_with_its_place_and_sends_nothing() {
    let demo = Demo::start().await;
    let base = example();
    let cases: [(String, &str); 5] = [
        (
            // Used by a setup step before a later one captures it.
            base.replace(
                "json: { username: admin,",
                "json: { username: \"{{ tenant_id }}\",",
            ),
            "setup-teardown.yaml:15:",
        ),
        (
            base.replace("    json: { name: \"load", "    jsn: { name: \"load"),
            "did you mean `json`?",
        ),
        (
            base.replace("teardown:", "teardwn:"),
            "did you mean `teardown`?",
        ),
        (
            base.replace(
                "/api/tenants/{{ tenant_id }}/items",
                "/api/tenants/{{ tenant_idd }}/items",
            ),
            "did you mean `tenant_id`?",
        ),
        (
            // A teardown step sees setup's captures, not the users'.
            base.replace(
                "delete: \"/api/tenants/{{ tenant_id }}\"",
                "delete: \"/api/tenants/{{ token }}\"",
            ),
            "setup-teardown.yaml:26:",
        ),
    ];
    for (text, expected) in cases {
        assert_ne!(text, base, "{expected}: the case changed nothing");
        let run = TestRun::named("setup-teardown.yaml", &text);
        let mut c = run.local(1, &demo.url);
        assert_eq!(c.exit_code(EXIT_DEADLINE).await, 2, "{}", c.output());
        let err = c.stderr();
        assert!(err.contains(expected), "{expected}: {err}");
        assert!(err.contains("setup-teardown.yaml:"), "{err}");
    }
    assert_eq!(demo.served().await, 0, "nothing reached the target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_mode_runs_setup_and_teardown_for_a_posted_run() {
    let demo = Demo::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let serve = Served::start(tmp.path(), &data, "127.0.0.1:0", None, &[]).await;
    let _w = worker(&["--master", &serve.master, "--id", "w1"], tmp.path());
    serve.wait_for_workers(1).await;
    let yaml = example()
        .replace(
            "host: http://127.0.0.1:8080",
            &format!("host: {}", demo.url),
        )
        .replace("duration: 20s", "duration: 2s");
    let started = serve
        .api
        .post("/api/runs", "application/yaml", yaml.as_bytes())
        .await;
    assert_eq!(started.status, 202, "{}", started.text());
    let id = started.json()["run_id"]
        .as_str()
        .expect("run id")
        .to_owned();
    let record = serve
        .wait_until_finished(&id, Duration::from_secs(60))
        .await;
    assert_eq!(record["state"], "done", "{record}");
    let t = tenants(&demo).await;
    assert_eq!((n(&t["created"]), n(&t["deleted"])), (1, 1), "{t}");
    assert_eq!(n(&t["unknown"]), 0, "{t}");
    assert!(n(&t["hits"]) > 0, "{t}");
    let report = serve
        .api
        .get(&format!("/api/runs/{id}/report.json"))
        .await
        .json();
    assert_eq!(phase_requests(&report, "setup"), 2, "{report}");
    assert_eq!(phase_requests(&report, "teardown"), 1, "{report}");
    let items = report["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == "tenant items"))
        .expect("tenant items row");
    assert_eq!(n(&items["requests"]), n(&t["hits"]), "{report}");
}
