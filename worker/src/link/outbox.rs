//! Run messages on their way to the coordinator: kept until acknowledged, replayed after a reconnect.

use std::collections::VecDeque;

use squall_common::protocol::{WorkerMessage, WorkerState};
use squall_proto::pb;
use tokio::sync::mpsc;

use super::wire::encode;
use crate::engine::RunOutput;

/// Snapshots kept while unacknowledged: 15 minutes of one per second.
pub const KEEP: usize = 900;

/// Receives what runs send (through their `RunOutput`) and keeps it until the coordinator acknowledges it.
pub struct Outbox {
    rx: mpsc::Receiver<WorkerMessage>,
    /// (run, seq, message) not yet acknowledged, oldest first.
    unacked: VecDeque<(String, u64, pb::WorkerMessage)>,
    /// A run's final status, replayed with its snapshots until they are all acknowledged.
    last_status: Option<(String, pb::WorkerMessage)>,
}

impl Outbox {
    pub fn new() -> (RunOutput, Outbox) {
        let (tx, rx) = mpsc::channel(1024);
        (
            tx,
            Outbox {
                rx,
                unacked: VecDeque::new(),
                last_status: None,
            },
        )
    }

    pub async fn recv(&mut self) -> Option<WorkerMessage> {
        self.rx.recv().await
    }

    /// A message already waiting, if any.
    pub fn try_recv(&mut self) -> Option<WorkerMessage> {
        self.rx.try_recv().ok()
    }

    /// Keeps what must survive a reconnect and returns the wire form to send now.
    pub fn accept(&mut self, m: &WorkerMessage) -> Option<pb::WorkerMessage> {
        let wire = encode(m)?;
        match m {
            WorkerMessage::Snapshot(s) => {
                if self.unacked.len() >= KEEP {
                    tracing::warn!(
                        "more than {KEEP} snapshots unacknowledged: dropping the oldest from the resend buffer"
                    );
                    self.unacked.pop_front();
                }
                self.unacked
                    .push_back((s.run_id.clone(), s.seq, wire.clone()));
            }
            WorkerMessage::Status(st)
                if matches!(st.state, WorkerState::Stopped | WorkerState::Failed) =>
            {
                self.last_status = Some((st.run_id.clone(), wire.clone()));
            }
            _ => {}
        }
        Some(wire)
    }

    /// The coordinator has every snapshot of `run_id` below `seq`.
    pub fn ack(&mut self, run_id: &str, seq: u64) {
        self.unacked.retain(|(r, s, _)| !(r == run_id && *s < seq));
        if self
            .last_status
            .as_ref()
            .is_some_and(|(r, _)| r == run_id && !self.unacked.iter().any(|(u, _, _)| u == r))
        {
            self.last_status = None;
        }
    }

    /// What a new session sends first: unacknowledged snapshots, then the final status.
    pub fn replay(&self) -> Vec<pb::WorkerMessage> {
        self.unacked
            .iter()
            .map(|(_, _, m)| m.clone())
            .chain(self.last_status.iter().map(|(_, m)| m.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use squall_common::protocol::Status;
    use squall_common::snapshot::Snapshot;

    fn snap(run: &str, seq: u64) -> WorkerMessage {
        WorkerMessage::Snapshot(Snapshot {
            run_id: run.into(),
            seq,
            window_start_us: 0,
            window_end_us: 0,
            active_users: 0,
            dropped_iterations: 0,
            schedule_lag: Vec::new(),
            endpoints: Vec::new(),
        })
    }

    #[test]
    fn keeps_until_acknowledged_and_replays_in_order() {
        let (_tx, mut o) = Outbox::new();
        for seq in 0..5 {
            assert!(o.accept(&snap("r", seq)).is_some());
        }
        let stopped = WorkerMessage::Status(Status {
            run_id: "r".into(),
            state: WorkerState::Stopped,
            reason: String::new(),
            snapshots_sent: 5,
        });
        o.accept(&stopped);
        o.ack("r", 3);
        assert_eq!(o.replay().len(), 3, "seq 3, 4 and the status");
        o.ack("other", 10);
        assert_eq!(o.replay().len(), 3);
        o.ack("r", 5);
        assert!(o.replay().is_empty(), "all acknowledged: nothing to resend");
    }

    #[test]
    fn is_bounded() {
        let (_tx, mut o) = Outbox::new();
        for seq in 0..(KEEP as u64 + 10) {
            o.accept(&snap("r", seq));
        }
        assert_eq!(o.replay().len(), KEEP);
    }
}
