//! The HTTP client the users drive: one HTTP/1.1 keep-alive connection per user, the response parsed in place, TLS to `https://` targets; or HTTP/2 connections a worker's users share.

pub mod connection;
pub mod h2;
mod outcome;
mod response;
mod tls;

pub use outcome::{ErrorKind, Outcome};
pub use tls::TargetTlsConnector;
