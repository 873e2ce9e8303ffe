//! `WorkerMessage` (worker -> coordinator) on the wire.

use squall_common::protocol::{Heartbeat, Hello, Status, WorkerMessage};

use super::ConvertError;
use super::state::state_from_wire;
use crate::pb;
use crate::pb::worker_message::Kind;

impl TryFrom<&WorkerMessage> for pb::WorkerMessage {
    type Error = ConvertError;

    fn try_from(m: &WorkerMessage) -> Result<Self, ConvertError> {
        let kind = match m {
            WorkerMessage::Hello(h) => Kind::Hello(pb::Hello {
                worker_id: h.worker_id.clone(),
                version: h.version.clone(),
                protocol_version: h.protocol_version,
                cores: h.cores,
                labels: h.labels.clone().into_iter().collect(),
            }),
            WorkerMessage::Heartbeat(h) => Kind::Heartbeat(pb::Heartbeat {
                state: pb::WorkerState::from(h.state).into(),
                active_users: h.active_users,
                cpu_percent: h.cpu_percent,
            }),
            WorkerMessage::Snapshot(s) => Kind::Snapshot(s.into()),
            WorkerMessage::Status(s) => Kind::Status(pb::Status {
                run_id: s.run_id.clone(),
                state: pb::WorkerState::from(s.state).into(),
                reason: s.reason.clone(),
                snapshots_sent: s.snapshots_sent,
            }),
        };
        Ok(pb::WorkerMessage { kind: Some(kind) })
    }
}

/// Turns a received wire message into the domain message.
pub fn decode_worker_message(m: pb::WorkerMessage) -> Result<WorkerMessage, ConvertError> {
    Ok(match m.kind.ok_or(ConvertError::Empty("worker"))? {
        Kind::Hello(h) => WorkerMessage::Hello(Hello {
            worker_id: h.worker_id,
            version: h.version,
            protocol_version: h.protocol_version,
            cores: h.cores,
            labels: h.labels.into_iter().collect(),
        }),
        Kind::Heartbeat(h) => WorkerMessage::Heartbeat(Heartbeat {
            state: state_from_wire(h.state),
            active_users: h.active_users,
            cpu_percent: h.cpu_percent,
        }),
        Kind::Snapshot(s) => WorkerMessage::Snapshot(s.try_into()?),
        Kind::Status(s) => WorkerMessage::Status(Status {
            run_id: s.run_id,
            state: state_from_wire(s.state),
            reason: s.reason,
            snapshots_sent: s.snapshots_sent,
        }),
    })
}
