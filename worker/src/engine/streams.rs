//! Open WebSocket and server-sent-event connections of a run, counted for the timeline.
//!
//! A user holding a socket is not visible in the request counts (it may
//! send nothing for seconds), so each snapshot carries how many such
//! connections were open at its end. One atomic add when a connection opens
//! and one when it ends: never per message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The count, shared by every engine thread of a run and read by its snapshots.
#[derive(Debug, Default)]
pub struct OpenStreams(AtomicU64);

impl OpenStreams {
    /// Counts a connection as open until the returned guard is dropped
    /// (the connection ended, or the task holding it was aborted).
    pub fn hold(self: &Arc<Self>) -> OpenStream {
        self.0.fetch_add(1, Ordering::Relaxed);
        OpenStream(self.clone())
    }

    /// Connections open now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One open connection: counted while it lives.
#[derive(Debug)]
pub struct OpenStream(Arc<OpenStreams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_while_held() {
        let open = Arc::new(OpenStreams::default());
        let a = open.hold();
        let b = open.hold();
        assert_eq!(open.get(), 2);
        drop(a);
        assert_eq!(open.get(), 1);
        drop(b);
        assert_eq!(open.get(), 0);
    }
}
