//! Property tests for the scenario parser: arbitrary YAML-ish text and mutations of valid files never panic, and every refusal is located.
//!
//! Brief in CI (proptest's default 256 cases); run long with
//! `PROPTEST_CASES=100000 cargo nextest run -p squall-common -E 'binary(scenario_properties)'`.

use proptest::prelude::*;
use squall_common::scenario::{Loaded, Overrides, ScenarioError};

/// Valid files covering every load model and most keys; mutations start here.
const VALID: [&str; 3] = [
    "host: http://localhost:8080\ndefaults: { timeout: 5s, headers: { Accept: application/json } }\nscenarios:\n  smoke: { users: 10, spawn_rate: 5, duration: 30s, thresholds: [\"p99 < 200ms\"], stop_when: [\"error_rate > 5%\"] }\n  open: { arrival_rate: 500/s, max_users: 2000, duration: 5m, iterations: 100 }\nuser_classes:\n  api_user:\n    weight: 3\n    wait: { between: [1s, 3s] }\n    on_start:\n      - name: login\n        post: /api/auth/login\n        json: { username: \"user{{ user_id }}\", password: secret, n: \"{{ random_int(1, 9) }}\" }\n        expect: { status: 200 }\n        capture: { token: \"$.access_token\" }\n    headers: { Authorization: \"Bearer {{ token }}\" }\n    tasks:\n      - { name: list, weight: 3, get: \"/api/items/{{ random_choice('a', 'b') }}\" }\n      - post: /api/workflows\n        body: \"wf-{{ uuid() }}\"\n        expect: { status: [201, 202] }\n",
    "host: http://127.0.0.1:1\nscenarios:\n  ramp:\n    stages:\n      - { duration: 10s, users: 20 }\n      - { duration: 1m, users: 20 }\n      - { duration: 5s, users: 0 }\n    graceful_stop: 2s\n    iterations_per_user: 4\nuser_classes:\n  u:\n    wait: { pacing: 1s }\n    tasks: [ { get: /a, capture: { id: \"$.items[-1]['an id']\" } }, { delete: \"/a/{{ id }}\" } ]\n",
    "host: https://example.com\nscenarios:\n  rate:\n    max_users: 50\n    stages:\n      - { duration: 30s, rate: 10/s }\n      - { duration: 1m, rate: 600/m }\n    user_classes: [b]\nuser_classes:\n  b: { weight: 1, wait: { constant: 500ms }, tasks: [ { head: / }, { options: /x, headers: { X-A: \"{{ worker_index }}\" } } ] }\n",
];

/// Values a careless or hostile author might put anywhere.
const HOSTILE: [&str; 28] = [
    "1e20",
    "10000000000000000000",
    "18446744073709551616",
    "-1",
    "0",
    "NaN",
    ".nan",
    ".inf",
    "-.inf",
    "~",
    "null",
    "\"\"",
    "[]",
    "{}",
    "[[[[[[[[]]]]]]]]",
    "\"{{\"",
    "\"{{ random_int(9, 1) }}\"",
    "\"{{ random_int(-9223372036854775808, 9223372036854775807) }}\"",
    "\"$.[\"",
    "99999999999d",
    "720h",
    "31d",
    "1/s",
    "0/s",
    "1e308/s",
    "&a",
    "*a",
    "!!binary aGk=",
];

/// Characters YAML gives meaning to, weighted toward structure.
fn yamlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-z_]{1,8}",
        3 => Just(": ".to_owned()),
        3 => Just("\n".to_owned()),
        2 => Just("  ".to_owned()),
        2 => Just("- ".to_owned()),
        1 => Just("{".to_owned()),
        1 => Just("}".to_owned()),
        1 => Just("[".to_owned()),
        1 => Just("]".to_owned()),
        1 => Just(", ".to_owned()),
        1 => Just("\"".to_owned()),
        1 => Just("'".to_owned()),
        1 => Just("#".to_owned()),
        1 => Just("|".to_owned()),
        1 => Just(">".to_owned()),
        2 => prop::sample::select(HOSTILE.to_vec()).prop_map(str::to_owned),
        2 => prop::sample::select(vec!["scenarios", "user_classes", "host", "users", "duration", "stages", "tasks", "get", "rate", "arrival_rate", "max_users", "wait", "between", "thresholds", "capture", "json", "tls", "ca"]).prop_map(str::to_owned),
        1 => any::<String>(),
    ];
    prop::collection::vec(piece, 0..64).prop_map(|p| p.concat())
}

/// One edit of a valid file: cut a range, insert text, or overwrite a range with a hostile value.
#[derive(Debug, Clone)]
enum Edit {
    Cut(usize, usize),
    Insert(usize, String),
    Replace(usize, usize, String),
}

fn edit() -> impl Strategy<Value = Edit> {
    let snippet = prop_oneof![
        prop::sample::select(HOSTILE.to_vec()).prop_map(str::to_owned),
        yamlish(),
    ];
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(at, n)| Edit::Cut(at, n)),
        (any::<usize>(), snippet.clone()).prop_map(|(at, s)| Edit::Insert(at, s)),
        (any::<usize>(), 0usize..12, snippet).prop_map(|(at, n, s)| Edit::Replace(at, n, s)),
    ]
}

/// Applies an edit at char boundaries (positions wrap around the text's length).
fn apply(text: &str, e: &Edit) -> String {
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let at = |i: usize| bounds[i % bounds.len()];
    let span = |i: usize, n: usize| {
        let start = i % bounds.len();
        (bounds[start], bounds[(start + n).min(bounds.len() - 1)])
    };
    match e {
        Edit::Cut(i, n) => {
            let (a, b) = span(*i, *n);
            format!("{}{}", &text[..a], &text[b..])
        }
        Edit::Insert(i, s) => {
            let a = at(*i);
            format!("{}{s}{}", &text[..a], &text[a..])
        }
        Edit::Replace(i, n, s) => {
            let (a, b) = span(*i, *n);
            format!("{}{s}{}", &text[..a], &text[b..])
        }
    }
}

/// Loads `text`; a refusal must be located (`file:line:column` or `file: key.path`).
/// An accepted file must resolve every scenario, and its plan must evaluate, without panicking.
fn check(text: &str) -> Result<(), TestCaseError> {
    match Loaded::from_str("f.yaml", text) {
        Ok(loaded) => {
            for name in loaded.scenario_names() {
                let spec = loaded
                    .resolve(name, &Overrides::default(), true)
                    .map_err(|e| {
                        TestCaseError::fail(format!("validated but does not resolve: {e}"))
                    })?;
                let load = &spec.load;
                let end = load.duration().as_secs_f64();
                for t in [0.0, end / 2.0, end, end * 2.0 + 1.0] {
                    let _ = (load.users_at(t), load.rate_at(t), load.arrivals_until(t));
                }
                let _ = (
                    load.arrival_time(0),
                    load.arrival_time(u64::MAX),
                    load.to_string(),
                );
                let _ =
                    serde_json::to_string(&spec).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            Ok(())
        }
        Err(ScenarioError::Syntax {
            file,
            line,
            column,
            message,
        }) => {
            prop_assert_eq!(file, "f.yaml");
            prop_assert!(line >= 1 && column >= 1, "{}:{}: {}", line, column, message);
            prop_assert!(!message.is_empty());
            Ok(())
        }
        Err(ScenarioError::Located {
            file,
            line,
            column,
            path,
            message,
        }) => {
            prop_assert_eq!(file, "f.yaml");
            prop_assert!(line >= 1 && column >= 1, "{}:{}: {}", line, column, message);
            prop_assert!(!path.is_empty(), "no key path: {}", message);
            Ok(())
        }
        Err(ScenarioError::Invalid {
            file,
            path,
            message,
        }) => {
            prop_assert_eq!(file, "f.yaml");
            prop_assert!(!path.is_empty(), "no key path: {}", message);
            prop_assert!(!message.is_empty());
            Ok(())
        }
        Err(other) => Err(TestCaseError::fail(format!("unlocated refusal: {other}"))),
    }
}

#[test]
fn the_seed_files_are_valid() {
    for text in VALID {
        if let Err(e) = Loaded::from_str("f.yaml", text) {
            panic!("{e}\n{text}");
        }
    }
}

proptest! {
    #[test]
    fn yamlish_text_never_panics_and_every_refusal_is_located(text in yamlish()) {
        check(&text)?;
    }

    #[test]
    fn mutated_valid_files_never_panic_and_every_refusal_is_located(
        which in 0usize..VALID.len(),
        edits in prop::collection::vec(edit(), 1..5),
    ) {
        let text = edits.iter().fold(VALID[which].to_owned(), |t, e| apply(&t, e));
        check(&text)?;
    }
}
