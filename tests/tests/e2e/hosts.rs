//! Several hosts in one scenario: `hosts:`, `host: NAME`, absolute URLs, a
//! cookie jar per host, and failed checks named in the report, against two
//! real demo targets on two loopback ports.

use std::time::Duration;

use squall_tests::TestRun;

use crate::journeys::Demo;

fn endpoint<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["endpoints"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("no endpoint {name} in {report}"))
}

fn requests(report: &serde_json::Value, names: &[&str]) -> u64 {
    names
        .iter()
        .map(|n| endpoint(report, n)["requests"].as_u64().unwrap_or(0))
        .sum()
}

/// Both demo targets set a cookie called `sid`; with one jar per host each
/// gets its own back (a shared jar would send the second login's to both,
/// and one `me` would answer 401). Each target serves exactly the requests
/// meant for it, by name or by absolute URL; a named check that fails is
/// counted under its name, a failed status under `status 200`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_host_gets_its_own_requests_and_cookies_and_failed_checks_are_named() {
    let api = Demo::start().await;
    let auth = Demo::start().await;
    let run = TestRun::new(&format!(
        r#"
hosts: {{ auth: "{auth}" }}
scenarios:
  s: {{ users: 2, duration: 30s, iterations: 6 }}
user_classes:
  u:
    on_start:
      - {{ name: api login, post: /api/session/login, json: {{ username: a, password: p }} }}
      - {{ name: auth login, host: auth, post: /api/session/login, json: {{ username: b, password: p }} }}
    tasks:
      - name: both
        continue_on_failure: true
        flow:
          - {{ name: api me, get: /api/session/me, expect: {{ status: 200 }} }}
          - {{ name: auth me, host: auth, get: /api/session/me, expect: {{ status: 200 }} }}
          - name: absolute
            get: "{auth}/api/echo?n={{{{ user_id }}}}"
            expect: {{ json: {{ "$.method": {{ equals: POST, name: was a post }}, "$.query": {{ exists: true }} }} }}
          - {{ name: missing, get: /api/nothing-here, expect: {{ status: 200 }} }}
"#,
        auth = auth.url
    ));
    let mut c = run.headless(&api.url, &["--local-workers", "1", "--threads", "1"]);
    let code = c.exit_code(Duration::from_secs(60)).await;
    let report = run.report();
    assert_eq!(code, 0, "{}", c.output());
    for name in ["api me", "auth me", "api login", "auth login"] {
        assert_eq!(endpoint(&report, name)["failures"], 0, "{name}: {report}");
    }
    assert_eq!(endpoint(&report, "api me")["requests"], 6);
    assert_eq!(
        api.served().await,
        requests(&report, &["api login", "api me", "missing"])
    );
    assert_eq!(
        auth.served().await,
        requests(&report, &["auth login", "auth me", "absolute"])
    );
    let absolute = endpoint(&report, "absolute");
    assert_eq!(absolute["requests"], 6);
    assert_eq!(absolute["errors"]["check"], 6, "{absolute}");
    assert_eq!(absolute["checks"], serde_json::json!({ "was a post": 6 }));
    let missing = endpoint(&report, "missing");
    assert_eq!(missing["checks"], serde_json::json!({ "status 200": 6 }));
    let summary = std::fs::read_to_string(run.out.join("summary.txt")).expect("summary");
    assert!(
        summary.contains("Failed checks") && summary.contains("was a post"),
        "{summary}"
    );
    let html = std::fs::read_to_string(run.out.join("report.html")).expect("html");
    assert!(
        html.contains("<code>was a post</code> × 6"),
        "html names the check"
    );
}

/// Mistakes about hosts are refused at load time with their place in the
/// file, exit 2, and no request at either target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_mistakes_are_located_before_any_traffic() {
    let api = Demo::start().await;
    for (task, says) in [
        ("{ host: auht, get: /api/fast }", "plan.yaml:6:"),
        ("{ host: autth, get: /api/fast }", "did you mean `auth`"),
        (
            "{ host: auth, get: \"http://127.0.0.1:1/x\" }",
            "both say where",
        ),
        ("{ get: \"http://{{ h }}/x\" }", "not in its scheme or host"),
        ("{ get: \"http//127.0.0.1:1/x\" }", "must start with `/`"),
    ] {
        let run = TestRun::new(&format!(
            "hosts: {{ auth: \"http://127.0.0.1:1\" }}\nscenarios:\n  s: {{ users: 1, duration: 1s }}\nuser_classes:\n  u:\n    tasks: [ {task} ]\n"
        ));
        let mut c = run.headless(&api.url, &["--local-workers", "1"]);
        assert_eq!(
            c.exit_code(Duration::from_secs(30)).await,
            2,
            "{task}: {}",
            c.output()
        );
        assert!(c.stderr().contains(says), "{task}: {}", c.stderr());
    }
    let run = TestRun::new(
        "hosts: { auth: \"ftp://x\" }\nscenarios:\n  s: { users: 1, duration: 1s }\nuser_classes:\n  u: { tasks: [ { get: /api/fast } ] }\n",
    );
    let mut c = run.headless(&api.url, &["--local-workers", "1"]);
    assert_eq!(c.exit_code(Duration::from_secs(30)).await, 2);
    assert!(
        c.stderr().contains("plan.yaml:1:") && c.stderr().contains("unsupported scheme"),
        "{}",
        c.stderr()
    );
    assert_eq!(api.served().await, 0);
}
