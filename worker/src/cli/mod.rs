//! What the `worker` and `coordinator` binaries share as command-line programs: flag values from a config file, interrupt signals and exit codes.
//!
//! It lives in the worker crate because the coordinator already depends on
//! it (for in-process workers); `common` keeps only the shared domain.

pub mod config_file;
mod exit;
pub mod signal;

pub use exit::Exit;
