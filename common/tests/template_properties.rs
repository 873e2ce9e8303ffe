//! Property tests for the template engine: any text compiles or fails cleanly, and a compiled template renders any values without panicking.
//!
//! Brief in CI (proptest's default 256 cases); run long with
//! `PROPTEST_CASES=100000 cargo nextest run -p squall-common -E 'binary(template_properties)'`.

use std::collections::HashMap;

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use squall_common::template::{RenderError, Template, Vars};

/// Template-ish text: the engine's own tokens mixed with arbitrary characters,
/// so generated strings reach every branch of the parser, not only "no `{{`".
fn template_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("{{".to_owned()),
        Just("}}".to_owned()),
        Just("{{ ".to_owned()),
        Just(" }}".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just(",".to_owned()),
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just("\\".to_owned()),
        Just("user_id".to_owned()),
        Just("worker_index".to_owned()),
        Just("uuid".to_owned()),
        Just("random_int".to_owned()),
        Just("random_choice".to_owned()),
        Just("token".to_owned()),
        Just("-9223372036854775808".to_owned()),
        Just("9223372036854775807".to_owned()),
        "[0-9-]{1,20}",
        "[a-z_ ]{1,8}",
        any::<String>(),
    ];
    prop::collection::vec(token, 0..24).prop_map(|parts| parts.concat())
}

/// Captured variables: arbitrary names (including the ones templates use) and arbitrary values.
fn captured() -> impl Strategy<Value = HashMap<String, String>> {
    let name = prop_oneof![Just("token".to_owned()), "[a-z_]{1,6}", any::<String>()];
    prop::collection::hash_map(name, any::<String>(), 0..6)
}

/// A JSON body whose strings are template text, nested a few levels.
fn json_body() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        template_text().prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::vec((template_text(), inner), 0..6)
                .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Renders into a buffer that already holds text, checking the contract:
/// success appends, failure leaves the buffer as it was and names an undefined variable.
fn render_checked(
    t: &Template,
    captured: &HashMap<String, String>,
    user_id: u64,
    worker_index: u32,
    seed: u64,
) -> Option<String> {
    let vars = Vars {
        user_id,
        worker_index,
        captured,
        sequence: None,
    };
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut out = String::from("prefix");
    let result = t.render(&vars, &mut rng, &mut out);
    let every_var_defined = t.variables().all(|v| captured.contains_key(v));
    match result {
        Ok(()) => {
            assert!(out.starts_with("prefix"));
            Some(out["prefix".len()..].to_owned())
        }
        Err(RenderError::Undefined(name)) => {
            assert_eq!(out, "prefix", "a failed render leaves the buffer alone");
            assert!(!captured.contains_key(&name), "`{name}` was defined");
            assert!(!every_var_defined);
            None
        }
        Err(e) => panic!("render fails only on undefined variables, got {e}"),
    }
}

proptest! {
    #[test]
    fn any_text_compiles_or_fails_cleanly_and_renders(
        text in template_text(),
        captured in captured(),
        user_id in any::<u64>(),
        worker_index in any::<u32>(),
        seed in any::<u64>(),
    ) {
        match Template::compile(&text) {
            Ok(t) => {
                if let Some(lit) = t.as_static() {
                    prop_assert_eq!(lit, text.as_str(), "a static template is its text");
                }
                render_checked(&t, &captured, user_id, worker_index, seed);
                let all: HashMap<String, String> =
                    t.variables().map(|v| (v.to_owned(), "x".to_owned())).collect();
                prop_assert!(render_checked(&t, &all, user_id, worker_index, seed).is_some());
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains("expected"), "errors say what was expected: {}", msg);
            }
        }
    }

    #[test]
    fn json_bodies_render_to_valid_json(
        body in json_body(),
        values in prop::collection::vec(any::<String>(), 1..4),
        user_id in any::<u64>(),
        worker_index in any::<u32>(),
        seed in any::<u64>(),
    ) {
        let Ok(t) = Template::compile_json(&body) else {
            return Ok(());
        };
        // Every variable defined, with arbitrary text (quotes, control characters, …).
        let captured: HashMap<String, String> = t
            .variables()
            .enumerate()
            .map(|(i, v)| (v.to_owned(), values[i % values.len()].clone()))
            .collect();
        let rendered = render_checked(&t, &captured, user_id, worker_index, seed);
        let rendered = rendered.expect("every variable is defined");
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(&rendered);
        prop_assert!(parsed.is_ok(), "not JSON: {}", rendered);
    }
}
