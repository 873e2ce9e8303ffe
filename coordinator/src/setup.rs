//! `setup:` and `teardown:` run by the coordinator itself, once per test, with the worker library's engine in-process.
//!
//! Running them here (not on a worker) means they run exactly once however
//! many workers attach, need no protocol of their own, and still send with
//! the users' HTTP settings. Setup's captures reach the users inside the
//! `RunSpec` sent to every worker (`shared_vars`); the phases' requests are
//! reported as `phases` rows of their own, outside the load's totals, so the
//! totals stay what the target served during the load.

use squall_common::RunSpec;
use squall_common::report::PhaseReport;
use squall_common::scenario::{FlowSpec, check_shared};
use tokio::sync::{Notify, watch};

use crate::report::phase_endpoint;

/// One phase as it ran: its report entry and the variables its user held at the end.
#[derive(Debug)]
pub struct PhaseRun {
    pub report: PhaseReport,
    pub captured: Vec<(String, String)>,
}

impl PhaseRun {
    pub fn passed(&self) -> bool {
        self.report.passed
    }
}

/// Runs `flow` (the spec's `setup` or `teardown`) once, its user starting
/// with `shared`. An interrupt (Ctrl-C, SIGTERM) or `stop` ends it between
/// steps; a request in flight then finishes within its timeout.
pub async fn run(
    spec: &RunSpec,
    flow: &FlowSpec,
    shared: &[(String, String)],
    stop: Option<&Notify>,
) -> PhaseRun {
    let (tx, rx) = watch::channel(false);
    let phase = squall_worker::run_phase(spec, flow, shared, rx);
    tokio::pin!(phase);
    let ctrl_c = squall_worker::cli::signal::interrupted();
    tokio::pin!(ctrl_c);
    let outcome = loop {
        tokio::select! {
            out = &mut phase => break out,
            _ = &mut ctrl_c, if !*tx.borrow() => { let _ = tx.send(true); }
            () = stopped(stop), if !*tx.borrow() => { let _ = tx.send(true); }
        }
    };
    let name = flow.name.clone();
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            return PhaseRun {
                report: PhaseReport {
                    phase: name,
                    passed: false,
                    error: Some(e.to_string()),
                    duration_ms: 0.0,
                    captured: Vec::new(),
                    endpoints: Vec::new(),
                },
                captured: Vec::new(),
            };
        }
    };
    let secs = outcome.elapsed.as_secs_f64();
    let mut error = outcome.failure;
    let mut endpoints = Vec::new();
    for (key, stats) in &outcome.endpoints {
        match phase_endpoint(&key.name, &key.method, stats, secs) {
            Ok(e) => endpoints.push(e),
            Err(e) => {
                error.get_or_insert_with(|| format!("cannot summarise its requests: {e}"));
            }
        }
    }
    // Only what the phase itself added is handed on: the shared variables it
    // started with are already known to whoever called it.
    let captured: Vec<(String, String)> = outcome
        .captured
        .into_iter()
        .filter(|(k, v)| !shared.iter().any(|(sk, sv)| sk == k && sv == v))
        .collect();
    if error.is_none()
        && let Err(e) = check_shared(&captured)
    {
        error = Some(e);
    }
    PhaseRun {
        report: PhaseReport {
            phase: name,
            passed: error.is_none(),
            error,
            duration_ms: (secs * 1e6).round() / 1e3,
            captured: captured.iter().map(|(k, _)| k.clone()).collect(),
            endpoints,
        },
        captured,
    }
}

/// The line printed when a phase ends.
pub fn line(run: &PhaseRun) -> String {
    let r = &run.report;
    let requests: u64 = r
        .endpoints
        .iter()
        .filter(|e| e.method != squall_common::scenario::FLOW_METHOD)
        .map(|e| e.requests)
        .sum();
    let took = format!("{:.1}ms", r.duration_ms);
    match &r.error {
        None if r.captured.is_empty() => format!("{}: {requests} request(s) in {took}", r.phase),
        None => format!(
            "{}: {requests} request(s) in {took}; every user gets {}",
            r.phase,
            r.captured.join(", ")
        ),
        Some(e) => format!("{} failed after {requests} request(s): {e}", r.phase),
    }
}

async fn stopped(stop: Option<&Notify>) {
    match stop {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(error: Option<&str>, captured: &[&str]) -> PhaseRun {
        PhaseRun {
            report: PhaseReport {
                phase: "setup".into(),
                passed: error.is_none(),
                error: error.map(str::to_owned),
                duration_ms: 12.5,
                captured: captured.iter().map(|s| (*s).to_owned()).collect(),
                endpoints: Vec::new(),
            },
            captured: Vec::new(),
        }
    }

    #[test]
    fn the_line_names_what_users_get_or_why_it_failed() {
        assert_eq!(
            line(&phase(None, &["tenant_id"])),
            "setup: 0 request(s) in 12.5ms; every user gets tenant_id"
        );
        assert!(
            line(&phase(
                Some("step `x` (POST) failed: status (HTTP 500)"),
                &[]
            ))
            .starts_with("setup failed after 0 request(s): step `x`")
        );
    }
}
