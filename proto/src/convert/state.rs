//! `WorkerState` on the wire.

use squall_common::protocol::WorkerState;

use crate::pb;

impl From<WorkerState> for pb::WorkerState {
    fn from(s: WorkerState) -> Self {
        match s {
            WorkerState::Ready => pb::WorkerState::Ready,
            WorkerState::Spawning => pb::WorkerState::Spawning,
            WorkerState::Running => pb::WorkerState::Running,
            WorkerState::Stopping => pb::WorkerState::Stopping,
            WorkerState::Stopped => pb::WorkerState::Stopped,
            WorkerState::Failed => pb::WorkerState::Failed,
        }
    }
}

/// Unknown values (a newer peer) read as `Ready`, the least committal state.
pub(crate) fn state_from_wire(v: i32) -> WorkerState {
    match pb::WorkerState::try_from(v).unwrap_or(pb::WorkerState::Unspecified) {
        pb::WorkerState::Spawning => WorkerState::Spawning,
        pb::WorkerState::Running => WorkerState::Running,
        pb::WorkerState::Stopping => WorkerState::Stopping,
        pb::WorkerState::Stopped => WorkerState::Stopped,
        pb::WorkerState::Failed => WorkerState::Failed,
        pb::WorkerState::Ready | pb::WorkerState::Unspecified => WorkerState::Ready,
    }
}
