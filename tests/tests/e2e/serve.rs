//! `coordinator serve`: runs started, watched, stopped and fetched over the REST API with real
//! worker processes; auth and hostile requests; history after a restart; `/metrics` checked by
//! promtool against the report; the dashboard in headless Chromium; `--metrics-bind`.

use std::time::Duration;

use serde_json::json;
use squall_tests::{
    ApiClient, Browser, CountingTarget, Proc, ReservedPort, Served, TestRun, coordinator,
    eventually, require_tool, worker, write_file,
};

const PLAN: &str = r#"host: http://127.0.0.1:1
scenarios:
  steady: { users: 4, spawn_rate: 4, duration: 5s, thresholds: ["error_rate < 1%"] }
  long: { users: 2, spawn_rate: 2, duration: 5m }
user_classes:
  u:
    wait: { constant: 20ms }
    tasks: [ { name: ok, get: /ok } ]
"#;

const TOKEN: &str = "serve-secret";

fn workers(n: usize, master: &str, dir: &std::path::Path) -> Vec<Proc> {
    (1..=n)
        .map(|i| {
            let id = format!("w{i}");
            worker(&["--master", master, "--id", &id, "--token", TOKEN], dir)
        })
        .collect()
}

/// Sums the samples of one metric family in the classic text format.
fn metric_sum(text: &str, sample: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{sample}{{")) || l.starts_with(&format!("{sample} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Pipes a scrape through `promtool check metrics`.
async fn promtool_check(text: &str) {
    let promtool = require_tool("promtool", "prometheus");
    let mut child = tokio::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start promtool");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(text.as_bytes())
            .await
            .expect("write to promtool");
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("promtool finished")
        .expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- scrape ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The whole life of a run over REST with two real workers: start, 409 on a second start,
/// live status and `/metrics` during the run (promtool-clean), the report equal to what the
/// target served and to the metrics' counters, report files, a baseline; hostile requests get
/// 4xx and the server keeps answering; after a restart the run and baseline are listed again
/// and the workers come back, and a stop request ends a long run with its report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_over_rest_and_keeps_its_history() {
    let target = CountingTarget::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = write_file(tmp.path(), "plan.yaml", PLAN);
    let data = tmp.path().join("data");
    let port = ReservedPort::loopback();
    let f = file.to_str().expect("utf8");
    let serve = Served::start(tmp.path(), &data, &port.addr(), Some(TOKEN), &["-f", f]).await;
    let _workers = workers(2, &serve.master, tmp.path());
    let api = &serve.api;

    // Without the token: 401, before anything else is looked at.
    let anon = api.anonymous();
    assert_eq!(anon.get("/api/workers").await.status, 401);
    assert_eq!(anon.get("/metrics").await.status, 401);
    assert_eq!(
        anon.post_json("/api/runs", &json!({"scenario": "steady"}))
            .await
            .status,
        401
    );
    let wrong = ApiClient::new(&serve.http, Some("not-the-token"));
    assert_eq!(wrong.get("/api/runs").await.status, 401);
    // The dashboard page and the API description are open (they hold no data).
    assert_eq!(anon.get("/").await.status, 200);
    let doc = anon.get("/api/openapi.json").await.json();
    assert!(doc["paths"]["/api/runs"]["post"].is_object(), "{doc}");

    serve.wait_for_workers(2).await;
    let started = api
        .post_json(
            "/api/runs",
            &json!({"scenario": "steady", "host": target.url()}),
        )
        .await;
    assert_eq!(started.status, 202, "{}", started.text());
    let id = started.json()["run_id"]
        .as_str()
        .expect("run id")
        .to_owned();

    let second = api
        .post_json(
            "/api/runs",
            &json!({"scenario": "steady", "host": target.url()}),
        )
        .await;
    assert_eq!(second.status, 409, "{}", second.text());
    assert_eq!(second.json()["running"], id.as_str());

    // Live totals while it runs, and a scrape promtool accepts.
    let live = eventually(Duration::from_secs(30), "live requests", || {
        let path = format!("/api/runs/{id}");
        async move {
            let s = api.get(&path).await.json();
            (s["live"]["total_requests"].as_u64().unwrap_or(0) > 0).then_some(s)
        }
    })
    .await;
    assert_eq!(live["state"], "running");
    assert_eq!(
        live["live"]["workers"].as_array().map(Vec::len),
        Some(2),
        "{live}"
    );
    let scrape = api.get("/metrics").await;
    assert_eq!(scrape.status, 200);
    let during = scrape.text();
    assert!(during.contains("squall_run_info{"), "{during}");
    assert!(during.contains("phase=\"running\""), "{during}");
    promtool_check(&during).await;
    let om = api
        .request(
            "GET",
            "/metrics",
            &[("Accept", "application/openmetrics-text; version=1.0.0")],
            b"",
        )
        .await;
    assert!(
        om.header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{}",
        om.head
    );
    assert!(om.text().ends_with("# EOF\n"));

    let done = serve
        .wait_until_finished(&id, Duration::from_secs(60))
        .await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["passed"], true, "{done}");
    // The run ended on its own: the workers' next heartbeats say ready again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let workers = api.get("/api/workers").await.json();
        let states: Vec<&str> = workers
            .as_array()
            .map(|w| w.iter().filter_map(|w| w["state"].as_str()).collect())
            .unwrap_or_default();
        if !states.is_empty() && states.iter().all(|s| *s == "ready") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "workers still {states:?} after the run"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every request counted once: the report, the target and /metrics agree.
    let report = api.get(&format!("/api/runs/{id}/report.json")).await.json();
    let requests = report["totals"]["requests"].as_u64().expect("requests");
    assert!(requests > 0);
    assert_eq!(requests, target.total(), "report vs what the target served");
    assert_eq!(done["requests"].as_u64(), Some(requests));
    let after = api.get("/metrics").await.text();
    assert_eq!(
        metric_sum(&after, "squall_requests_total"),
        requests,
        "{after}"
    );
    assert_eq!(
        metric_sum(&after, "squall_request_duration_seconds_count"),
        requests
    );
    assert!(
        after.contains(
            "squall_threshold_passed{scenario=\"steady\",threshold=\"error_rate < 1%\"} 1"
        ),
        "{after}"
    );
    promtool_check(&after).await;
    let html = api.get(&format!("/api/runs/{id}/report.html")).await;
    assert_eq!(html.status, 200);
    assert!(
        html.header("content-type")
            .is_some_and(|c| c.starts_with("text/html"))
    );
    let csv = api.get(&format!("/api/runs/{id}/timeline.csv")).await;
    assert_eq!(csv.status, 200);
    assert!(csv.text().lines().count() > 2, "{}", csv.text());
    let saved = api
        .post_json(
            &format!("/api/runs/{id}/baseline"),
            &json!({"name": "main"}),
        )
        .await;
    assert_eq!(saved.status, 201, "{}", saved.text());
    // The run against the baseline saved from it, and against itself by id:
    // the comparison of `coordinator compare`, every change zero.
    for base in ["main", id.as_str()] {
        let cmp = api.get(&format!("/api/runs/{id}/compare/{base}")).await;
        assert_eq!(cmp.status, 200, "{base}: {}", cmp.text());
        let cmp = cmp.json();
        assert_eq!(cmp["regressed"], false, "{cmp}");
        let total = cmp["total"].as_array().expect("total rows");
        assert_eq!(total.len(), 6, "{cmp}");
        for row in total {
            assert_eq!(row["base"], row["new"], "{row}");
        }
    }
    assert_eq!(
        api.get(&format!("/api/runs/{id}/compare/nosuch"))
            .await
            .status,
        404
    );
    assert_eq!(
        api.get(&format!("/api/runs/{id}/compare/main?regression=lots"))
            .await
            .status,
        400
    );

    // Hostile requests: 4xx with a message, and the server keeps working.
    let big = vec![b'a'; 2 * 1024 * 1024];
    assert_eq!(
        api.post("/api/runs", "application/json", &big).await.status,
        413
    );
    let bad = api
        .post("/api/runs", "application/json", b"{\"scenario\": ")
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().is_some());
    let unknown = api
        .post_json("/api/runs", &json!({"scenario": "nope"}))
        .await;
    assert_eq!(unknown.status, 400);
    assert!(unknown.text().contains("nope"), "{}", unknown.text());
    let bad_yaml = api
        .post(
            "/api/runs",
            "application/yaml",
            b"host: http://127.0.0.1:1\nscenarios:\n  a: { users: lots }\n",
        )
        .await;
    assert_eq!(bad_yaml.status, 400);
    assert!(
        bad_yaml.text().contains("posted scenario:3:"),
        "{}",
        bad_yaml.text()
    );
    // A posted scenario may not read the coordinator's files.
    for yaml in [
        "host: http://127.0.0.1:1\nscenarios:\n  a: { users: 1, duration: 1s }\nuser_classes:\n  u: { tasks: [ { post: /x, body_file: /etc/passwd } ] }\n",
        "host: http://127.0.0.1:1\nfeeders:\n  f: { file: /etc/passwd.csv }\nscenarios:\n  a: { users: 1, duration: 1s }\nuser_classes:\n  u: { feed: f, tasks: [ { get: \"/{{ row.x }}\" } ] }\n",
        "host: https://127.0.0.1:1\ntls: { ca: /etc/ssl/certs/ca-certificates.crt }\nscenarios:\n  a: { users: 1, duration: 1s }\nuser_classes:\n  u: { tasks: [ { get: /x } ] }\n",
    ] {
        let r = api
            .post("/api/runs", "application/yaml", yaml.as_bytes())
            .await;
        assert_eq!(r.status, 400, "{yaml}: {}", r.text());
        assert!(
            r.text().contains("cannot read files on the coordinator"),
            "{}",
            r.text()
        );
    }
    let bad_override = api
        .post_json(
            "/api/runs",
            &json!({"scenario": "steady", "duration": "soon"}),
        )
        .await;
    assert_eq!(bad_override.status, 400, "{}", bad_override.text());
    for path in [
        "/api/runs/..%2F..%2Fetc%2Fpasswd/report.json",
        "/api/runs/%2e%2e/report.json",
        "/api/runs/../../etc/passwd",
        &format!("/api/runs/{id}/..%2Frun.json"),
        &format!("/api/runs/{id}/..%2F..%2F..%2Fplan.yaml"),
        "/api/baselines/..%2F..%2Fplan",
        &format!("/api/runs/{id}/compare/..%2F..%2Fplan"),
    ] {
        let r = api.get(path).await;
        assert!(
            r.status == 400 || r.status == 404,
            "{path}: {} {}",
            r.status,
            r.text()
        );
        assert!(!r.text().contains("scenarios:"), "{path} leaked a file");
    }
    assert_eq!(api.get("/api/runs/0123456789ab").await.status, 404);
    assert_eq!(
        api.post_json(
            &format!("/api/runs/{id}/baseline"),
            &json!({"name": "../x"})
        )
        .await
        .status,
        400
    );
    assert_eq!(api.get("/api/runs").await.status, 200);

    // A restart: the history is read back, the workers reattach.
    let mut proc = serve.proc;
    proc.signal("TERM");
    assert_eq!(
        proc.exit_code(Duration::from_secs(30)).await,
        0,
        "{}",
        proc.output()
    );
    let serve = Served::start(tmp.path(), &data, &port.addr(), Some(TOKEN), &["-f", f]).await;
    let api = &serve.api;
    let runs = api.get("/api/runs").await.json();
    let listed = runs
        .as_array()
        .and_then(|r| r.iter().find(|r| r["run_id"] == id.as_str()))
        .unwrap_or_else(|| panic!("run {id} not listed after a restart: {runs}"));
    assert_eq!(listed["state"], "done");
    assert_eq!(listed["requests"].as_u64(), Some(requests));
    let baselines = api.get("/api/baselines").await.json();
    assert_eq!(baselines[0]["name"], "main", "{baselines}");
    assert_eq!(baselines[0]["run_id"], id.as_str());
    assert_eq!(
        api.get(&format!("/api/runs/{id}/report.json")).await.json()["totals"]["requests"].as_u64(),
        Some(requests)
    );

    // A stop request ends a 5-minute run early, with its report.
    serve.wait_for_workers(2).await;
    let long = api
        .post_json(
            "/api/runs",
            &json!({"scenario": "long", "host": target.url()}),
        )
        .await;
    assert_eq!(long.status, 202, "{}", long.text());
    let long_id = long.json()["run_id"].as_str().expect("id").to_owned();
    let all = api.get("/api/runs").await.json();
    // The run list is bounded: the newest `limit` runs (100 unless asked, 1 to 1000).
    assert!(all.as_array().map_or(0, Vec::len) >= 2, "{all}");
    let newest = api.get("/api/runs?limit=1").await.json();
    assert_eq!(newest.as_array().map(Vec::len), Some(1), "{newest}");
    assert_eq!(newest[0]["run_id"], long_id.as_str());
    for bad in ["0", "1001", "lots"] {
        assert_eq!(
            api.get(&format!("/api/runs?limit={bad}")).await.status,
            400,
            "limit={bad}"
        );
    }
    eventually(
        Duration::from_secs(30),
        "the long run's first requests",
        || {
            let path = format!("/api/runs/{long_id}");
            async move {
                let s = api.get(&path).await.json();
                (s["live"]["total_requests"].as_u64().unwrap_or(0) > 0).then_some(())
            }
        },
    )
    .await;
    let stopped = api
        .post(
            &format!("/api/runs/{long_id}/stop"),
            "application/json",
            b"",
        )
        .await;
    assert_eq!(stopped.status, 202, "{}", stopped.text());
    let over = serve
        .wait_until_finished(&long_id, Duration::from_secs(60))
        .await;
    assert_eq!(over["state"], "done", "{over}");
    assert_eq!(over["partial"], true, "{over}");
    assert!(
        over["duration_s"].as_f64().unwrap_or(999.0) < 60.0,
        "{over}"
    );
    assert_eq!(
        api.post(
            &format!("/api/runs/{long_id}/stop"),
            "application/json",
            b""
        )
        .await
        .status,
        409
    );
}

/// An HTTP listener other hosts can reach needs the token: refused with exit 2 before anything listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_an_exposed_http_port_without_a_token() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut c = coordinator(&["serve", "--http", "0.0.0.0:0", "--data", "d"], tmp.path());
    assert_eq!(
        c.exit_code(Duration::from_secs(30)).await,
        2,
        "{}",
        c.output()
    );
    assert!(c.stderr().contains("--token"), "{}", c.output());
    assert!(!tmp.path().join("d").exists(), "nothing should be created");
}

/// The dashboard in real headless Chromium (driven over the DevTools protocol): the page starts
/// a run through its form, the live numbers and the charts follow the SSE stream, the Stop
/// button stops it, the run history links its report, and the page logs no error of any kind.
/// A screenshot is kept as target/ci/test-artefacts/serve-dashboard.png.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_starts_and_shows_a_run_in_chromium() {
    let target = CountingTarget::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let serve = Served::start(tmp.path(), &data, "127.0.0.1:0", Some(TOKEN), &[]).await;
    let _workers = workers(1, &serve.master, tmp.path());
    serve.wait_for_workers(1).await;
    // The token travels in the fragment (never sent to the server in a URL).
    let mut page =
        Browser::open(&format!("http://{}/#token={TOKEN}", serve.http), tmp.path()).await;
    let ready = "document.readyState === 'complete' && document.getElementById('conn').textContent === 'live' && document.querySelector('#workers tbody').textContent.includes('w1')";
    let mut loaded = false;
    for _ in 0..100 {
        if page.eval(ready).await == true {
            loaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(loaded, "the dashboard did not connect: {:?}", page.errors);
    let plan = serde_json::to_string(&PLAN.replace("duration: 5s", "duration: 60s")).expect("JSON");
    let host = serde_json::to_string(&target.url()).expect("JSON");
    page.eval(&format!(
        "const f = document.getElementById('start'); f.elements.scenario.value = 'steady'; f.elements.host.value = {host}; f.elements.file.value = {plan}; document.getElementById('start-button').click(); true"
    ))
    .await;
    let state = "JSON.stringify({ id: document.getElementById('run-id').textContent, phase: document.getElementById('phase').textContent, rps: Number(document.getElementById('rps').textContent), requests: Number(document.getElementById('requests').textContent), users: document.getElementById('users').textContent, points: (document.querySelector('#chart-rps polyline')?.getAttribute('points') || '').split(' ').filter(Boolean).length, endpoint: document.querySelector('#endpoints tbody').textContent, message: document.getElementById('message').textContent, scriptErrors: document.getElementById('script-errors').textContent })";
    let mut seen = serde_json::Value::Null;
    for _ in 0..300 {
        let v: serde_json::Value =
            serde_json::from_str(page.eval(state).await.as_str().unwrap_or("{}"))
                .expect("state JSON");
        let live = v["phase"] == "running"
            && v["rps"].as_f64().unwrap_or(0.0) > 0.0
            && v["points"].as_u64().unwrap_or(0) >= 3;
        seen = v;
        if live {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen["phase"], "running", "{seen} {:?}", page.errors);
    assert!(
        seen["points"].as_u64().unwrap_or(0) >= 3,
        "the chart did not update: {seen}"
    );
    assert!(seen["requests"].as_u64().unwrap_or(0) > 0, "{seen}");
    assert_eq!(seen["users"], "4", "{seen}");
    assert!(
        seen["endpoint"].as_str().unwrap_or("").contains("ok"),
        "{seen}"
    );
    let id = seen["id"].as_str().expect("run id").to_owned();
    let status = serve.api.get(&format!("/api/runs/{id}")).await.json();
    assert_eq!(
        status["state"], "running",
        "the page's run is the server's: {status}"
    );

    let artefacts = squall_tests::bin("coordinator")
        .parent()
        .expect("target dir")
        .join("test-artefacts");
    std::fs::create_dir_all(&artefacts).expect("artefacts dir");
    let shot = artefacts.join("serve-dashboard.png");
    page.screenshot(&shot).await;
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "no screenshot"
    );
    eprintln!("dashboard screenshot: {}", shot.display());

    page.eval("document.getElementById('stop-button').click(); true")
        .await;
    let done = serve
        .wait_until_finished(&id, Duration::from_secs(60))
        .await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["partial"], true, "stopped from the page: {done}");
    let mut linked = false;
    for _ in 0..150 {
        let links = page
            .eval("Array.from(document.querySelectorAll('#runs a')).map(a => a.getAttribute('href')).join(' ')")
            .await;
        if links
            .as_str()
            .unwrap_or("")
            .contains(&format!("/api/runs/{id}/report.html"))
        {
            linked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(linked, "the run history does not link the report");
    let script_errors = page
        .eval("document.getElementById('script-errors').textContent")
        .await;
    assert_eq!(script_errors, "", "script errors in the page");
    assert!(
        page.errors.is_empty(),
        "the page logged errors: {:#?}",
        page.errors
    );
}

/// A one-shot run serves `/metrics` on `--metrics-bind` while it goes on, behind the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headless_run_serves_metrics_on_metrics_bind() {
    let target = CountingTarget::start().await;
    let run = TestRun::new(&PLAN.replace("duration: 5s", "duration: 4s")).token(TOKEN);
    let port = ReservedPort::loopback();
    let addr = port.addr();
    let mut c = run
        .coordinator(
            1,
            &target.url(),
            &["--scenario", "steady", "--metrics-bind", &addr],
        )
        .await;
    let _w = run.worker("w1", &[]);
    let api = ApiClient::new(&addr, Some(TOKEN));
    let text = eventually(Duration::from_secs(30), "requests in /metrics", || {
        let api = api.clone();
        async move {
            let t = api.get("/metrics").await.text();
            (metric_sum(&t, "squall_requests_total") > 0).then_some(t)
        }
    })
    .await;
    assert_eq!(api.anonymous().get("/metrics").await.status, 401);
    promtool_check(&text).await;
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
}

/// Percent-encodes a PromQL query for a URL.
fn query_param(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A real Prometheus server scrapes serve every second (with the bearer token) during a steady
/// run; its request rate agrees with the report's requests/s within 5 %, and its counters end
/// at the report's total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_agrees_with_the_report() {
    let prometheus = require_tool("prometheus", "prometheus");
    let target = CountingTarget::start().await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let serve = Served::start(tmp.path(), &data, "127.0.0.1:0", Some(TOKEN), &[]).await;
    let _workers = workers(1, &serve.master, tmp.path());
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: squall\n    authorization:\n      type: Bearer\n      credentials: {TOKEN}\n    static_configs:\n      - targets: [\"{}\"]\n",
        serve.http
    );
    let config = write_file(tmp.path(), "prometheus.yml", &config);
    let port = ReservedPort::loopback();
    let listen = port.addr();
    let _prom = Proc::spawn(
        "prometheus",
        &prometheus,
        &[
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", tmp.path().join("tsdb").display()),
            &format!("--web.listen-address={listen}"),
        ],
        tmp.path(),
    );
    let prom = ApiClient::new(&listen, None);
    eventually(Duration::from_secs(60), "Prometheus ready", || {
        let prom = prom.clone();
        let listen = listen.clone();
        async move {
            // Not listening yet: a refused connection, not a failure.
            tokio::net::TcpStream::connect(&listen).await.ok()?;
            (prom.get("/-/ready").await.status == 200).then_some(())
        }
    })
    .await;
    serve.wait_for_workers(1).await;
    let plan = PLAN.replace(
        "steady: { users: 4, spawn_rate: 4, duration: 5s,",
        "steady: { users: 4, spawn_rate: 100, duration: 30s,",
    );
    let started = serve
        .api
        .post_json(
            "/api/runs",
            &json!({"file": plan, "scenario": "steady", "host": target.url()}),
        )
        .await;
    assert_eq!(started.status, 202, "{}", started.text());
    let id = started.json()["run_id"].as_str().expect("id").to_owned();
    let api = &serve.api;
    eventually(Duration::from_secs(60), "25 s into the run", || {
        let path = format!("/api/runs/{id}");
        async move {
            let s = api.get(&path).await.json();
            (s["live"]["elapsed_s"].as_f64().unwrap_or(0.0) >= 25.0).then_some(())
        }
    })
    .await;
    let query = |q: &str| {
        let path = format!("/api/v1/query?query={}", query_param(q));
        let prom = prom.clone();
        async move {
            let r = prom.get(&path).await.json();
            r["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no value for {path}: {r}"))
        }
    };
    let prom_rps = query("sum(rate(squall_requests_total[20s]))").await;
    let done = serve
        .wait_until_finished(&id, Duration::from_secs(60))
        .await;
    assert_eq!(done["state"], "done", "{done}");
    let report = api.get(&format!("/api/runs/{id}/report.json")).await.json();
    // Prometheus's rate covers the 20 s before the query (about 5 s to 25 s
    // into the run): compare it with the report's own seconds of that
    // window, not with the whole run's mean, which the stop lowers.
    let steady: Vec<f64> = report["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|p| (5..25).contains(&p["t"].as_u64().unwrap_or(0)))
        .map(|p| p["requests"].as_f64().unwrap_or(0.0))
        .collect();
    assert_eq!(steady.len(), 20, "{report}");
    let report_rps = steady.iter().sum::<f64>() / 20.0;
    let requests = report["totals"]["requests"].as_u64().expect("requests");
    eprintln!("Prometheus rate {prom_rps:.1}/s, report {report_rps:.1}/s over seconds 5-24");
    // The counters move once a second, when a snapshot is merged, so the
    // 20 samples of the window span 19 s and hold 19 or 20 of those steps:
    // rate() can read one second's worth high or low (1/19, 5.3 %; two
    // clean-clone CI runs saw 195.5 and 195.6 against 185.9 and 185.8).
    // Allow that step and 3 % more; a double count or a lost worker's share
    // is still far outside.
    assert!(
        (prom_rps - report_rps).abs() <= (1.0 / 19.0 + 0.03) * report_rps,
        "Prometheus says {prom_rps:.1} requests/s, the report {report_rps:.1}"
    );
    // Once scraped after the end, the counters hold the report's total.
    let total = eventually(
        Duration::from_secs(30),
        "the final total in Prometheus",
        || {
            let query = &query;
            async move {
                let v = query("sum(squall_requests_total)").await as u64;
                (v == requests).then_some(v)
            }
        },
    )
    .await;
    assert_eq!(total, target.total());
}
