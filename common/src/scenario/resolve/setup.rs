//! `setup:` and `teardown:` resolved: steps run once per test by the coordinator, whose captures every user shares.
//!
//! The steps have the shape of a flow's steps, so they are resolved as a flow
//! (same keys, same checks); only the variables they may use differ: a setup
//! step sees the built-ins and what earlier setup steps captured, a teardown
//! step also everything setup captured.

use std::collections::BTreeSet;

use super::super::error::ScenarioError;
use super::super::file::RequestDef;
use super::super::spec::FlowSpec;
use super::{Loaded, find_key};
use crate::template::BUILT_INS;

/// The longest value one setup capture may hand to the users: it travels to
/// every worker inside `Start` and is copied into every user at its start.
pub const MAX_SHARED_VALUE_BYTES: usize = 64 << 10;

/// The most all setup captures together may take (names and values).
pub const MAX_SHARED_BYTES: usize = 1 << 20;

/// What [`super::check_vars`] names as the owner of a phase's variables;
/// the trailing colon keeps it apart from any user class name in practice.
const SETUP: &str = "setup:";
const TEARDOWN: &str = "teardown:";

/// The owner of the variables at a place, as error messages name it.
pub(super) fn owner(class: &str) -> String {
    match class {
        SETUP => "`setup:` (a setup step sees only what earlier setup steps captured)".to_owned(),
        TEARDOWN => "`setup:` or an earlier `teardown:` step".to_owned(),
        c => format!("user class `{c}`"),
    }
}

/// Where the section of a `setup[..]` or `teardown[..]` key path starts, so
/// an error inside it points into that section rather than at an earlier
/// occurrence of the same text.
pub(super) fn section_start(text: &str, path: &str) -> Option<usize> {
    ["setup", "teardown"]
        .into_iter()
        .find(|p| {
            path.strip_prefix(p)
                .is_some_and(|r| r.starts_with(['[', '.']))
        })
        .and_then(|p| find_key(text, p))
}

/// Checks what setup captured before it goes to the workers: each value at
/// most [`MAX_SHARED_VALUE_BYTES`], all at most [`MAX_SHARED_BYTES`].
pub fn check_shared(vars: &[(String, String)]) -> Result<(), String> {
    let mut total = 0usize;
    for (name, value) in vars {
        if value.len() > MAX_SHARED_VALUE_BYTES {
            return Err(format!(
                "setup captured {} bytes into `{name}`, above the limit of 64KiB per value (captures travel to every worker); capture a smaller part, e.g. a JSON path to the id",
                value.len()
            ));
        }
        total = total.saturating_add(name.len() + value.len());
    }
    if total > MAX_SHARED_BYTES {
        return Err(format!(
            "setup captured {total} bytes in all, above the limit of 1MiB (captures travel to every worker)"
        ));
    }
    Ok(())
}

impl Loaded {
    /// Every variable a `setup:` step captures: users may use them all.
    pub(super) fn setup_captures(&self) -> impl Iterator<Item = String> + '_ {
        self.def
            .setup
            .iter()
            .flat_map(|s| s.capture.keys().cloned())
    }

    /// `setup:` and `teardown:` as flows named `setup` and `teardown`; `None`
    /// for a phase the file does not have.
    pub(super) fn resolve_phases(
        &self,
    ) -> Result<(Option<FlowSpec>, Option<FlowSpec>), ScenarioError> {
        let built_ins: BTreeSet<String> = BUILT_INS.iter().map(|s| (*s).to_owned()).collect();
        let mut all = built_ins.clone();
        all.extend(self.setup_captures());
        let setup = self.phase("setup", SETUP, &self.def.setup, built_ins, &all, false)?;
        let strict = all.clone();
        all.extend(
            self.def
                .teardown
                .iter()
                .flat_map(|s| s.capture.keys().cloned()),
        );
        // Teardown cleans up: it goes through every step even after a failed one.
        let teardown = self.phase("teardown", TEARDOWN, &self.def.teardown, strict, &all, true)?;
        Ok((setup, teardown))
    }

    fn phase(
        &self,
        name: &str,
        owner: &str,
        steps: &[RequestDef],
        strict: BTreeSet<String>,
        all: &BTreeSet<String>,
        continue_on_failure: bool,
    ) -> Result<Option<FlowSpec>, ScenarioError> {
        if steps.is_empty() {
            return Ok(None);
        }
        let task = RequestDef {
            name: Some(name.to_owned()),
            ..RequestDef::default()
        };
        let mut flow = self
            .resolve_flow(
                name,
                owner,
                &task,
                steps,
                &self.def.defaults.headers,
                strict,
                all,
            )
            .map_err(|e| step_path(e, name))?;
        flow.continue_on_failure = continue_on_failure;
        Ok(Some(flow))
    }
}

/// `setup.flow[2].path` (the flow's own path) written as the file has it: `setup[2].path`.
fn step_path(e: ScenarioError, phase: &str) -> ScenarioError {
    let fix = |p: String| p.replacen(&format!("{phase}.flow["), &format!("{phase}["), 1);
    match e {
        ScenarioError::Located {
            file,
            line,
            column,
            path,
            message,
        } => ScenarioError::Located {
            file,
            line,
            column,
            path: fix(path),
            message,
        },
        ScenarioError::Invalid {
            file,
            path,
            message,
        } => ScenarioError::Invalid {
            file,
            path: fix(path),
            message,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Overrides;
    use super::*;

    fn load(extra: &str, class: &str) -> Result<Loaded, ScenarioError> {
        let text = format!(
            "host: http://x\nscenarios:\n  s: {{ users: 1, duration: 1s }}\n{extra}user_classes:\n  u:\n    tasks:\n      - {class}\n"
        );
        Loaded::from_str("f.yaml", &text)
    }

    const SETUP: &str = "setup:\n  - { name: login, post: /login, capture: { admin: \"$.token\" } }\n  - { name: create, post: /t, headers: { Authorization: \"Bearer {{ admin }}\" }, capture: { tenant_id: \"$.id\" } }\nteardown:\n  - { name: drop, delete: \"/t/{{ tenant_id }}\", headers: { Authorization: \"Bearer {{ admin }}\" } }\n";

    #[test]
    fn setup_captures_are_every_users_variables_and_teardowns() {
        let l = load(SETUP, "{ get: \"/t/{{ tenant_id }}/items\" }").expect("valid");
        let spec = l
            .resolve("s", &Overrides::default(), false)
            .expect("resolves");
        let setup = spec.setup.expect("setup");
        assert_eq!(setup.name, "setup");
        assert_eq!(setup.steps.len(), 2);
        assert!(!setup.continue_on_failure);
        let teardown = spec.teardown.expect("teardown");
        assert!(teardown.continue_on_failure);
        assert!(spec.shared_vars.is_empty());
    }

    #[test]
    fn a_setup_step_sees_only_earlier_setup_captures() {
        let text = "setup:\n  - { name: create, post: \"/t/{{ admin }}\", capture: { tenant_id: \"$.id\" } }\n  - { name: login, post: /login, capture: { admin: \"$.token\" } }\n";
        let err = load(text, "{ get: / }")
            .expect_err("later capture")
            .to_string();
        assert!(err.starts_with("f.yaml:5:"), "{err}");
        assert!(err.contains("setup[0].path"), "{err}");
        assert!(err.contains("later request of `setup:`"), "{err}");
        // A user's capture is not setup's.
        let text = "setup:\n  - { name: create, post: \"/t/{{ token }}\" }\n";
        let err = load(text, "{ get: /, capture: { token: \"$.t\" } }")
            .expect_err("user capture")
            .to_string();
        assert!(err.contains("unknown variable `token`"), "{err}");
        // A near miss is suggested.
        let err = load(SETUP, "{ get: \"/t/{{ tenant_idd }}\" }")
            .expect_err("typo")
            .to_string();
        assert!(err.contains("did you mean `tenant_id`?"), "{err}");
    }

    #[test]
    fn setup_keys_are_checked_like_flow_steps() {
        let err = load(
            "setup:\n  - { name: x, post: /t, wieght: 2 }\n",
            "{ get: / }",
        )
        .expect_err("unknown key")
        .to_string();
        assert!(err.starts_with("f.yaml:5:"), "{err}");
        assert!(err.contains("unknown field `wieght`"), "{err}");
        let err = load(
            "setup:\n  - { name: x, post: /t, weight: 2 }\n",
            "{ get: / }",
        )
        .expect_err("weight")
        .to_string();
        assert!(err.contains("setup[0]"), "{err}");
        let err = load("setupp:\n  - { post: /t }\n", "{ get: / }")
            .expect_err("unknown top-level key")
            .to_string();
        assert!(err.contains("did you mean `setup`?"), "{err}");
    }

    #[test]
    fn shared_values_are_bounded() {
        assert!(check_shared(&[("a".into(), "x".repeat(MAX_SHARED_VALUE_BYTES))]).is_ok());
        let one = check_shared(&[("a".into(), "x".repeat(MAX_SHARED_VALUE_BYTES + 1))]);
        assert!(one.expect_err("too long").contains("`a`"));
        let many: Vec<(String, String)> = (0..20)
            .map(|i| (format!("v{i}"), "x".repeat(MAX_SHARED_VALUE_BYTES)))
            .collect();
        assert!(check_shared(&many).expect_err("too much").contains("1MiB"));
    }
}
