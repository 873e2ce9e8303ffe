//! The validated configuration a command runs with, built once from the command line.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use squall_common::RunSpec;
use squall_common::duration;
use squall_common::rate::Rate;
use squall_common::scenario::{Loaded, Overrides};

use crate::args::{Args, Command, DemoArgs, RunArgs};
use crate::error::CoordinatorError;
use crate::service::Heartbeats;

/// The built-in demo scenario (also shipped as examples/demo.yaml).
pub const DEMO_SCENARIO: &str = include_str!("../../examples/demo.yaml");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// Wait for this many workers to dial in.
    Remote(usize),
    /// Start this many in-process workers.
    Local(usize),
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Scenarios to run, in order (several with --all).
    pub specs: Vec<RunSpec>,
    pub workers: Workers,
    pub bind: SocketAddr,
    pub out: PathBuf,
    pub token: Option<String>,
    pub headless: bool,
    pub wait_timeout: Duration,
    pub heartbeats: Heartbeats,
    /// Engine threads per local worker.
    pub local_threads: usize,
}

#[derive(Debug, Clone)]
pub enum Config {
    Run(RunConfig),
    /// The demo: start the target first, then run with its URL as host.
    Demo {
        run: RunConfig,
        target_bind: SocketAddr,
    },
    Target(SocketAddr),
    List(PathBuf),
    Validate(PathBuf),
}

fn usage(msg: impl Into<String>) -> CoordinatorError {
    CoordinatorError::Usage(msg.into())
}

fn parse_duration(flag: &str, s: &str) -> Result<Duration, CoordinatorError> {
    duration::parse(s).map_err(|e| usage(format!("{flag}: {e}")))
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Config {
    pub fn from_args(args: Args) -> Result<Config, CoordinatorError> {
        match args.command {
            Some(Command::List { file }) => Ok(Config::List(file)),
            Some(Command::Validate { file }) => Ok(Config::Validate(file)),
            Some(Command::Target { bind }) => Ok(Config::Target(bind)),
            Some(Command::Demo(d)) => demo(d),
            None => Ok(Config::Run(run(args.run)?)),
        }
    }
}

fn run(a: RunArgs) -> Result<RunConfig, CoordinatorError> {
    if a.baseline.is_some() {
        return Err(usage("--baseline is not supported by this version yet"));
    }
    let overrides = Overrides {
        host: a.host,
        users: a.users,
        spawn_rate: a.spawn_rate,
        duration: a
            .duration
            .as_deref()
            .map(|d| parse_duration("--duration", d))
            .transpose()?,
        arrival_rate: a
            .arrival_rate
            .as_deref()
            .map(|r| Rate::parse(r).map_err(|e| usage(format!("--arrival-rate: {e}"))))
            .transpose()?,
        thresholds: a.thresholds,
    };
    let loaded = Loaded::from_path(&a.file)?;
    let names: Vec<String> = if a.all {
        loaded
            .scenario_names()
            .into_iter()
            .map(String::from)
            .collect()
    } else {
        vec![loaded.pick(a.scenario.as_deref())?.to_owned()]
    };
    let specs = names
        .iter()
        .map(|n| loaded.resolve(n, &overrides, false))
        .collect::<Result<Vec<_>, _>>()?;
    let workers = match (a.workers, a.local_workers) {
        (Some(0), _) => return Err(usage("--workers must be at least 1")),
        (_, Some(0)) => return Err(usage("--local-workers must be at least 1")),
        (Some(n), _) => Workers::Remote(n),
        (None, Some(n)) => Workers::Local(n),
        (None, None) => Workers::Local(1),
    };
    finish(
        specs,
        workers,
        a.bind,
        a.out,
        a.token,
        a.headless,
        parse_duration("--wait-timeout", &a.wait_timeout)?,
        a.threads,
    )
}

#[allow(clippy::too_many_arguments)]
fn finish(
    specs: Vec<RunSpec>,
    workers: Workers,
    bind: Option<SocketAddr>,
    out: PathBuf,
    token: Option<String>,
    headless: bool,
    wait_timeout: Duration,
    threads: Option<usize>,
) -> Result<RunConfig, CoordinatorError> {
    if let Some(t) = &token
        && (t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(usage(
            "--token must be non-empty printable ASCII without spaces",
        ));
    }
    let bind = bind.unwrap_or(match workers {
        Workers::Remote(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 5557)),
        Workers::Local(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    });
    let local_threads = match (threads, workers) {
        (Some(0), _) => return Err(usage("--threads must be at least 1")),
        (Some(t), _) => t,
        (None, Workers::Local(n)) => (cores() / n).max(1),
        (None, Workers::Remote(_)) => cores(),
    };
    Ok(RunConfig {
        specs,
        workers,
        bind,
        out,
        token,
        headless,
        wait_timeout,
        heartbeats: Heartbeats::default(),
        local_threads,
    })
}

fn demo(d: DemoArgs) -> Result<Config, CoordinatorError> {
    if d.local_workers == 0 {
        return Err(usage("--local-workers must be at least 1"));
    }
    let loaded = Loaded::from_str("examples/demo.yaml (built in)", DEMO_SCENARIO)?;
    let overrides = Overrides {
        users: Some(d.users),
        spawn_rate: Some(d.spawn_rate),
        duration: Some(parse_duration("--duration", &d.duration)?),
        ..Overrides::default()
    };
    let name = loaded.pick(None)?.to_owned();
    let spec = loaded.resolve(&name, &overrides, false)?;
    let run = finish(
        vec![spec],
        Workers::Local(d.local_workers),
        None,
        d.out,
        None,
        d.headless,
        Duration::from_secs(10),
        None,
    )?;
    Ok(Config::Demo {
        run,
        target_bind: d.target_bind,
    })
}
