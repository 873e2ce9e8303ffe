//! The coordinator's commands, each run to completion: a test run (one scenario or `--all`), `serve`, `list`, `validate`, `compare`, `report`, `merge`, `probe`, `target` and `demo`.

use std::path::Path;

use squall_common::scenario::Loaded;

use crate::cluster::Cluster;
use crate::config::{Config, RunConfig, Workers};
use crate::demo::DemoTarget;
use crate::error::CoordinatorError;
use crate::interrupt::Interrupts;
use crate::report::Output;
use crate::{controller, local, metrics, probe, report, serve, terminal};

/// What a successful command concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    /// A threshold failed (exit code 1).
    Failed,
}

/// Runs one command to completion.
pub async fn run(config: Config) -> Result<Verdict, CoordinatorError> {
    match config {
        Config::List(file) => list(&file),
        Config::Validate(file) => validate(&file),
        Config::Target(bind) => serve_target(bind).await,
        Config::Probe(target, timeout) => probe::probe(&target, timeout)
            .await
            .map(|()| Verdict::Passed),
        Config::Serve(cfg) => serve::serve(cfg).await,
        Config::Run(run) => run_tests(run).await,
        Config::Compare {
            new,
            base,
            out,
            rules,
            junit,
        } => compare(&new, &base, out.as_deref(), &rules, junit.as_deref()),
        Config::Render { report, out } => render(&report, &out),
        Config::Merge { reports, out } => merge(&reports, &out),
        Config::Demo {
            mut run,
            target_bind,
        } => {
            let target = DemoTarget::start(target_bind)
                .await
                .map_err(CoordinatorError::Target)?;
            eprintln!("demo target listening on {}", target.url());
            for spec in &mut run.specs {
                spec.host = target.url();
            }
            let verdict = run_tests(run).await;
            eprintln!("demo target served {} requests in all", target.served());
            target.shutdown().await;
            verdict
        }
    }
}

fn list(file: &Path) -> Result<Verdict, CoordinatorError> {
    let loaded = Loaded::from_path(file)?;
    println!(
        "{:<20} {:<8} {:<36} {:<10} thresholds",
        "scenario", "model", "load", "duration"
    );
    for name in loaded.scenario_names() {
        let spec = loaded.resolve(name, &Default::default(), true)?;
        println!(
            "{:<20} {:<8} {:<36} {:<10} {}",
            name,
            spec.load.name(),
            spec.load.to_string(),
            squall_common::duration::format(spec.load.duration()),
            spec.thresholds
                .iter()
                .map(|t| t.expr.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    Ok(Verdict::Passed)
}

fn validate(file: &Path) -> Result<Verdict, CoordinatorError> {
    let loaded = Loaded::from_path(file)?;
    let names = loaded.scenario_names();
    let spec = loaded.resolve(names[0], &Default::default(), true)?;
    println!(
        "{}: OK: {} scenario(s) ({}), {} user class(es), {} endpoint(s)",
        file.display(),
        names.len(),
        names.join(", "),
        loaded.def.user_classes.len(),
        spec.endpoints().len()
    );
    Ok(Verdict::Passed)
}

/// `coordinator compare NEW BASE`: prints the comparison, optionally writes
/// the new report with it and a JUnit file; the verdict is the comparison's
/// alone (the new run's thresholds were judged when it ran).
fn compare(
    new: &Path,
    base: &(String, std::path::PathBuf),
    out: Option<&Path>,
    rules: &squall_common::report::RegressionRules,
    junit: Option<&Path>,
) -> Result<Verdict, CoordinatorError> {
    let base_report = report::baseline::read_report(&base.1)?;
    let mut new_report = report::baseline::read_report(new)?;
    report::baseline::attach(&mut new_report, &base_report, &base.0, rules);
    let regressed = new_report.comparison.as_ref().is_some_and(|c| c.regressed);
    if let Some(c) = &new_report.comparison {
        print!("{}", report::render::comparison_text(c));
    }
    if let Some(dir) = out {
        report::write_report(dir, &new_report)?;
        println!("report written to {}", dir.display());
    }
    if let Some(path) = junit {
        report::write_file(path, &report::render::junit(&[&new_report]))?;
        println!("JUnit results written to {}", path.display());
    }
    Ok(if regressed {
        Verdict::Failed
    } else {
        Verdict::Passed
    })
}

/// `coordinator report REPORT.json --out DIR`: the files of a run rendered
/// again from its JSON (score and recommendations recomputed, so reports
/// from before they existed get them too).
fn render(path: &Path, out: &Path) -> Result<Verdict, CoordinatorError> {
    let mut r = report::baseline::read_report(path)?;
    report::verdict::conclude(&mut r);
    report::write_report(out, &r)?;
    println!("report written to {}", out.display());
    Ok(Verdict::Passed)
}

/// `coordinator merge A.json B.json --out DIR`: one report from several runs
/// of one scenario; its verdict is the merged report's.
fn merge(paths: &[std::path::PathBuf], out: &Path) -> Result<Verdict, CoordinatorError> {
    let reports = paths
        .iter()
        .map(|p| report::baseline::read_report(p))
        .collect::<Result<Vec<_>, _>>()?;
    let merged = report::merge::merge(&reports)?;
    println!("{}", report::render::summary_text(&merged));
    report::write_report(out, &merged)?;
    println!("report written to {}", out.display());
    Ok(if merged.passed {
        Verdict::Passed
    } else {
        Verdict::Failed
    })
}

async fn serve_target(bind: std::net::SocketAddr) -> Result<Verdict, CoordinatorError> {
    let target = DemoTarget::start(bind)
        .await
        .map_err(CoordinatorError::Target)?;
    eprintln!(
        "demo target listening on {} (Ctrl-C to stop); try: coordinator -f examples/demo.yaml --host {}",
        target.url(),
        target.url()
    );
    squall_worker::cli::signal::interrupted().await;
    eprintln!("served {} requests", target.served());
    target.shutdown().await;
    Ok(Verdict::Passed)
}

async fn run_tests(cfg: RunConfig) -> Result<Verdict, CoordinatorError> {
    let mut interrupts = Interrupts::watch();
    let mut cluster = Cluster::start(cfg.bind, cfg.token.clone(), cfg.heartbeats).await?;
    let wanted = match cfg.workers {
        Workers::Remote(n) => {
            eprintln!(
                "coordinator listening on {} for {n} worker(s)",
                cluster.addr()
            );
            if cluster.addr().ip().is_loopback() {
                eprintln!(
                    "  (loopback only: for workers on other hosts pass --bind 0.0.0.0:5557 --token T)"
                );
            }
            n
        }
        Workers::Local(n) => {
            eprintln!(
                "coordinator listening on {} for {n} local worker(s)",
                cluster.addr()
            );
            local::spawn(
                n,
                cluster.addr(),
                cfg.token.clone(),
                (cfg.local_threads, cfg.local_realtime),
            );
            n
        }
    };
    let live = match cfg.metrics_bind {
        Some(addr) => {
            let (tx, rx) = tokio::sync::watch::channel(None);
            let src = metrics::MetricsSource {
                live: rx,
                members: None,
                verdicts: std::sync::Arc::default(),
            };
            let token = matches!(cfg.workers, Workers::Remote(_))
                .then(|| cfg.token.clone())
                .flatten();
            let at = metrics::serve(addr, token, src).await?;
            eprintln!("metrics on http://{at}/metrics");
            Some(tx)
        }
        None => None,
    };
    let result = run_all(&mut cluster, &cfg, wanted, &mut interrupts, live.as_ref()).await;
    if matches!(cfg.workers, Workers::Local(_)) {
        cluster.shutdown_all("the coordinator is done");
    }
    result
}

/// Runs every scenario in turn. One that cannot complete does not stop the
/// others (its failure is listed in index.json and decides the exit code); an
/// interrupt does: the run it falls in stops gracefully and keeps its report,
/// an interrupt between runs or while a report is written lets that write
/// finish, and the scenarios not yet started are listed as not run.
async fn run_all(
    cluster: &mut Cluster,
    cfg: &RunConfig,
    wanted: usize,
    interrupts: &mut Interrupts,
    live: Option<&report::LiveSender>,
) -> Result<Verdict, CoordinatorError> {
    tokio::select! {
        waited = cluster.wait_for(wanted, cfg.wait_timeout) => waited?,
        () = interrupts.arrived() => return Err(CoordinatorError::InterruptedWaiting),
    }
    let several = cfg.specs.len() > 1;
    let mut output = Output::new(&cfg.out, several).with_junit(cfg.verdicts.junit.clone());
    let mut verdict = Verdict::Passed;
    let mut failed: Vec<(String, CoordinatorError)> = Vec::new();
    let mut not_run: Vec<String> = Vec::new();
    for (i, spec) in cfg.specs.iter().enumerate() {
        if interrupts.any() {
            not_run = cfg.specs[i..].iter().map(|s| s.scenario.clone()).collect();
            break;
        }
        if cluster.is_empty() {
            // Every worker was lost in the previous scenario: give remote
            // workers the usual time to come back.
            tokio::select! {
                waited = cluster.wait_for(wanted, cfg.wait_timeout) => {
                    if let Err(e) = waited {
                        output.record_failure(&spec.scenario, &e);
                        failed.push((spec.scenario.clone(), e));
                        continue;
                    }
                }
                () = interrupts.arrived() => {
                    not_run = cfg.specs[i..].iter().map(|s| s.scenario.clone()).collect();
                    break;
                }
            }
        }
        match run_one(cluster, cfg, spec, &mut output, live).await {
            Ok(Verdict::Passed) => {}
            Ok(Verdict::Failed) => verdict = Verdict::Failed,
            Err(e) => {
                if several {
                    eprintln!("error: scenario {}: {e}", spec.scenario);
                }
                output.record_failure(&spec.scenario, &e);
                failed.push((spec.scenario.clone(), e));
            }
        }
    }
    if let Err(e) = output.finish(&not_run) {
        failed.push(("index.json".to_owned(), e));
    }
    if !several && let Some((_, e)) = failed.pop() {
        return Err(e);
    }
    if !not_run.is_empty() {
        return Err(CoordinatorError::Interrupted { not_run });
    }
    if !failed.is_empty() {
        return Err(CoordinatorError::ScenariosIncomplete {
            total: cfg.specs.len(),
            failed: failed
                .iter()
                .map(|(name, e)| format!("{name}: {e}"))
                .collect(),
        });
    }
    Ok(verdict)
}

/// One scenario on the attached workers, its summary printed and its report written.
async fn run_one(
    cluster: &mut Cluster,
    cfg: &RunConfig,
    spec: &squall_common::RunSpec,
    output: &mut Output,
    live: Option<&report::LiveSender>,
) -> Result<Verdict, CoordinatorError> {
    // In a terminal the live view is redrawn in place instead of the plain line every second.
    // With --metrics-bind the view watches the same published state as /metrics.
    let view = terminal::wanted(cfg.headless).then(|| match live {
        Some(shared) => terminal::LiveTerminal::watch(shared),
        None => terminal::LiveTerminal::start(),
    });
    let result = controller::run_scenario(
        cluster,
        spec,
        controller::RunOptions {
            headless: cfg.headless || view.is_some(),
            rebalance: cfg.rebalance,
            live: live
                .cloned()
                .or_else(|| view.as_ref().map(terminal::LiveTerminal::sender)),
            run_id: None,
            stop: None,
        },
    )
    .await;
    if let Some(view) = view {
        view.finish().await;
    }
    let result = result?;
    let mut report = result.report;
    if let Some((source, base)) = &cfg.verdicts.baseline {
        report::baseline::attach(&mut report, base, source, &spec.regression);
    }
    let dir = output.publish(&report)?;
    if result.all_lost {
        return Err(CoordinatorError::AllWorkersLost { out: dir });
    }
    if let Some(path) = &cfg.verdicts.save_baseline {
        report::baseline::save_if_passed(path, &report)?;
    }
    Ok(if report.passed {
        Verdict::Passed
    } else {
        Verdict::Failed
    })
}
