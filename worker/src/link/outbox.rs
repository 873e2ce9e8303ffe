//! Run messages on their way to the coordinator: kept until acknowledged, replayed after a reconnect.

use std::collections::VecDeque;

use prost::Message as _;
use squall_common::protocol::{WorkerMessage, WorkerState};
use squall_proto::pb;
use tokio::sync::mpsc;

use super::wire::encode;
use crate::engine::RunOutput;

/// Snapshots kept while unacknowledged: 15 minutes of one per second.
pub const KEEP: usize = 900;

/// Bytes of unacknowledged snapshots kept, whichever of the two bounds comes
/// first: a scenario with many endpoints makes snapshots of up to a few MiB
/// each, and 900 of those would be gigabytes.
pub const KEEP_BYTES: usize = 64 * 1024 * 1024;

/// One unacknowledged snapshot: its run, its seq, its wire form and that form's size.
struct Kept {
    run_id: String,
    seq: u64,
    wire: pb::WorkerMessage,
    bytes: usize,
}

/// Receives what runs send (through their `RunOutput`) and keeps it until the coordinator acknowledges it.
pub struct Outbox {
    rx: mpsc::Receiver<WorkerMessage>,
    /// Snapshots not yet acknowledged, oldest first.
    unacked: VecDeque<Kept>,
    /// The encoded size of `unacked`, held within [`KEEP_BYTES`].
    bytes: usize,
    /// Snapshots dropped from the resend buffer unacknowledged, per run (the latest run only):
    /// the warning counts them and the run's final status reports them.
    dropped: Option<(String, u64)>,
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
                bytes: 0,
                dropped: None,
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
        match m {
            WorkerMessage::Snapshot(s) => {
                let wire = encode(m)?;
                let bytes = wire.encoded_len();
                while !self.unacked.is_empty()
                    && (self.unacked.len() >= KEEP || self.bytes + bytes > KEEP_BYTES)
                {
                    self.drop_oldest();
                }
                self.bytes += bytes;
                self.unacked.push_back(Kept {
                    run_id: s.run_id.clone(),
                    seq: s.seq,
                    wire: wire.clone(),
                    bytes,
                });
                Some(wire)
            }
            WorkerMessage::Status(st)
                if matches!(st.state, WorkerState::Stopped | WorkerState::Failed) =>
            {
                let wire = match self.dropped_for(&st.run_id) {
                    0 => encode(m)?,
                    n => {
                        let mut st = st.clone();
                        let note = format!(
                            "{n} snapshot(s) dropped unacknowledged from the resend buffer (bounds: {KEEP} snapshots, {} MiB)",
                            KEEP_BYTES >> 20
                        );
                        st.reason = if st.reason.is_empty() {
                            note
                        } else {
                            format!("{}; {note}", st.reason)
                        };
                        encode(&WorkerMessage::Status(st))?
                    }
                };
                self.last_status = Some((st.run_id.clone(), wire.clone()));
                Some(wire)
            }
            _ => encode(m),
        }
    }

    /// Snapshots of `run_id` dropped unacknowledged so far.
    pub fn dropped_for(&self, run_id: &str) -> u64 {
        match &self.dropped {
            Some((r, n)) if r == run_id => *n,
            _ => 0,
        }
    }

    /// Makes room: the oldest snapshot goes, counted and (sparingly) logged.
    fn drop_oldest(&mut self) {
        let Some(old) = self.unacked.pop_front() else {
            return;
        };
        self.bytes -= old.bytes;
        let count = match &mut self.dropped {
            Some((r, n)) if *r == old.run_id => {
                *n += 1;
                *n
            }
            _ => {
                self.dropped = Some((old.run_id.clone(), 1));
                1
            }
        };
        if count == 1 || count.is_multiple_of(60) {
            tracing::warn!(
                "run {}: {count} snapshot(s) dropped from the resend buffer so far (more than {KEEP} snapshots or {} MiB unacknowledged)",
                old.run_id,
                KEEP_BYTES >> 20
            );
        }
    }

    /// The coordinator has every snapshot of `run_id` below `seq`.
    pub fn ack(&mut self, run_id: &str, seq: u64) {
        let mut freed = 0;
        self.unacked.retain(|k| {
            let acked = k.run_id == run_id && k.seq < seq;
            if acked {
                freed += k.bytes;
            }
            !acked
        });
        self.bytes -= freed;
        if self
            .last_status
            .as_ref()
            .is_some_and(|(r, _)| r == run_id && !self.unacked.iter().any(|k| k.run_id == *r))
        {
            self.last_status = None;
        }
    }

    /// What a new session sends first: unacknowledged snapshots, then the final status.
    pub fn replay(&self) -> Vec<pb::WorkerMessage> {
        self.unacked
            .iter()
            .map(|k| k.wire.clone())
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
            open_connections: None,
            dropped_iterations: 0,
            schedule_lag: Vec::new(),
            generator_lag: Vec::new(),
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

    /// A snapshot of about `kib` KiB on the wire (one endpoint with an opaque histogram).
    fn big_snap(run: &str, seq: u64, kib: usize) -> WorkerMessage {
        let mut m = snap(run, seq);
        if let WorkerMessage::Snapshot(s) = &mut m {
            s.endpoints.push((
                squall_common::EndpointKey {
                    name: "e".into(),
                    method: "GET".into(),
                },
                squall_common::snapshot::EndpointDelta {
                    requests: 1,
                    failures: 0,
                    status: Default::default(),
                    errors: Default::default(),
                    checks: Default::default(),
                    bytes_received: 0,
                    latency: vec![7; kib * 1024],
                    ttfb: Vec::new(),
                    service: Vec::new(),
                },
            ));
        }
        m
    }

    #[test]
    fn is_bounded_by_bytes_and_reports_what_it_dropped() {
        let (_tx, mut o) = Outbox::new();
        // 100 snapshots of 1 MiB: far below the count bound, above the byte bound.
        for seq in 0..100 {
            o.accept(&big_snap("r", seq, 1024));
        }
        let replay = o.replay();
        let kept: usize = replay.iter().map(|m| m.encoded_len()).sum();
        assert!(kept <= KEEP_BYTES, "{kept} bytes kept");
        assert!(replay.len() >= 60, "{} kept", replay.len());
        assert_eq!(o.dropped_for("r"), 100 - replay.len() as u64);
        assert_eq!(o.dropped_for("other"), 0);
        // The newest are kept.
        assert_eq!(o.unacked.back().map(|k| k.seq), Some(99));
        // Acknowledging frees the bytes.
        o.ack("r", 100);
        assert_eq!((o.bytes, o.unacked.len()), (0, 0));
        // The final status says how many were dropped.
        let stopped = WorkerMessage::Status(Status {
            run_id: "r".into(),
            state: WorkerState::Stopped,
            reason: String::new(),
            snapshots_sent: 100,
        });
        match o.accept(&stopped).and_then(|w| w.kind) {
            Some(pb::worker_message::Kind::Status(st)) => {
                assert!(
                    st.reason.contains("dropped unacknowledged"),
                    "{}",
                    st.reason
                );
            }
            other => panic!("a status: {other:?}"),
        }
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
