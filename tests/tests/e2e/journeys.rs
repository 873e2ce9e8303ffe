//! Journeys: flows, polls, checks, captures and variables against the real
//! demo target (`coordinator target`), counted against what it served.

use std::time::Duration;

use squall_tests::{Proc, TestRun, coordinator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A `coordinator target` process and its URL.
pub struct Demo {
    _proc: Proc,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Demo {
    pub async fn start() -> Demo {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut proc = coordinator(&["target", "--bind", "127.0.0.1:0"], dir.path());
        let url = proc
            .announced("demo target listening on", Duration::from_secs(30))
            .await;
        Demo {
            _proc: proc,
            url,
            _dir: dir,
        }
    }

    /// Requests the target served (its stats route is not counted).
    pub async fn served(&self) -> u64 {
        let addr = self.url.trim_start_matches("http://");
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the demo target");
        let req =
            format!("GET /__squall/stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.expect("read");
        let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let v: serde_json::Value = serde_json::from_str(body).expect("stats JSON");
        v["served"].as_u64().expect("served")
    }
}

fn endpoint<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("no endpoint {name} in {report}"))
}

fn count(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journey_example_runs_and_its_counts_match_the_demo_target() {
    let demo = Demo::start().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("examples/journey.yaml")).expect("example");
    let run = TestRun::named("journey.yaml", &text);
    let mut c = run.headless(
        &demo.url,
        &["--local-workers", "2", "--duration", "3s", "--users", "6"],
    );
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    let report = run.report();
    let served = demo.served().await;
    assert_eq!(
        count(&report["totals"]["requests"]),
        served,
        "every request once, flow rows left out of the totals"
    );
    let flow = endpoint(&report, "run workflow");
    assert_eq!(flow["method"], "FLOW");
    let flows = count(&flow["requests"]);
    assert!(flows > 5, "{flow}");
    assert_eq!(count(&flow["failures"]), 0, "{flow}");
    let result = endpoint(&report, "fetch result");
    let polls = endpoint(&report, "poll run");
    // Every whole flow fetched its result once, after exactly 3 polls (the
    // demo run is done at its third); flows cut off by the end add the rest.
    assert!(count(&result["requests"]) >= flows, "{result}");
    assert!(count(&polls["requests"]) >= 3 * flows, "{polls}");
    assert!(count(&polls["requests"]) <= 3 * count(&result["requests"]) + 3 * 6);
    assert_eq!(count(&report["totals"]["failures"]), 0, "{}", c.output());
    assert_eq!(endpoint(&report, "login")["requests"], 6);
    let thresholds = report["thresholds"].as_array().expect("thresholds");
    assert!(
        thresholds.iter().all(|t| t["passed"] == true),
        "{thresholds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_ends_on_its_limit_and_fails_its_flow() {
    let demo = Demo::start().await;
    let run = TestRun::new(
        r#"
scenarios:
  s: { users: 1, duration: 30s, iterations: 2 }
user_classes:
  u:
    on_start:
      - { name: login, post: /api/auth/login, json: { username: u, password: p }, capture: { token: "$.access_token" } }
    headers: { Authorization: "Bearer {{ token }}" }
    tasks:
      - name: never done
        flow:
          - { name: execute, post: /api/workflows/wf-release/execute, capture: { run_id: "$.run_id" } }
          - name: poll
            get: "/api/runs/{{ run_id }}"
            poll: { every: 10ms, max: 4, until: { json: { "$.status": finished } } }
          - { name: result, get: "/api/runs/{{ run_id }}/result" }
"#,
    );
    let mut c = run.headless(&demo.url, &["--local-workers", "1", "--threads", "1"]);
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    let report = run.report();
    let poll = endpoint(&report, "poll");
    assert_eq!(poll["requests"], 8, "4 attempts per flow: {poll}");
    assert_eq!(poll["errors"]["poll_limit"], 2, "{poll}");
    let flow = endpoint(&report, "never done");
    assert_eq!(flow["requests"], 2, "{flow}");
    assert_eq!(flow["errors"]["poll_limit"], 2, "{flow}");
    assert!(
        report["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .all(|e| e["name"] != "result"),
        "a failed step ends the flow"
    );
    assert_eq!(count(&report["totals"]["requests"]), demo.served().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_ends_on_its_condition() {
    let demo = Demo::start().await;
    let run = TestRun::new(
        r#"
scenarios:
  s: { users: 1, duration: 30s, iterations: 3 }
user_classes:
  u:
    on_start:
      - { name: login, post: /api/auth/login, json: { username: u, password: p }, capture: { token: "$.access_token" } }
    headers: { Authorization: "Bearer {{ token }}" }
    tasks:
      - name: done
        flow:
          - { name: execute, post: /api/workflows/wf-release/execute, capture: { run_id: "$.run_id" } }
          - name: poll
            get: "/api/runs/{{ run_id }}"
            poll: { every: 10ms, max: 50, until: { status: 200, json: { "$.status": done } } }
          - { name: result, get: "/api/runs/{{ run_id }}/result", expect: { status: 200 } }
"#,
    );
    let mut c = run.headless(&demo.url, &["--local-workers", "1", "--threads", "1"]);
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    let report = run.report();
    assert_eq!(endpoint(&report, "poll")["requests"], 9, "3 polls per run");
    assert_eq!(endpoint(&report, "result")["requests"], 3);
    assert_eq!(endpoint(&report, "done")["failures"], 0);
    assert_eq!(count(&report["totals"]["failures"]), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_checks_count_as_check_failures_and_fail_a_checks_threshold() {
    let demo = Demo::start().await;
    let run = TestRun::new(
        r#"
scenarios:
  s: { users: 1, duration: 30s, iterations: 5, thresholds: ["checks > 99%", "good: checks == 1"] }
user_classes:
  u:
    tasks:
      # One flow: both requests in every iteration.
      - name: both
        flow:
          - name: good
            get: /api/health
            expect:
              status: [2xx, 304]
              headers: { content-type: { contains: json }, X-Missing: { exists: false } }
              body_contains: ok
              json: { "$.status": ok, "$.nothing": { exists: false } }
              max_latency: 5s
          - name: bad
            get: /api/health
            expect: { status: "200-204", json: { "$.status": { matches: "^down$" } } }
"#,
    );
    let mut c = run.headless(&demo.url, &["--local-workers", "1", "--threads", "1"]);
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        1,
        "{}",
        c.output()
    );
    let report = run.report();
    let good = endpoint(&report, "good");
    let bad = endpoint(&report, "bad");
    assert_eq!(good["failures"], 0, "{good}");
    assert_eq!(bad["failures"], bad["requests"], "{bad}");
    assert_eq!(bad["errors"]["check"], bad["requests"], "{bad}");
    assert_eq!(count(&good["requests"]), 5, "{good}");
    assert_eq!(count(&bad["requests"]), 5, "{bad}");
    let t = report["thresholds"].as_array().expect("thresholds");
    assert_eq!(
        t[0]["passed"], false,
        "half the requests failed a check: {t:?}"
    );
    assert_eq!(t[1]["passed"], true, "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_by_cookie_header_and_regex_with_vars_env_and_functions() {
    let demo = Demo::start().await;
    let run = TestRun::new(
        r#"
scenarios:
  s: { users: 2, duration: 30s, iterations: 6 }
user_classes:
  u:
    vars:
      who: "user{{ user_id }}-{{ random_string(4) }}"
      basic: "{{ base64(who, ':', 'pw') }}"
    on_start:
      - name: cookie login
        post: /api/session/login
        json: { username: "{{ who }}", password: "{{ env(\"SQUALL_JOURNEY_SURELY_UNSET\", \"pw\") }}" }
        capture: { sid: { cookie: sid } }
      - name: redirect
        get: /api/redirect
        expect: { status: 302 }
        capture: { where: { header: location } }
      - { name: login, post: /api/auth/login, json: { username: u, password: p }, capture: { token: { json: "$.access_token" } } }
    tasks:
      - name: me
        get: /api/session/me
        headers: { Cookie: "sid={{ sid }}", X-Basic: "Basic {{ basic }}", X-Seq: "{{ sequence() }}-{{ now() }}" }
        expect: { status: 200, json: { "$.session": valid } }
      - name: followed
        get: "{{ where }}"
        expect: { status: 200 }
      - name: regex
        post: /api/workflows/wf-release/execute
        headers: { Authorization: "Bearer {{ token }}" }
        capture: { run: { regex: "\"run_id\":\"([0-9a-f-]+)\"" } }
        expect: { status: 202 }
"#,
    );
    let mut c = run.headless(&demo.url, &["--local-workers", "1", "--threads", "1"]);
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    let report = run.report();
    assert_eq!(count(&report["totals"]["failures"]), 0, "{}", c.output());
    assert_eq!(count(&report["totals"]["requests"]), demo.served().await);
    assert_eq!(endpoint(&report, "cookie login")["requests"], 2);
}

/// A session cookie set by a login goes back on the user's next requests,
/// unless the jar is turned off; a request's own timeout wins over the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_jar_keeps_a_session_and_a_request_timeout_applies() {
    let demo = Demo::start().await;
    let scenario = |defaults: &str| {
        format!(
            r#"
defaults: {{ timeout: 5s{defaults} }}
scenarios:
  s: {{ users: 2, duration: 30s, iterations: 3 }}
user_classes:
  u:
    on_start:
      - {{ name: cookie login, post: /api/session/login, json: {{ username: u, password: p }} }}
    tasks:
      # One flow, so that every iteration sends both requests (two tasks
      # drawn at random left `slow` out of all 6 iterations 1 time in 32).
      - name: session
        continue_on_failure: true
        flow:
          - {{ name: me, get: /api/session/me }}
          - {{ name: slow, get: /api/delay/300, timeout: 50ms }}
"#
        )
    };
    for (defaults, me_ok) in [("", true), (", cookies: false", false)] {
        let run = TestRun::new(&scenario(defaults));
        let mut c = run.headless(&demo.url, &["--local-workers", "1", "--threads", "1"]);
        assert_eq!(
            c.exit_code(Duration::from_secs(60)).await,
            0,
            "{}",
            c.output()
        );
        let report = run.report();
        let me = endpoint(&report, "me");
        if me_ok {
            assert_eq!(me["failures"], 0, "{me}");
        } else {
            assert_eq!(me["failures"], me["requests"], "{me}");
            assert_eq!(count(&me["status"]["401"]), count(&me["requests"]), "{me}");
        }
        let slow = endpoint(&report, "slow");
        assert_eq!(slow["errors"]["timeout"], slow["requests"], "{slow}");
        assert_eq!(count(&me["requests"]), 3, "{report}");
        assert_eq!(count(&slow["requests"]), 3, "{report}");
    }
}

/// Query maps, form bodies, generated and file bodies reach the target as
/// written, and a large response is read to its end and counted in bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_reach_the_target_and_large_responses_are_counted() {
    let demo = Demo::start().await;
    let run = TestRun::new(
        r#"
scenarios:
  s: { users: 1, duration: 30s, iterations: 5 }
user_classes:
  u:
    vars: { who: "a b&c" }
    on_start:
      - name: query
        get: /api/echo
        query: { page: "2", q: "{{ who }}" }
        expect: { json: { "$.query": "page=2&q=a%20b%26c" } }
      - name: form
        post: /api/echo
        form: { user: "{{ who }}", n: "1" }
        expect: { json: { "$.body": "user=a%20b%26c&n=1", "$.content_type": application/x-www-form-urlencoded } }
      - name: generated
        put: /api/echo
        body_size: 64KiB
        expect: { json: { "$.length": 65536 } }
      - name: file
        post: /api/echo
        body_file: payload.bin
        expect: { json: { "$.length": 5 } }
    tasks:
      - { name: large, get: /api/large/256, expect: { status: 200 } }
"#,
    );
    std::fs::write(run.path("payload.bin"), [0u8, 159, 146, 150, 10]).expect("payload");
    let mut c = run.headless(&demo.url, &["--local-workers", "1", "--threads", "1"]);
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    let report = run.report();
    assert_eq!(count(&report["totals"]["failures"]), 0, "{report}");
    let large = endpoint(&report, "large");
    assert_eq!(large["requests"], 5);
    assert_eq!(count(&large["bytes_received"]), 5 * 256 * 1024, "{large}");
}

/// A redirect is the answer by default; with `redirects: N` it is followed,
/// and each hop is a request of the endpoint that the target served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_when_asked_and_every_hop_is_counted() {
    let demo = Demo::start().await;
    let run = TestRun::new(
        r#"
defaults: { redirects: 3 }
scenarios:
  s: { users: 1, duration: 30s, iterations: 2 }
user_classes:
  u:
    tasks:
      # One flow: both requests in every iteration (two tasks drawn at random
      # could leave one out).
      - name: both
        flow:
          - { name: followed, get: /api/redirect, expect: { status: 200, json: { "$.status": ok } } }
          - { name: not followed, get: /api/redirect, redirects: 0, expect: { status: 302 } }
"#,
    );
    let mut c = run.headless(&demo.url, &["--local-workers", "1", "--threads", "1"]);
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    let report = run.report();
    assert_eq!(count(&report["totals"]["failures"]), 0, "{report}");
    let followed = endpoint(&report, "followed");
    let not = endpoint(&report, "not followed");
    assert_eq!(count(&followed["status"]["302"]), 2, "{report}");
    assert_eq!(count(&not["requests"]), 2, "{report}");
    assert_eq!(
        followed["status"]["200"], followed["status"]["302"],
        "{followed}"
    );
    assert_eq!(count(&report["totals"]["requests"]), demo.served().await);
}

/// A `unique` feeder over three worker processes: every row reaches the
/// target exactly once, and the users left without a row do not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_feeder_hands_every_row_out_once_across_three_workers() {
    const ROWS: usize = 30;
    let target = squall_tests::CountingTarget::start().await;
    let run = TestRun::new(
        r#"
feeders:
  accounts: { file: data/accounts.csv, mode: unique }
scenarios:
  s: { users: 36, spawn_rate: 100, duration: 3s, iterations_per_user: 1 }
user_classes:
  u:
    feed: accounts
    headers: { X-User: "{{ row.user }}" }
    tasks:
      - { name: row, post: "/row/{{ row.user }}", json: { user: "{{ row.user }}", pin: "{{ row.pin }}" } }
"#,
    );
    let mut csv = String::from("user,pin\n");
    for i in 0..ROWS {
        csv.push_str(&format!("u{i},{}\n", 1000 + i));
    }
    std::fs::create_dir_all(run.dir().join("data")).expect("data dir");
    squall_tests::write_file(&run.dir().join("data"), "accounts.csv", &csv);
    let mut c = run.coordinator(3, &target.url(), &[]).await;
    let _w: Vec<Proc> = ["w1", "w2", "w3"]
        .iter()
        .map(|id| run.worker(id, &["--threads", "2"]))
        .collect();
    assert_eq!(
        c.exit_code(Duration::from_secs(120)).await,
        0,
        "{}",
        c.output()
    );
    let report = run.report();
    for i in 0..ROWS {
        assert_eq!(target.path(&format!("/row/u{i}")), 1, "row u{i}: {report}");
    }
    assert_eq!(
        target.total(),
        ROWS as u64,
        "36 users, 30 rows: 6 never start"
    );
    assert_eq!(
        count(&report["totals"]["requests"]),
        ROWS as u64,
        "{report}"
    );
    assert_eq!(count(&report["totals"]["failures"]), 0, "{report}");
    let workers = report["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 3, "{report}");
    for w in workers {
        assert_eq!(count(&w["requests"]), 10, "each worker its 10 rows: {w}");
    }
}

/// `cycle` hands the rows out in turn on a worker; `random` draws from them
/// all; a JSON feeder's numbers and booleans arrive as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycle_and_random_feeders_reuse_their_rows() {
    let target = squall_tests::CountingTarget::start().await;
    let run = TestRun::new(
        r#"
feeders:
  cyc: { file: cyc.csv, mode: cycle }
  rnd: { file: rnd.json, mode: random }
scenarios:
  s: { users: 24, spawn_rate: 100, duration: 3s, iterations_per_user: 1 }
user_classes:
  c:
    feed: cyc
    tasks: [ { name: cycle, get: "/row/c-{{ row.id }}" } ]
  r:
    feed: rnd
    tasks: [ { name: random, get: "/row/r-{{ row.n }}-{{ row.on }}" } ]
"#,
    );
    squall_tests::write_file(run.dir(), "cyc.csv", "id\na\nb\nc\n");
    squall_tests::write_file(
        run.dir(),
        "rnd.json",
        r#"[{"n": 1, "on": true}, {"n": 2, "on": false}, {"n": 3.5, "on": true}]"#,
    );
    let mut c = run.headless(&target.url(), &["--local-workers", "1", "--threads", "1"]);
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    for row in ["a", "b", "c"] {
        assert_eq!(
            target.path(&format!("/row/c-{row}")),
            4,
            "12 users over 3 rows"
        );
    }
    let random: u64 = ["1-true", "2-false", "3.5-true"]
        .iter()
        .map(|v| target.path(&format!("/row/r-{v}")))
        .sum();
    assert_eq!(random, 12, "every random draw is one of the rows");
    assert_eq!(target.total(), 24);
}

/// The feeders example runs as shipped: its 20 users over 2 local workers log
/// in once each, every one with its own row, and the demo target served it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feeders_example_logs_every_account_in_once() {
    let demo = Demo::start().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("examples/feeders.yaml")).expect("example");
    let run = TestRun::named("feeders.yaml", &text);
    let data = root.join("examples/data/accounts.csv");
    std::fs::create_dir_all(run.dir().join("data")).expect("data dir");
    std::fs::copy(&data, run.dir().join("data/accounts.csv")).expect("copy the data file");
    let mut c = run.headless(&demo.url, &["--local-workers", "2", "--duration", "2s"]);
    assert_eq!(
        c.exit_code(Duration::from_secs(60)).await,
        0,
        "{}",
        c.output()
    );
    let report = run.report();
    assert_eq!(endpoint(&report, "login")["requests"], 20, "{report}");
    assert_eq!(count(&report["totals"]["failures"]), 0, "{report}");
    assert_eq!(count(&report["totals"]["requests"]), demo.served().await);
}
