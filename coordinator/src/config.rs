//! The validated configuration a command runs with, built once from the command line.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use squall_common::duration;
use squall_common::rate::Rate;
use squall_common::report::RegressionRules;
use squall_common::scenario::{Loaded, Overrides};
use squall_common::{Report, RunSpec};

use crate::args::{Args, Command, CompareArgs, DemoArgs, RunArgs, ServeArgs};
use crate::error::CoordinatorError;
use crate::probe::ProbeTarget;
use crate::report::{Output, baseline};
use crate::service::Heartbeats;
use crate::tls::ServerTls;

/// The built-in demo scenario (also shipped as examples/demo.yaml).
pub const DEMO_SCENARIO: &str = include_str!("../../examples/demo.yaml");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// Wait for this many workers to dial in.
    Remote(usize),
    /// Start this many in-process workers.
    Local(usize),
}

/// Where the worker listener binds, and whether it speaks TLS.
#[derive(Debug, Clone, Copy)]
pub struct Listen {
    pub addr: SocketAddr,
    /// Loaded once per process and never freed, so `Listen` stays `Copy` like the address it extends.
    pub tls: Option<&'static ServerTls>,
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Scenarios to run, in order (several with --all).
    pub specs: Vec<RunSpec>,
    pub workers: Workers,
    pub bind: Listen,
    pub out: PathBuf,
    pub token: Option<String>,
    pub headless: bool,
    /// Move shares when workers are lost or join mid-run (`--no-rebalance` turns it off).
    pub rebalance: bool,
    pub wait_timeout: Duration,
    pub heartbeats: Heartbeats,
    /// Engine threads per local worker.
    pub local_threads: usize,
    /// SCHED_FIFO for the local workers' engine threads (`--realtime-priority`).
    pub local_realtime: Option<squall_worker::Realtime>,
    /// Baselines and CI outputs.
    pub verdicts: Verdicts,
    /// Where `/metrics` is served during the run (`--metrics-bind`).
    pub metrics_bind: Option<SocketAddr>,
}

/// What a run is judged against and recorded for besides its thresholds.
#[derive(Debug, Clone, Default)]
pub struct Verdicts {
    /// `--baseline`: as it was given, and the report, read before any traffic.
    pub baseline: Option<(String, Box<Report>)>,
    /// `--save-baseline`: the file this run's report is kept in when it passes.
    pub save_baseline: Option<PathBuf>,
    /// `--junit FILE`.
    pub junit: Option<PathBuf>,
}

/// `coordinator serve`: a standing cluster driven over HTTP.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub bind: Listen,
    pub http: SocketAddr,
    pub token: Option<String>,
    pub data: PathBuf,
    /// The `-f` file, whose scenarios can be started by name.
    pub loaded: Option<Loaded>,
    pub heartbeats: Heartbeats,
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
    Serve(ServeConfig),
    List(PathBuf),
    Validate(PathBuf),
    Probe(ProbeTarget, Duration),
    /// `coordinator compare NEW BASE`.
    Compare {
        new: PathBuf,
        /// BASE as given (a name or a path) and the file it names.
        base: (String, PathBuf),
        out: Option<PathBuf>,
        rules: RegressionRules,
        junit: Option<PathBuf>,
    },
    /// `coordinator report REPORT.json --out DIR`.
    Render {
        report: PathBuf,
        out: PathBuf,
    },
    /// `coordinator merge A.json B.json... --out DIR`.
    Merge {
        reports: Vec<PathBuf>,
        out: PathBuf,
    },
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
            Some(Command::Probe { url, timeout }) => Ok(Config::Probe(
                ProbeTarget::parse(&url)?,
                parse_duration("--timeout", &timeout)?,
            )),
            Some(Command::Compare(c)) => compare(c),
            Some(Command::Report { report, out }) => Ok(Config::Render { report, out }),
            Some(Command::Merge { reports, out }) => Ok(Config::Merge { reports, out }),
            Some(Command::Serve(s)) => serve(s).map(Config::Serve),
            None => Ok(Config::Run(run(args.run)?)),
        }
    }
}

/// How workers may connect, as given on the command line.
#[derive(Debug, Default)]
struct Access {
    token: Option<String>,
    insecure_no_auth: bool,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
}

fn compare(c: CompareArgs) -> Result<Config, CoordinatorError> {
    let rules = match &c.regression {
        Some(rule) => {
            RegressionRules::parse(rule).map_err(|e| usage(format!("--regression: {e}")))?
        }
        None => RegressionRules::default(),
    };
    if let Some(path) = &c.junit {
        Output::check_junit(path)?;
    }
    let base_path = baseline::locate(&c.base, &c.baselines_dir);
    Ok(Config::Compare {
        new: c.new,
        base: (c.base, base_path),
        out: c.out,
        rules,
        junit: c.junit,
    })
}

/// The run flags [`verdicts`] reads.
struct VerdictArgs<'a> {
    baseline: &'a Option<String>,
    save_baseline: &'a Option<String>,
    baselines_dir: &'a PathBuf,
    regression: &'a Option<String>,
    junit: &'a Option<PathBuf>,
}

/// `--baseline`, `--save-baseline`, `--regression` and `--junit`, checked
/// before any traffic: a baseline that cannot be read, a bad name or rule,
/// or a file that cannot be written is invalid input.
fn verdicts(a: &VerdictArgs<'_>, specs: &mut [RunSpec]) -> Result<Verdicts, CoordinatorError> {
    if let Some(rule) = &a.regression {
        for spec in specs.iter_mut() {
            spec.regression
                .apply(rule)
                .map_err(|e| usage(format!("--regression: {e}")))?;
        }
    }
    if specs.len() > 1 && (a.baseline.is_some() || a.save_baseline.is_some()) {
        return Err(usage(
            "--baseline and --save-baseline compare or keep one scenario's report: run the scenarios one at a time (--scenario NAME)",
        ));
    }
    let baseline = match &a.baseline {
        None => None,
        Some(arg) => {
            let path = baseline::locate(arg, a.baselines_dir);
            let report = baseline::read_report(&path).map_err(|e| match e {
                CoordinatorError::ReportFile { path, reason } => CoordinatorError::ReportFile {
                    path,
                    reason: format!("{reason} (--baseline {arg}; nothing was sent)"),
                },
                e => e,
            })?;
            if let Some(spec) = specs.first()
                && spec.scenario != report.scenario
            {
                eprintln!(
                    "warning: baseline {arg} is a report of scenario `{}`, this run is `{}`; comparing the endpoints they share",
                    report.scenario, spec.scenario
                );
            }
            Some((arg.clone(), Box::new(report)))
        }
    };
    let save_baseline = match &a.save_baseline {
        None => None,
        Some(name) => {
            baseline::check_name(name)?;
            std::fs::create_dir_all(a.baselines_dir).map_err(|source| {
                CoordinatorError::FileUnusable {
                    flag: "--baselines-dir",
                    path: a.baselines_dir.clone(),
                    source,
                }
            })?;
            Some(a.baselines_dir.join(format!("{name}.json")))
        }
    };
    if let Some(path) = &a.junit {
        Output::check_junit(path)?;
    }
    Ok(Verdicts {
        baseline,
        save_baseline,
        junit: a.junit.clone(),
    })
}

fn run(a: RunArgs) -> Result<RunConfig, CoordinatorError> {
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
    let mut specs = names
        .iter()
        .map(|n| loaded.resolve(n, &overrides, false))
        .collect::<Result<Vec<_>, _>>()?;
    let verdicts = verdicts(
        &VerdictArgs {
            baseline: &a.baseline,
            save_baseline: &a.save_baseline,
            baselines_dir: &a.baselines_dir,
            regression: &a.regression,
            junit: &a.junit,
        },
        &mut specs,
    )?;
    let workers = match (a.workers, a.local_workers) {
        (Some(0), _) => return Err(usage("--workers must be at least 1")),
        (_, Some(0)) => return Err(usage("--local-workers must be at least 1")),
        (Some(n), _) => Workers::Remote(n),
        (None, Some(n)) => Workers::Local(n),
        (None, None) => Workers::Local(1),
    };
    let access = Access {
        token: a.token,
        insecure_no_auth: a.insecure_no_auth,
        tls_cert: a.tls_cert,
        tls_key: a.tls_key,
        tls_client_ca: a.tls_client_ca,
    };
    let mut cfg = finish(
        specs,
        workers,
        a.bind,
        a.out,
        access,
        a.headless,
        parse_duration("--wait-timeout", &a.wait_timeout)?,
        a.threads,
    )?;
    cfg.rebalance = !a.no_rebalance;
    cfg.verdicts = verdicts;
    if let Some(p) = a.realtime_priority {
        if matches!(cfg.workers, Workers::Remote(_)) {
            return Err(usage(
                "--realtime-priority is for in-process workers (--local-workers); give remote workers their own --realtime-priority",
            ));
        }
        cfg.local_realtime =
            Some(squall_worker::Realtime::new(p).map_err(|e| usage(e.to_string()))?);
    }
    if let Some(addr) = a.metrics_bind {
        check_http_exposure(
            "--metrics-bind",
            addr,
            cfg.token.is_some() && matches!(cfg.workers, Workers::Remote(_)),
        )?;
        cfg.metrics_bind = Some(addr);
    }
    Ok(cfg)
}

fn serve(a: ServeArgs) -> Result<ServeConfig, CoordinatorError> {
    check_token(a.token.as_deref())?;
    check_exposure(a.bind, a.token.is_some(), false, false)?;
    check_http_exposure("--http", a.http, a.token.is_some())?;
    let loaded = a.file.as_deref().map(Loaded::from_path).transpose()?;
    if let Some(l) = &loaded {
        // Every scenario of the file must resolve now, not when someone starts it.
        for name in l.scenario_names() {
            l.resolve(name, &Overrides::default(), false)?;
        }
    }
    Ok(ServeConfig {
        bind: Listen {
            addr: a.bind,
            tls: None,
        },
        http: a.http,
        token: a.token,
        data: a.data,
        loaded,
        heartbeats: Heartbeats::default(),
    })
}

fn check_token(token: Option<&str>) -> Result<(), CoordinatorError> {
    if let Some(t) = token
        && (t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(usage(
            "--token must be non-empty printable ASCII without spaces",
        ));
    }
    Ok(())
}

/// The HTTP listeners follow the worker port's rule: one other hosts can reach
/// needs the token (as a bearer token), or anyone could start runs against any
/// host from this cluster, stop them, or read the reports.
fn check_http_exposure(flag: &str, addr: SocketAddr, token: bool) -> Result<(), CoordinatorError> {
    if is_loopback(addr.ip()) || token {
        return Ok(());
    }
    Err(usage(format!(
        "refusing to serve HTTP on {addr} ({flag}) without a token: it is not a loopback address, so any host that reaches it could use it. Either set --token T (clients then send `Authorization: Bearer T`; for a one-shot run with --metrics-bind this needs --workers N) or bind a loopback address ({flag} 127.0.0.1:{})",
        addr.port()
    )))
}

#[allow(clippy::too_many_arguments)]
fn finish(
    specs: Vec<RunSpec>,
    workers: Workers,
    bind: Option<SocketAddr>,
    out: PathBuf,
    access: Access,
    headless: bool,
    wait_timeout: Duration,
    threads: Option<usize>,
) -> Result<RunConfig, CoordinatorError> {
    let token = access.token;
    check_token(token.as_deref())?;
    // In-process workers need no shared secret from the user, but the
    // listener is a real port that any process on the machine can reach (a
    // shared CI runner): a random token per run keeps strangers out.
    let token = match (token, workers) {
        (None, Workers::Local(_)) => Some(run_token()),
        (token, _) => token,
    };
    // Without --bind: remote workers are served on every interface when they
    // must authenticate, and on loopback only otherwise (so `--workers 2` works
    // on one machine without a token, and nothing is exposed by accident).
    let authenticated =
        token.is_some() || access.tls_client_ca.is_some() || access.insecure_no_auth;
    let bind = bind.unwrap_or(match workers {
        Workers::Remote(_) if authenticated => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 5557)),
        Workers::Remote(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, 5557)),
        Workers::Local(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
    });
    let tls = match (access.tls_cert, access.tls_key) {
        (Some(_), _) if matches!(workers, Workers::Local(_)) => {
            return Err(usage(
                "--tls-cert is for remote workers (--workers N): in-process workers (--local-workers, the default without --workers) attach over loopback, where TLS adds nothing; drop the TLS flags or use --workers N",
            ));
        }
        (Some(cert), Some(key)) => Some(ServerTls::load(
            &cert,
            &key,
            access.tls_client_ca.as_deref(),
        )?),
        (None, None) if access.tls_client_ca.is_none() => None,
        _ => {
            return Err(usage(
                "TLS needs both --tls-cert FILE and --tls-key FILE (and --tls-client-ca FILE for mutual TLS)",
            ));
        }
    };
    check_exposure(
        bind,
        token.is_some(),
        tls.as_ref().is_some_and(ServerTls::is_mutual),
        access.insecure_no_auth,
    )?;
    let bind = Listen {
        addr: bind,
        tls: tls.map(|t| &*Box::leak(Box::new(t))),
    };
    // Before any traffic: a report that cannot be written is found out now,
    // not after the run.
    let names: Vec<&str> = specs.iter().map(|s| s.scenario.as_str()).collect();
    Output::check(&out, &names)?;
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
        rebalance: true,
        wait_timeout,
        heartbeats: Heartbeats::default(),
        local_threads,
        local_realtime: None,
        verdicts: Verdicts::default(),
        metrics_bind: None,
    })
}

/// A fresh secret for one command's in-process workers: 128 random bits as hex.
fn run_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Refuses a listener other hosts can reach unless workers must authenticate
/// (a token, or client certificates under mutual TLS) or the user opted out
/// with `--insecure-no-auth`: an open port would let anyone attach as a
/// worker, receive the scenarios (with their credentials) and report fake results.
fn check_exposure(
    bind: SocketAddr,
    token: bool,
    mutual_tls: bool,
    insecure_no_auth: bool,
) -> Result<(), CoordinatorError> {
    if is_loopback(bind.ip()) || token || mutual_tls || insecure_no_auth {
        return Ok(());
    }
    Err(usage(format!(
        "refusing to accept workers on {bind} without authentication: it is not a loopback address, so any host that reaches it could attach as a worker, receive the scenario (with its credentials) and send fake results. Either
  - set a shared secret with --token T (or SQUALL_TOKEN) here and on every worker,
  - require client certificates with --tls-client-ca FILE (mutual TLS),
  - bind a loopback address (--bind 127.0.0.1:{}) if every worker runs on this machine, or
  - pass --insecure-no-auth (SQUALL_INSECURE_NO_AUTH=true) to accept any worker.",
        bind.port()
    )))
}

/// Loopback, including IPv4-mapped IPv6 loopback (`::ffff:127.0.0.1`).
fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
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
        Access::default(),
        d.headless,
        Duration::from_secs(10),
        None,
    )?;
    Ok(Config::Demo {
        run,
        target_bind: d.target_bind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn exposed_listeners_need_authentication() {
        // Loopback never needs a token.
        assert!(check_exposure(addr("127.0.0.1:5557"), false, false, false).is_ok());
        assert!(check_exposure(addr("[::1]:5557"), false, false, false).is_ok());
        assert!(check_exposure(addr("[::ffff:127.0.0.1]:5557"), false, false, false).is_ok());
        // Anything else does, unless explicitly opted out.
        for bind in ["0.0.0.0:5557", "[::]:5557", "10.1.2.3:5557"] {
            let e = check_exposure(addr(bind), false, false, false)
                .err()
                .map(|e| (e.exit_code().code(), e.to_string()));
            let (code, msg) = e.unwrap_or_default();
            assert_eq!(code, 2, "{bind}");
            assert!(
                msg.contains("--token") && msg.contains("--insecure-no-auth"),
                "{msg}"
            );
            assert!(check_exposure(addr(bind), true, false, false).is_ok());
            assert!(check_exposure(addr(bind), false, true, false).is_ok());
            assert!(check_exposure(addr(bind), false, false, true).is_ok());
        }
    }

    #[test]
    fn exposed_http_needs_a_token() {
        assert!(check_http_exposure("--http", addr("127.0.0.1:8089"), false).is_ok());
        assert!(check_http_exposure("--http", addr("0.0.0.0:8089"), true).is_ok());
        let e = check_http_exposure("--http", addr("0.0.0.0:8089"), false).err();
        let (code, msg) = e
            .map(|e| (e.exit_code().code(), e.to_string()))
            .unwrap_or_default();
        assert_eq!(code, 2);
        assert!(msg.contains("--http") && msg.contains("--token"), "{msg}");
    }
}
