//! `coordinator`: parse the command line, validate it once, run, map the outcome to an exit code.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use squall_coordinator::{Args, Config, Verdict};
use squall_worker::cli::{Exit, config_file};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        // Colours only for a person: a file, `docker logs` or `kubectl logs`
        // got escape codes around every level and field name.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        // Logs go above the live view while one is drawn.
        .with_writer(squall_coordinator::terminal::LogWriter)
        .init();
    let argv = match config_file::with_config_file(
        std::env::args_os().collect(),
        &Args::command(),
        &[
            "list", "validate", "demo", "target", "probe", "serve", "help", "compare", "report",
            "merge",
        ],
    ) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("coordinator: error: {e}");
            return Exit::InvalidInput.into();
        }
    };
    let result = Config::from_args(Args::parse_from(argv)).and_then(|config| {
        tokio::runtime::Runtime::new()
            .map_err(|e| squall_coordinator::CoordinatorError::Internal(e.to_string()))?
            .block_on(squall_coordinator::run(config))
    });
    match result {
        Ok(Verdict::Passed) => Exit::Success.into(),
        Ok(Verdict::Failed) => Exit::ThresholdFailed.into(),
        Err(e) => {
            eprintln!("coordinator: error: {e}");
            e.exit_code().into()
        }
    }
}
