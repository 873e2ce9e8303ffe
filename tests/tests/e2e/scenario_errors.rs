//! Load-time errors: each mistake in a scenario file exits 2 with its place in
//! the file and what was expected, before any request reaches the target.

use std::time::Duration;

use super::journeys::Demo;
use squall_tests::TestRun;

/// A file with one closed scenario and class `u` whose body is `class`.
fn with_class(class: &str) -> String {
    format!("scenarios:\n  s: {{ users: 1, duration: 1s }}\nuser_classes:\n  u:\n{class}")
}

/// A class with one task made of `task` (YAML flow-mapping entries).
fn with_task(task: &str) -> String {
    with_class(&format!("    tasks:\n      - {{ {task} }}\n"))
}

/// A file with `feeders` (YAML mapping entries, indented 2) and class `u` whose body is `class`.
fn with_feeders(feeders: &str, class: &str) -> String {
    format!("feeders:\n{feeders}{}", with_class(class))
}

/// The data files every case's directory holds: a good and a ragged CSV, a broken JSON.
const DATA: [(&str, &str); 3] = [
    ("ok.csv", "user,pin\nu1,1\n"),
    ("bad.csv", "user,pin\nu1,1\nu2\n"),
    ("bad.json", "[\n  {\"user\": \"u1\"},\n  {\"user\": }\n]\n"),
];

/// Each case: what it is, the file, a fragment the message must hold.
fn cases() -> Vec<(&'static str, String, &'static str)> {
    vec![
        ("unknown variable", with_task("get: \"/a/{{ nosuchvar }}\""), "unknown variable `nosuchvar`"),
        ("near-miss variable", with_class("    on_start:\n      - { post: /api/auth/login, capture: { token: \"$.t\" } }\n    tasks:\n      - { get: /a, headers: { X-T: \"{{ tokn }}\" } }\n"), "did you mean `token`?"),
        ("variable captured only later", with_class("    on_start:\n      - { get: \"/a/{{ later }}\" }\n      - { get: /b, capture: { later: \"$.x\" } }\n    tasks:\n      - { get: /c }\n"), "only captured by a later request"),
        ("unknown variable in an inherited header", with_class("    headers: { Authorization: \"Bearer {{ tokem }}\" }\n    tasks:\n      - { get: /a }\n"), "unknown variable `tokem`"),
        ("unknown variable in a json body", with_task("post: /a, json: { who: \"{{ someone }}\" }"), "unknown variable `someone`"),
        ("unknown variable in vars", with_class("    vars: { a: \"{{ b }}\" }\n    tasks:\n      - { get: /a }\n"), "unknown variable `b`"),
        ("unknown function", with_task("get: \"/a/{{ uuidd() }}\""), "did you mean `uuid`?"),
        ("unknown function far off", with_task("get: \"/a/{{ frobnicate() }}\""), "unknown function `frobnicate`"),
        ("random_string without length", with_task("get: \"/a/{{ random_string() }}\""), "random_string(16)"),
        ("random_int reversed", with_task("get: \"/a/{{ random_int(9, 1) }}\""), "MIN <= MAX"),
        ("sequence with arguments", with_task("get: \"/a/{{ sequence(1) }}\""), "no arguments"),
        ("unclosed template", with_task("get: \"/a/{{ user_id\""), "unclosed `{{`"),
        ("unset environment variable", with_task("get: \"/a/{{ env(\\\"SQUALL_SURELY_UNSET_VAR\\\") }}\""), "`SQUALL_SURELY_UNSET_VAR`"),
        ("unknown scenario key", "scenarios:\n  s: { users: 1, duraton: 1s }\nuser_classes:\n  u: { tasks: [ { get: / } ] }\n".to_owned(), "did you mean `duration`?"),
        ("unknown request key", with_task("get: /a, captur: { x: \"$.x\" }"), "did you mean `capture`?"),
        ("unknown expect key", with_task("get: /a, expect: { stauts: 200 }"), "did you mean `status`?"),
        ("unknown wait form", with_class("    wait: { constnt: 1s }\n    tasks:\n      - { get: /a }\n"), "did you mean `constant`?"),
        ("unknown condition", with_task("get: /a, expect: { json: { \"$.a\": { equal: 1 } } }"), "did you mean `equals`?"),
        ("status class out of range", with_task("get: /a, expect: { status: 7xx }"), "is not a status"),
        ("status out of range", with_task("get: /a, expect: { status: 2000 }"), "not an HTTP status"),
        ("reversed status range", with_task("get: /a, expect: { status: \"299-200\" }"), "must not exceed"),
        ("bad regex in a check", with_task("get: /a, expect: { json: { \"$.a\": { matches: \"([\" } } }"), "invalid regular expression"),
        ("bad regex capture", with_task("get: /a, capture: { x: { regex: \"(\" } }"), "invalid regular expression"),
        ("unknown capture source", with_task("get: /a, capture: { x: { heder: Location } }"), "`{ header: NAME }`"),
        ("capture path without $", with_task("get: /a, capture: { x: \"a.b\" }"), "must start with `$`"),
        ("capture into a built-in", with_task("get: /a, capture: { user_id: \"$.x\" }"), "built in"),
        ("check path without $", with_task("get: /a, expect: { json: { \"a.b\": 1 } }"), "must start with `$`"),
        ("flow without a name", with_class("    tasks:\n      - flow: [ { get: /a } ]\n"), "needs a `name`"),
        ("empty flow", with_class("    tasks:\n      - { name: f, flow: [] }\n"), "at least one step"),
        ("poll outside a flow", with_task("get: /a, poll: { every: 1s, max: 2, until: { status: 200 } }"), "apply to the steps of a `flow:`"),
        ("poll with no attempts", with_class("    tasks:\n      - name: f\n        flow:\n          - { get: /a, poll: { every: 1s, max: 0, until: { status: 200 } } }\n"), "poll.max"),
        ("think bounds reversed", with_class("    tasks:\n      - name: f\n        flow:\n          - { get: /a, think: { between: [2s, 1s] } }\n"), "must not exceed"),
        ("nested flow", with_class("    tasks:\n      - name: f\n        flow:\n          - { name: g, flow: [ { get: /a } ] }\n"), "flows do not nest"),
        ("request keys on a flow", with_class("    tasks:\n      - { name: f, get: /a, flow: [ { get: /b } ] }\n"), "only `name`, `weight`"),
        ("checks in stop_when", "scenarios:\n  s: { users: 1, duration: 1s, stop_when: [\"checks < 90%\"] }\nuser_classes:\n  u: { tasks: [ { get: / } ] }\n".to_owned(), "use it in `thresholds`"),
        ("bad checks threshold", "scenarios:\n  s: { users: 1, duration: 1s, thresholds: [\"checks > 150%\"] }\nuser_classes:\n  u: { tasks: [ { get: / } ] }\n".to_owned(), "fraction"),
        ("bad var name", with_class("    vars: { \"9lives\": x }\n    tasks:\n      - { get: /a }\n"), "not a variable name"),
        ("bad header name in a check", with_task("get: /a, expect: { headers: { \"bad name\": x } }"), "not a header name"),
        ("bad max_latency", with_task("get: /a, expect: { max_latency: fast }"), "invalid duration"),
        ("missing feeder file", with_feeders("  a: { file: nope.csv }\n", "    feed: a\n    tasks:\n      - { get: /a }\n"), "nope.csv"),
        ("ragged csv row", with_feeders("  a: { file: bad.csv }\n", "    feed: a\n    tasks:\n      - { get: /a }\n"), "bad.csv:3:"),
        ("json feeder syntax", with_feeders("  a: { file: bad.json }\n", "    feed: a\n    tasks:\n      - { get: /a }\n"), "bad.json:3:"),
        ("unknown feeder column", with_feeders("  accounts: { file: ok.csv }\n", "    feed: accounts\n    tasks:\n      - { get: \"/a/{{ row.usr }}\" }\n"), "did you mean `user`?"),
        ("unknown feeder", with_feeders("  accounts: { file: ok.csv }\n", "    feed: acounts\n    tasks:\n      - { get: /a }\n"), "did you mean `accounts`?"),
        ("row without a feeder", with_feeders("  accounts: { file: ok.csv }\n", "    tasks:\n      - { get: /a, headers: { X-U: \"{{ row.user }}\" } }\n"), "has no `feed:`"),
        ("feeder file over the limit", with_feeders("  a: { file: big.csv }\n", "    feed: a\n    tasks:\n      - { get: /a }\n"), "above the limit of 8MiB"),
        ("on_exhausted on a random feeder", with_feeders("  a: { file: ok.csv, mode: random, on_exhausted: cycle }\n", "    feed: a\n    tasks:\n      - { get: /a }\n"), "`mode: unique` only"),
        ("unknown feeder mode", with_feeders("  a: { file: ok.csv, mode: uniqe }\n", "    feed: a\n    tasks:\n      - { get: /a }\n"), "did you mean `unique`?"),
        ("feeder of an unknown file type", with_feeders("  a: { file: case.yaml }\n", "    feed: a\n    tasks:\n      - { get: /a }\n"), "`.csv` or `.json`"),
        ("unknown class in a scenario", "scenarios:\n  s: { users: 1, duration: 1s, user_classes: [nope] }\nuser_classes:\n  u: { tasks: [ { get: / } ] }\n".to_owned(), "no user class named `nope`"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mistake_exits_2_with_its_place_before_any_request() {
    let demo = Demo::start().await;
    let cases = cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failed = Vec::new();
    for (what, yaml, fragment) in &cases {
        let run = TestRun::named("case.yaml", yaml);
        for (name, text) in DATA {
            squall_tests::write_file(run.dir(), name, text);
        }
        if yaml.contains("big.csv") {
            let row = "x".repeat(1023) + "\n";
            squall_tests::write_file(
                run.dir(),
                "big.csv",
                &format!("v\n{}", row.repeat(9 * 1024)),
            );
        }
        let mut c = run.headless(&demo.url, &["--local-workers", "1"]);
        let code = c.exit_code(Duration::from_secs(60)).await;
        let err = c.stderr();
        let located = err.contains("case.yaml:")
            && (err
                .split("case.yaml:")
                .nth(1)
                .is_some_and(|rest| rest.starts_with(|ch: char| ch.is_ascii_digit()))
                || err.contains("case.yaml: scenarios.")
                || err.contains("case.yaml: user_classes."));
        if code != 2 || !err.contains(fragment) || !located {
            failed.push(format!("{what}: exit {code}, wanted `{fragment}`:\n{err}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert_eq!(demo.served().await, 0, "no request reached the target");
}

/// The mistakes found after parsing point at their line and column too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_variable_is_reported_at_its_line_and_column() {
    let run = TestRun::named("case.yaml", &with_task("get: \"/a/{{ nosuchvar }}\""));
    let mut v =
        squall_tests::coordinator(&["validate", run.file.to_str().expect("utf8")], run.dir());
    assert_eq!(
        v.exit_code(Duration::from_secs(30)).await,
        2,
        "{}",
        v.output()
    );
    assert!(
        v.stderr().contains("case.yaml:6:"),
        "line 6 holds the task: {}",
        v.output()
    );
}
