//! `{{ env("NAME") }}` resolved on the coordinator when the file is loaded:
//! every place a template may stand gets the variable's value, so workers
//! receive the values with the scenario and need no environment of their own.

use super::file::{RequestDef, ScenarioFile};
use crate::template::{EnvError, expand_env};

/// Where an expansion failed: the key path, the text to point at, the message.
pub type EnvFailure = (String, String, String);

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Expands every `env(...)` in the file's hosts, headers, vars and requests.
pub fn expand(def: &mut ScenarioFile, env: Env<'_>) -> Result<(), EnvFailure> {
    if let Some(h) = &mut def.host {
        one("host", h, env)?;
    }
    for (name, sc) in &mut def.scenarios {
        if let Some(h) = &mut sc.host {
            one(&format!("scenarios.{name}.host"), h, env)?;
        }
    }
    for (k, v) in &mut def.defaults.headers {
        one(&format!("defaults.headers.{k}"), v, env)?;
    }
    for (cname, c) in &mut def.user_classes {
        let at = format!("user_classes.{cname}");
        for (k, v) in &mut c.headers {
            one(&format!("{at}.headers.{k}"), v, env)?;
        }
        for (k, v) in &mut c.vars {
            one(&format!("{at}.vars.{k}"), v, env)?;
        }
        for (i, r) in c.on_start.iter_mut().enumerate() {
            request(&format!("{at}.on_start[{i}]"), r, env)?;
        }
        for (i, r) in c.tasks.iter_mut().enumerate() {
            request(&format!("{at}.tasks[{i}]"), r, env)?;
        }
    }
    for (phase, steps) in [("setup", &mut def.setup), ("teardown", &mut def.teardown)] {
        for (i, r) in steps.iter_mut().enumerate() {
            request(&format!("{phase}[{i}]"), r, env)?;
        }
    }
    Ok(())
}

fn request(at: &str, r: &mut RequestDef, env: Env<'_>) -> Result<(), EnvFailure> {
    for p in [
        &mut r.get,
        &mut r.post,
        &mut r.put,
        &mut r.patch,
        &mut r.delete,
        &mut r.head,
        &mut r.options,
    ]
    .into_iter()
    .flatten()
    {
        one(&format!("{at}.path"), p, env)?;
    }
    for (k, v) in &mut r.headers {
        one(&format!("{at}.headers.{k}"), v, env)?;
    }
    for (k, v) in r.query.iter_mut().chain(r.form.iter_mut()) {
        one(&format!("{at}.{k}"), v, env)?;
    }
    if let Some(b) = &mut r.body {
        one(&format!("{at}.body"), b, env)?;
    }
    if let Some(j) = &mut r.json {
        json(&format!("{at}.json"), j, env)?;
    }
    for (i, step) in r.flow.iter_mut().flatten().enumerate() {
        request(&format!("{at}.flow[{i}]"), step, env)?;
    }
    Ok(())
}

fn json(at: &str, v: &mut serde_json::Value, env: Env<'_>) -> Result<(), EnvFailure> {
    use serde_json::Value;
    match v {
        Value::String(s) => one(at, s, env),
        Value::Array(items) => items.iter_mut().try_for_each(|i| json(at, i, env)),
        Value::Object(map) => {
            // Keys may hold templates too; rebuild the map when one changes.
            let mut out = serde_json::Map::new();
            for (k, mut item) in std::mem::take(map) {
                let mut key = k;
                one(at, &mut key, env)?;
                json(at, &mut item, env)?;
                out.insert(key, item);
            }
            *map = out;
            Ok(())
        }
        _ => Ok(()),
    }
}

fn one(at: &str, text: &mut String, env: Env<'_>) -> Result<(), EnvFailure> {
    if !text.contains("env") {
        return Ok(());
    }
    match expand_env(text, env) {
        Ok(expanded) => {
            *text = expanded;
            Ok(())
        }
        Err(e) => {
            let needle = match &e {
                EnvError::Unset { name, .. } | EnvError::Template { name } => name.clone(),
            };
            Err((at.to_owned(), needle, e.to_string()))
        }
    }
}
