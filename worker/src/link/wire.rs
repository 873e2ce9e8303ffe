//! The link's one place of encoding: domain messages to the wire form sent to the coordinator.

use squall_common::protocol::WorkerMessage;
use squall_proto::pb;

/// The wire form of `m`, or `None` (logged) if it cannot be encoded: one bad
/// message must not end the session.
pub(super) fn encode(m: &WorkerMessage) -> Option<pb::WorkerMessage> {
    match pb::WorkerMessage::try_from(m) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!("cannot encode a message for the coordinator: {e}");
            None
        }
    }
}
