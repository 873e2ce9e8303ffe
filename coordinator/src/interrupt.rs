//! Interrupts (Ctrl-C, SIGTERM) counted for the whole command, so that one arriving between two runs or while a report is written is not lost.
//!
//! The run controller listens for interrupts only while a run is going. Once
//! any tokio signal listener exists, the process no longer dies of SIGTERM,
//! so without this watcher a signal between `--all` runs, or while a report
//! is being written, would be swallowed and the next scenario would start.

use tokio::sync::watch;

/// How many interrupts the process has received so far.
pub struct Interrupts {
    count: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Interrupts {
    /// Starts counting SIGINT and SIGTERM from now on.
    pub fn watch() -> Interrupts {
        let (tx, count) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            let mut signals = Signals::new();
            while signals.next().await {
                tx.send_modify(|n| *n = n.saturating_add(1));
            }
        });
        Interrupts { count, task }
    }

    /// Whether any interrupt has arrived since [`Interrupts::watch`].
    pub fn any(&self) -> bool {
        *self.count.borrow() > 0
    }

    /// Resolves once an interrupt has arrived (at once if one already has).
    pub async fn arrived(&mut self) {
        // An error means the watcher is gone: no interrupt will ever come.
        if self.count.wait_for(|n| *n > 0).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// SIGINT and SIGTERM listeners held for the watcher's whole life, so no
/// signal falls between two listeners.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = signal(SignalKind::interrupt())
                .and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
                .ok();
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next interrupt; `false` when none can be received any more.
    async fn next(&mut self) -> bool {
        #[cfg(unix)]
        if let Some((int, term)) = &mut self.streams {
            return tokio::select! {
                got = int.recv() => got.is_some(),
                got = term.recv() => got.is_some(),
            };
        }
        tokio::signal::ctrl_c().await.is_ok()
    }
}
