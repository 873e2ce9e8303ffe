//! Scenarios: the YAML file as written, the resolved `RunSpec` a run is made of, and the resolution between them.
//!
//! Parsing is strict: unknown keys, wrong types and bad values are refused with
//! the file, line and column, before any traffic is sent. The data flows one
//! way: [`file`] (what the user wrote) → [`resolve`] (overrides, defaults,
//! checks) → [`spec`] (what the coordinator plans with and workers run).

mod ca;
mod env;
mod error;
pub mod feeder;
pub mod file;
mod resolve;
pub mod size;
pub mod spec;
pub mod sse;
pub mod transport;
pub mod ws;

pub use ca::MAX_CA_BYTES;
pub use error::ScenarioError;
pub use feeder::{Exhausted, FeedMode, FeederSpec, MAX_FEEDER_BYTES, MAX_FEEDER_ROWS};
pub use file::ScenarioFile;
pub use resolve::setup::{MAX_SHARED_BYTES, MAX_SHARED_VALUE_BYTES, check_shared};
pub use resolve::{Loaded, MAX_POLL_ATTEMPTS, Overrides, validate_host};
pub use spec::{
    Body, CaptureFrom, CaptureSpec, FLOW_METHOD, FlowSpec, LimitError, LoadModel, MAX_BODY_FILE,
    MAX_GENERATED_BODY, MAX_SPEC_BYTES, MAX_USERS, PollSpec, RateStage, RequestSpec, RunSpec,
    StepSpec, TargetTls, TaskSpec, UserClass, UserStage, Wait, is_request_method,
};
pub use transport::{ConnectionDef, Http2Def, Http2Spec};
