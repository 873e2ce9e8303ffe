//! The worker's side of the cluster: attach to the coordinator, retry with backoff, and serve session after session until told to leave.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::config::AgentConfig;
use super::outbox::Outbox;
use super::session::{SessionEnd, SessionError, raised, session};
use crate::engine::SampleLog;
use crate::error::WorkerError;

/// Attaches to the coordinator and serves runs until told to shut down.
/// Reconnects with backoff when the coordinator is not there or goes away.
pub async fn run(cfg: AgentConfig) -> Result<(), WorkerError> {
    // Outlives sessions: what a run sent and the coordinator has not yet
    // acknowledged is replayed after a reconnect, so a cut loses no data.
    let (outbox_tx, mut outbox) = Outbox::new();
    let samples = match &cfg.samples_file {
        Some(p) => Some(SampleLog::create(p)?),
        None => None,
    };
    if let Some(tls) = &cfg.tls {
        // Fail fast (exit 2) on settings that can never connect, e.g. a --master host that is no valid TLS name.
        tls.check(&cfg.master)?;
    }
    let mut backoff = Duration::from_millis(250);
    let mut unreachable_since: Option<Instant> = None;
    let (signal_tx, signal) = watch::channel(false);
    if cfg.handle_signals {
        tokio::spawn(async move {
            crate::cli::signal::interrupted().await;
            let _ = signal_tx.send(true);
        });
    }
    // After a session, a refusal as a duplicate id is this worker's own old
    // stream, which the coordinator drops within its heartbeat timeout: retry.
    let mut attached_before = false;
    loop {
        let interrupted = *signal.borrow();
        if interrupted {
            return Ok(());
        }
        match session(
            &cfg,
            samples.clone(),
            signal.clone(),
            (&outbox_tx, &mut outbox),
        )
        .await
        {
            Err(SessionError::Duplicate(msg)) if attached_before => {
                tracing::warn!(
                    "{msg}: the coordinator still holds this worker's previous stream; retrying"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(SessionError::Duplicate(msg)) => return Err(WorkerError::Refused(msg)),
            Ok(SessionEnd::Shutdown(reason)) => {
                tracing::info!("coordinator asked this worker to shut down: {reason}");
                return Ok(());
            }
            Ok(SessionEnd::Lost(reason)) => {
                tracing::warn!("lost the coordinator ({reason}); load stopped; reconnecting");
                backoff = Duration::from_millis(250);
                unreachable_since = None;
                attached_before = true;
            }
            Err(SessionError::Fatal(e)) => return Err(e),
            Err(SessionError::Unreachable(msg)) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if let Some(limit) = cfg.give_up_after
                    && since.elapsed() >= limit
                {
                    return Err(WorkerError::Unreachable {
                        master: cfg.master.clone(),
                        waited: limit,
                    });
                }
                // A plaintext HTTP/2 client reads a TLS alert record as an oversized frame.
                let hint = if cfg.tls.is_none() && msg.contains("frame with invalid size") {
                    " (if the coordinator uses TLS, pass --tls-ca FILE)"
                } else {
                    ""
                };
                tracing::warn!(
                    "no coordinator at {} ({msg}){hint}; retrying in {:.1}s",
                    cfg.master,
                    backoff.as_secs_f64()
                );
                let mut signal = signal.clone();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    () = raised(&mut signal) => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
