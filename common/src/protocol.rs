//! The coordinator/worker conversation in domain terms; `squall-proto` maps it to the wire.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::partition::Share;
use crate::scenario::RunSpec;
use crate::snapshot::Snapshot;

/// Bumped on any incompatible protocol change; peers with another value are refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// gRPC metadata key carrying the shared token.
pub const TOKEN_METADATA: &str = "x-squall-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    Ready,
    Spawning,
    Running,
    Stopping,
    Stopped,
    Failed,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Ready => "ready",
            WorkerState::Spawning => "spawning",
            WorkerState::Running => "running",
            WorkerState::Stopping => "stopping",
            WorkerState::Stopped => "stopped",
            WorkerState::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    pub worker_id: String,
    pub version: String,
    pub protocol_version: u32,
    pub cores: u32,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub state: WorkerState,
    pub active_users: u64,
    pub cpu_percent: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub run_id: String,
    pub state: WorkerState,
    pub reason: String,
    pub snapshots_sent: u64,
}

#[derive(Debug, Clone)]
pub enum WorkerMessage {
    Hello(Hello),
    Heartbeat(Heartbeat),
    Snapshot(Snapshot),
    Status(Status),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Welcome {
    pub index: u32,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    pub run_id: String,
    pub spec: RunSpec,
    pub share: Share,
    pub seed: u64,
    pub worker_index: u32,
    pub worker_count: u32,
    /// How far into the plan the run already is (non-zero for a worker joining mid-run).
    pub plan_offset: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CoordinatorMessage {
    Welcome(Welcome),
    Start(Box<Start>),
    /// The set of workers changed: this worker's new place among them.
    Adjust {
        run_id: String,
        share: Share,
        worker_index: u32,
        worker_count: u32,
    },
    Stop {
        run_id: String,
        graceful: Duration,
    },
    Ack {
        run_id: String,
        seq: u64,
    },
    Shutdown {
        reason: String,
    },
    /// Liveness while no other message is due.
    Ping,
    /// Open model: the most users this worker's pool may hold from now on
    /// (`None` lifts the ceiling), set by the coordinator, which alone sees
    /// every worker's pool and completions.
    PoolCeiling {
        run_id: String,
        users: Option<u64>,
    },
}
