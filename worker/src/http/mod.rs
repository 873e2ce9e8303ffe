//! The HTTP/1.1 client the users drive: one keep-alive connection per user, the response parsed in place, TLS to `https://` targets.

pub mod connection;
mod outcome;
mod response;
mod tls;

pub use outcome::{ErrorKind, Outcome};
pub use tls::TargetTlsConnector;
