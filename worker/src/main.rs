//! `worker`: parse the command line, attach to the coordinator, map the outcome to an exit code.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use squall_worker::Args;
use squall_worker::cli::{Exit, config_file};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        // Colours only for a person: a file, `docker logs` or `kubectl logs`
        // got escape codes around every level and field name.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let argv =
        match config_file::with_config_file(std::env::args_os().collect(), &Args::command(), &[]) {
            Ok(argv) => argv,
            Err(e) => {
                eprintln!("worker: error: {e}");
                return Exit::InvalidInput.into();
            }
        };
    let result = Args::parse_from(argv).into_config().and_then(|cfg| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?
            .block_on(squall_worker::run(cfg))
    });
    match result {
        Ok(()) => Exit::Success.into(),
        Err(e) => {
            eprintln!("worker: error: {e}");
            e.exit_code().into()
        }
    }
}
