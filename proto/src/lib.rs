//! The Squall coordinator/worker wire protocol (`squall.v1`) and its one place of conversion to domain types.

#[allow(clippy::all, missing_docs, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("squall.v1");
}

mod convert;
pub mod link;

pub use convert::{
    ConvertError, MAX_WORKERS, PlaceError, decode_coordinator_message, decode_worker_message,
};
pub use pb::coordinator_client::CoordinatorClient;
pub use pb::coordinator_server::{Coordinator, CoordinatorServer};
pub use pb::{CoordinatorMessage as WireCoordinatorMessage, WorkerMessage as WireWorkerMessage};
