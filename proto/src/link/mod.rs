//! What both ends of the coordinator/worker link must agree on beyond the messages: size limits, ALPN, reading PEM files and explaining TLS failures.

mod pem;
mod tls_error;

pub use pem::{PemError, certificates, private_key};
pub use tls_error::find_rustls_error;

/// Largest gRPC message either side accepts: a snapshot with hundreds of endpoints fits easily.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

// A `Start` carries the scenario as JSON of at most `MAX_SPEC_BYTES` (feeder
// rows included) plus a few small fields: it must fit in one message.
const _: () = assert!(squall_common::scenario::MAX_SPEC_BYTES + (1 << 20) <= MAX_MESSAGE_BYTES);

/// How often each end of the link sends an HTTP/2 PING while connected: a
/// peer whose connection silently died (no FIN, no RST) is found even when no
/// application message is moving.
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// How long an HTTP/2 PING may go unanswered before that end closes the connection.
pub const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The one ALPN protocol of the link: gRPC runs over HTTP/2 only.
pub const ALPN_H2: &[u8] = b"h2";
