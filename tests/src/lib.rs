//! Shared helpers for Squall's cross-process tests: find the built binaries, start processes and a counting target, wait with deadlines.

mod api_client;
mod devtools;
mod docker;
mod fake_worker;
mod memory;
mod netns;
mod pki;
mod port;
mod process;
mod report;
mod run;
mod serve;
mod target;
mod wait;

pub use api_client::{ApiClient, Reply};
pub use devtools::Browser;
pub use docker::{Compose, TEST_IMAGE, build_image, exec, repo_root, require_docker, run_ok};
pub use fake_worker::{FakeWorker, Reading};
pub use memory::peak_rss_bytes;
pub use netns::{NetHost, SealedHost};
pub use pki::{leaf, new_ca};
pub use port::ReservedPort;
pub use process::{Proc, bin, coordinator, coordinator_with_file_size_limit, worker};
pub use report::{has_event, read_report, sample_count, worker_entry};
pub use run::{TestRun, write_file};
pub use serve::{Served, eventually, require_tool};
pub use target::CountingTarget;
pub use wait::wait_until;
