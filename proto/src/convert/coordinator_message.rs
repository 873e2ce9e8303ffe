//! `CoordinatorMessage` (coordinator -> worker) on the wire.

use std::time::Duration;

use squall_common::protocol::{CoordinatorMessage, Start, Welcome};

use super::ConvertError;
use crate::pb;
use crate::pb::coordinator_message::Kind;

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl TryFrom<&CoordinatorMessage> for pb::CoordinatorMessage {
    type Error = ConvertError;

    fn try_from(m: &CoordinatorMessage) -> Result<Self, ConvertError> {
        let kind = match m {
            CoordinatorMessage::Welcome(w) => Kind::Welcome(pb::Welcome {
                index: w.index,
                heartbeat_interval_ms: millis(w.heartbeat_interval),
                heartbeat_timeout_ms: millis(w.heartbeat_timeout),
            }),
            CoordinatorMessage::Start(s) => Kind::Start(pb::Start {
                run_id: s.run_id.clone(),
                scenario_json: serde_json::to_string(&s.spec)?,
                share: Some((&s.share).into()),
                seed: s.seed,
                worker_index: s.worker_index,
                worker_count: s.worker_count,
                plan_offset_ms: u64::try_from(s.plan_offset.as_millis()).unwrap_or(u64::MAX),
            }),
            CoordinatorMessage::Adjust {
                run_id,
                share,
                worker_index,
                worker_count,
            } => Kind::Adjust(pb::Adjust {
                run_id: run_id.clone(),
                share: Some(share.into()),
                worker_index: *worker_index,
                worker_count: *worker_count,
            }),
            CoordinatorMessage::Stop { run_id, graceful } => Kind::Stop(pb::Stop {
                run_id: run_id.clone(),
                graceful_timeout_ms: millis(*graceful),
            }),
            CoordinatorMessage::Ack { run_id, seq } => Kind::Ack(pb::Ack {
                run_id: run_id.clone(),
                seq: *seq,
            }),
            CoordinatorMessage::Shutdown { reason } => Kind::Shutdown(pb::Shutdown {
                reason: reason.clone(),
            }),
            CoordinatorMessage::Ping => Kind::Ping(pb::Ping {}),
        };
        Ok(pb::CoordinatorMessage { kind: Some(kind) })
    }
}

/// Turns a received wire message into the domain message.
pub fn decode_coordinator_message(
    m: pb::CoordinatorMessage,
) -> Result<CoordinatorMessage, ConvertError> {
    Ok(match m.kind.ok_or(ConvertError::Empty("coordinator"))? {
        Kind::Welcome(w) => CoordinatorMessage::Welcome(Welcome {
            index: w.index,
            heartbeat_interval: Duration::from_millis(w.heartbeat_interval_ms.into()),
            heartbeat_timeout: Duration::from_millis(w.heartbeat_timeout_ms.into()),
        }),
        Kind::Start(s) => CoordinatorMessage::Start(Box::new(Start {
            run_id: s.run_id,
            spec: serde_json::from_str(&s.scenario_json)?,
            share: s.share.ok_or(ConvertError::Missing("share"))?.into(),
            seed: s.seed,
            worker_index: s.worker_index,
            worker_count: s.worker_count,
            plan_offset: Duration::from_millis(s.plan_offset_ms),
        })),
        Kind::Adjust(a) => CoordinatorMessage::Adjust {
            run_id: a.run_id,
            share: a.share.ok_or(ConvertError::Missing("share"))?.into(),
            worker_index: a.worker_index,
            worker_count: a.worker_count,
        },
        Kind::Stop(s) => CoordinatorMessage::Stop {
            run_id: s.run_id,
            graceful: Duration::from_millis(s.graceful_timeout_ms.into()),
        },
        Kind::Ack(a) => CoordinatorMessage::Ack {
            run_id: a.run_id,
            seq: a.seq,
        },
        Kind::Shutdown(s) => CoordinatorMessage::Shutdown { reason: s.reason },
        Kind::Ping(_) => CoordinatorMessage::Ping,
    })
}
