//! The optional config file (`--config FILE` or `SQUALL_CONFIG`): flag values in TOML, YAML or JSON, below the command line and the environment.

use std::ffi::OsString;
use std::path::PathBuf;

/// Why the config file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("config file {}: {reason}", path.display())]
pub struct ConfigFileError {
    pub path: PathBuf,
    pub reason: String,
}

/// Inserts the config file's values as flags ahead of the real arguments.
///
/// Keys are flag names (`users`, `spawn-rate` or `spawn_rate`); a value the
/// command line gives, or whose environment variable (the one `command`
/// declares for that flag, e.g. `SQUALL_WORKER_ID` for `id`) is set, is left
/// out, so the order of precedence is command line, environment, file,
/// default. `true` becomes a bare flag, `false` is left out, a list repeats
/// the flag. Arguments that start with one of `subcommands` are returned as
/// they are.
pub fn with_config_file(
    args: Vec<OsString>,
    command: &clap::Command,
    subcommands: &[&str],
) -> Result<Vec<OsString>, ConfigFileError> {
    if args
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| subcommands.contains(&a))
    {
        return Ok(args);
    }
    let given: Vec<String> = args
        .iter()
        .filter_map(|a| a.to_str())
        .map(str::to_owned)
        .collect();
    let from_args = given.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--config=").map(str::to_owned).or_else(|| {
            (a == "--config")
                .then(|| given.get(i + 1).cloned())
                .flatten()
        })
    });
    let from_env = || {
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some("config"))?;
        std::env::var(arg.get_env()?).ok()
    };
    let Some(path) = from_args.or_else(from_env) else {
        return Ok(args);
    };
    let path = PathBuf::from(path);
    let err = |reason: String| ConfigFileError {
        path: path.clone(),
        reason,
    };
    let table: std::collections::BTreeMap<String, config::Value> = config::Config::builder()
        .add_source(config::File::from(path.as_path()))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| err(e.to_string()))?;
    let mut injected: Vec<OsString> = Vec::new();
    for (key, value) in table {
        let flag = format!("--{}", key.replace('_', "-"));
        let long = &flag[2..];
        let env_set = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long))
            .and_then(|a| a.get_env())
            .is_some_and(|env| std::env::var_os(env).is_some());
        let on_command_line = given
            .iter()
            .any(|a| *a == flag || a.starts_with(&format!("{flag}=")));
        if flag == "--config" || on_command_line || env_set {
            continue;
        }
        let values = match value.kind {
            config::ValueKind::Array(items) => items,
            _ => vec![value],
        };
        for v in values {
            match v.kind {
                config::ValueKind::Boolean(true) => injected.push(flag.clone().into()),
                config::ValueKind::Boolean(false) | config::ValueKind::Nil => {}
                config::ValueKind::Table(_) | config::ValueKind::Array(_) => {
                    return Err(err(format!(
                        "`{key}`: expected a value or a list of values"
                    )));
                }
                _ => {
                    let text = v.into_string().map_err(|e| err(format!("`{key}`: {e}")))?;
                    injected.push(format!("{flag}={text}").into());
                }
            }
        }
    }
    let mut out = Vec::with_capacity(args.len() + injected.len());
    let mut rest = args.into_iter();
    out.extend(rest.next());
    out.extend(injected);
    out.extend(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    /// Flags whose variables are not set, and `id`, whose variable (`PATH`) always is
    /// and is named unlike the flag, as `worker --id`'s `SQUALL_WORKER_ID` is.
    fn command() -> clap::Command {
        let arg = |name: &'static str, env: &'static str| clap::Arg::new(name).long(name).env(env);
        clap::Command::new("c")
            .arg(arg("users", "SQUALL_TEST_CFG_USERS"))
            .arg(arg("spawn-rate", "SQUALL_TEST_CFG_SPAWN_RATE"))
            .arg(arg("id", "PATH"))
    }

    #[test]
    fn file_values_fill_in_below_the_command_line() {
        let dir = std::env::temp_dir().join(format!("squall-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("squall.toml");
        std::fs::write(
            &file,
            "users = 50\nid = \"from-file\"\nspawn_rate = 5\nheadless = true\nthreshold = [\"p99 < 1s\", \"rps > 1\"]\nhost = \"http://x:1\"\n",
        )
        .expect("write");
        let f = file.to_str().expect("utf8");
        let out = with_config_file(
            args(&["coordinator", "--config", f, "--users", "7"]),
            &command(),
            &["list"],
        )
        .expect("reads");
        let out: Vec<String> = out
            .into_iter()
            .map(|a| a.into_string().expect("utf8"))
            .collect();
        assert!(out.contains(&"--spawn-rate=5".to_owned()), "{out:?}");
        assert!(out.contains(&"--headless".to_owned()));
        assert!(
            out.contains(&"--threshold=p99 < 1s".to_owned())
                && out.contains(&"--threshold=rps > 1".to_owned())
        );
        assert!(
            !out.contains(&"--users=50".to_owned()),
            "the command line wins: {out:?}"
        );
        assert!(
            !out.iter().any(|a| a.starts_with("--id")),
            "a set variable wins over the file, whatever its name: {out:?}"
        );
        assert_eq!(out[0], "coordinator");
        assert_eq!(&out[out.len() - 2..], ["--users", "7"]);
        // Subcommands and runs without a config file are untouched.
        let plain = args(&["coordinator", "list", "x.yaml"]);
        assert_eq!(
            with_config_file(plain.clone(), &command(), &["list"]).expect("ok"),
            plain
        );
        let none = args(&["coordinator", "--users", "3"]);
        assert_eq!(
            with_config_file(none.clone(), &command(), &[]).expect("ok"),
            none
        );
        // A missing file is an error naming it.
        let e = with_config_file(
            args(&["c", "--config", "/nonexistent/x.toml"]),
            &command(),
            &[],
        )
        .expect_err("missing file");
        assert!(e.to_string().contains("/nonexistent/x.toml"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
